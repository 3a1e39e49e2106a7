"""Every case of llama.cpp's tests/test-sampling.cpp for the samplers the package shares with it (top-k,
top-p, min-p, XTC, typical, temperature, dynamic temperature, top-nσ, p-less, and the sampler
queue; DRY's cases are in test_dry.py), through `topnsigma.filter` with llama.cpp's sentinels, and
through llama.cpp's own samplers (llama-cpp-python) where importable: both must give the test's
expected values."""

import ctypes
import math

import numpy as np
import pytest

import topnsigma

P4 = [0.1, 0.2, 0.3, 0.4]
P4_DESC = [0.4, 0.3, 0.2, 0.1]

# (ours: filter() arguments, llama.cpp sampler constructor name and arguments, probabilities, expected,
#  whether the expectation is renormalized (a `dist` follows in the test) or the raw kept p).
CASES = [
    ({"temperature": 1.0}, ("temp", 1.0), P4, P4, True),
    ({"temperature": 0.0}, ("temp", 0.0), P4, [0, 0, 0, 1.0], True),
    ({"temperature": 1.0, "dynatemp_range": 0.0, "dynatemp_exponent": 1.0}, ("temp_ext", 1.0, 0.0, 1.0), P4, P4, True),
    ({"temperature": 0.0, "dynatemp_range": 0.0, "dynatemp_exponent": 1.0}, ("temp_ext", 0.0, 0.0, 1.0), P4,
     [0, 0, 0, 1.0], True),
    ({"top_k": 1}, ("top_k", 1), P4, [1.0], True),
    ({"top_k": 3}, ("top_k", 3), P4, [0.44444, 0.33333, 0.22222], True),
    ({"top_k": 4}, ("top_k", 4), P4, [0.4, 0.3, 0.2, 0.1], True),
    ({"top_k": 0}, ("top_k", 0), P4, [0.1, 0.2, 0.3, 0.4], True),
    ({"top_p": 0.0}, ("top_p", 0.0, 0), P4, [1.0], True),
    ({"top_p": 0.7}, ("top_p", 0.7, 0), P4, [0.571429, 0.428571], True),
    ({"top_p": 0.8}, ("top_p", 0.8, 0), P4, [0.44444, 0.33333, 0.22222], True),
    ({"top_p": 1.0}, ("top_p", 1.0, 0), P4, [0.1, 0.2, 0.3, 0.4], True),
] + [
    ({"min_p": m}, ("min_p", m, 0), P4, expected, True)
    for m, expected in [(0.0, [0.1, 0.2, 0.3, 0.4]), (0.24, [0.1, 0.2, 0.3, 0.4]), (0.26, [0.2 / 0.9, 0.3 / 0.9, 0.4 / 0.9]),
                        (0.49, [0.2 / 0.9, 0.3 / 0.9, 0.4 / 0.9]), (0.51, [0.3 / 0.7, 0.4 / 0.7]),
                        (0.74, [0.3 / 0.7, 0.4 / 0.7]), (0.76, [1.0]), (1.0, [1.0]), (1.05, [1.0])]
] + [
    # XTC with llama.cpp's test probability 0.99 (ours at 1: the coin is ours); raw kept p.
    ({"xtc_threshold": t, "xtc_probability": 1.0}, ("xtc", 0.99, t, 0, 0), P4_DESC, expected, False)
    for t, expected in [(0.09, [0.1]), (0.19, [0.2, 0.1]), (0.29, [0.3, 0.2, 0.1]), (0.39, [0.4, 0.3, 0.2, 0.1])]
] + [
    ({"typical_p": 0.5}, ("typical", 0.5, 0), [0.97, 0.01, 0.01, 0.01], [0.97], False),
    ({"typical_p": 0.5}, ("typical", 0.5, 0), [0.4, 0.2, 0.2, 0.2], [0.2, 0.2, 0.2], False),
    ({"n_sigma": 1.0}, ("top_n_sigma", 1.0), P4, [0.0, 0.0, 0.428571, 0.571429], True),
    ({"n_sigma": 0.0}, ("top_n_sigma", 0.0), P4, P4, True),
    ({"n_sigma": 3.0}, ("top_n_sigma", 3.0), P4, P4, True),
    ({"p_less": True}, ("p_less",), [0.1, 0.15, 0.2, 0.25, 0.3], [0.45454545, 0.54545455], True),
    ({"p_less": True}, ("p_less",), [0.2] * 5, [0.2] * 5, True),
]


def _nonzero_sorted(values):
    return sorted(v for v in values if v > 0)


def _ours(arguments, probs, renormalized):
    row = np.log(np.array(probs, dtype=np.float32))
    arguments = dict(arguments)
    arguments.setdefault("n_sigma", None)
    out = topnsigma.filter(row, llama_cpp_sentinels=True, **arguments)
    if renormalized:
        return sorted(out["probabilities"].tolist())
    return sorted(probs[t] for t in out["kept"].tolist())


