"""The package's contract around the C call: every argument checked (ValueError naming it, no
wrap, no truncation), a concurrent call that touches nothing of the running call, results that
later calls leave alone, and build_info()."""

import os
import threading
import time

import numpy as np
import pytest

import topnsigma

VOCAB = 49152
NAN = float("nan")
INF = float("inf")


# ---- Arguments ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"vocab_size": -1}, "vocab_size"),
        ({"vocab_size": NAN}, "vocab_size"),
        ({"vocab_size": INF}, "vocab_size"),
        ({"vocab_size": 1.5}, "vocab_size"),
        ({"vocab_size": None}, "vocab_size"),
        ({"vocab_size": np.array([64])}, "vocab_size"),
        ({"vocab_size": np.uint64(2**64 - 1)}, "vocab_size"),
        ({"max_batch": -1}, "max_batch"),
        ({"max_batch": NAN}, "max_batch"),
        ({"max_batch": None}, "max_batch"),
        ({"max_batch": np.float32(2)}, "max_batch"),
        ({"max_batch": np.True_}, "max_batch"),
        ({"threads": -1}, "threads"),
        ({"threads": NAN}, "threads"),
        ({"threads": "2"}, "threads"),
        ({"threads": np.uint64(2**32 + 1)}, "threads"),
        ({"threads": True}, "threads"),
        ({"placement": -3}, "placement"),
        ({"placement": NAN}, "placement"),
        ({"placement": None}, "placement"),
        ({"placement": np.int64(2**40)}, "placement"),
        ({"placement": "Automatic"}, "placement"),
    ],
)
def test_more_sampler_arguments_are_checked(kwargs, name):
    arguments = {"vocab_size": 64, "max_batch": 2, "threads": 1, **kwargs}
    with pytest.raises(ValueError, match=name):
        topnsigma.Sampler(**arguments)


def test_checked_sampler_reports_what_it_made():
    """A huge vocabulary used to wrap to a small handle while vocab_size reported the huge number:
    now it is refused, and an accepted one is what the handle has."""
    with pytest.raises(ValueError, match="vocab_size"):
        topnsigma.Sampler(vocab_size=2**64 + 100, max_batch=1)
    s = topnsigma.Sampler(vocab_size=np.int64(100), max_batch=np.uint8(3), threads=np.int16(2))
    assert (s.vocab_size, s.max_batch, s.threads) == (100, 3, 2)
    assert type(s.vocab_size) is int and type(s.max_batch) is int
    assert topnsigma._lib.tns_sampler_threads(s._handle) == 2


ROWS = 4


