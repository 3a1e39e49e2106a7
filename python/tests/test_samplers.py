"""The other samplers (typical, ε, η, XTC, dynamic temperature, p-less) through the Python package:
kept sets against a NumPy float64 oracle written from the README's definitions, per-row arguments,
argument checks, and, where llama-cpp-python is importable, against llama.cpp's own samplers."""

import ctypes

import numpy as np
import pytest

import topnsigma


def _probabilities(x, temperature):
    y = (x - x.max()) / temperature
    e = np.exp(y)
    return e / e.sum()


def _entropy(p):
    q = p[p > 0]
    return float(-(q * np.log(q)).sum())


def oracle(row, temperature=1.0, typical_p=None, epsilon=None, eta=None, xtc_threshold=None, p_less=False):
    """The kept ids (ascending) of one row with no other filter, in float64: ε, η and p-less over the
    whole row (the maximum always stays), then typical-p, then XTC at probability 1."""
    x = row.astype(np.float64)
    ids = np.arange(x.size)
    p = _probabilities(x, temperature)
    keep = np.ones(x.size, dtype=bool)
    if epsilon is not None:
        keep &= p > epsilon
    if eta is not None:
        keep &= p > min(eta, np.sqrt(eta) * np.exp(-_entropy(p)))
    if p_less:
        keep &= p >= (p * p).sum()
    keep |= x == x.max()
    kept = ids[keep]
    # Key order: higher logit first, then lower id.
    def key_order(subset):
        return subset[np.lexsort((subset, -x[subset]))]

    if typical_p is not None and typical_p < 1 and kept.size > 1:
        q = _probabilities(x[kept], temperature)
        distance = np.abs(-np.log(q) - _entropy(q))
        order = np.lexsort((kept, -x[kept], distance))
        mass = np.cumsum(q[order])
        kept = np.sort(kept[order[: int(np.searchsorted(mass, typical_p)) + 1]])
    if xtc_threshold is not None and kept.size > 1:
        ordered = key_order(kept)
        q = _probabilities(x[ordered], temperature)
        above = ordered[q >= xtc_threshold]
        if above.size >= 2:
            kept = np.sort(np.concatenate([ordered[q < xtc_threshold], above[-1:]]))
    return kept.tolist()


