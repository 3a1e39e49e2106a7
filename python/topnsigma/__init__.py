"""Top-nσ batched LLM sampling on the CPU: ctypes bindings over the TopNSigma C ABI
(include/topnsigma.h, libTopNSigmaC.so). Install with scripts/install-python.

    import numpy as np, topnsigma
    s = topnsigma.Sampler(vocab_size=V, max_batch=B, threads=None)   # None: all cores
    r = s.sample(logits, temperature=1.0, n_sigma=1.0, seed=0, step=0)
    r.tokens, r.logprobs, r.kept, r.errors

The token of a row depends only on (its logits, its parameters, its seed, its step): the same as
the Swift API and `nsigma sample` for the same inputs.
"""

import ctypes
import math
import os
import threading

import numpy as np

__all__ = ["Sampler", "SampleResult", "filter", "abi_version", "library_version", "library_path"]
__version__ = "0.1.0"

# ---- The native library ----------------------------------------------------------------------

_HERE = os.path.dirname(os.path.abspath(__file__))


def _load():
    candidates = []
    if os.environ.get("TOPNSIGMA_LIBRARY"):
        candidates.append(os.environ["TOPNSIGMA_LIBRARY"])
    candidates.append(os.path.join(_HERE, "_lib", "libTopNSigmaC.so"))
    errors = []
    for path in candidates:
        if not os.path.exists(path):
            errors.append(f"{path}: not found")
            continue
        try:
            return ctypes.CDLL(path), path
        except OSError as error:  # pragma: no cover - a broken install
            errors.append(f"{path}: {error}")
    raise ImportError(
        "topnsigma: cannot load libTopNSigmaC.so (" + "; ".join(errors) + "). "
        "Build and install the package with scripts/install-python, or point TOPNSIGMA_LIBRARY at the library."
    )


_lib, library_path = _load()

# Constants of include/topnsigma.h.
_ABI_VERSION = 1
_OK = 0
_ERR_BUSY = 10
_ERR_OUT_OF_MEMORY = 12
_ROW_NAN = 100
_ROW_POSITIVE_INFINITY = 101
_FORMAT_F32, _FORMAT_F16, _FORMAT_BF16 = 0, 1, 2
_PLACEMENT = {"automatic": -1, "disabled": -2}
_USE_N_SIGMA, _USE_TOP_K, _USE_TOP_P, _USE_MIN_P = 1, 2, 4, 8
_MAX_VOCAB = (1 << 31) - 2      # vocabulary sizes 1 ... 2^31 - 2
_MAX_BATCH = 1 << 24            # TNS_MAX_BATCH
_MAX_THREADS = 1024             # TNS_MAX_THREADS
_MAX_NODE = (1 << 31) - 1       # a NUMA node id is an int32
_INT64_MIN, _INT64_MAX, _UINT64_MAX = -(1 << 63), (1 << 63) - 1, (1 << 64) - 1