@pytest.mark.parametrize(
    "kwargs, name",
    [
        # integers: no float (NaN, inf, 2.0 or 1.7), no bool, no string, no None, in range
        ({"seed": NAN}, "seed"),
        ({"seed": INF}, "seed"),
        ({"seed": np.float64(2.0)}, "seed"),
        ({"seed": [1, 2, 3, None]}, "seed"),
        ({"seed": [1, 2, 3, True]}, "seed"),
        ({"seed": [1, 2, 3, np.True_]}, "seed"),
        ({"seed": [1, 2, 3, 2**64]}, "seed"),
        ({"seed": [1, 2, 3, 1.0]}, "seed"),
        ({"seed": (1, 2, 3, "4")}, "seed"),
        ({"seed": np.zeros(4, dtype=np.float32)}, "seed"),
        ({"seed": np.zeros(3, dtype=np.uint64)}, "seed"),        # too short
        ({"seed": np.zeros(5, dtype=np.uint64)}, "seed"),        # too long
        ({"seed": np.array([1, 2, 3, None], dtype=object)}, "seed"),
        ({"seed": np.array([1, 2, 3, -1], dtype=np.int8)}, "seed"),
        ({"seed": range(3)}, "seed"),
        ({"step": -1}, "step"),
        ({"step": 2**64}, "step"),
        ({"step": NAN}, "step"),
        ({"step": True}, "step"),
        ({"step": None}, "step"),
        ({"step": "0"}, "step"),
        ({"step": np.float64(1.0)}, "step"),
        ({"step": [0, 1, 2]}, "step"),                           # too short
        ({"step": [0, 1, 2, 3, 4]}, "step"),                     # too long
        ({"step": np.zeros(4, dtype=np.float64)}, "step"),
        ({"step": np.array([0, 1, 2, None], dtype=object)}, "step"),
        ({"step": np.array([0, 1, 2, -3])}, "step"),
        ({"step": np.zeros((2, 2), dtype=np.uint64)}, "step"),
        ({"step": {0, 1, 2, 3}}, "step"),
        ({"top_k": NAN}, "top_k"),
        ({"top_k": INF}, "top_k"),
        ({"top_k": np.float32(5)}, "top_k"),
        ({"top_k": -(1 << 63) - 1}, "top_k"),
        ({"top_k": [1, 2, 3, 1 << 63]}, "top_k"),
        ({"top_k": [1, None, np.float64(2), None]}, "top_k"),
        ({"top_k": np.array([1, 2, 3, 1 << 63], dtype=np.uint64)}, "top_k"),
        ({"top_k": np.zeros(4, dtype=bool)}, "top_k"),
        ({"top_k": [5] * 3}, "top_k"),
        # numbers: no bool, string, complex or None (where a value is required); float32's range
        ({"temperature": np.array([None] * 4, dtype=object)}, "temperature"),
        ({"temperature": [1.0, 1.0, None, 1.0]}, "temperature"),
        ({"temperature": 1 + 2j}, "temperature"),
        ({"temperature": np.zeros(4, dtype=np.complex64)}, "temperature"),
        ({"temperature": np.array(["1"] * 4)}, "temperature"),
        ({"temperature": np.ones(4, dtype=bool)}, "temperature"),
        ({"temperature": [1.0, 1.0, 1.0, 1e39]}, "temperature"),
        ({"temperature": [1.0, 1.0, 1.0, 2**2000]}, "temperature"),
        ({"temperature": [1.0, 1.0, 1.0, np.bool_(True)]}, "temperature"),
        ({"temperature": [1.0] * 5}, "temperature"),
        ({"temperature": np.float64(-1e39)}, "temperature"),
        ({"n_sigma": np.float64(1e39)}, "n_sigma"),
        ({"n_sigma": np.zeros(4, dtype="datetime64[s]")}, "n_sigma"),
        ({"n_sigma": [1.0, 1.0, 1.0]}, "n_sigma"),
        ({"top_p": "0.9"}, "top_p"),
        ({"top_p": np.array(["a", "b", "c", "d"])}, "top_p"),
        ({"top_p": [0.9, 0.9, 0.9, False]}, "top_p"),
        ({"min_p": 1e39}, "min_p"),
        ({"min_p": np.zeros((4, 1))}, "min_p"),
        ({"min_p": b"0.1"}, "min_p"),
        # the logits' dtype argument
        ({"dtype": 5}, "dtype"),
        ({"dtype": "float64"}, "dtype"),
        ({"dtype": np.dtype(np.float64)}, "dtype"),
    ],
)
def test_more_sample_arguments_are_checked(fixture_rows, kwargs, name):
    sampler = topnsigma.Sampler(vocab_size=VOCAB, max_batch=ROWS, threads=1)
    with pytest.raises(ValueError, match=name):
        sampler.sample(fixture_rows[:ROWS], **kwargs)


@pytest.mark.parametrize(
    "logits",
    [None, [[0.0] * 8], np.zeros((2, 8), dtype=np.float64), np.zeros((2, 8), dtype=np.int32), np.zeros(8, np.float32),
     np.zeros((2, 7), np.float32), np.zeros((3, 8), np.float32), np.zeros((2, 8), ">f4")],
)
def test_logits_are_checked(logits):
    sampler = topnsigma.Sampler(vocab_size=8, max_batch=2, threads=1)
    with pytest.raises(ValueError, match="logits|rows|row"):
        sampler.sample(logits)


