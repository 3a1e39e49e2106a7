"""examples/compare_samplers.py: a short run on the fixture rows (every request, batches 1 and 2),
its JSON, its input validation, and peers that cannot be imported. llama_cpp and torch are
optional: where they are missing they must be reported as skipped, never fail the run."""

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import FIXTURE, REPO

SCRIPT = os.path.join(REPO, "examples", "compare_samplers.py")
# The script as a module, for its request list (importing it runs nothing).
_spec = importlib.util.spec_from_file_location("compare_samplers", SCRIPT)
compare_samplers = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare_samplers)

FIELDS = {"request", "request_id", "params", "batch", "vocab", "rows", "logits", "method", "version", "threads",
          "rounds", "flush_mib", "us_per_row", "us_per_row_min", "speedup_vs_topnsigma", "skipped"}


def run(*arguments, env=None):
    environment = dict(os.environ, PYTHONIOENCODING="utf-8")
    environment.update(env or {})
    return subprocess.run([sys.executable, SCRIPT, *map(str, arguments)], capture_output=True, text=True,
                          encoding="utf-8", timeout=120, env=environment)


def test_fixture_run_prints_every_request_and_writes_json(tmp_path):
    out = tmp_path / "results.json"
    proc = run("--logits", FIXTURE, "--batches", "1,2", "--rounds", "2", "--json", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    for request in compare_samplers.REQUESTS:
        assert request.label in proc.stdout
    assert "batch 1 " in proc.stdout and "batch 2 " in proc.stdout

    records = json.loads(out.read_text(encoding="utf-8"))
    assert isinstance(records, list)
    requests = {r.id for r in compare_samplers.REQUESTS}
    methods = {"topnsigma", "llama.cpp", "numpy", "torch"}
    assert len(records) == len(requests) * 2 * len(methods)
    for record in records:
        assert FIELDS <= set(record), FIELDS - set(record)
        assert record["request_id"] in requests and record["method"] in methods
        assert record["batch"] in (1, 2) and record["vocab"] == 49152 and record["rounds"] == 2
        if record["skipped"] is None:
            us = record["us_per_row"]
            assert isinstance(us, float) and math.isfinite(us) and us > 0
            assert 0 < record["us_per_row_min"] <= us
            assert math.isfinite(record["speedup_vs_topnsigma"]) and record["speedup_vs_topnsigma"] > 0
        else:
            assert isinstance(record["skipped"], str) and record["skipped"]
            assert record["us_per_row"] is None and record["speedup_vs_topnsigma"] is None

    tns = [r for r in records if r["method"] == "topnsigma"]
    assert len(tns) == len(requests) * 2
    assert all(r["skipped"] is None and r["speedup_vs_topnsigma"] == 1.0 for r in tns)
    numpy_rows = [r for r in records if r["method"] == "numpy"]
    assert all(r["skipped"] is None for r in numpy_rows)  # NumPy is always there
    # The speedup is the peer's time over topnsigma's, for the same request and batch.
    base = {(r["request_id"], r["batch"]): r["us_per_row"] for r in tns}
    for r in records:
        if r["skipped"] is None:
            assert r["speedup_vs_topnsigma"] == pytest.approx(r["us_per_row"] / base[(r["request_id"], r["batch"])])
    # A peer that is not installed is named as skipped in the output.
    for name in ("llama.cpp", "torch"):
        if all(r["skipped"] for r in records if r["method"] == name):
            assert f"{name}: skipped" in proc.stdout


def test_missing_peers_are_skipped_not_fatal(tmp_path):
    # Shadow llama_cpp and torch with modules that fail to import.
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    for module in ("llama_cpp", "torch"):
        (hidden / f"{module}.py").write_text("raise ImportError('hidden by the test')\n")
    out = tmp_path / "results.json"
    proc = run("--logits", FIXTURE, "--batches", "1", "--rounds", "1", "--warmup", "0",
               "--requests", "greedy,top_n_sigma", "--json", out, env={"PYTHONPATH": str(hidden)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "llama.cpp: skipped" in proc.stdout and "torch: skipped" in proc.stdout
    records = json.loads(out.read_text(encoding="utf-8"))
    assert {r["request_id"] for r in records} == {"greedy", "top_n_sigma"}
    for r in records:
        if r["method"] in ("llama.cpp", "torch"):
            assert "hidden by the test" in r["skipped"] and r["us_per_row"] is None
        else:
            assert r["skipped"] is None and r["us_per_row"] > 0


def test_raw_file_and_repeated_rows(tmp_path, fixture_rows):
    raw = tmp_path / "rows.f32"
    fixture_rows[:2].astype("<f4").tofile(raw)
    out = tmp_path / "results.json"
    proc = run("--logits", raw, "--vocab", fixture_rows.shape[1], "--batches", "3", "--rounds", "1",
               "--peers", "numpy", "--requests", "greedy,top_k_1,min_p", "--json", out)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    records = json.loads(out.read_text(encoding="utf-8"))
    assert {(r["method"], r["batch"], r["rows"]) for r in records} == {("topnsigma", 3, 2), ("numpy", 3, 2)}
    assert all(r["us_per_row"] > 0 for r in records)


@pytest.mark.parametrize("arguments, message", [
    (["--logits", FIXTURE, "--vocab", "0"], "--vocab must be at least 1"),
    (["--logits", FIXTURE, "--vocab", "-5"], "--vocab must be at least 1"),
    (["--logits", FIXTURE, "--vocab", "1000"], "--vocab is 1000"),
    (["--vocab", "49152"], "--vocab goes with --logits"),
    (["--logits", FIXTURE, "--batches", "1,x"], "not an integer"),
    (["--logits", FIXTURE, "--batches", "0"], "outside"),
    (["--logits", FIXTURE, "--batches", ""], "comma-separated"),
    (["--logits", FIXTURE, "--batches", "1,,2"], "comma-separated"),
    (["--logits", "/nonexistent/logits.f32", "--vocab", "10"], "no such file"),
    (["--logits", FIXTURE, "--peers", "tensorflow"], "unknown peer"),
    (["--logits", FIXTURE, "--requests", "top_k_7"], "unknown id"),
    (["--logits", FIXTURE, "--rounds", "0"], "--rounds"),
])
def test_bad_input_exits_2_with_a_message(arguments, message):
    proc = run(*arguments)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr


def test_raw_file_size_must_be_a_multiple_of_the_row(tmp_path):
    raw = tmp_path / "ten.f32"
    np.arange(10, dtype="<f4").tofile(raw)
    proc = run("--logits", raw, "--vocab", "3")
    assert proc.returncode == 2
    assert "not a multiple of 4·V = 12" in proc.stderr and "Traceback" not in proc.stderr
    proc = run("--logits", raw)  # a raw file needs --vocab
    assert proc.returncode == 2 and "needs --vocab" in proc.stderr
    bad = tmp_path / "nan.f32"
    np.array([1, 2, np.nan, 4], dtype="<f4").tofile(bad)
    proc = run("--logits", bad, "--vocab", "2")
    assert proc.returncode == 2 and "must be finite" in proc.stderr
