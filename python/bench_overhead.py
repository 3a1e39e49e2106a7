#!/usr/bin/env python3
"""The Python package's own cost per call: topnsigma.Sampler.sample against the raw C call.

In one process, on one sampler (threads=1, a small vocabulary so the kernel's work is negligible):

  c_call   tns_sample through ctypes with every argument prebuilt (the same ctypes objects the
           package passes, buffers filled beforehand): what any Python caller pays at least
  sample   Sampler.sample(logits, temperature=1.0, n_sigma=1.0, seed=7, step=3) on the same logits
  overhead sample - c_call

and the same for calls with request processing, against tns_sample_processed with prebuilt
records: "grammar" (a bitmask array and repetition_penalty=1.1, as a grammar-constrained server
passes them) and "processed" (the same plus top_logprobs=5).

Each is timed over --iterations calls, --repeats times, interleaved; the figure is the fastest
repeat's mean (the least disturbed by the rest of the machine). The "plain", "grammar" and
"processed" cases (scalar arguments) are checked: the script prints FAIL and exits 1 when an overhead
exceeds --limit microseconds (3) at any batch size, unless --no-check. The "per-row" case
(per-row seed and step arrays, as a server passes them) and "history" (processed, plus one
output-token array per row) are printed for information only: their cost grows with the rows.

    python3 python/bench_overhead.py                  # B = 1 and 64, V = 64
    python3 python/bench_overhead.py --no-check --json overhead.json

Run from the repository, it imports the package source next to it (python/topnsigma) with the
library that scripts/install-python staged there (or TOPNSIGMA_LIBRARY); see the first line it
prints. This is a benchmark: no test asserts on its timings.
"""

import argparse
import ctypes
import gc
import json
import os
import platform
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import topnsigma  # noqa: E402


def raw_call(sampler, x, rows, temperature, n_sigma, seed, step):
    """tns_sample with every argument prebuilt: (function, argument list)."""
    params = np.zeros(rows, dtype=topnsigma._PARAMS_DTYPE)
    params["struct_size"] = params.dtype.itemsize
    params["flags"] = 1  # TNS_USE_N_SIGMA
    params["seed"] = seed
    params["temperature"] = temperature
    params["n_sigma"] = n_sigma
    steps = np.full(rows, step, dtype=np.uint64)
    outputs = [np.empty(rows, dtype=d) for d in (np.int64, np.float64, np.int64, np.int32)]
    function = topnsigma._lib["tns_sample"]
    function.restype = ctypes.c_int32
    pointer = ctypes.c_void_p
    args = [sampler._handle, pointer(x.ctypes.data), 0, ctypes.c_int64(rows), ctypes.c_int64(x.shape[1]),
            pointer(params.ctypes.data), pointer(steps.ctypes.data)] + [pointer(o.ctypes.data) for o in outputs]
    keep = (params, steps, outputs)  # alive as long as the arguments
    code = function(*args)
    if code != 0:
        raise SystemExit(f"bench_overhead.py: tns_sample returned {code}")
    return function, args, keep, outputs


def raw_processed_call(sampler, x, rows, mask, seed, step, top):
    """tns_sample_processed with every argument prebuilt, as "processed" calls it."""
    from topnsigma import _processing
    function, args, keep, outputs = raw_call(sampler, x, rows, 1.0, 1.0, seed, step)
    records = np.zeros(rows, dtype=_processing.PROCESSING_DTYPE)
    records[:] = _processing.DEFAULT_RECORD
    records["allowed"] = [mask.ctypes.data + r * mask.strides[0] for r in range(rows)]
    records["repetition_penalty"] = 1.1
    records["top_logprobs"] = 5 if top else -1
    processed = topnsigma._lib["tns_sample_processed"]
    processed.restype = ctypes.c_int32
    pointer = ctypes.c_void_p
    top_records = np.zeros(rows, dtype=_processing.TOP_LOGPROBS_DTYPE)
    full = args[:6] + [pointer(records.ctypes.data)] + args[6:] + [pointer(top_records.ctypes.data) if top else None]
    code = processed(*full)
    if code != 0:
        raise SystemExit(f"bench_overhead.py: tns_sample_processed returned {code}")
    return processed, full, (keep, records, top_records), outputs


def time_loop(body, iterations):
    gc_was = gc.isenabled()
    gc.disable()
    try:
        start = time.perf_counter_ns()
        body(iterations)
        return (time.perf_counter_ns() - start) / iterations / 1000.0
    finally:
        if gc_was:
            gc.enable()


