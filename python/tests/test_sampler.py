"""topnsigma.Sampler against the Swift CLI (`nsigma sample`), and its argument contract."""

import threading

import numpy as np
import pytest

import topnsigma
from conftest import FIXTURE

VOCAB = 49152


def sample_draws(sampler, logits, draws, **kwargs):
    """Like `nsigma sample`: every row with the same seed, draw j at step j."""
    rows = logits.shape[0]
    tokens, logprobs, kept = [], [], []
    for j in range(draws):
        r = sampler.sample(logits, step=j, **kwargs)
        assert r.errors == [None] * rows
        tokens.append(r.tokens)
        logprobs.append(r.logprobs)
        kept.append(r.kept)
    return np.stack(tokens, 1), np.stack(logprobs, 1), np.stack(kept, 1)


@pytest.mark.parametrize(
    "cli, kwargs",
    [
        ([], {}),
        (["--seed", "123"], {"seed": 123}),
        (["--n", "off", "--temperature", "0.7", "--top-k", "50"], {"n_sigma": None, "temperature": 0.7, "top_k": 50}),
        (["--n", "2.5", "--top-p", "0.9", "--min-p", "0.05", "--seed", "5"], {"n_sigma": 2.5, "top_p": 0.9, "min_p": 0.05, "seed": 5}),
        (["--temperature", "0"], {"temperature": 0.0}),
    ],
)
def test_tokens_equal_nsigma_sample(fixture_rows, nsigma, cli, kwargs):
    draws = 3
    code, lines = nsigma("sample", "--logits", FIXTURE, "--draws", draws, *cli)
    assert code == 0 and len(lines) == 8
    sampler = topnsigma.Sampler(vocab_size=VOCAB, max_batch=8)
    tokens, logprobs, kept = sample_draws(sampler, fixture_rows, draws, **kwargs)
    for r, line in enumerate(lines):
        assert tokens[r].tolist() == line["tokens"], f"row {r}"
        assert np.allclose(logprobs[r], line["logprobs"], rtol=1e-12, atol=1e-12), f"row {r}"
        assert kept[r, -1] == line["kept"]
    assert tokens.dtype == np.int64 and logprobs.dtype == np.float64 and kept.dtype == np.int64


def test_float16_and_bfloat16_equal_nsigma_on_the_same_values(fixture_rows, nsigma, tmp_path):
    half = fixture_rows.astype(np.float16)
    np.save(tmp_path / "half.npy", half)
    bits = (fixture_rows.view(np.uint32) >> 16).astype(np.uint16)  # bfloat16 by truncation
    bits.tofile(tmp_path / "bf16.bin")
    sampler = topnsigma.Sampler(vocab_size=VOCAB, max_batch=8, threads=2)
    for path, extra, array, dtype in [
        (tmp_path / "half.npy", [], half, None),
        (tmp_path / "bf16.bin", ["--vocab", VOCAB, "--dtype", "bf16"], bits, "bfloat16"),
    ]:
        code, lines = nsigma("sample", "--logits", path, "--draws", 2, "--seed", 9, *extra)
        assert code == 0
        tokens, _, _ = sample_draws(sampler, array, 2, seed=9, dtype=dtype)
        assert tokens.tolist() == [line["tokens"] for line in lines]


def test_reads_in_place_never_writes(fixture_rows):
    logits = fixture_rows.copy()
    before = logits.tobytes()
    sampler = topnsigma.Sampler(vocab_size=VOCAB, max_batch=8)
    expected = sampler.sample(logits, seed=3, step=1).tokens
    assert logits.tobytes() == before
    # A padded row stride (a column slice of a wider array) is read in place, not copied.
    wide = np.full((8, VOCAB + 64), np.nan, dtype=np.float32)
    wide[:, :VOCAB] = logits
    view = wide[:, :VOCAB]
    assert not view.flags.c_contiguous
    assert sampler.sample(view, seed=3, step=1).tokens.tolist() == expected.tolist()
    # Every other row: stride 2 rows.
    assert sampler.sample(logits[::2], seed=3, step=1).tokens.tolist() == expected[::2].tolist()


