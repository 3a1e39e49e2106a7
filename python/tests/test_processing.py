"""Request processing, top logprobs and speculative verification through the Python package:
against the Swift CLI (`nsigma sample`, `nsigma verify`) on the same inputs, and against a
float64 NumPy oracle of the processed distribution."""

import json
import threading
import time

import numpy as np
import pytest

import topnsigma

ROWS, V = 8, 49152
WORDS = (V + 31) // 32


def _masks(seed=5):
    """Row 0 all allowed, row 2 only 24 ids (33 and 39 among them), row 3 ids below 64, the rest
    about two thirds allowed."""
    rng = np.random.default_rng(seed)
    allowed = rng.random((ROWS, V)) < 2 / 3
    allowed[0] = True
    allowed[2] = False
    allowed[2, rng.choice(V, 22, replace=False)] = True
    allowed[2, [33, 39]] = True
    allowed[3] = False
    allowed[3, :64] = True
    bits = np.packbits(allowed.reshape(ROWS, WORDS, 32)[:, :, ::-1], axis=2).reshape(ROWS, WORDS, 4)
    # packbits is MSB-first per byte: reverse within each 32-bit word, then read big-endian bytes.
    words = bits.view(">u4").reshape(ROWS, WORDS).astype(np.uint32)
    return allowed, words


def _requests():
    bias = [{(r * 977 + 13) % V: 4.5, (r * 131 + 17) % V: -3.0, 33: 1.25} for r in range(ROWS)]
    prompt = [[(r * 7919 + i * 104729) % 2000 for i in range(6)] + [33] for r in range(ROWS)]
    output = [[(r * 31 + i * 97) % 500 for i in range(5)] + [39, 39, 33] for r in range(ROWS)]
    return bias, prompt, output


def _processed_oracle(row, allowed, bias, prompt, output, repetition, frequency, presence):
    """The processed logits as the library defines them (README "Request processing"), in float32
    as it computes them, then float64 log_softmax at T = 1 over the allowed tokens."""
    x = row.astype(np.float32).copy()
    x[~allowed] = -np.inf
    for token, b in bias.items():
        x[token] = np.float32(x[token] + np.float32(b))
    seen = set(prompt) | set(output)
    counts = {}
    for t in output:
        counts[t] = counts.get(t, 0) + 1
    for t in seen:
        v = x[t]
        if repetition != 1:
            v = np.float32(v / np.float32(repetition)) if v > 0 else np.float32(v * np.float32(repetition))
        if t in counts:
            v = np.float32(np.float32(v - np.float32(frequency) * np.float32(counts[t])) - np.float32(presence))
        x[t] = v
    x[~allowed] = -np.inf
    z = x.astype(np.float64)
    m = z[np.isfinite(z)].max()
    return z - (m + np.log(np.exp(z[np.isfinite(z)] - m).sum()))


def test_processing_equals_nsigma_sample(fixture_rows, nsigma, tmp_path):
    allowed, words = _masks()
    bias, prompt, output = _requests()
    words.astype("<u4").tofile(tmp_path / "allowed.bin")
    (tmp_path / "bias.json").write_text(json.dumps([{str(k): v for k, v in b.items()} for b in bias]))
    (tmp_path / "history.json").write_text(json.dumps([{"prompt": p, "output": o} for p, o in zip(prompt, output)]))
    draws = 3
    code, lines = nsigma(
        "sample", "--logits", _save(fixture_rows, tmp_path), "--seed", 7,
        "--draws", draws, "--temperature", 0.8, "--allowed", tmp_path / "allowed.bin",
        "--logit-bias", tmp_path / "bias.json", "--history", tmp_path / "history.json",
        "--repetition-penalty", 1.3, "--frequency-penalty", 0.4, "--presence-penalty", 0.25, "--top-logprobs", 5)
    assert code == 0 and len(lines) == ROWS
    with topnsigma.Sampler(vocab_size=V, max_batch=ROWS, threads=2) as s:
        for j in range(draws):
            r = s.sample(fixture_rows, temperature=0.8, seed=7, step=j, allowed=words, logit_bias=bias,
                         prompt_tokens=prompt, output_tokens=output, repetition_penalty=1.3,
                         frequency_penalty=0.4, presence_penalty=0.25, top_logprobs=5)
            assert r.errors == [None] * ROWS
            for row, line in enumerate(lines):
                assert r.tokens[row] == line["tokens"][j]
                assert r.logprobs[row] == pytest.approx(line["logprobs"][j], rel=1e-12, abs=1e-12)
                assert r.kept[row] == line["kept"]
                assert [t for t, _ in r.top_logprobs[row]] == [t for t, _ in line["top_logprobs"]]
                # The processed logprobs' vector exp differs between the native build (Python) and a
                # portable CLI: both within the library's 1e-6 bound of float64.
                np.testing.assert_allclose([lp for _, lp in r.top_logprobs[row]],
                                           [lp for _, lp in line["top_logprobs"]], rtol=0, atol=1e-6)
                assert r.sampled_logprobs[row] == pytest.approx(line["sampled_logprobs"][j], rel=0, abs=1e-6)
                assert r.ranks[row] == line["ranks"][j]
                assert allowed[row, r.tokens[row]]


