"""Sampler orders (`samplers=`) and llama.cpp's sentinel values (`llama_cpp_sentinels=True`) through
the Python package: llama.cpp's tests/test-sampling.cpp cases for top-k, top-p, min-p, top-nσ and
temperature, a float64 NumPy chain, the argument forms, and llama.cpp's own chain
(llama-cpp-python) on the real rows when importable."""

import ctypes

import numpy as np
import pytest

import topnsigma

P4 = [0.1, 0.2, 0.3, 0.4]


def _probabilities(probs, **kwargs):
    """{token: probability} of filter() on the row log(probs), llama.cpp's sentinels on."""
    row = np.log(np.array(probs, dtype=np.float32))
    out = topnsigma.filter(row, llama_cpp_sentinels=True, **kwargs)
    return dict(zip(out["kept"].tolist(), out["probabilities"].tolist()))


# llama.cpp's tests/test-sampling.cpp: (arguments, expected probabilities in descending order).
LLAMA_CASES = [
    ({"n_sigma": None, "top_k": 1}, [1.0]),
    ({"n_sigma": None, "top_k": 3}, [0.44444, 0.33333, 0.22222]),
    ({"n_sigma": None, "top_k": 4}, [0.4, 0.3, 0.2, 0.1]),
    ({"n_sigma": None, "top_k": 0}, [0.4, 0.3, 0.2, 0.1]),
    ({"n_sigma": None, "top_p": 0.0}, [1.0]),
    ({"n_sigma": None, "top_p": 0.7}, [0.571429, 0.428571]),
    ({"n_sigma": None, "top_p": 0.8}, [0.44444, 0.33333, 0.22222]),
    ({"n_sigma": None, "top_p": 1.0}, [0.4, 0.3, 0.2, 0.1]),
    ({"n_sigma": None, "min_p": 0.0}, [0.4, 0.3, 0.2, 0.1]),
    ({"n_sigma": None, "min_p": 0.24}, [0.4, 0.3, 0.2, 0.1]),
    ({"n_sigma": None, "min_p": 0.26}, [0.4 / 0.9, 0.3 / 0.9, 0.2 / 0.9]),
    ({"n_sigma": None, "min_p": 0.49}, [0.4 / 0.9, 0.3 / 0.9, 0.2 / 0.9]),
    ({"n_sigma": None, "min_p": 0.51}, [0.4 / 0.7, 0.3 / 0.7]),
    ({"n_sigma": None, "min_p": 0.74}, [0.4 / 0.7, 0.3 / 0.7]),
    ({"n_sigma": None, "min_p": 0.76}, [1.0]),
    ({"n_sigma": None, "min_p": 1.0}, [1.0]),
    ({"n_sigma": None, "min_p": 1.05}, [1.0]),
    ({"n_sigma": 1.0}, [0.571429, 0.428571]),
    ({"n_sigma": 0.0}, [0.4, 0.3, 0.2, 0.1]),  # llama.cpp: n <= 0 is off
    ({"n_sigma": 3.0}, [0.4, 0.3, 0.2, 0.1]),
    ({"n_sigma": None, "temperature": 0.0}, [1.0]),
    ({"n_sigma": None, "temperature": 1.0, "dynatemp_range": 0.0}, [0.4, 0.3, 0.2, 0.1]),
]


@pytest.mark.parametrize("arguments, expected", LLAMA_CASES)
def test_llama_cpp_test_sampling_cases(arguments, expected):
    got = _probabilities(P4, **arguments)
    ranked = [got[t] for t in sorted(got, key=lambda t: -got[t])]
    assert ranked == pytest.approx(expected, abs=1e-5)


def test_sentinels_are_errors_without_the_flag():
    row = np.log(np.array(P4, dtype=np.float32))
    with pytest.raises(ValueError, match="top-k"):
        topnsigma.filter(row, n_sigma=None, top_k=0)
    with topnsigma.Sampler(vocab_size=4, max_batch=2) as s:
        r = s.sample(np.stack([row, row]), n_sigma=None, top_p=1.5, llama_cpp_sentinels=[True, False])
        assert r.errors[0] is None and "top-p" in r.errors[1]


def chain(row, order, temperature=1.0, top_k=None, top_p=None, min_p=None, n_sigma=None):
    """The float64 chain: each step over the (logit, id)-sorted survivors of the steps before it."""
    x = row.astype(np.float64)
    ids = np.lexsort((np.arange(x.size), -x))
    scale = 1.0
    steps = order.split(";")
    if "temperature" not in steps:
        steps.append("temperature")
    for s in steps:
        v = x[ids] * scale
        p = np.exp(v - v[0])
        p /= p.sum()
        if s == "top_k" and top_k is not None:
            ids = ids[:top_k]
        elif s == "top_p" and top_p is not None and top_p < 1:
            ids = ids[: int(np.searchsorted(np.cumsum(p), top_p) + 1)]
        elif s == "min_p" and min_p is not None:
            ids = ids[v - v[0] >= np.log(min_p)]
        elif s == "top_n_sigma" and n_sigma is not None and ids.size > 1:
            ids = ids[x[ids] >= x[ids[0]] - n_sigma * x[ids].std(ddof=1)]
        elif s == "temperature":
            scale = 1.0 / temperature
    return sorted(ids.tolist())