@pytest.mark.parametrize(
    "row, kwargs, name",
    [
        (None, {}, "row"),
        ([None, 1.0], {}, "row"),
        (["1.5", "2"], {}, "row"),
        ([True, False], {}, "row"),
        (1.0, {}, "row"),
        ("1.0", {}, "row"),
        (np.ones(4, dtype=np.float64), {}, "row"),
        (np.ones((2, 2), dtype=np.float32), {}, "row"),
        (np.ones(4, dtype=np.float32), {"top_k": 2.0}, "top_k"),
        (np.ones(4, dtype=np.float32), {"top_k": [2.5]}, "top_k"),
        (np.ones(4, dtype=np.float32), {"top_k": NAN}, "top_k"),
        (np.ones(4, dtype=np.float32), {"top_k": 1 << 63}, "top_k"),
        (np.ones(4, dtype=np.float32), {"temperature": [None]}, "temperature"),
        (np.ones(4, dtype=np.float32), {"temperature": True}, "temperature"),
        (np.ones(4, dtype=np.float32), {"n_sigma": [1.0, 2.0]}, "n_sigma"),
        (np.ones(4, dtype=np.float32), {"n_sigma": 1e39}, "n_sigma"),
        (np.ones(4, dtype=np.float32), {"top_p": "x"}, "top_p"),
        (np.ones(4, dtype=np.float32), {"min_p": 1e39}, "min_p"),
    ],
)
def test_more_filter_arguments_are_checked(row, kwargs, name):
    with pytest.raises(ValueError, match=name):
        topnsigma.filter(row, **kwargs)


def test_nan_and_negative_floats_are_row_errors_not_argument_errors(fixture_rows):
    """A NaN or negative temperature / n is the library's to judge: that row fails with its
    message, the others sample (the design's "other rows of the batch are unaffected")."""
    sampler = topnsigma.Sampler(vocab_size=VOCAB, max_batch=ROWS, threads=1)
    r = sampler.sample(fixture_rows[:ROWS], temperature=[1.0, NAN, 1.0, 1.0], n_sigma=[1.0, 1.0, -1.0, NAN],
                       seed=5)
    assert r.errors[0] is None
    assert "temperature" in r.errors[1]
    assert r.errors[2] is not None and r.errors[3] is not None
    assert r.status.tolist()[1:] != [0, 0, 0] and r.status[0] == 0
    assert r.tokens[0] == sampler.sample(fixture_rows[:1], seed=5).tokens[0]


def test_per_row_spellings_agree(fixture_rows):
    """Lists, tuples, ranges, NumPy arrays of any integer or float type, object arrays, and None
    entries in optional filters: the same records as the scalar call."""
    rows = fixture_rows[:ROWS]
    sampler = topnsigma.Sampler(vocab_size=VOCAB, max_batch=ROWS, threads=1)
    expected = sampler.sample(rows, seed=9, step=2, temperature=0.9, top_k=50, top_p=0.95).tokens.tolist()
    for kwargs in [
        {"seed": [9] * 4, "step": (2, 2, 2, 2)},
        {"seed": np.full(4, 9, dtype=np.int8), "step": np.full(4, 2, dtype=np.uint16)},
        {"seed": np.array([9] * 4, dtype=object), "step": [np.int64(2)] * 4},
        {"temperature": np.full(4, 0.9, dtype=np.float32), "top_k": [50, 50, np.uint8(50), 50]},
        {"temperature": [0.9] * 4, "top_p": np.array([0.95] * 4, dtype=object)},
        {"top_k": np.full(4, 50, dtype=np.uint64), "top_p": [np.float32(0.95)] * 4},
    ]:
        arguments = {"seed": 9, "step": 2, "temperature": 0.9, "top_k": 50, "top_p": 0.95, **kwargs}
        assert sampler.sample(rows, **arguments).tokens.tolist() == expected, kwargs
    # None entries (object arrays included) turn a filter off in their row only.
    both = sampler.sample(rows, seed=3, n_sigma=None, top_k=np.array([1, None, 1, None], dtype=object))
    assert both.kept.tolist()[0] == 1 and both.kept[1] > 1 and both.kept[2] == 1 and both.kept[3] > 1
    off = sampler.sample(rows, seed=3, n_sigma=None)
    assert both.tokens[1] == off.tokens[1] and both.tokens[3] == off.tokens[3]
    assert sampler.sample(rows, seed=range(4), step=range(4)).errors == [None] * 4