def _save(rows, tmp_path):
    path = tmp_path / "rows.npy"
    np.save(path, rows)
    return path


def test_top_logprobs_match_a_float64_oracle(fixture_rows):
    allowed, words = _masks(seed=11)
    bias, prompt, output = _requests()
    with topnsigma.Sampler(vocab_size=V, max_batch=ROWS, threads=1) as s:
        r = s.sample(fixture_rows, seed=3, allowed=words, logit_bias=bias, prompt_tokens=prompt,
                     output_tokens=output, repetition_penalty=1.2, frequency_penalty=0.3, presence_penalty=0.1,
                     top_logprobs=20)
    assert r.errors == [None] * ROWS
    for row in range(ROWS):
        lp = _processed_oracle(fixture_rows[row], allowed[row], bias[row], prompt[row], output[row], 1.2, 0.3, 0.1)
        order = np.lexsort((np.arange(V), -lp))[:20]
        got = r.top_logprobs[row]
        assert len(got) == min(20, int(allowed[row].sum()))
        assert [t for t, _ in got] == [int(t) for t in order[: len(got)]]
        np.testing.assert_allclose([p for _, p in got], lp[order[: len(got)]], atol=1e-6)
        t = r.tokens[row]
        assert r.sampled_logprobs[row] == pytest.approx(lp[t], abs=1e-6)
        assert r.ranks[row] == int(np.sum(lp >= lp[t]))


def test_rows_without_processing_are_untouched_and_asking_is_per_row(fixture_rows):
    with topnsigma.Sampler(vocab_size=V, max_batch=ROWS) as s:
        plain = s.sample(fixture_rows, seed=9, step=4)
        per_row = s.sample(fixture_rows, seed=9, step=4, top_logprobs=[None, 3] * 4,
                           logit_bias=[None] * ROWS, output_tokens=[[]] * ROWS)
    np.testing.assert_array_equal(plain.tokens, per_row.tokens)
    np.testing.assert_array_equal(plain.logprobs, per_row.logprobs)
    assert plain.top_logprobs == [None] * ROWS
    assert [x is None for x in per_row.top_logprobs] == [True, False] * 4
    assert all(len(x) == 3 for x in per_row.top_logprobs[1::2])
    assert np.isnan(per_row.sampled_logprobs[0::2]).all() and (per_row.ranks[0::2] == 0).all()
    assert (per_row.ranks[1::2] >= 1).all()


