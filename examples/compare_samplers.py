#!/usr/bin/env python3
"""Times the topnsigma package against the samplers people use on the CPU, on the same rows of
logits, one core each: llama.cpp's sampler chain (llama-cpp-python), a NumPy implementation and
vLLM's native torch path.

    examples/compare_samplers.py [--logits PATH --vocab V] [--batches 1,8,64] [--json PATH]
                                 [--rounds N] [--warmup N] [--peers llama.cpp,numpy,torch]
                                 [--requests ID,ID,...] [--flush-mib N]

Methods (each given the same [batch, vocab] float32 rows; every one on one core: the OMP / MKL /
OpenBLAS thread counts are set to 1 before NumPy loads, torch.set_num_threads(1), and
topnsigma.Sampler(threads=1)):

  topnsigma   topnsigma.Sampler.sample on the whole batch, the Python wrapper included.
  llama.cpp   llama-cpp-python's low-level bindings: one llama_sampler_chain per request, in
              llama.cpp's own order (top_n_sigma, top_k, top_p, min_p, temp, dist; greedy is
              llama_sampler_init_greedy), applied with llama_sampler_apply to each row's
              llama_token_data_array. The {id, logit, p} arrays are built outside the timer, and
              since the samplers modify them, they are rebuilt (copied) untimed before each call:
              only the llama_sampler_apply calls are timed. temp is left out at T = 1 (a no-op
              pass). Requests llama.cpp cannot express (Top-nσ without
              llama_sampler_init_top_n_sigma) are skipped. Note llama.cpp applies top-p and min-p
              before the temperature, the others after it; the cost is what is compared here.
  numpy       a straightforward vectorized implementation: logits / T, Top-nσ mask (max − n·std),
              top-k via argpartition, exp(logits − max) (softmax; its normalization is folded into
              the draw), min-p, top-p via a full sort + cumsum, inverse-CDF draw.
  torch       vLLM's native CPU path (where `import torch` works): logits.div_(T), min-p as vLLM's
              MinP logits processor, apply_top_k_top_p (sort-based; topk-only when there is no
              top-p), softmax, and the exponential race argmax(probs / Exponential(1)). Top-nσ
              (not a vLLM native sampler) is the same mask in torch.

A peer that cannot be imported (or fails) is reported as skipped and the others still run.

Requests (the --requests ids): greedy (T=0), top_n_sigma (n=1, T=1), min_p (0.05, T=1),
llama_default (top-k 40, top-p 0.95, min-p 0.05, T=0.8: llama.cpp's defaults), temp_0.7 and
temp_1 (plain sampling), top_k_1 / top_k_50 / top_k_1000 (T=1), top_p_0.5 / top_p_0.9 /
top_p_0.95 / top_p_0.99 (T=1).

Timing: rounds are interleaved, each round times every method once on every (batch, request),
the method and request orders rotating, so machine drift hits all methods alike; `--warmup` untimed rounds
come first. The reported time is the median over rounds of (call time / batch), in µs per row;
the speedup is peer_time / topnsigma_time (> 1: topnsigma is faster). Caches are as the
previous call left them (llama.cpp's arrays were just rebuilt, so they are warm); --flush-mib N
rewrites N MiB right before every timed call so that every method starts cold. Every sampled token is
also checked (in range; greedy and top-k 1 give the argmax; Top-nσ, min-p and top-k tokens lie
in their set); a violation is reported and the script exits with status 1.

Logits: --logits PATH is a raw float32 file (little-endian, no header) of rows of --vocab V
logits, or a .npy array (the vocabulary is its last dimension; --vocab, when given, must match).
By default the real SmolLM2-135M rows smollm2-135m-logits.f32 (128 × 49152) are read from
$TOPNSIGMA_DATA (that file, or a folder holding it), ../shared/data/ or shared/data/ (relative to
the repository root), else the test fixture Tests/TopNSigmaTests/Fixtures/smollm2-135m-8rows.npy,
else synthetic rows. Only the first max(batches) rows are used; a batch larger than the rows
available repeats them. Logits must be finite. Bad input (a file whose size is not a multiple of
4·V, V < 1, a bad batch list, ...) is reported with exit status 2.

--json PATH writes a list with one object per (request, batch, method):
  request               the request's label, as in the printed table (e.g. "top-k 50, T=1")
  request_id            its --requests id (e.g. "top_k_50")
  params                {"temperature", "n_sigma", "top_k", "top_p", "min_p"} (null: off)
  batch                 rows per call
  vocab                 logits per row
  rows                  distinct rows of logits used (a larger batch repeats them)
  logits                where the rows came from
  method                "topnsigma", "llama.cpp", "numpy" or "torch"
  version               the method's library version
  threads               1
  rounds                timed rounds (the number of samples behind the median)
  flush_mib             --flush-mib (0: caches not flushed before the timed calls)
  us_per_row            median µs per row (null when skipped)
  us_per_row_min        fastest round's µs per row (null when skipped)
  speedup_vs_topnsigma  us_per_row / topnsigma's us_per_row for the same request and batch
                        (1.0 for topnsigma itself; null when skipped)
  skipped               null, or why this method did not run this request
"""