def test_per_row_parameters_and_row_independence(fixture_rows):
    sampler = topnsigma.Sampler(vocab_size=VOCAB, max_batch=8)
    seeds = [11, 22, 33, 44, 55, 66, 77, 88]
    steps = [0, 1, 2, 3, 4, 5, 6, 7]
    n_sigma = [1.0, None, 0.5, 1.0, 2.0, None, 1.0, 0.0]
    temperature = [1.0, 0.8, 1.2, 0.0, 1.0, 1.0, 0.5, 1.0]
    top_k = [None, 40, None, None, 3, None, None, None]
    batch = sampler.sample(fixture_rows, seed=seeds, step=steps, n_sigma=n_sigma, temperature=temperature, top_k=top_k)
    assert batch.errors == [None] * 8
    for r in range(8):
        alone = sampler.sample(fixture_rows[r : r + 1], seed=seeds[r], step=steps[r], n_sigma=n_sigma[r],
                               temperature=temperature[r], top_k=top_k[r])
        assert alone.tokens[0] == batch.tokens[r]
        assert alone.kept[0] == batch.kept[r]
    assert batch.kept[3] == 1 and batch.logprobs[3] == 0.0  # greedy row
    assert batch.tokens[3] == int(np.argmax(fixture_rows[3]))
    assert batch.kept[4] <= 3 and batch.kept[7] == 1  # top-k 3; n = 0 keeps the max-tied token


def test_row_errors_fail_alone(fixture_rows):
    logits = fixture_rows.copy()
    logits[0, 17] = np.nan
    logits[1, 4242] = np.inf
    logits[2, :] = -np.inf
    sampler = topnsigma.Sampler(vocab_size=VOCAB, max_batch=8)
    clean = sampler.sample(fixture_rows, seed=1)
    r = sampler.sample(logits, seed=1, temperature=[1, 1, 1, -1, 1, 1, 1, 1], top_p=[None] * 7 + [0.0])
    assert r.errors[0] == "row 0: logit at index 17 is NaN"
    assert r.errors[1] == "row 1: logit at index 4242 is +inf"
    assert "no finite logit" in r.errors[2]
    assert "temperature" in r.errors[3]
    assert "top-p" in r.errors[7]
    assert r.errors[4:7] == [None, None, None]
    assert r.tokens[4:7].tolist() == clean.tokens[4:7].tolist()
    assert all(r.kept[i] == 0 for i in (0, 1, 2, 3, 7))


def test_value_errors(fixture_rows):
    sampler = topnsigma.Sampler(vocab_size=VOCAB, max_batch=4)
    four = fixture_rows[:4]
    cases = [
        (four.astype(np.float64), {}),                          # wrong dtype
        (four.astype(np.int32), {}),
        (four[0], {}),                                          # 1-D
        (four[None], {}),                                       # 3-D
        (four[:, :100], {}),                                    # wrong vocab
        (fixture_rows, {}),                                     # 8 rows > max_batch 4
        (four[:, ::-1], {}),                                    # reversed columns
        (np.asfortranarray(four), {}),                          # column-major
        ((four.view(np.uint32) >> 16).astype(np.uint16), {}),   # bf16 bits without dtype
        (four, {"dtype": "bfloat16"}),                          # float32 called bfloat16
        (four, {"dtype": "int8"}),
        (four, {"seed": -1}),
        (four, {"seed": 1 << 64}),
        (four, {"step": [0, 1, 2, -3]}),
        (four, {"top_k": 1 << 70}),
        (four, {"seed": [1, 2]}),                               # wrong per-row length
        (four.tolist(), {}),                                    # not an ndarray
        (four.astype(">f4"), {}),                               # big-endian
    ]
    for logits, kwargs in cases:
        with pytest.raises(ValueError):
            sampler.sample(logits, **kwargs)
    with pytest.raises(ValueError):
        topnsigma.Sampler(vocab_size=0, max_batch=1)
    with pytest.raises(ValueError):
        topnsigma.Sampler(vocab_size=1 << 31, max_batch=1)
    # The package checks the library's own limit (tns_max_vocab_size, TNS_MAX_VOCAB_SIZE).
    assert topnsigma._MAX_VOCAB == (1 << 31) - 2
    with pytest.raises(ValueError, match="vocab_size"):
        topnsigma.Sampler(vocab_size=topnsigma._MAX_VOCAB + 1, max_batch=1)
    with pytest.raises(ValueError):
        topnsigma.Sampler(vocab_size=10, max_batch=0)
    with pytest.raises(ValueError):
        topnsigma.Sampler(vocab_size=10, max_batch=1, threads=0)
    assert sampler.sample(four[:0]).tokens.shape == (0,)