def test_reused_buffers_follow_every_change(fixture_rows):
    """The sampler reuses its parameter and step buffers between calls (and skips refilling what
    is unchanged): every sequence of scalar / per-row arguments and batch sizes gives what a fresh
    sampler gives."""
    sampler = topnsigma.Sampler(vocab_size=VOCAB, max_batch=8, threads=1)

    def fresh(logits, **kwargs):
        return topnsigma.Sampler(vocab_size=VOCAB, max_batch=8, threads=1).sample(logits, **kwargs)

    calls = [
        (8, {"seed": 1, "step": 0}),
        (2, {"seed": 1, "step": 0}),
        (8, {"seed": 1, "step": 0}),                        # more rows than last filled
        (4, {"seed": [5, 6, 7, 8], "step": [1, 2, 3, 4]}),  # per-row
        (8, {"seed": 1, "step": 0}),                        # back to the scalar record
        (8, {"seed": 1, "step": 0, "top_k": 1}),
        (8, {"seed": 1, "step": 0}),
        (8, {"seed": 1, "step": 0, "temperature": 1}),      # int 1 == 1.0: the same record
        (8, {"seed": 1, "step": 5}),
        (3, {"seed": 1, "step": 5}),
        (8, {"seed": 1, "step": 5}),
        (8, {"seed": 1, "step": np.arange(8, dtype=np.uint64)}),
        (8, {"seed": 1, "step": 5}),
        (0, {"seed": 1, "step": 5}),
        (8, {"seed": np.uint64(1), "step": np.int32(5), "n_sigma": np.float16(1)}),
        (8, {"seed": 2**64 - 1, "step": 2**64 - 1, "temperature": INF}),
    ]
    for rows, kwargs in calls:
        logits = fixture_rows[:rows]
        got, want = sampler.sample(logits, **kwargs), fresh(logits, **kwargs)
        assert got.tokens.tolist() == want.tokens.tolist(), (rows, kwargs)
        assert got.kept.tolist() == want.kept.tolist(), (rows, kwargs)
        assert np.array_equal(got.logprobs, want.logprobs), (rows, kwargs)


def test_results_are_their_own(fixture_rows):
    """Each result owns its arrays: the next call on the sampler does not change them."""
    sampler = topnsigma.Sampler(vocab_size=VOCAB, max_batch=8, threads=1)
    first = sampler.sample(fixture_rows, seed=1)
    saved = [a.copy() for a in (first.tokens, first.logprobs, first.kept, first.status)]
    logits = fixture_rows.copy()
    logits[0, 0] = np.nan
    second = sampler.sample(logits, seed=2, step=7, temperature=0.5)
    assert second.errors[0] is not None and first.errors == [None] * 8
    for before, array in zip(saved, (first.tokens, first.logprobs, first.kept, first.status)):
        assert array.flags.owndata and np.array_equal(before, array)
    assert first.tokens.dtype == np.int64 and first.logprobs.dtype == np.float64
    assert first.kept.dtype == np.int64 and first.status.dtype == np.int32


def test_fast_path_inputs(fixture_rows):
    """Read-only, non-contiguous, padded and empty logits (each outside the fast pointer path)
    give the same tokens as a plain C-contiguous array."""
    sampler = topnsigma.Sampler(vocab_size=VOCAB, max_batch=8, threads=1)
    expected = sampler.sample(fixture_rows, seed=4, step=1).tokens.tolist()
    read_only = np.frombuffer(fixture_rows.tobytes(), dtype=np.float32).reshape(8, VOCAB)
    assert not read_only.flags.writeable
    assert sampler.sample(read_only, seed=4, step=1).tokens.tolist() == expected
    assert sampler.sample(np.asfortranarray(fixture_rows)[:1].copy(order="C"), seed=4, step=1).tokens[0] == expected[0]
    assert sampler.sample(fixture_rows[:0], seed=4).tokens.shape == (0,)
    assert sampler.sample(fixture_rows[:0], seed=4).errors == []


def test_closed_sampler():
    sampler = topnsigma.Sampler(vocab_size=8, max_batch=1, threads=1)
    sampler.close()
    sampler.close()
    with pytest.raises(ValueError, match="closed"):
        sampler.sample(np.zeros((1, 8), np.float32))


# ---- Concurrency -----------------------------------------------------------------------------------