import os

# One core for every library; set before NumPy (and its BLAS) loads. (Not when imported: then
# NumPy is usually loaded already, and the importer's environment is its own.)
if __name__ == "__main__":
    for _variable in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
                      "NUMEXPR_NUM_THREADS", "BLIS_NUM_THREADS"):
        os.environ[_variable] = "1"

import argparse  # noqa: E402
import ctypes  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_NAME = "smollm2-135m-logits.f32"
DATA_VOCAB = 49152
FIXTURE = os.path.join(REPO, "Tests", "TopNSigmaTests", "Fixtures", "smollm2-135m-8rows.npy")
MAX_BATCH = 4096
MAX_BATCH_BYTES = 1 << 30  # one batch of float32 logits
SEED = 1234
PEERS = ("llama.cpp", "numpy", "torch")


_FLUSH = []  # --flush-mib: a buffer rewritten before every timed call


def flush_caches():
    """With --flush-mib N: rewrite N MiB right before a timer starts, so every method starts with
    cold caches (as after a model's forward pass). Untimed."""
    for buffer in _FLUSH:
        np.add(buffer, 1, out=buffer)


class InputError(Exception):
    """Bad command-line input: reported without a traceback, exit status 2."""


# ---- Requests ---------------------------------------------------------------------------------


class Request:
    __slots__ = ("id", "label", "temperature", "n_sigma", "top_k", "top_p", "min_p")

    def __init__(self, id, label, temperature, n_sigma=None, top_k=None, top_p=None, min_p=None):
        self.id, self.label, self.temperature = id, label, float(temperature)
        self.n_sigma, self.top_k, self.top_p, self.min_p = n_sigma, top_k, top_p, min_p

    def params(self):
        return {"temperature": self.temperature, "n_sigma": self.n_sigma, "top_k": self.top_k,
                "top_p": self.top_p, "min_p": self.min_p}


REQUESTS = [
    Request("greedy", "greedy, T=0", 0.0),
    Request("top_n_sigma", "Top-nσ n=1, T=1", 1.0, n_sigma=1.0),
    Request("min_p", "min-p 0.05, T=1", 1.0, min_p=0.05),
    Request("llama_default", "llama.cpp defaults: top-k 40, top-p 0.95, min-p 0.05, T=0.8", 0.8,
            top_k=40, top_p=0.95, min_p=0.05),
    Request("temp_0.7", "plain T=0.7", 0.7),
    Request("temp_1", "plain T=1", 1.0),
    Request("top_k_1", "top-k 1, T=1", 1.0, top_k=1),
    Request("top_k_50", "top-k 50, T=1", 1.0, top_k=50),
    Request("top_k_1000", "top-k 1000, T=1", 1.0, top_k=1000),
    Request("top_p_0.5", "top-p 0.5, T=1", 1.0, top_p=0.5),
    Request("top_p_0.9", "top-p 0.9, T=1", 1.0, top_p=0.9),
    Request("top_p_0.95", "top-p 0.95, T=1", 1.0, top_p=0.95),
    Request("top_p_0.99", "top-p 0.99, T=1", 1.0, top_p=0.99),
]


# ---- Logits -------------------------------------------------------------------------------------


def _is_npy(path):
    if path.lower().endswith(".npy"):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(6) == b"\x93NUMPY"
    except OSError:
        return False