class _Params(ctypes.Structure):
    _fields_ = [
        ("struct_size", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("seed", ctypes.c_uint64),
        ("temperature", ctypes.c_float),
        ("n_sigma", ctypes.c_float),
        ("top_p", ctypes.c_float),
        ("min_p", ctypes.c_float),
        ("top_k", ctypes.c_int64),
    ]


class _RowStats(ctypes.Structure):
    _fields_ = [
        ("max", ctypes.c_double),
        ("mean", ctypes.c_double),
        ("std", ctypes.c_double),
        ("threshold", ctypes.c_double),
        ("finite", ctypes.c_int64),
        ("argmax", ctypes.c_int64),
        ("error_index", ctypes.c_int64),
    ]


# The same layout as a NumPy record, so a batch's parameters are filled column by column.
_PARAMS_DTYPE = np.dtype(
    [
        ("struct_size", "<u4"),
        ("flags", "<u4"),
        ("seed", "<u8"),
        ("temperature", "<f4"),
        ("n_sigma", "<f4"),
        ("top_p", "<f4"),
        ("min_p", "<f4"),
        ("top_k", "<i8"),
    ]
)
assert _PARAMS_DTYPE.itemsize == ctypes.sizeof(_Params) == 40

_p = ctypes.c_void_p
_i64, _i32 = ctypes.c_int64, ctypes.c_int32
_lib.tns_abi_version.restype = _i32
_lib.tns_version.restype = ctypes.c_char_p
_lib.tns_status_message.restype = ctypes.c_char_p
_lib.tns_status_message.argtypes = [_i32]
_lib.tns_sampler_create.restype = _i32
_lib.tns_sampler_create.argtypes = [_i64, _i64, _i32, _i32, ctypes.POINTER(_p)]
_lib.tns_sampler_destroy.restype = None
_lib.tns_sampler_destroy.argtypes = [_p]
_lib.tns_sampler_threads.restype = _i32
_lib.tns_sampler_threads.argtypes = [_p]
_lib.tns_sample.restype = _i32
_lib.tns_sample.argtypes = [_p, _p, _i32, _i64, _i64, _p, _p, _p, _p, _p, _p]
_lib.tns_filtered_distribution.restype = _i32
_lib.tns_filtered_distribution.argtypes = [_p, _i64, _p, ctypes.POINTER(_RowStats), _p, _p, _i64, ctypes.POINTER(_i64)]

if _lib.tns_abi_version() != _ABI_VERSION:  # pragma: no cover
    raise ImportError(f"topnsigma: {library_path} has ABI {_lib.tns_abi_version()}, this package needs {_ABI_VERSION}")


def abi_version():
    """The C library's ABI version (1)."""
    return int(_lib.tns_abi_version())


def library_version():
    """The C library's version string."""
    return _lib.tns_version().decode()


def _message(status, index=-1):
    if status == _ROW_NAN:
        return f"logit at index {index} is NaN"
    if status == _ROW_POSITIVE_INFINITY:
        return f"logit at index {index} is +inf"
    return _lib.tns_status_message(int(status)).decode()


def _error(status, message):
    """The exception for a whole-call status: MemoryError for TNS_ERR_OUT_OF_MEMORY, RuntimeError
    for TNS_ERR_BUSY, ValueError for the rest (bad arguments and bad rows)."""
    if status == _ERR_OUT_OF_MEMORY:
        return MemoryError(message)
    if status == _ERR_BUSY:
        return RuntimeError(message)
    return ValueError(message)


# ---- Argument handling ---------------------------------------------------------------------------

_DTYPE_NAMES = {
    "float32": _FORMAT_F32, "f32": _FORMAT_F32,
    "float16": _FORMAT_F16, "f16": _FORMAT_F16,
    "bfloat16": _FORMAT_BF16, "bf16": _FORMAT_BF16,
}


def _logit_format(array, dtype):
    """The C format of `array`: float32 / float16 by its dtype; 16-bit storage (uint16, or a
    bfloat16 extension dtype) with dtype="bfloat16" (or "float16" for raw half bits)."""
    kind = array.dtype
    if dtype is None:
        if kind == np.float32:
            return _FORMAT_F32
        if kind == np.float16:
            return _FORMAT_F16
        if kind.itemsize == 2 and kind.name == "bfloat16":
            return _FORMAT_BF16
        if kind == np.uint16:
            raise ValueError("uint16 logits need dtype='bfloat16' (or 'float16' for raw half-precision bits)")
        raise ValueError(f"logits must be float32, float16, or uint16 with dtype='bfloat16'; got {kind}")
    name = str(dtype) if not isinstance(dtype, np.dtype) else dtype.name
    if name not in _DTYPE_NAMES:
        raise ValueError(f"dtype must be 'float32', 'float16' or 'bfloat16', got {dtype!r}")
    fmt = _DTYPE_NAMES[name]
    if fmt == _FORMAT_F32 and kind != np.float32:
        raise ValueError(f"dtype='float32' needs a float32 array, got {kind}")
    if fmt == _FORMAT_F16 and kind not in (np.float16, np.uint16):
        raise ValueError(f"dtype='float16' needs a float16 or uint16 array, got {kind}")
    if fmt == _FORMAT_BF16 and not (kind == np.uint16 or (kind.itemsize == 2 and kind.name == "bfloat16")):
        raise ValueError(f"dtype='bfloat16' needs a uint16 array of bfloat16 bits, got {kind}")
    return fmt


def _is_integer(value):
    """A Python int or a NumPy integer scalar (bool is not an integer here)."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _integer(value, name, low, high):
    """An integer argument, exactly: no float (2.0 included), no bool, no wrap into the C type."""
    if not _is_integer(value):
        raise ValueError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if not low <= value <= high:
        raise ValueError(f"{name} must be in {low} ... {high}, got {value}")
    return value


def _real(value, name):
    """A real-valued argument (int or float, Python or NumPy; not bool, not None) that float32 can
    hold: a finite value beyond float32's range is an error, not a silent infinity. NaN and the
    infinities pass through (the library judges them: a row error, or T = +inf)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    try:
        value = float(value)
    except OverflowError:
        raise ValueError(f"{name} is outside float32's range: {value!r}") from None
    if math.isfinite(value):
        with np.errstate(over="ignore"):
            if math.isinf(float(np.float32(value))):
                raise ValueError(f"{name} is outside float32's range: {value!r}")
    return value


def _is_scalar(value):
    """Whether an argument is one value for every row (a NumPy scalar or 0-d array, a number, or
    anything that is not a sequence), rather than one value per row."""
    if isinstance(value, (np.generic, str, bytes)) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return True
    return not (isinstance(value, (list, tuple, range, dict, set)) or hasattr(value, "__array__")
                or hasattr(value, "__len__"))


def _entries(value, rows, name):
    """The entries of a per-row argument: a 1-D array or a sequence of `rows` values."""
    if isinstance(value, (list, tuple, range)):
        if len(value) != rows:
            raise ValueError(f"{name} has {len(value)} entries for {rows} rows")
        return value
    if isinstance(value, (str, bytes, dict, set)):
        raise ValueError(f"{name} must be a scalar or one value per row, got {type(value).__name__}")
    try:
        array = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{name} must be a scalar or one value per row: {error}") from None
    if array.shape != (rows,):
        raise ValueError(f"{name} has shape {array.shape}, expected ({rows},)")
    return array


def _float_column(value, rows, name, optional):
    """A float argument, a scalar or one per row: (values, on), `on` None when every row has a
    value, else a bool array (False where an optional entry is None)."""
    if _is_scalar(value):
        return _real(value[()] if isinstance(value, np.ndarray) else value, name), None
    entries = _entries(value, rows, name)
    if isinstance(entries, np.ndarray) and entries.dtype.kind in "fiu":
        values = entries.astype(np.float64)
        with np.errstate(over="ignore"):
            if np.any(np.isfinite(values) & np.isinf(values.astype(np.float32))):
                raise ValueError(f"{name} has a value outside float32's range")
        return values, None
    values = np.zeros(rows, dtype=np.float64)
    on = np.ones(rows, dtype=bool)
    for i, v in enumerate(entries):
        if v is None and optional:
            on[i] = False
        else:
            values[i] = _real(v, f"{name}[{i}]")
    return values, (None if on.all() else on)


def _integer_column(value, rows, name, low, high, dtype, optional=False):
    """An integer argument, a scalar or one per row, as `_float_column` (values in low ... high)."""
    if _is_scalar(value):
        return _integer(value[()] if isinstance(value, np.ndarray) else value, name, low, high), None
    entries = _entries(value, rows, name)
    if isinstance(entries, np.ndarray) and entries.dtype.kind in "iu":
        if entries.size and (int(entries.min()) < low or int(entries.max()) > high):
            raise ValueError(f"{name} must be in {low} ... {high}, got {int(entries.min())} ... {int(entries.max())}")
        return entries.astype(dtype), None
    values = np.zeros(rows, dtype=dtype)
    on = np.ones(rows, dtype=bool)
    for i, v in enumerate(entries):
        if v is None and optional:
            on[i] = False
        else:
            values[i] = _integer(v, f"{name}[{i}]", low, high)
    return values, (None if on.all() else on)


def _fill_params(out, rows, temperature, n_sigma, seed, top_k, top_p, min_p):
    """Fills `rows` tns_params records; scalars are broadcast without a Python loop. Every argument
    is checked first (ValueError naming it): a number of the right kind that the C field holds
    exactly (floats to float32's range), never wrapped or truncated."""
    temperatures, _ = _float_column(temperature, rows, "temperature", optional=False)
    seeds, _ = _integer_column(seed, rows, "seed", 0, _UINT64_MAX, np.uint64)
    filters = []
    for field, value, flag in (
        ("n_sigma", n_sigma, _USE_N_SIGMA),
        ("top_k", top_k, _USE_TOP_K),
        ("top_p", top_p, _USE_TOP_P),
        ("min_p", min_p, _USE_MIN_P),
    ):
        if value is None:
            values, on = None, None  # off in every row
        elif field == "top_k":
            values, on = _integer_column(value, rows, field, _INT64_MIN, _INT64_MAX, np.int64, optional=True)
        else:
            values, on = _float_column(value, rows, field, optional=True)
        filters.append((field, values, on, flag))
    out["struct_size"] = _PARAMS_DTYPE.itemsize
    out["temperature"] = temperatures
    out["seed"] = seeds
    flags = np.zeros(rows, dtype=np.uint32)
    for field, values, on, flag in filters:
        if values is None:
            out[field] = 0
            continue
        out[field] = values
        flags |= np.uint32(flag) if on is None else np.where(on, np.uint32(flag), np.uint32(0))
    out["flags"] = flags


def _uint64_column(value, rows, name):
    """Seeds or steps: integers in 0 ... 2^64 - 1, a scalar or one per row."""
    return _integer_column(value, rows, name, 0, _UINT64_MAX, np.uint64)[0]


# ---- The sampler -----------------------------------------------------------------------------------


class SampleResult:
    """One call's tokens: `tokens` (int64), `logprobs` (float64), `kept` (int64, the candidate
    count) and `errors` (a message for each failed row, None for the others)."""

    __slots__ = ("tokens", "logprobs", "kept", "errors", "status")

    def __init__(self, tokens, logprobs, kept, errors, status):
        self.tokens = tokens
        self.logprobs = logprobs
        self.kept = kept
        self.errors = errors
        self.status = status

    def __repr__(self):
        return f"SampleResult(tokens={self.tokens!r}, logprobs={self.logprobs!r}, kept={self.kept!r}, errors={self.errors!r})"


class Sampler:
    """A batched Top-nσ sampler over rows of `vocab_size` logits, batches of up to `max_batch`
    rows, with `threads` workers (None: every core). It owns its scratch memory and worker
    threads; one call at a time per sampler (a concurrent call raises RuntimeError).

    vocab_size, max_batch, threads and a NUMA node id placement are integers (int or a NumPy
    integer; not bool, not float): anything else, or a value out of range, raises ValueError
    naming the argument. MemoryError when the scratch (about 64 bytes per logit per thread) is
    not below the machine's memory or cannot be allocated."""

    def __init__(self, vocab_size, max_batch, threads=None, placement="automatic"):
        # Each argument is checked here, by name, before ctypes could wrap it into its C type.
        if isinstance(placement, str):
            if placement not in _PLACEMENT:
                raise ValueError(f"placement must be 'automatic', 'disabled' or a NUMA node id, got {placement!r}")
            placement_code = _PLACEMENT[placement]
        else:
            placement_code = _integer(placement, "placement (a NUMA node id)", 0, _MAX_NODE)
        vocab_size = _integer(vocab_size, "vocab_size", 1, _MAX_VOCAB)
        max_batch = _integer(max_batch, "max_batch", 1, _MAX_BATCH)
        threads = 0 if threads is None else _integer(threads, "threads (None for all cores)", 1, _MAX_THREADS)
        handle = _p()
        status = _lib.tns_sampler_create(vocab_size, max_batch, threads, placement_code, ctypes.byref(handle))
        if status != _OK:
            raise _error(status, f"topnsigma.Sampler(vocab_size={vocab_size}, max_batch={max_batch}, "
                                 f"threads={threads or None}): " + _message(status))
        self._handle = handle
        self.vocab_size = vocab_size
        self.max_batch = max_batch
        self.threads = int(_lib.tns_sampler_threads(handle))
        self._params = np.zeros(self.max_batch, dtype=_PARAMS_DTYPE)
        self._steps = np.zeros(self.max_batch, dtype=np.uint64)
        self._lock = threading.Lock()

    def close(self):
        """Frees the sampler's memory and threads (also done when it is garbage-collected)."""
        handle, self._handle = getattr(self, "_handle", None), None
        if handle:
            _lib.tns_sampler_destroy(handle)

    def __del__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def sample(self, logits, temperature=1.0, n_sigma=1.0, seed=0, step=0,
               top_k=None, top_p=None, min_p=None, dtype=None):
        """One token per row of `logits`, an ndarray [rows, vocab_size] (float32, float16, or
        uint16 bfloat16 bits with dtype="bfloat16"), read in place and never modified.

        Each of temperature, n_sigma, seed, step, top_k, top_p, min_p is a scalar or a per-row
        sequence; n_sigma / top_k / top_p / min_p None (or a None entry) turns that filter off.
        A row with bad logits or parameters gets a message in `errors`; the others still sample.
        An argument of the wrong kind (seed, step and top_k are integers, the others numbers;
        bool is neither), the wrong length, or beyond its C field (seed and step 0 ... 2^64 - 1,
        top_k 64-bit, floats within float32's range) raises ValueError naming it.
        """
        if self._handle is None:
            raise ValueError("the sampler is closed")
        if not isinstance(logits, np.ndarray):
            raise ValueError(f"logits must be a numpy.ndarray, got {type(logits).__name__}")
        if logits.ndim != 2:
            raise ValueError(f"logits must be 2-D [rows, vocab]; got shape {logits.shape}")
        fmt = _logit_format(logits, dtype)
        rows, vocab = logits.shape
        if vocab != self.vocab_size:
            raise ValueError(f"logits have {vocab} columns, the sampler's vocab_size is {self.vocab_size}")
        if rows > self.max_batch:
            raise ValueError(f"{rows} rows exceed the sampler's max_batch {self.max_batch}")
        if not logits.dtype.isnative:
            raise ValueError("logits must be in native byte order")
        item = logits.itemsize
        row_stride_bytes, column_stride = logits.strides
        if rows > 0 and vocab > 1 and column_stride != item:
            raise ValueError(f"each row must be contiguous (column stride {column_stride} bytes, element size {item})")
        if rows > 1 and (row_stride_bytes < vocab * item or row_stride_bytes % item != 0):
            raise ValueError(f"row stride {row_stride_bytes} bytes must be a multiple of {item} and at least one row ({vocab * item} bytes)")
        row_stride = row_stride_bytes // item if rows > 1 else vocab
        if logits.ctypes.data % item != 0:
            raise ValueError("logits are not aligned to their element size")

        params = self._params[:rows]
        steps = self._steps[:rows]
        _fill_params(params, rows, temperature, n_sigma, seed, top_k, top_p, min_p)
        steps[:] = _uint64_column(step, rows, "step")
        tokens = np.empty(rows, dtype=np.int64)
        logprobs = np.empty(rows, dtype=np.float64)
        kept = np.empty(rows, dtype=np.int64)
        status = np.empty(rows, dtype=np.int32)
        if not self._lock.acquire(blocking=False):
            raise RuntimeError(_message(_ERR_BUSY))
        try:
            code = _lib.tns_sample(
                self._handle, logits.ctypes.data, fmt, rows, row_stride,
                params.ctypes.data, steps.ctypes.data,
                tokens.ctypes.data, logprobs.ctypes.data, kept.ctypes.data, status.ctypes.data)
        finally:
            self._lock.release()
        if code != _OK:
            raise _error(code, _message(code))
        errors = [None if s == _OK else f"row {r}: {_message(s, tokens[r])}" for r, s in enumerate(status.tolist())]
        return SampleResult(tokens, logprobs, kept, errors, status)


# ---- One row -------------------------------------------------------------------------------------


def filter(row, n_sigma=1.0, top_k=None, top_p=None, min_p=None, temperature=1.0):
    """The filtered set of one row of logits (1-D; float32, or float16 widened exactly), under
    the sampler's pipeline and parameters (n_sigma None turns Top-nσ off).

    Returns a dict: "max", "mean", "std" (Bessel-corrected, over the finite logits), "threshold"
    (the combined Top-nσ / min-p logit threshold), "finite" (count of finite logits) and "kept"
    (np.ndarray of the kept token ids, ascending). Raises ValueError for a bad row or parameter,
    MemoryError when the call's temporary scratch (about 64 bytes per logit) cannot be had.
    """
    if isinstance(row, np.ndarray):
        if row.dtype == np.float16:
            row = row.astype(np.float32)
        elif row.dtype != np.float32:
            raise ValueError(f"row must be float32 (or float16), got {row.dtype}")
    else:
        row = np.asarray(row, dtype=np.float32)
    if row.ndim != 1:
        raise ValueError(f"row must be 1-D, got shape {row.shape}")
    row = np.ascontiguousarray(row)
    vocab = row.shape[0]
    if vocab == 0:
        raise ValueError("row is empty")
    params = np.zeros(1, dtype=_PARAMS_DTYPE)
    _fill_params(params, 1, temperature, n_sigma, 0, top_k, top_p, min_p)
    ids = np.empty(vocab, dtype=np.int32)
    probabilities = np.empty(vocab, dtype=np.float64)
    stats = _RowStats()
    count = _i64(0)
    code = _lib.tns_filtered_distribution(
        row.ctypes.data, vocab, params.ctypes.data, ctypes.byref(stats), ids.ctypes.data, probabilities.ctypes.data,
        vocab, ctypes.byref(count))
    if code != _OK:
        raise _error(code, _message(code, stats.error_index))
    kept = np.sort(ids[: count.value].astype(np.int64))
    return {
        "max": stats.max,
        "mean": stats.mean,
        "std": stats.std,
        "threshold": stats.threshold,
        "finite": int(stats.finite),
        "kept": kept,
    }