def test_a_busy_call_writes_nothing_shared(fixture_rows):
    """While a call runs (the lock held, as the running call holds it), another call raises
    RuntimeError and has written none of the buffers the running call reads."""
    sampler = topnsigma.Sampler(vocab_size=VOCAB, max_batch=8, threads=1)
    sampler.sample(fixture_rows, seed=1, step=0)
    buffers = (sampler._params, sampler._steps, sampler._tokens, sampler._logprobs, sampler._kept, sampler._status)
    before = [b.tobytes() for b in buffers]
    state = (sampler._record, sampler._filled, sampler._step, sampler._step_rows, sampler._rows, list(sampler._args))
    assert sampler._lock.acquire(blocking=False)
    try:
        for kwargs in [{"step": 777}, {"seed": [3] * 4, "step": [9] * 4, "temperature": 0.1, "top_k": 2},
                       {"seed": 2, "n_sigma": None, "top_p": 0.5}]:
            with pytest.raises(RuntimeError, match="busy|another call"):
                sampler.sample(fixture_rows[:4], **kwargs)
        # Bad arguments are still reported as such.
        with pytest.raises(ValueError, match="seed"):
            sampler.sample(fixture_rows, seed=1.5)
    finally:
        sampler._lock.release()
    assert [b.tobytes() for b in buffers] == before
    assert state == (sampler._record, sampler._filled, sampler._step, sampler._step_rows, sampler._rows,
                     list(sampler._args))


def test_concurrent_calls_never_change_the_running_calls_tokens(fixture_rows):
    """Two threads share a sampler. Thread 1 samples fixed inputs again and again and checks every
    token against the single-threaded result; thread 2 calls with other steps and parameters
    (scalar and per-row) while thread 1's calls run. Whichever call finds the other running gets
    RuntimeError; every call that runs returns exactly its own single-threaded tokens. (Before
    the fix, a refused call wrote the shared step and parameter buffers first: thread 1 got wrong
    tokens in about 2-10% of its calls.)"""
    sampler = topnsigma.Sampler(vocab_size=VOCAB, max_batch=8, threads=1)
    draws, calls_wanted = 4, 600
    expected = [sampler.sample(fixture_rows, seed=1, step=j).tokens.tolist() for j in range(draws)]
    others = [
        {"step": 777},
        {"seed": [11, 12, 13, 14, 15, 16, 17, 18], "step": np.arange(100, 108, dtype=np.uint64), "top_k": 3},
        {"seed": 2, "step": 778, "temperature": 0.5, "n_sigma": None, "top_p": 0.8},
    ]
    expected_other = [sampler.sample(fixture_rows, **kwargs).tokens.tolist() for kwargs in others]
    checked, wrong, wrong_other, busy, ran_other = [0], [], [], [0, 0], [0]
    stop = threading.Event()

    def first():
        calls = 0
        try:
            while calls < calls_wanted:
                j = calls % draws
                try:
                    tokens = sampler.sample(fixture_rows, seed=1, step=j).tokens.tolist()
                except RuntimeError:
                    busy[0] += 1  # thread 2's call was running: try again
                    time.sleep(0)
                    continue
                if tokens != expected[j]:
                    wrong.append((calls, j))
                calls += 1
                if calls % 30 == 0:
                    time.sleep(0.001)  # now and then, room for thread 2's calls to run
            checked[0] = calls
        finally:
            stop.set()

    def second():
        i = 0
        while not stop.is_set():
            k = i % len(others)
            i += 1
            try:
                tokens = sampler.sample(fixture_rows, **others[k]).tokens.tolist()
            except RuntimeError:
                busy[1] += 1
                time.sleep(0)  # give the GIL back: thread 1's call can return
                continue
            ran_other[0] += 1
            if tokens != expected_other[k]:
                wrong_other.append(k)
            time.sleep(0.0002)  # room for thread 1's next call

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert checked[0] == calls_wanted
    assert wrong == [] and wrong_other == []
    assert busy[0] + busy[1] > 0, "no call ever met a running one: the test proved nothing"
    # A last call on its own: the buffers are consistent after all of that.
    assert sampler.sample(fixture_rows, seed=1, step=1).tokens.tolist() == expected[1]


# ---- Build information -------------------------------------------------------------------------------


def test_build_info():
    info = topnsigma.build_info()
    assert set(info) >= {"features", "native", "library", "version"}
    features = info["features"]
    assert isinstance(features, list) and features and all(isinstance(f, str) and f for f in features)
    assert info["native"] is (not set(features) <= {"sse2", "neon", "generic"})
    assert info["library"] == os.path.abspath(topnsigma.library_path) and os.path.exists(info["library"])
    assert info["version"] == topnsigma.library_version()
    assert info["abi"] == topnsigma.abi_version() == 1
    if "avx512f" in features or "fma" in features:
        assert "avx2" in features and info["native"]
    # The library's own string, as it says it.
    raw = topnsigma._lib.tns_build_info().decode()
    assert raw.split() == features and raw == " ".join(features)