def read_logits(path, vocab, limit):
    """(rows, total): the first `limit` rows [n, V] of float32 logits of a raw float32 file or a
    .npy, and how many rows the file holds."""
    if vocab is not None and vocab < 1:
        raise InputError(f"--vocab must be at least 1, got {vocab}")
    if not os.path.exists(path):
        raise InputError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputError(f"{path} is a folder, not a file of logits")
    if _is_npy(path):
        with open(path, "rb") as f:
            if f.read(6) != b"\x93NUMPY":
                raise InputError(f"{path}: not a .npy file (no .npy header); a raw float32 file needs another name")
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as error:  # a damaged or unsupported .npy
            raise InputError(f"{path}: cannot read it as .npy ({error})") from None
        if array.dtype.kind != "f":
            raise InputError(f"{path}: logits must be floating point, the array holds {array.dtype}")
        if array.ndim == 0 or array.size == 0:
            raise InputError(f"{path}: the array is empty")
        if array.ndim == 1:
            if vocab is None:
                raise InputError(f"{path}: a 1-D array needs --vocab V")
            if array.size % vocab:
                raise InputError(f"{path}: {array.size} logits are not a whole number of rows of --vocab {vocab}")
            array = array.reshape(-1, vocab)
        else:
            array = array.reshape(-1, array.shape[-1])
            if vocab is not None and array.shape[1] != vocab:
                raise InputError(f"{path}: rows have {array.shape[1]} logits, but --vocab is {vocab}")
        rows = np.array(array[:limit], dtype=np.float32)
        total = array.shape[0]
    else:
        if vocab is None:
            raise InputError(f"{path}: a raw float32 file needs --vocab V (logits per row)")
        size = os.path.getsize(path)
        if size == 0:
            raise InputError(f"{path} is empty")
        if size % (4 * vocab):
            raise InputError(f"{path}: its size, {size} bytes, is not a multiple of 4·V = {4 * vocab} "
                             f"(rows of {vocab} float32 logits)")
        total = size // (4 * vocab)
        count = min(total, limit)
        rows = np.fromfile(path, dtype="<f4", count=count * vocab).astype(np.float32).reshape(count, vocab)
    bad = ~np.isfinite(rows)
    if bad.any():
        r, i = map(int, np.argwhere(bad)[0])
        raise InputError(f"{path}: logit {i} of row {r} is {rows[r, i]}; logits must be finite")
    return rows, total