def test_a_one_token_mask_forces_the_token(fixture_rows):
    words = np.zeros((ROWS, WORDS), dtype=np.int32)  # llguidance's dtype
    forced = [5, 77, 4095, 49151, 0, 31, 32, 12345]
    for r, t in enumerate(forced):
        words[r, t // 32] = np.int32(np.uint32(1 << (t % 32)).view(np.int32))
    with topnsigma.Sampler(vocab_size=V, max_batch=ROWS) as s:
        for step in range(3):
            r = s.sample(fixture_rows, seed=1, step=step, allowed=words)
            assert list(r.tokens) == forced
            assert np.all(r.kept == 1) and np.allclose(r.logprobs, 0)


def test_a_bitmask_refilled_in_place_is_read_again(fixture_rows):
    """A server refills one bitmask array each step: every call reads its current words, in place
    or (for a strided array) through a copy made per call."""
    storage = np.zeros((ROWS, 2 * WORDS), dtype=np.int32)
    for words in (storage[:, :WORDS], storage[:, ::2]):  # row-strided, and column-strided (copied)
        with topnsigma.Sampler(vocab_size=V, max_batch=ROWS) as s:
            for t in (7, 1000, 49000):
                words[:] = 0
                words[:, t // 32] = np.int32(np.uint32(1 << (t % 32)).view(np.int32))
                r = s.sample(fixture_rows, seed=1, allowed=words, repetition_penalty=1.1)
                assert list(r.tokens) == [t] * ROWS


def test_invalid_processing_fails_its_row_alone(fixture_rows):
    with topnsigma.Sampler(vocab_size=V, max_batch=ROWS) as s:
        r = s.sample(fixture_rows, logit_bias=[{V: 1.0}] + [None] * 7,
                     repetition_penalty=[1.0, 0.0, 1, 1, 1, 1, 1, 1], output_tokens=[[], [], [-3]] + [[]] * 5)
    assert r.errors[0] is not None and str(V) in r.errors[0]
    assert r.errors[1] is not None and r.errors[2] is not None
    assert r.errors[3:] == [None] * 5


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"allowed": [[1, 2]]}, "allowed"),
        ({"allowed": np.zeros((ROWS, WORDS), dtype=np.int64)}, "allowed"),
        ({"allowed": np.zeros((ROWS, WORDS - 1), dtype=np.int32)}, "allowed"),
        ({"allowed": np.zeros((ROWS - 1, WORDS), dtype=np.int32)}, "allowed"),
        ({"logit_bias": [{1: 2.0}] * (ROWS - 1)}, "logit_bias"),
        ({"logit_bias": [{1.5: 2.0}] + [None] * 7}, "logit_bias"),
        ({"logit_bias": [{2**40: 2.0}] + [None] * 7}, "logit_bias"),
        ({"logit_bias": [{1: "x"}] + [None] * 7}, "logit_bias"),
        ({"logit_bias": [[1, 2]] + [None] * 7}, "logit_bias"),
        ({"prompt_tokens": [[1, 2.5]] + [[]] * 7}, "prompt_tokens"),
        ({"output_tokens": [[2**31]] + [[]] * 7}, "output_tokens"),
        ({"output_tokens": [[True]] + [[]] * 7}, "output_tokens"),
        ({"output_tokens": [[1]]}, "output_tokens"),
        ({"repetition_penalty": "1"}, "repetition_penalty"),
        ({"frequency_penalty": [0.1] * 3}, "frequency_penalty"),
        ({"presence_penalty": 1e300}, "presence_penalty"),
        ({"top_logprobs": 21}, "top_logprobs"),
        ({"top_logprobs": 2.0}, "top_logprobs"),
        ({"top_logprobs": -1}, "top_logprobs"),
        ({"top_logprobs": [1] * 3}, "top_logprobs"),
    ],
)
def test_processing_arguments_are_checked(fixture_rows, kwargs, name):
    with topnsigma.Sampler(vocab_size=V, max_batch=ROWS) as s:
        with pytest.raises(ValueError, match=name):
            s.sample(fixture_rows, **kwargs)


# ---- Speculative verification ------------------------------------------------------------------

REQUESTS, K = 4, 1
DRAFT_TOKENS = np.array([[33], [1398], [39], [12]])
DRAFT_Q = np.array([[0.5], [0.9], [0.05], [0.3]])


def _dense_drafts():
    q = np.zeros((REQUESTS, K, V), dtype=np.float32)
    sparse = []
    for r in range(REQUESTS):
        entries = {int(DRAFT_TOKENS[r, 0]): float(DRAFT_Q[r, 0]), (r * 4099 + 33) % V: 0.2, 39: 0.1 if r != 2 else 0.0}
        for t, p in entries.items():
            q[r, 0, t] = p
        sparse.append([{t: float(np.float32(p)) for t, p in entries.items()}])
    return q, sparse


def _cli_verify(nsigma, fixture_rows, tmp_path, dense):
    drafts = [{"tokens": [int(t) for t in DRAFT_TOKENS[r]], "q": [float(x) for x in DRAFT_Q[r]]}
              for r in range(REQUESTS)]
    (tmp_path / "drafts.json").write_text(json.dumps(drafts))
    extra = []
    if dense is not None:
        dense.astype("<f4").tofile(tmp_path / "q.f32")
        extra = ["--draft-probs", tmp_path / "q.f32"]
    code, lines = nsigma("verify", "--logits", _save(fixture_rows, tmp_path), "--k", K, "--drafts",
                         tmp_path / "drafts.json", *extra, "--seed", 3, "--trials", 4)
    assert code == 0 and len(lines) == REQUESTS * 4
    return {(line["request"], line["trial"]): line for line in lines}


def test_verify_equals_nsigma_verify(fixture_rows, nsigma, tmp_path):
    dense, sparse = _dense_drafts()
    expected_dense = _cli_verify(nsigma, fixture_rows, tmp_path, dense)
    expected_point = _cli_verify(nsigma, fixture_rows, tmp_path, None)
    target = fixture_rows.reshape(REQUESTS, K + 1, V)
    accepted_any = rejected_any = False
    with topnsigma.Sampler(vocab_size=V, max_batch=REQUESTS) as s:
        for trial in range(4):
            for distributions, expected in ((dense, expected_dense), (sparse, expected_dense),
                                            (None, expected_point)):
                v = s.verify(target, DRAFT_TOKENS, DRAFT_Q, draft_distributions=distributions, seed=3, step=trial)
                assert v.errors == [None] * REQUESTS
                for r in range(REQUESTS):
                    line = expected[(r, trial)]
                    assert v.accepted[r] == line["accepted"]
                    assert list(v.tokens[r]) == line["tokens"]
                    np.testing.assert_allclose(v.logprobs[r], line["logprobs"], rtol=1e-12, atol=1e-12)
                    accepted_any |= v.accepted[r] == K
                    rejected_any |= v.accepted[r] < K
    assert accepted_any and rejected_any