def test_threads_release_the_gil_and_samplers_are_independent(fixture_rows):
    expected = topnsigma.Sampler(vocab_size=VOCAB, max_batch=8).sample(fixture_rows, seed=4).tokens.tolist()
    results = []

    def work():
        s = topnsigma.Sampler(vocab_size=VOCAB, max_batch=8, threads=1)
        for _ in range(5):
            results.append(s.sample(fixture_rows, seed=4).tokens.tolist())

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 15


def test_draws_follow_the_distribution():
    """A 4-token row with known probabilities: frequencies over many seeds match softmax."""
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]], dtype=np.float64)).astype(np.float32)
    sampler = topnsigma.Sampler(vocab_size=4, max_batch=1, threads=1)
    counts = np.zeros(4)
    n = 20000
    for seed in range(n):
        r = sampler.sample(logits, n_sigma=None, seed=seed)
        counts[r.tokens[0]] += 1
    expected = np.array([0.5, 0.3, 0.15, 0.05]) * n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 20.0, (counts, chi2)  # 3 degrees of freedom: p < 0.0002 by chance


def test_sampler_memory_error():
    """A handle whose scratch exceeds physical memory (2^31 - 2 logits for each of 1024 threads):
    MemoryError, as for any TNS_ERR_OUT_OF_MEMORY."""
    with pytest.raises(MemoryError, match="out of memory"):
        topnsigma.Sampler(vocab_size=(1 << 31) - 2, max_batch=1, threads=1024)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"vocab_size": 2**64 + 100}, "vocab_size"),     # used to wrap to a vocabulary of 100
        ({"vocab_size": 2**31 - 1}, "vocab_size"),
        ({"vocab_size": 64.0}, "vocab_size"),
        ({"vocab_size": True}, "vocab_size"),
        ({"vocab_size": "64"}, "vocab_size"),
        ({"max_batch": 2.5}, "max_batch"),
        ({"max_batch": 2**64 + 1}, "max_batch"),
        ({"max_batch": (1 << 24) + 1}, "max_batch"),
        ({"threads": 2**32 + 1}, "threads"),              # used to give 1 thread
        ({"threads": 1025}, "threads"),
        ({"threads": 0}, "threads"),
        ({"threads": 2.0}, "threads"),
        ({"threads": np.float64(2)}, "threads"),
        ({"placement": 2**40}, "placement"),              # used to give node 0
        ({"placement": 2**31}, "placement"),
        ({"placement": -1}, "placement"),
        ({"placement": 0.0}, "placement"),
        ({"placement": False}, "placement"),
        ({"placement": "node0"}, "placement"),
    ],
)
def test_sampler_arguments_are_checked(kwargs, name):
    arguments = {"vocab_size": 64, "max_batch": 2, "threads": 1, **kwargs}
    with pytest.raises(ValueError, match=name):
        topnsigma.Sampler(**arguments)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"top_k": 2.5}, "top_k"),                        # used to be truncated to 2
        ({"top_k": 2.0}, "top_k"),
        ({"top_k": True}, "top_k"),
        ({"top_k": [5, 2.5, None, None]}, "top_k"),
        ({"top_k": np.array([5.0, 5.0, 5.0, 5.0])}, "top_k"),
        ({"top_k": 1 << 63}, "top_k"),
        ({"seed": 1.7}, "seed"),                          # used to be truncated to 1
        ({"seed": np.float32(3)}, "seed"),
        ({"seed": False}, "seed"),
        ({"seed": "7"}, "seed"),
        ({"seed": None}, "seed"),
        ({"seed": -1}, "seed"),
        ({"seed": 1 << 64}, "seed"),
        ({"seed": np.array([1.5, 2, 3, 4])}, "seed"),
        ({"seed": np.array([1, 2, 3, -4])}, "seed"),
        ({"seed": np.array([True, False, True, False])}, "seed"),
        ({"seed": [1, 2, 3]}, "seed"),
        ({"seed": np.zeros((4, 1), dtype=np.int64)}, "seed"),
        ({"step": 0.5}, "step"),
        ({"step": [0, 1, 2.0, 3]}, "step"),
        ({"temperature": [None] * 4}, "temperature"),     # used to raise TypeError
        ({"temperature": None}, "temperature"),
        ({"temperature": "1"}, "temperature"),
        ({"temperature": True}, "temperature"),
        ({"temperature": 1e39}, "temperature"),           # beyond float32: not a silent +inf
        ({"temperature": 2**2000}, "temperature"),
        ({"temperature": [1, 1, 1, "x"]}, "temperature"),
        ({"n_sigma": "1"}, "n_sigma"),
        ({"n_sigma": np.array([1e39, 1, 1, 1])}, "n_sigma"),
        ({"n_sigma": [1.0, [1.0], None, None]}, "n_sigma"),
        ({"top_p": [0.9, "0.9", None, None]}, "top_p"),
        ({"min_p": {0: 0.1}}, "min_p"),
        ({"min_p": [0.1] * 5}, "min_p"),
    ],
)
def test_sample_arguments_are_checked(fixture_rows, kwargs, name):
    sampler = topnsigma.Sampler(vocab_size=VOCAB, max_batch=4, threads=1)
    with pytest.raises(ValueError, match=name):
        sampler.sample(fixture_rows[:4], **kwargs)