def synthetic_logits(rows, vocab=DATA_VOCAB, seed=7):
    """LLM-like rows: a broad normal body and a few dominant tokens."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 3.0, size=(rows, vocab)).astype(np.float32)
    for r in range(rows):
        top = rng.choice(vocab, size=8, replace=False)
        x[r, top] += rng.uniform(8.0, 20.0, size=8).astype(np.float32)
    return x


def default_logits(limit):
    """(rows, total, description): the SmolLM2 rows, the fixture, or synthetic rows."""
    candidates = []
    env = os.environ.get("TOPNSIGMA_DATA")
    if env:
        candidates.append(os.path.join(env, DATA_NAME) if os.path.isdir(env) else env)
    candidates += [os.path.join(REPO, "..", "shared", "data", DATA_NAME), os.path.join(REPO, "shared", "data", DATA_NAME)]
    notes = []
    for path in candidates + [FIXTURE]:
        if not os.path.isfile(path):
            continue
        try:
            rows, total = read_logits(path, None if _is_npy(path) else DATA_VOCAB, limit)
            return rows, total, os.path.normpath(path)
        except InputError as error:
            notes.append(str(error))
    for note in notes:
        print(f"note: skipping {note}", file=sys.stderr)
    rows = min(limit, 64)
    return synthetic_logits(rows), rows, f"synthetic ({rows} rows, seed 7)"


def parse_batches(text):
    parts = [p.strip() for p in text.split(",")]
    if not text.strip() or any(not p for p in parts):
        raise InputError(f"--batches must be a comma-separated list of positive integers, got {text!r}")
    batches = []
    for p in parts:
        try:
            b = int(p)
        except ValueError:
            raise InputError(f"--batches: {p!r} is not an integer") from None
        if not 1 <= b <= MAX_BATCH:
            raise InputError(f"--batches: {b} is outside 1 ... {MAX_BATCH}")
        if b not in batches:
            batches.append(b)
    return batches


# ---- Methods ------------------------------------------------------------------------------------


class Skip(Exception):
    """This method cannot run this request."""


class TopNSigmaMethod:
    name = "topnsigma"

    def __init__(self, vocab, max_batch):
        import topnsigma

        self.version = topnsigma.library_version()
        self.sampler = topnsigma.Sampler(vocab_size=vocab, max_batch=max_batch, threads=1)
        self.seeds = np.arange(1000, 1000 + max_batch, dtype=np.uint64)

    def prepare(self, x):
        pass

    def run(self, request, x, step):
        seeds = self.seeds[: x.shape[0]]
        flush_caches()
        t0 = time.perf_counter()
        result = self.sampler.sample(x, temperature=request.temperature, n_sigma=request.n_sigma, seed=seeds, step=step,
                                     top_k=request.top_k, top_p=request.top_p, min_p=request.min_p)
        t1 = time.perf_counter()
        failed = [e for e in result.errors if e]
        if failed:
            raise RuntimeError(f"topnsigma: {failed[0]}")
        return t1 - t0, result.tokens


def numpy_sample(x, request, rng):
    """One token per row of x [B, V] float32, vectorized over the batch."""
    rows, vocab = x.shape
    if request.temperature == 0:
        return x.argmax(axis=1)
    z = x / np.float32(request.temperature)
    masked = np.float32(-np.inf)
    if request.n_sigma is not None:
        top = z.max(axis=1, keepdims=True)
        sigma = z.std(axis=1, ddof=1, keepdims=True)
        z[z < top - np.float32(request.n_sigma) * sigma] = masked
    if request.top_k is not None and request.top_k < vocab:
        k = request.top_k
        largest = np.argpartition(z, vocab - k, axis=1)[:, vocab - k:]
        kth = np.take_along_axis(z, largest, axis=1).min(axis=1, keepdims=True)
        z[z < kth] = masked
    # Softmax numerators; the largest is exactly 1, the masked ones 0.
    p = np.exp(z - z.max(axis=1, keepdims=True))
    if request.min_p is not None:
        p[p < np.float32(request.min_p)] = 0
    if request.top_p is not None and request.top_p < 1:
        ordered = np.sort(p, axis=1)[:, ::-1]
        cumulative = np.cumsum(ordered, axis=1)
        before = cumulative - ordered  # mass strictly before each sorted token
        count = np.count_nonzero(before < np.float32(request.top_p) * cumulative[:, -1:], axis=1)
        cut = ordered[np.arange(rows), count - 1][:, None]
        p[p < cut] = 0
    # Inverse CDF (the normalization is the scale of u).
    cdf = np.cumsum(p, axis=1)
    u = rng.random((rows, 1), dtype=np.float32) * cdf[:, -1:]
    return np.minimum(np.count_nonzero(cdf <= u, axis=1), vocab - 1)


class NumpyMethod:
    name = "numpy"

    def __init__(self, vocab, max_batch):
        self.version = np.__version__
        self.rng = np.random.default_rng(SEED)

    def prepare(self, x):
        pass

    def run(self, request, x, step):
        flush_caches()
        t0 = time.perf_counter()
        tokens = numpy_sample(x, request, self.rng)
        t1 = time.perf_counter()
        return t1 - t0, tokens


class TorchMethod:
    """vLLM's native (non-FlashInfer) sampling path, as on the CPU."""

    name = "torch"

    def __init__(self, vocab, max_batch):
        import torch

        torch.set_num_threads(1)
        self.torch = torch
        self.version = torch.__version__
        self.generator = torch.Generator().manual_seed(SEED)
        self.source = None
        self.work = None

    def prepare(self, x):
        self.source = self.torch.from_numpy(x)
        self.work = self.torch.empty_like(self.source)

    # vLLM's apply_top_k_top_p and apply_top_k_only (v1/sample/ops/topk_topp_sampler.py).
    def _top_k_top_p(self, logits, k, p):
        torch = self.torch
        if p is None:
            if k is None:
                return logits
            return self._top_k_only(logits, k)
        logits_sort, logits_idx = logits.sort(dim=-1, descending=False)
        if k is not None:
            top_k_mask = logits_sort.size(1) - k.to(torch.long)
            top_k_mask = logits_sort.gather(1, top_k_mask.unsqueeze(dim=1))
            top_k_mask = logits_sort < top_k_mask
            logits_sort.masked_fill_(top_k_mask, -float("inf"))
        probs_sort = logits_sort.softmax(dim=-1)
        probs_sum = torch.cumsum(probs_sort, dim=-1, out=probs_sort)
        top_p_mask = probs_sum <= 1 - p.unsqueeze(dim=1)
        top_p_mask[:, -1] = False
        logits_sort.masked_fill_(top_p_mask, -float("inf"))
        return logits.scatter(dim=-1, index=logits_idx, src=logits_sort)

    def _top_k_only(self, logits, k):
        no_top_k_mask = k == logits.shape[1]
        k = k.masked_fill(no_top_k_mask, 1)
        max_top_k = int(k.max())
        k_index = k.sub_(1).unsqueeze(1)
        top_k_mask = logits.topk(max_top_k, dim=1).values.gather(1, k_index.long())
        top_k_mask.masked_fill_(no_top_k_mask.unsqueeze(1), -float("inf"))
        logits.masked_fill_(logits < top_k_mask, -float("inf"))
        return logits

    def run(self, request, x, step):
        torch = self.torch
        rows, vocab = x.shape
        # The batch state vLLM keeps between steps: per-row parameter tensors (untimed).
        temperature = torch.full((rows,), request.temperature, dtype=torch.float32)
        k = None if request.top_k is None else torch.full((rows,), min(request.top_k, vocab), dtype=torch.long)
        p = None if request.top_p is None else torch.full((rows,), request.top_p, dtype=torch.float32)
        min_p = None if request.min_p is None else torch.full((rows, 1), request.min_p, dtype=torch.float32)
        logits = self.work[:rows]
        logits.copy_(self.source)  # vLLM samples its own logits tensor in place
        with torch.inference_mode():
            flush_caches()
            t0 = time.perf_counter()
            if request.temperature == 0:
                tokens = logits.argmax(dim=-1).view(-1)
            else:
                logits.div_(temperature.unsqueeze(dim=1))
                if request.n_sigma is not None:
                    top = logits.amax(dim=-1, keepdim=True)
                    sigma = logits.std(dim=-1, keepdim=True)
                    logits.masked_fill_(logits < top - request.n_sigma * sigma, -float("inf"))
                if min_p is not None:  # vLLM's MinPLogitsProcessor
                    probability_values = torch.nn.functional.softmax(logits, dim=-1)
                    max_probabilities = torch.amax(probability_values, dim=-1, keepdim=True)
                    adjusted_min_p = max_probabilities.mul_(min_p)
                    logits[probability_values < adjusted_min_p] = -float("inf")
                logits = self._top_k_top_p(logits, k, p)
                probs = logits.softmax(dim=-1, dtype=torch.float32)
                q = torch.empty_like(probs)
                q.exponential_(generator=self.generator)
                tokens = probs.div_(q).argmax(dim=-1).view(-1)
            t1 = time.perf_counter()
        return t1 - t0, tokens.numpy()