ORDERS = ["top_k;top_p;min_p;temperature", "top_p;top_k", "min_p;top_p", "temperature;top_p;min_p",
          "top_p;min_p;top_k;temperature", "top_n_sigma;top_k;top_p"]


@pytest.mark.parametrize("order", ORDERS)
def test_orders_match_the_float64_chain(fixture_rows, order):
    for r, row in enumerate(fixture_rows):
        for temperature, top_k, top_p, min_p in [(1.0, 40, 0.95, 0.05), (0.7, 200, 0.6, 0.01), (1.4, 20, 0.9, 0.2)]:
            got = topnsigma.filter(row, n_sigma=1.5, temperature=temperature, top_k=top_k, top_p=top_p,
                                   min_p=min_p, samplers=order)["kept"].tolist()
            assert got == chain(row, order, temperature, top_k, top_p, min_p, 1.5), (r, order, temperature)


def test_argument_forms():
    row = np.log(np.array(P4, dtype=np.float32))
    assert topnsigma.sampler_order("top_k;top_p") == 0x42
    assert topnsigma.sampler_order("penalties;dry;top_n_sigma;top_k;typ_p;top_p;min_p;xtc;temperature") == 0x7654321
    for bad, message in [("top_k;mirostat", "unknown sampler"), ("top_k;top_k", "listed twice"),
                         ("top_k;penalties", "before every truncation")]:
        with pytest.raises(ValueError, match=message):
            topnsigma.filter(row, samplers=bad)
    with pytest.raises(ValueError, match="samplers"):
        topnsigma.filter(row, samplers=3)
    with pytest.raises(ValueError, match="NUL"):
        topnsigma.sampler_order("top_k\0top_p")
    # The library's name table: aliases and separators as nsigma --samplers reads them.
    assert topnsigma.sampler_order(" Top-K , nucleus;temp ") == 0x742
    with topnsigma.Sampler(vocab_size=4, max_batch=2) as s:
        r = s.sample(np.stack([row, row]), n_sigma=None, top_k=2, top_p=0.5, samplers=["top_p;top_k", None])
        assert r.errors == [None, None] and r.kept.tolist() == [2, 1]


# ---- llama.cpp's own chain, when importable --------------------------------------------------------


@pytest.fixture(scope="module")
def llama():
    ll = pytest.importorskip("llama_cpp")
    for function in ("llama_sampler_init_top_k", "llama_sampler_init_top_p", "llama_sampler_init_min_p",
                     "llama_sampler_init_temp", "llama_sampler_apply", "llama_sampler_free"):
        if not hasattr(ll, function):
            pytest.skip(f"llama_cpp has no {function}")
    return ll


def _llama_chain(ll, row, order, temperature, top_k, top_p, min_p):
    data = (ll.llama_token_data * row.size)()
    for i, v in enumerate(row.tolist()):
        data[i].id, data[i].logit, data[i].p = i, v, 0.0
    array = ll.llama_token_data_array(data=ctypes.cast(data, ll.llama_token_data_p), size=row.size, selected=-1,
                                      sorted=False)
    make = {"top_k": lambda: ll.llama_sampler_init_top_k(top_k), "top_p": lambda: ll.llama_sampler_init_top_p(top_p, 1),
            "min_p": lambda: ll.llama_sampler_init_min_p(min_p, 1), "temperature": lambda: ll.llama_sampler_init_temp(temperature)}
    for step in order.split(";"):
        sampler = make[step]()
        ll.llama_sampler_apply(sampler, ctypes.pointer(array))
        ll.llama_sampler_free(sampler)
    return sorted(array.data[i].id for i in range(array.size))


@pytest.mark.parametrize("order", ["top_k;top_p;min_p;temperature", "top_p;top_k;temperature", "min_p;top_p;temperature",
                                   "top_p;min_p;temperature", "temperature;top_p;min_p"])
def test_orders_keep_llama_cpp_sets(llama, fixture_rows, order):
    # llama.cpp computes the softmax and min-p's cut in float32: a token within float32 rounding of a
    # cut may fall on the other side there. The sets agree on every row but such boundary tokens.
    exact = 0
    for r, row in enumerate(fixture_rows):
        for temperature, top_k, top_p, min_p in [(1.0, 40, 0.95, 0.05), (0.7, 200, 0.6, 0.02)]:
            ours = topnsigma.filter(row, n_sigma=None, temperature=temperature, top_k=top_k, top_p=top_p,
                                    min_p=min_p, samplers=order)["kept"].tolist()
            theirs = _llama_chain(llama, row, order, temperature, top_k, top_p, min_p)
            if ours == theirs:
                exact += 1
                continue
            differ = set(ours) ^ set(theirs)
            assert len(differ) <= 2, (r, order, sorted(differ))
    assert exact >= 14, exact