def measure(vocab, rows, threads, iterations, repeats):
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, vocab)).astype(np.float32)
    sampler = topnsigma.Sampler(vocab_size=vocab, max_batch=rows, threads=threads)
    temperature, n_sigma, seed, step = 1.0, 1.0, 7, 3
    function, args, keep, outputs = raw_call(sampler, x, rows, temperature, n_sigma, seed, step)
    sample = sampler.sample
    seeds = np.full(rows, seed, dtype=np.uint64)
    steps = np.full(rows, step, dtype=np.uint64)

    # Same tokens both ways: the comparison is of equal work.
    plain = sample(x, temperature=temperature, n_sigma=n_sigma, seed=seed, step=step)
    if plain.tokens.tolist() != outputs[0].tolist() or plain.errors != [None] * rows:
        raise SystemExit("bench_overhead.py: Sampler.sample and tns_sample disagree")
    if sample(x, temperature=temperature, n_sigma=n_sigma, seed=seeds, step=steps).tokens.tolist() != plain.tokens.tolist():
        raise SystemExit("bench_overhead.py: per-row arguments give other tokens")

    mask = np.zeros((rows, (vocab + 31) // 32), dtype=np.int32)
    mask[:, 0] = -1  # ids 0-31 allowed
    processed_function, processed_args, processed_keep, processed_outputs = raw_processed_call(
        sampler, x, rows, mask, seed, step, True)
    grammar_function, grammar_args, grammar_keep, _ = raw_processed_call(sampler, x, rows, mask, seed, step, False)
    history = [np.arange(r % 7, dtype=np.int32) for r in range(rows)]
    processed = sample(x, seed=seed, step=step, allowed=mask, repetition_penalty=1.1, top_logprobs=5)
    if processed.tokens.tolist() != processed_outputs[0].tolist() or processed.errors != [None] * rows:
        raise SystemExit("bench_overhead.py: processed Sampler.sample and tns_sample_processed disagree")

    def c_call(n):
        for _ in range(n):
            function(*args)

    def c_processed(n):
        for _ in range(n):
            processed_function(*processed_args)

    def c_grammar(n):
        for _ in range(n):
            grammar_function(*grammar_args)

    def sample_grammar(n):
        for _ in range(n):
            sample(x, seed=7, step=3, allowed=mask, repetition_penalty=1.1)

    def sample_processed(n):
        for _ in range(n):
            sample(x, seed=7, step=3, allowed=mask, repetition_penalty=1.1, top_logprobs=5)

    def sample_history(n):
        for _ in range(n):
            sample(x, seed=7, step=3, allowed=mask, repetition_penalty=1.1, top_logprobs=5, output_tokens=history)

    def sample_plain(n):
        for _ in range(n):
            sample(x, temperature=1.0, n_sigma=1.0, seed=7, step=3)

    def sample_per_row(n):
        for _ in range(n):
            sample(x, temperature=1.0, n_sigma=1.0, seed=seeds, step=steps)

    cases = {"c_call": c_call, "plain": sample_plain, "per-row": sample_per_row, "c_grammar": c_grammar,
             "grammar": sample_grammar, "c_processed": c_processed, "processed": sample_processed,
             "history": sample_history}
    for body in cases.values():  # warm up
        body(max(1, iterations // 10))
    best = {name: float("inf") for name in cases}
    for _ in range(repeats):
        for name, body in cases.items():
            best[name] = min(best[name], time_loop(body, iterations))
    sampler.close()
    del keep, processed_keep, grammar_keep
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", default="1,64", help="comma-separated batch sizes (default 1,64)")
    parser.add_argument("--vocab", type=int, default=64, help="vocabulary size (default 64: the kernel is negligible)")
    parser.add_argument("--threads", type=int, default=1, help="the sampler's threads (default 1)")
    parser.add_argument("--iterations", type=int, default=2000, help="calls per timed loop (default 2000)")
    parser.add_argument("--repeats", type=int, default=15, help="timed loops per case; the fastest counts (default 15)")
    parser.add_argument("--limit", type=float, default=3.0, help="largest allowed plain-call overhead, µs (default 3)")
    parser.add_argument("--no-check", action="store_true", help="print the figures; never fail")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    args = parser.parse_args()
    try:
        batches = [int(b) for b in args.batches.split(",") if b.strip()]
    except ValueError:
        parser.error(f"--batches must be comma-separated integers, got {args.batches!r}")
    if not batches or min(batches) < 1 or args.vocab < 1 or args.iterations < 1 or args.repeats < 1:
        parser.error("--batches, --vocab, --iterations and --repeats must be positive")

    info = topnsigma.build_info()
    print(f"topnsigma {topnsigma.__file__}")
    print(f"library {info['library']} ({info['version']}, features: {' '.join(info['features'])}); "
          f"Python {platform.python_version()}, NumPy {np.__version__}")
    print(f"V = {args.vocab}, threads = {args.threads}, {args.iterations} calls x {args.repeats} repeats "
          f"(fastest repeat)")
    print(f"{'batch':>5}  {'case':<9} {'c_call µs':>10} {'sample µs':>10} {'overhead µs':>12}")
    results, failed = [], []
    for rows in batches:
        best = measure(args.vocab, rows, args.threads, args.iterations, args.repeats)
        for case in ("plain", "per-row", "grammar", "processed", "history"):
            base = {"plain": "c_call", "per-row": "c_call", "grammar": "c_grammar"}.get(case, "c_processed")
            overhead = best[case] - best[base]
            checked = case in ("plain", "grammar", "processed")
            mark = ""
            if checked and overhead > args.limit:
                failed.append((rows, case, overhead))
                mark = f"  > {args.limit:g} µs"
            print(f"{rows:>5}  {case:<9} {best[base]:>10.2f} {best[case]:>10.2f} {overhead:>12.2f}{mark}")
            results.append({"batch": rows, "case": case, "c_call_us": round(best[base], 3),
                            "sample_us": round(best[case], 3), "overhead_us": round(overhead, 3),
                            "checked": checked})
    ok = not failed
    if args.json:
        with open(args.json, "w") as out:
            json.dump({"vocab": args.vocab, "threads": args.threads, "iterations": args.iterations,
                       "repeats": args.repeats, "limit_us": args.limit, "pass": ok, "build": info,
                       "python": platform.python_version(), "numpy": np.__version__, "results": results},
                      out, indent=2)
            out.write("\n")
    if args.no_check:
        return 0
    if failed:
        print("FAIL: call overhead above " + f"{args.limit:g} µs at "
              + ", ".join(f"B={rows} {case} ({overhead:.2f} µs)" for rows, case, overhead in failed))
        return 1
    print(f"PASS: plain, grammar and processed call overhead at most {args.limit:g} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