class LlamaCppMethod:
    name = "llama.cpp"

    def __init__(self, vocab, max_batch):
        import llama_cpp

        self.ll = llama_cpp
        self.version = getattr(llama_cpp, "__version__", "?")
        # Everything the timed loop touches must exist before anything runs.
        for function in ("llama_sampler_chain_init", "llama_sampler_chain_add", "llama_sampler_chain_default_params",
                         "llama_sampler_init_greedy", "llama_sampler_init_dist", "llama_sampler_init_top_k",
                         "llama_sampler_init_top_p", "llama_sampler_init_min_p", "llama_sampler_init_temp",
                         "llama_sampler_apply", "llama_sampler_free"):
            if not hasattr(llama_cpp, function):
                raise ImportError(f"llama_cpp {self.version} has no {function}")
        element = llama_cpp.llama_token_data
        self.dtype = np.dtype({"names": ["id", "logit", "p"], "formats": ["<i4", "<f4", "<f4"],
                               "offsets": [element.id.offset, element.logit.offset, element.p.offset],
                               "itemsize": ctypes.sizeof(element)})
        self.vocab = vocab
        self.chains = {}
        self.work = np.zeros((max_batch, vocab), dtype=self.dtype)
        self.arrays = (llama_cpp.llama_token_data_array * max_batch)()
        self.pointers = [ctypes.pointer(self.arrays[r]) for r in range(max_batch)]
        self.data = [ctypes.cast(ctypes.c_void_p(self.work[r].ctypes.data), llama_cpp.llama_token_data_p)
                     for r in range(max_batch)]
        self.templates = {}
        self.template = None

    def prepare(self, x):
        # Each row's {id, logit, p} array, built once per batch (untimed).
        key = (x.ctypes.data, x.shape)
        if key not in self.templates:
            template = np.empty(x.shape, dtype=self.dtype)
            template["id"] = np.arange(x.shape[1], dtype=np.int32)
            template["logit"] = x
            template["p"] = 0
            self.templates[key] = template
        self.template = self.templates[key]

    def chain(self, request):
        if request.id in self.chains:
            return self.chains[request.id]
        ll = self.ll
        if request.n_sigma is not None and not hasattr(ll, "llama_sampler_init_top_n_sigma"):
            raise Skip(f"llama_cpp {self.version} has no llama_sampler_init_top_n_sigma")
        params = ll.llama_sampler_chain_default_params()
        params.no_perf = True
        chain = ll.llama_sampler_chain_init(params)
        parts = []
        if request.temperature == 0:
            parts.append(ll.llama_sampler_init_greedy())
        else:
            # llama.cpp's order (common/sampling.cpp): top_n_sigma, top_k, top_p, min_p, temperature, dist.
            if request.n_sigma is not None:
                parts.append(ll.llama_sampler_init_top_n_sigma(request.n_sigma))
            if request.top_k is not None:
                parts.append(ll.llama_sampler_init_top_k(request.top_k))
            if request.top_p is not None:
                parts.append(ll.llama_sampler_init_top_p(request.top_p, 1))
            if request.min_p is not None:
                parts.append(ll.llama_sampler_init_min_p(request.min_p, 1))
            if request.temperature != 1:
                parts.append(ll.llama_sampler_init_temp(request.temperature))
            parts.append(ll.llama_sampler_init_dist(SEED))
        for part in parts:
            ll.llama_sampler_chain_add(chain, part)
        self.chains[request.id] = chain
        return chain

    def run(self, request, x, step):
        chain = self.chain(request)
        rows, vocab = x.shape
        # Fresh arrays for every row (the samplers sort, truncate and rewrite them): untimed.
        np.copyto(self.work[:rows], self.template)
        arrays = self.arrays
        for r in range(rows):
            a = arrays[r]
            a.data = self.data[r]
            a.size = vocab
            a.selected = -1
            a.sorted = False
        apply = self.ll.llama_sampler_apply
        pointers = self.pointers[:rows]
        flush_caches()
        t0 = time.perf_counter()
        for pointer in pointers:
            apply(chain, pointer)
        t1 = time.perf_counter()
        tokens = np.empty(rows, dtype=np.int64)
        for r in range(rows):
            a = arrays[r]
            if not 0 <= a.selected < a.size:
                raise RuntimeError(f"llama.cpp selected index {a.selected} of {a.size} candidates")
            tokens[r] = a.data[a.selected].id
        return t1 - t0, tokens

    def close(self):
        for chain in self.chains.values():
            self.ll.llama_sampler_free(chain)
        self.chains = {}