CASES = [
    {"epsilon": 0.001}, {"epsilon": 0.0003, "temperature": 2.0}, {"eta": 0.002}, {"eta": 0.0009, "temperature": 0.7},
    {"p_less": True}, {"p_less": True, "temperature": 3.0}, {"typical_p": 0.5}, {"typical_p": 0.95, "temperature": 1.5},
    {"xtc_threshold": 0.1}, {"xtc_threshold": 0.02, "temperature": 2.0},
    {"epsilon": 0.0001, "typical_p": 0.9, "xtc_threshold": 0.05, "temperature": 0.9},
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
def test_filter_matches_float64_oracle(fixture_rows, case):
    for r, row in enumerate(fixture_rows):
        got = topnsigma.filter(row, n_sigma=None, **case)["kept"].tolist()
        assert got == oracle(row, **case), f"row {r}"


def test_dynamic_temperature_probabilities(fixture_rows):
    # The draw's log-probability is at the dynamic temperature: T0 + (T1 - T0)·(H / ln N)^x over the
    # kept set (here top-k 20), rounded to float32.
    row = fixture_rows[2]
    sampler = topnsigma.Sampler(vocab_size=row.size, max_batch=1, threads=1)
    result = sampler.sample(row[None, :], temperature=0.8, n_sigma=None, top_k=20, dynatemp_range=0.5,
                            dynatemp_exponent=2.0, seed=3)
    x = row.astype(np.float64)
    kept = np.argsort(-x, kind="stable")[:20]
    q = _probabilities(x[kept], 1.0)
    low, high = 0.3, 1.3
    temperature = float(np.float32(low + (high - low) * (_entropy(q) / np.log(20)) ** 2.0))
    p = _probabilities(x[kept], temperature)
    token = int(result.tokens[0])
    assert token in kept.tolist()
    assert result.logprobs[0] == pytest.approx(np.log(p[kept.tolist().index(token)]), abs=1e-6)
    assert result.kept[0] == 20


def test_per_row_arguments_and_xtc_coin(fixture_rows):
    rows = fixture_rows[:4]
    sampler = topnsigma.Sampler(vocab_size=rows.shape[1], max_batch=4, threads=1)
    per_row = dict(typical_p=[0.9, None, 0.5, None], epsilon=[None, 0.001, None, 0.0005],
                   p_less=[False, True, False, True], xtc_threshold=[0.1, None, None, 0.05],
                   xtc_probability=[0.5, 1.0, 1.0, 1.0], dynatemp_range=[None, None, 0.5, 0.2])
    for step in range(12):
        batch = sampler.sample(rows, n_sigma=None, seed=11, step=step, **per_row)
        for r in range(4):
            alone = sampler.sample(rows[r:r + 1], n_sigma=None, seed=11, step=step,
                                   **{k: v[r] for k, v in per_row.items()})
            assert batch.tokens[r] == alone.tokens[0] and batch.kept[r] == alone.kept[0], (step, r)
            assert batch.logprobs[r] == alone.logprobs[0]
    # XTC at probability 0.5: the kept count of row 0 follows the coin (Philox stream 3), both ways.
    counts = {int(sampler.sample(rows[:1], n_sigma=None, seed=11, step=s, xtc_threshold=0.1,
                                 xtc_probability=0.5).kept[0]) for s in range(40)}
    assert len(counts) == 2


@pytest.mark.parametrize("argument, value, message", [
    ("typical_p", 1.5, "typical-p"), ("epsilon", 1.0, "epsilon"), ("eta", -0.1, "eta"),
    ("xtc_threshold", 2.0, "xtc-threshold"), ("dynatemp_range", float("inf"), "dynatemp-range"),
])
def test_out_of_range_values_fail_the_row(fixture_rows, argument, value, message):
    sampler = topnsigma.Sampler(vocab_size=fixture_rows.shape[1], max_batch=2, threads=1)
    result = sampler.sample(fixture_rows[:2], **{argument: [value, None]})
    assert result.errors[0] is not None and result.errors[1] is None
    with pytest.raises(ValueError):
        topnsigma.filter(fixture_rows[0], **{argument: value})


@pytest.mark.parametrize("arguments, name", [
    ({"typical_p": "0.5"}, "typical_p"), ({"epsilon": [0.1] * 3}, "epsilon"), ({"p_less": 1}, "p_less"),
    ({"p_less": [True, 1]}, "p_less"), ({"xtc_probability": None, "xtc_threshold": 1e39}, "xtc_threshold"),
    ({"dynatemp_exponent": b"1"}, "dynatemp_exponent"),
])
def test_argument_kinds_raise_value_error_naming_them(fixture_rows, arguments, name):
    sampler = topnsigma.Sampler(vocab_size=fixture_rows.shape[1], max_batch=2, threads=1)
    with pytest.raises(ValueError, match=name):
        sampler.sample(fixture_rows[:2], **arguments)


# ---- llama.cpp's own samplers (llama-cpp-python), when importable ------------------------------------


@pytest.fixture(scope="module")
def llama():
    llama_cpp = pytest.importorskip("llama_cpp")
    for function in ("llama_sampler_init_typical", "llama_sampler_init_xtc", "llama_sampler_init_temp_ext",
                     "llama_sampler_apply", "llama_sampler_free"):
        if not hasattr(llama_cpp, function):
            pytest.skip(f"llama_cpp has no {function}")
    return llama_cpp


def _llama_apply(ll, sampler, row):
    """Applies one llama.cpp sampler to a row's {id, logit, p} array; the kept (id, p) pairs."""
    element = ll.llama_token_data
    data = (element * row.size)()
    for i, v in enumerate(row.tolist()):
        data[i].id, data[i].logit, data[i].p = i, v, 0.0
    array = ll.llama_token_data_array(data=ctypes.cast(data, ll.llama_token_data_p), size=row.size, selected=-1,
                                      sorted=False)
    ll.llama_sampler_apply(sampler, ctypes.pointer(array))
    kept = [(array.data[i].id, array.data[i].p, array.data[i].logit) for i in range(array.size)]
    ll.llama_sampler_free(sampler)
    return kept


@pytest.mark.parametrize("p", [0.2, 0.5, 0.9, 0.95])
def test_typical_keeps_llama_cpp_set(llama, fixture_rows, p):
    # llama.cpp computes the probabilities, the entropy, the distances and the running mass in
    # float32 (and keeps until the mass exceeds p): on rows whose set holds hundreds of tokens, the
    # tokens at the boundary distance may then differ. Ours is the float64 definition; the sets must
    # agree except for tokens within float32 rounding of the boundary distance.
    exact = 0
    for r, row in enumerate(fixture_rows):
        theirs = sorted(i for i, _, _ in _llama_apply(llama, llama.llama_sampler_init_typical(p, 1), row))
        ours = topnsigma.filter(row, n_sigma=None, typical_p=p)["kept"].tolist()
        assert ours == oracle(row, typical_p=p)
        if ours == theirs:
            exact += 1
            continue
        q = _probabilities(row.astype(np.float64), 1.0)
        distance = np.abs(-np.log(q) - _entropy(q))
        boundary = distance[ours].max()
        slack = 1e-5 * max(1.0, boundary)
        # Each token's running mass in the typical order: at the cut, within float32's sum error of p.
        ids = np.arange(row.size)
        order = np.lexsort((ids, -row.astype(np.float64), distance))
        running = np.empty(row.size)
        running[order] = np.cumsum(q[order])
        differ = set(ours) ^ set(theirs)
        assert all(abs(distance[i] - boundary) <= slack or abs(running[i] - p) <= 2e-4 for i in differ), \
            f"row {r}: {sorted(differ)}"
        assert abs(q[theirs].sum() - q[ours].sum()) < 1e-3, f"row {r}"
    assert exact >= len(fixture_rows) // 2


@pytest.mark.parametrize("threshold", [0.05, 0.1, 0.2])
def test_xtc_keeps_llama_cpp_set(llama, fixture_rows, threshold):
    for r, row in enumerate(fixture_rows):
        expected = sorted(i for i, _, _ in _llama_apply(llama, llama.llama_sampler_init_xtc(1.0, threshold, 1, 7), row))
        assert topnsigma.filter(row, n_sigma=None, xtc_threshold=threshold)["kept"].tolist() == expected, f"row {r}"


@pytest.mark.parametrize("temperature, spread, exponent", [(1.0, 0.5, 1.0), (0.8, 0.3, 2.0)])
def test_dynamic_temperature_matches_llama_cpp(llama, fixture_rows, temperature, spread, exponent):
    # llama.cpp's temp_ext rescales the logits by the dynamic temperature and leaves the softmax in p:
    # the same distribution as ours with top-k 64 before it (llama.cpp's top_k, then temp_ext).
    for row in fixture_rows:
        top = np.argsort(-row.astype(np.float64), kind="stable")[:64]
        sub = row[np.sort(top)]
        theirs = {int(np.sort(top)[i]): p for i, p, _ in
                  _llama_apply(llama, llama.llama_sampler_init_temp_ext(temperature, spread, exponent), sub)}
        ours = topnsigma.filter(row, n_sigma=None, top_k=64, temperature=temperature, dynatemp_range=spread,
                                dynatemp_exponent=exponent)
        assert ours["kept"].tolist() == sorted(theirs)
        for token, probability in zip(ours["kept"].tolist(), ours["probabilities"].tolist()):
            assert probability == pytest.approx(theirs[token], abs=2e-5)