def test_filter_arguments_are_checked(fixture_rows):
    for kwargs, name in [({"top_k": 2.5}, "top_k"), ({"temperature": None}, "temperature"), ({"n_sigma": "1"}, "n_sigma")]:
        with pytest.raises(ValueError, match=name):
            topnsigma.filter(fixture_rows[0], **kwargs)


def test_numpy_scalars_and_arrays_are_exact(fixture_rows):
    """NumPy integers and floats are accepted as the Python numbers they equal, with no rounding of
    integers: the same tokens as plain Python arguments, the largest seed included."""
    sampler = topnsigma.Sampler(vocab_size=np.int64(VOCAB), max_batch=np.uint16(4), threads=np.int8(1),
                                placement=np.int32(0))
    assert sampler.vocab_size == VOCAB and type(sampler.vocab_size) is int
    rows = fixture_rows[:4]
    top = (1 << 64) - 1
    plain = sampler.sample(rows, seed=top, step=3, top_k=40, temperature=0.8, top_p=0.9)
    numpy = sampler.sample(rows, seed=np.uint64(top), step=np.int16(3), top_k=np.int32(40),
                           temperature=np.float32(0.8), top_p=np.float64(0.9))
    arrays = sampler.sample(rows, seed=np.full(4, top, dtype=np.uint64), step=np.array([3] * 4),
                            top_k=np.array([40] * 4, dtype=np.uint8), temperature=np.full(4, 0.8),
                            top_p=[0.9, np.float32(0.9), 0.9, 0.9])
    assert plain.errors == [None] * 4
    assert plain.tokens.tolist() == numpy.tokens.tolist() == arrays.tokens.tolist()
    # Two seeds that a float64 cannot tell apart stay apart.
    a = sampler.sample(rows, seed=[top, top - 1, top, top - 1], n_sigma=None, temperature=5.0)
    b = sampler.sample(rows, seed=[top] * 4, n_sigma=None, temperature=5.0)
    assert a.tokens[0] == b.tokens[0] and a.tokens[2] == b.tokens[2]
    assert sampler.sample(rows, seed=[top - 1] * 4, n_sigma=None, temperature=5.0).tokens[1] == a.tokens[1]
    # A None entry turns that filter off in that row only.
    mixed = sampler.sample(rows, top_k=[1, None, 1, None], n_sigma=None)
    assert mixed.kept.tolist()[0] == 1 and mixed.kept.tolist()[2] == 1 and mixed.kept[1] > 1 and mixed.kept[3] > 1