PEER_CLASSES = {"llama.cpp": LlamaCppMethod, "numpy": NumpyMethod, "torch": TorchMethod}
PEER_HINTS = {"llama.cpp": "pip install llama-cpp-python", "numpy": "pip install numpy", "torch": "pip install torch"}


# ---- Checks -------------------------------------------------------------------------------------


class RowFacts:
    """Float64 facts of a batch's rows, for checking sampled tokens."""

    def __init__(self, x):
        x64 = x.astype(np.float64)
        self.x = x64
        self.max = x64.max(axis=1)
        self.std = x64.std(axis=1, ddof=1) if x.shape[1] > 1 else np.zeros(x.shape[0])
        self._kth = {}

    def kth(self, k):
        if k not in self._kth:
            vocab = self.x.shape[1]
            self._kth[k] = np.partition(self.x, vocab - k, axis=1)[:, vocab - k] if k < vocab else self.x.min(axis=1)
        return self._kth[k]


def check_tokens(tokens, request, facts):
    """None, or what is wrong with these tokens."""
    tokens = np.asarray(tokens).reshape(-1)
    rows, vocab = facts.x.shape
    if tokens.shape[0] != rows:
        return f"{tokens.shape[0]} tokens for {rows} rows"
    if tokens.min() < 0 or tokens.max() >= vocab:
        return f"token out of range 0 ... {vocab - 1}: {tokens.tolist()}"
    chosen = facts.x[np.arange(rows), tokens.astype(np.int64)]
    scale = 1e-4 * (1 + np.abs(facts.max))
    limits = []
    if request.temperature == 0 or request.top_k == 1:
        limits.append(("the argmax", facts.max))
    if request.temperature > 0 and request.n_sigma is not None:
        limits.append((f"the Top-nσ set (max − {request.n_sigma}·std)", facts.max - request.n_sigma * facts.std))
    if request.temperature > 0 and request.min_p is not None and request.temperature == 1:
        limits.append((f"the min-p {request.min_p} set", facts.max + math.log(request.min_p)))
    if request.temperature > 0 and request.top_k is not None:
        limits.append((f"the top-{request.top_k} set", facts.kth(request.top_k)))
    for what, limit in limits:
        bad = np.nonzero(chosen < limit - scale)[0]
        if bad.size:
            r = int(bad[0])
            return f"row {r}: token {int(tokens[r])} (logit {chosen[r]:.4f}) is outside {what} (logit >= {limit[r]:.4f})"
    return None


# ---- Main ---------------------------------------------------------------------------------------