@pytest.mark.parametrize("arguments, llama_sampler, probs, expected, renormalized", CASES)
def test_case(arguments, llama_sampler, probs, expected, renormalized):
    assert _ours(arguments, probs, renormalized) == pytest.approx(_nonzero_sorted(expected), abs=1e-5)


@pytest.fixture(scope="module")
def llama():
    ll = pytest.importorskip("llama_cpp")
    if not hasattr(ll, "llama_sampler_apply"):
        pytest.skip("llama_cpp has no llama_sampler_apply")
    return ll


def _llama(ll, probs, sampler, renormalized):
    data = (ll.llama_token_data * len(probs))()
    for i, p in enumerate(probs):
        data[i].id, data[i].logit, data[i].p = i, math.log(p), p
    array = ll.llama_token_data_array(data=ctypes.cast(data, ll.llama_token_data_p), size=len(probs), selected=-1,
                                      sorted=False)
    for s in [sampler] + ([ll.llama_sampler_init_dist(0)] if renormalized else []):
        ll.llama_sampler_apply(s, ctypes.pointer(array))
        ll.llama_sampler_free(s)
    return sorted(array.data[i].p for i in range(array.size) if array.data[i].p > 0)


@pytest.mark.parametrize("arguments, llama_sampler, probs, expected, renormalized", CASES)
def test_case_against_llama_cpp(llama, arguments, llama_sampler, probs, expected, renormalized):
    name, *values = llama_sampler
    init = getattr(llama, f"llama_sampler_init_{name}", None)
    if init is None:
        pytest.skip(f"this llama-cpp-python has no llama_sampler_init_{name}")
    theirs = _llama(llama, probs, init(*values), renormalized)
    assert theirs == pytest.approx(_nonzero_sorted(expected), abs=1e-5)
    assert _ours(arguments, probs, renormalized) == pytest.approx(theirs, abs=1e-5)


QUEUE = [("k", 10000, 1.0, 1.0), ("k", 1, 1.0, 1.0), ("p", 10000, 1.0, 1.0), ("p", 10000, 0.0, 1.0),
         ("m", 10000, 1.0, 1.0), ("m", 10000, 1.0, 1e-12), ("k", 100, 1.0, 1.0), ("p", 10000, 0.0003, 1.0),
         ("p", 10000, 0.8, 1.0), ("m", 10000, 1.0, 9997.9 / 9999.0), ("m", 10000, 1.0, 0.1),
         ("kp", 100, 0.8, 0.1), ("km", 100, 0.8, 0.1), ("pk", 100, 0.8, 0.1), ("pm", 100, 0.8, 0.1),
         ("mk", 100, 0.8, 0.1), ("mp", 100, 0.8, 9997.9 / 9999.0), ("mp", 100, 0.8, 0.1), ("kpm", 100, 0.8, 0.1),
         ("kmp", 100, 0.8, 0.1), ("pkm", 100, 0.8, 0.1), ("pmk", 100, 0.8, 0.1), ("mkp", 100, 0.8, 0.1),
         ("mpk", 100, 0.8, 0.1)]


@pytest.mark.parametrize("sequence, top_k, top_p, min_p", QUEUE)
def test_sampler_queue(sequence, top_k, top_p, min_p):
    """llama.cpp's test_sampler_queue: logits log(id) over 10000 ids (id 0 is -inf: llama.cpp keeps
    it at probability 0 where a step reaches it, ours never keeps a -inf logit), the kept size and
    smallest id after each step by its formulas."""
    n = 10000
    with np.errstate(divide="ignore"):
        row = np.log(np.arange(n, dtype=np.float32))
    names = {"k": "top_k", "p": "top_p", "m": "min_p"}
    min_token, max_token = 0, n - 1
    for i, s in enumerate(sequence):
        order = ";".join(names[c] for c in sequence[: i + 1])
        kept = topnsigma.filter(row, n_sigma=None, top_k=top_k, top_p=top_p, min_p=min_p, samplers=order,
                                llama_cpp_sentinels=True)["kept"]
        size = kept.size
        if s == "k":
            expected = min(size, top_k)
            min_token = max(min_token, n - top_k)
        elif s == "p":
            divisor = n * (n - 1) // 2 - min_token * (min_token - 1) // 2
            target = math.ceil(np.float32(top_p) * np.float32(divisor))
            min_token, expected, total = n, 0, 0
            while True:
                min_token -= 1
                expected += 1
                total += min_token
                if total >= target:
                    break
            if min_token == 1:
                min_token -= 1
                expected += 1
        else:
            expected = min(max(math.ceil((1 - np.float32(min_p)) * n), 1), size)
            min_token = min(max(math.floor(np.float32(min_p) * n), 1, n - size), n - 1)
        zero = min_token == 0 and s != "k"
        assert size == expected - (1 if zero else 0), (sequence, s, size, expected)
        assert kept[-1] == max_token and kept[0] == max(min_token, 1), (sequence, s)