def test_verify_errors_fail_their_request(fixture_rows):
    target = fixture_rows.reshape(REQUESTS, K + 1, V).copy()
    target[2, 1, 17] = np.nan
    tokens = DRAFT_TOKENS.copy()
    tokens[1, 0] = V
    with topnsigma.Sampler(vocab_size=V, max_batch=REQUESTS) as s:
        v = s.verify(target, tokens, DRAFT_Q)
    assert v.errors[0] is None and v.errors[3] is None
    assert "draft" in v.errors[1] and str(V) in v.errors[1]
    assert "NaN" in v.errors[2] and "17" in v.errors[2]
    assert v.accepted[1] == -1 and len(v.tokens[1]) == 0


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"draft_tokens": np.zeros((REQUESTS, 2), dtype=np.int64)}, "draft_tokens"),
        ({"draft_tokens": np.full((REQUESTS, K), 1.5)}, "draft_tokens"),
        ({"draft_probs": np.zeros((REQUESTS, 2))}, "draft_probs"),
        ({"draft_probs": np.array([["a"]] * REQUESTS)}, "draft_probs"),
        ({"draft_distributions": np.zeros((REQUESTS, K, V - 1), dtype=np.float32)}, "draft_distributions"),
        ({"draft_distributions": [[{1: 0.5}]] * (REQUESTS - 1)}, "draft_distributions"),
        ({"draft_distributions": [[{1.5: 0.5}]] * REQUESTS}, "draft_distributions"),
        ({"draft_distributions": [[{1: None}]] * REQUESTS}, "draft_distributions"),
        ({"target_logits": np.zeros((REQUESTS * (K + 1) + 1, V), dtype=np.float32)}, "target_logits"),
        ({"seed": -1}, "seed"),
        ({"step": 1.5}, "step"),
    ],
)
def test_verify_arguments_are_checked(fixture_rows, kwargs, name):
    arguments = {"target_logits": fixture_rows.reshape(REQUESTS, K + 1, V), "draft_tokens": DRAFT_TOKENS,
                 "draft_probs": DRAFT_Q}
    arguments.update(kwargs)
    with topnsigma.Sampler(vocab_size=V, max_batch=REQUESTS) as s:
        with pytest.raises(ValueError, match=name):
            s.verify(**arguments)


def test_a_busy_processing_call_leaves_the_running_call_alone(fixture_rows):
    """Thread 1 samples with processing and checks every token against the single-threaded
    result; thread 2 calls concurrently with other processing and gets RuntimeError when busy."""
    allowed, words = _masks()
    bias, prompt, output = _requests()
    other = np.zeros_like(words)
    other[:, 0] = 1  # only token 0
    with topnsigma.Sampler(vocab_size=V, max_batch=ROWS, threads=1) as s:
        expected = [s.sample(fixture_rows, seed=1, step=j, allowed=words, logit_bias=bias, output_tokens=output,
                             repetition_penalty=1.3, top_logprobs=2) for j in range(4)]
        wrong, busy, stop = [], [0], threading.Event()

        def first():
            done = 0
            while done < 40:
                j = done % 4
                try:
                    r = s.sample(fixture_rows, seed=1, step=j, allowed=words, logit_bias=bias, output_tokens=output,
                                 repetition_penalty=1.3, top_logprobs=2)
                except RuntimeError:
                    continue  # thread 2's call was running: try again
                if list(r.tokens) != list(expected[j].tokens) or list(r.top_logprobs) != list(expected[j].top_logprobs):
                    wrong.append(done)
                done += 1
            stop.set()

        def second():
            while not stop.is_set():
                time.sleep(0.0005)  # leave thread 1 room to start its calls
                try:
                    s.sample(fixture_rows, step=777, allowed=other, logit_bias=[{5: 9.0}] * ROWS,
                             prompt_tokens=prompt, repetition_penalty=2.0, top_logprobs=7)
                except RuntimeError:
                    busy[0] += 1

        threads = [threading.Thread(target=first), threading.Thread(target=second)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert wrong == []
    assert busy[0] > 0