def parse_arguments(argv):
    parser = argparse.ArgumentParser(
        prog="compare_samplers.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Requests: " + ", ".join(r.id for r in REQUESTS))
    parser.add_argument("--logits", help="a raw float32 file of rows of --vocab V logits, or a .npy "
                                         "(default: the SmolLM2 rows, else the test fixture, else synthetic rows)")
    parser.add_argument("--vocab", type=int, help="logits per row of --logits (read from a .npy's shape)")
    parser.add_argument("--batches", default="1,8,64", help="comma-separated batch sizes (default 1,8,64)")
    parser.add_argument("--json", help="write every result to this file (a list of objects; see the docstring)")
    parser.add_argument("--rounds", type=int, default=9, help="timed rounds, the median is reported (default 9)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    parser.add_argument("--peers", default=",".join(PEERS),
                        help=f"comma-separated peers to time against topnsigma (default {','.join(PEERS)}; '' for none)")
    parser.add_argument("--requests", help="comma-separated request ids (default: all)")
    parser.add_argument("--flush-mib", type=int, default=0,
                        help="rewrite this many MiB before every timed call (untimed), so each method starts with "
                             "cold caches (default 0: off; e.g. 64)")
    args = parser.parse_args(argv)

    if args.vocab is not None and args.vocab < 1:
        raise InputError(f"--vocab must be at least 1, got {args.vocab}")
    if args.vocab is not None and not args.logits:
        raise InputError("--vocab goes with --logits PATH")
    if args.rounds < 1:
        raise InputError(f"--rounds must be at least 1, got {args.rounds}")
    if not 0 <= args.flush_mib <= 4096:
        raise InputError(f"--flush-mib must be in 0 ... 4096, got {args.flush_mib}")
    if args.warmup < 0:
        raise InputError(f"--warmup must be at least 0, got {args.warmup}")
    args.batch_list = parse_batches(args.batches)
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    for p in peers:
        if p not in PEER_CLASSES:
            raise InputError(f"--peers: unknown peer {p!r} (choose from {', '.join(PEERS)})")
    args.peer_list = list(dict.fromkeys(peers))
    if args.requests is None:
        args.request_list = list(REQUESTS)
    else:
        by_id = {r.id: r for r in REQUESTS}
        ids = [i.strip() for i in args.requests.split(",") if i.strip()]
        if not ids:
            raise InputError("--requests is empty")
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise InputError(f"--requests: unknown id {unknown[0]!r} (choose from {', '.join(by_id)})")
        args.request_list = [by_id[i] for i in dict.fromkeys(ids)]
    if args.json:
        folder = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(folder):
            raise InputError(f"--json: the folder {folder} does not exist")
        if os.path.isdir(args.json):
            raise InputError(f"--json: {args.json} is a folder")
    return args


def format_cell(us, speedup, width):
    if us is None:
        return "skipped".rjust(width)
    if speedup is None:
        return f"{us:.1f}".rjust(width)
    return f"{us:.1f} ({speedup:.1f}×)".rjust(width)


def main(argv=None):
    try:
        sys.stdout.reconfigure(errors="replace")
    except (AttributeError, ValueError):
        pass
    try:
        args = parse_arguments(argv)
        limit = max(args.batch_list)
        if args.logits:
            x_all, total_rows = read_logits(args.logits, args.vocab, limit)
            source = os.path.normpath(args.logits)
        else:
            x_all, total_rows, source = default_logits(limit)
        rows_available, vocab = x_all.shape
        if limit * vocab * 4 > MAX_BATCH_BYTES:
            raise InputError(f"a batch of {limit} rows of {vocab} logits takes over {MAX_BATCH_BYTES >> 20} MiB; "
                             "use smaller --batches")
    except InputError as error:
        print(f"compare_samplers.py: error: {error}", file=sys.stderr)
        return 2

    try:
        topnsigma_method = TopNSigmaMethod(vocab, limit)
    except ImportError as error:
        print(f"compare_samplers.py: error: cannot import topnsigma ({error}); install it with scripts/install-python",
              file=sys.stderr)
        return 1
    except ValueError as error:
        print(f"compare_samplers.py: error: {error}", file=sys.stderr)
        return 2

    if args.flush_mib:
        _FLUSH.append(np.zeros(args.flush_mib << 18, dtype=np.float32))
    methods = [topnsigma_method]
    skipped = {}  # method name -> why it did not run at all
    print(f"logits: {source}: {total_rows} rows of {vocab}, the first {rows_available} used"
          + (" (larger batches repeat them)" if rows_available < limit else ""))
    print(f"one core each: topnsigma {topnsigma_method.version} (threads {topnsigma_method.sampler.threads})", end="")
    for peer in args.peer_list:
        try:
            method = PEER_CLASSES[peer](vocab, limit)
        except Exception as error:  # not installed, or an incompatible version
            skipped[peer] = f"not importable: {type(error).__name__}: {error}"
            continue
        methods.append(method)
        print(f", {peer} {method.version}", end="")
    print()
    for peer, reason in skipped.items():
        print(f"{peer}: skipped ({reason}; {PEER_HINTS[peer]})")

    batches = args.batch_list
    requests = args.request_list
    inputs = {}
    for b in batches:
        x = np.ascontiguousarray(x_all[np.arange(b) % rows_available])
        inputs[b] = (x, RowFacts(x))

    times = {}  # (batch, request id, method) -> [seconds per call]
    request_skips = {}  # (request id, method) -> reason
    failed = {}  # method -> reason (it stopped running)
    violations = []
    step = 0
    gc.disable()
    try:
        for round_index in range(args.warmup + args.rounds):
            timed = round_index >= args.warmup
            for b in batches:
                x, facts = inputs[b]
                for m in methods:
                    if m.name in failed:
                        continue
                    try:
                        m.prepare(x)
                    except Exception as error:
                        if m is topnsigma_method:
                            raise
                        failed[m.name] = f"failed: {type(error).__name__}: {error}"
                # Rotate the request order too, so the cold first call after a batch change
                # falls on a different request each round (the median drops it).
                start = round_index % len(requests)
                for q in list(range(start, len(requests))) + list(range(start)):
                    request = requests[q]
                    shift = (round_index + q) % len(methods)
                    for m in methods[shift:] + methods[:shift]:
                        key = (request.id, m.name)
                        if m.name in failed or key in request_skips:
                            continue
                        try:
                            seconds, tokens = m.run(request, x, step)
                        except Skip as why:
                            request_skips[key] = str(why)
                            continue
                        except Exception as error:
                            if m is topnsigma_method:
                                raise
                            failed[m.name] = f"failed: {type(error).__name__}: {error}"
                            continue
                        problem = check_tokens(tokens, request, facts)
                        if problem:
                            violations.append(f"{m.name}, {request.label}, batch {b}: {problem}")
                        if timed:
                            times.setdefault((b, request.id, m.name), []).append(seconds)
                step += 1
    finally:
        gc.enable()
        for m in methods:
            if hasattr(m, "close"):
                m.close()

    for name, reason in failed.items():
        print(f"{name}: skipped ({reason})")
    shown = set()
    for (request_id, name), reason in request_skips.items():
        if (name, reason) not in shown:
            labels = [r.label for r in requests if (r.id, name) in request_skips and request_skips[(r.id, name)] == reason]
            print(f"{name}: skipped for {'; '.join(labels)} ({reason})")
            shown.add((name, reason))

    names = ["topnsigma"] + list(args.peer_list)
    versions = {m.name: m.version for m in methods}
    records = []
    label_width = max(len("request"), *(len(r.label) for r in requests))
    cell_width = 17
    for b in batches:
        print()
        print(f"batch {b} (vocab {vocab}): µs per row, median of {args.rounds} round{'s' * (args.rounds != 1)}; "
              "(n×) = peer time / topnsigma time")
        print("request".ljust(label_width) + "".join(n.rjust(cell_width) for n in names))
        for request in requests:
            base_samples = times.get((b, request.id, "topnsigma"))
            base = statistics.median(base_samples) / b * 1e6 if base_samples else None
            cells = []
            for name in names:
                samples = times.get((b, request.id, name))
                reason = None
                if name in skipped:
                    reason = skipped[name]
                elif name in failed:
                    reason = failed[name]
                elif (request.id, name) in request_skips:
                    reason = request_skips[(request.id, name)]
                elif not samples:
                    reason = "no timing"
                us = statistics.median(samples) / b * 1e6 if samples and reason is None else None
                speedup = us / base if us is not None and base else None
                cells.append(format_cell(us, None if name == "topnsigma" else speedup, cell_width))
                records.append({
                    "request": request.label, "request_id": request.id, "params": request.params(),
                    "batch": b, "vocab": vocab, "rows": min(rows_available, b), "logits": source,
                    "method": name, "version": versions.get(name), "threads": 1, "rounds": args.rounds,
                    "flush_mib": args.flush_mib,
                    "us_per_row": us, "us_per_row_min": min(samples) / b * 1e6 if us is not None else None,
                    "speedup_vs_topnsigma": speedup, "skipped": reason,
                })
            print(request.label.ljust(label_width) + "".join(cells))

    if violations:
        print(f"\n{len(violations)} sampled token(s) outside their request's set:", file=sys.stderr)
        for v in violations[:20]:
            print(f"  {v}", file=sys.stderr)
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump(records, f, indent=1, ensure_ascii=False)
                f.write("\n")
        except OSError as error:
            print(f"compare_samplers.py: error: cannot write {args.json}: {error}", file=sys.stderr)
            return 1
        print(f"\nwrote {len(records)} results to {args.json}")
    return 1 if violations else 0


if __name__ == "__main__":
    try:
        status = main()
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into `head`
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        status = 1
    except KeyboardInterrupt:
        status = 130
    sys.exit(status)
