"""Top-nσ batched LLM sampling on the CPU: ctypes bindings over the TopNSigma C ABI
(include/topnsigma.h, libTopNSigmaC.so). Install with scripts/install-python.

    import numpy as np, topnsigma
    s = topnsigma.Sampler(vocab_size=V, max_batch=B, threads=None)   # None: all cores
    r = s.sample(logits, temperature=1.0, n_sigma=1.0, seed=0, step=0)
    r.tokens, r.logprobs, r.kept, r.errors

The token of a row depends only on (its logits, its parameters, its seed, its step): the same as
the Swift API and `nsigma sample` for the same inputs.

Every argument is checked before it reaches C (ValueError naming the argument: no wrap into a C
type, no truncation of a float into an integer). One call at a time per Sampler: a call made
while another runs on the same Sampler raises RuntimeError and writes nothing the running call
uses. `build_info()` says which SIMD features the loaded library was compiled for.
"""

import ctypes
import math
import os
import threading

import numpy as np

from . import _processing

__all__ = ["Sampler", "SampleResult", "VerifyResult", "filter", "sampler_order", "abi_version", "library_version", "library_path",
           "build_info"]
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
_ROW_INVALID_PROCESSING = 108
_ROW_INVALID_DRAFT = 109
_FORMAT_F32, _FORMAT_F16, _FORMAT_BF16 = 0, 1, 2
_PLACEMENT = {"automatic": -1, "disabled": -2}
_USE_N_SIGMA, _USE_TOP_K, _USE_TOP_P, _USE_MIN_P = 1, 2, 4, 8
_USE_TYPICAL_P, _USE_EPSILON, _USE_ETA, _USE_XTC, _USE_DYNATEMP, _USE_P_LESS = 16, 32, 64, 128, 256, 512
_USE_SAMPLER_ORDER, _LLAMA_CPP_SENTINELS = 1 << 10, 1 << 11
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
        ("typical_p", ctypes.c_float),
        ("epsilon", ctypes.c_float),
        ("eta", ctypes.c_float),
        ("xtc_threshold", ctypes.c_float),
        ("xtc_probability", ctypes.c_float),
        ("dynatemp_range", ctypes.c_float),
        ("dynatemp_exponent", ctypes.c_float),
        ("reserved", ctypes.c_uint32),
        ("sampler_order", ctypes.c_uint64),
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
        ("typical_p", "<f4"),
        ("epsilon", "<f4"),
        ("eta", "<f4"),
        ("xtc_threshold", "<f4"),
        ("xtc_probability", "<f4"),
        ("dynatemp_range", "<f4"),
        ("dynatemp_exponent", "<f4"),
        ("reserved", "<u4"),
        ("sampler_order", "<u8"),
    ]
)
assert _PARAMS_DTYPE.itemsize == ctypes.sizeof(_Params) == 80

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
# The same function without argtypes, for Sampler.sample: every argument is passed as a ctypes
# object built once per sampler (or a C int), which skips ctypes' per-argument conversions.
_sample_raw = _lib["tns_sample"]
_sample_raw.restype = _i32
_sample_processed = _lib["tns_sample_processed"]
_sample_processed.restype = _i32
_verify_raw = _lib["tns_verify"]
_verify_raw.restype = _i32
_lib.tns_filtered_distribution.restype = _i32
_lib.tns_filtered_distribution.argtypes = [_p, _i64, _p, ctypes.POINTER(_RowStats), _p, _p, _i64, ctypes.POINTER(_i64)]

if _lib.tns_abi_version() != _ABI_VERSION:  # pragma: no cover
    raise ImportError(f"topnsigma: {library_path} has ABI {_lib.tns_abi_version()}, this package needs {_ABI_VERSION}")
_lib.tns_max_vocab_size.restype = _i64
_lib.tns_sampler_order_parse.restype = _i32
_lib.tns_sampler_order_parse.argtypes = [ctypes.c_char_p, ctypes.POINTER(ctypes.c_uint64), ctypes.c_char_p, _i64]
_MAX_VOCAB = int(_lib.tns_max_vocab_size())  # vocabulary sizes 1 ... TNS_MAX_VOCAB_SIZE, the library's one limit


def abi_version():
    """The C library's ABI version (1)."""
    return int(_lib.tns_abi_version())


def library_version():
    """The C library's version string."""
    return _lib.tns_version().decode()


# Features every build for the architecture has: a library compiled for nothing more is the
# portable default build (`swift build`, `scripts/install-python --portable`).
_BASELINE_FEATURES = frozenset({"sse2", "neon", "generic"})


def build_info():
    """What the loaded library was compiled for, as a dict:

    - "features": the SIMD features of its build (tns_build_info), e.g. ["sse2"] for the
      portable default build, ["avx2", "fma", "f16c", "avx512f"] for the host build that
      scripts/install-python makes by default;
    - "native": True when the build uses more than the architecture's baseline (sse2 on x86-64);
    - "library": the path of the loaded libTopNSigmaC.so;
    - "version": the library's version string; "abi": its ABI version.
    """
    try:
        function = _lib.tns_build_info
    except AttributeError:  # pragma: no cover - a library older than tns_build_info
        features = []
    else:
        function.restype = ctypes.c_char_p
        function.argtypes = []
        features = function().decode().split()
    return {
        "features": features,
        "native": bool(set(features) - _BASELINE_FEATURES),
        "library": os.path.abspath(library_path),
        "version": library_version(),
        "abi": abi_version(),
    }


def _message(status, index=-1):
    if status == _ROW_NAN:
        return f"logit at index {index} is NaN"
    if status == _ROW_POSITIVE_INFINITY:
        return f"logit at index {index} is +inf"
    if status == _ROW_INVALID_PROCESSING and index != -1:
        return f"{_lib.tns_status_message(int(status)).decode()}: token id {index}"
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
_F32 = np.dtype(np.float32)
_F16 = np.dtype(np.float16)
_NONE = type(None)
# The penalties' defaults, compared by identity in the plain call's fast path.
_ONE, _ZERO = 1.0, 0.0
_F32_MAX = float(np.finfo(np.float32).max)


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
    if isinstance(dtype, np.dtype):
        name = dtype.name
    elif isinstance(dtype, str):
        name = dtype
    else:
        raise ValueError(f"dtype must be 'float32', 'float16' or 'bfloat16', got {dtype!r}")
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


def _is_real(value):
    """A Python or NumPy int or float (bool is not a number here, nor complex)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


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
    if not _is_real(value):
        raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    try:
        value = float(value)
    except OverflowError:
        raise ValueError(f"{name} is outside float32's range: {value!r}") from None
    if math.isfinite(value) and not -_F32_MAX <= value <= _F32_MAX:
        with np.errstate(over="ignore"):
            if math.isinf(float(np.float32(value))):
                raise ValueError(f"{name} is outside float32's range: {value!r}")
    return value


def _is_scalar(value):
    """Whether an argument is one value for every row (a NumPy scalar or 0-d array, a number, or
    anything that is not a sequence), rather than one value per row."""
    if type(value) is np.ndarray:
        return value.ndim == 0
    if isinstance(value, (np.generic, str, bytes)) or (isinstance(value, np.ndarray) and value.ndim == 0):
        return True
    return not (isinstance(value, (list, tuple, range, dict, set)) or hasattr(value, "__array__")
                or hasattr(value, "__len__"))


def _per_row(value, rows, name):
    """A per-row argument: (array, None) for an ndarray (or array-like) of shape (rows,) with a
    non-object dtype, else (None, items) with `items` a sequence of `rows` Python objects whose
    types the caller checks. No conversion happens here: nothing can wrap or truncate."""
    if isinstance(value, (list, tuple, range)):
        if len(value) != rows:
            raise ValueError(f"{name} has {len(value)} entries for {rows} rows")
        return None, value
    if isinstance(value, (str, bytes, dict, set)):
        raise ValueError(f"{name} must be a scalar or one value per row, got {type(value).__name__}")
    if type(value) is np.ndarray:
        array = value
    else:
        try:
            array = np.asarray(value)
        except Exception as error:  # noqa: BLE001 - anything NumPy cannot read is a bad argument
            raise ValueError(f"{name} must be a scalar or one value per row: {error}") from None
    if array.shape != (rows,):
        raise ValueError(f"{name} has shape {array.shape}, expected ({rows},)")
    if array.dtype.kind == "O":
        return None, array
    return array, None


def _check_types(items, name, accept, what, optional):
    """Raises ValueError naming the first entry of `items` whose type `accept` rejects (None is
    accepted when `optional`). Returns whether any entry is None. A loop over the distinct types
    only: the entries are read by `map` in C."""
    types = set(map(type, items))
    for t in types:
        if (t is _NONE and optional) or (t is not _NONE and accept(t)):
            continue
        for i, v in enumerate(items):  # the error path: find the entry
            if type(v) is t:
                raise ValueError(f"{name}[{i}] must be {what}{' or None' if optional else ''}, "
                                 f"got {v!r} ({t.__name__})")
    return _NONE in types


def _accept_integer(t):
    return issubclass(t, (int, np.integer)) and not issubclass(t, (bool, np.bool_))


def _accept_real(t):
    return issubclass(t, (int, float, np.integer, np.floating)) and not issubclass(t, (bool, np.bool_))


def _none_mask(items, rows):
    """(on, values): `on` False where an entry is None; `values` an object array with 0 there."""
    objects = np.empty(rows, dtype=object)
    objects[:] = list(items)
    on = np.not_equal(objects, None).astype(bool)
    objects[~on] = 0
    return on, objects


def _range_error(values, name, low, high):
    for i, v in enumerate(values.tolist() if isinstance(values, np.ndarray) else values):
        if not low <= int(v) <= high:
            raise ValueError(f"{name}[{i}] must be in {low} ... {high}, got {int(v)}")
    raise ValueError(f"{name} must be in {low} ... {high}")  # pragma: no cover


def _integer_column(value, rows, name, low, high, dtype, optional=False):
    """An integer argument, a scalar or one per row: (values, on). `values` is a Python int or an
    integer ndarray of `rows` entries, each in low ... high; `on` is None when every row has a
    value, else a bool array (False where an optional entry is None). Floats (2.0 included),
    bools and anything else raise ValueError naming the argument (and the entry)."""
    if type(value) is int:
        if not low <= value <= high:
            raise ValueError(f"{name} must be in {low} ... {high}, got {value}")
        return value, None
    if _is_scalar(value):
        return _integer(value[()] if isinstance(value, np.ndarray) else value, name, low, high), None
    array, items = _per_row(value, rows, name)
    if array is not None:
        kind = array.dtype.kind
        if kind not in "iu":
            raise ValueError(f"{name} must hold integers, got an array of {array.dtype}")
        # Only a type wider than low ... high needs its values read.
        bits = 8 * array.dtype.itemsize
        smallest, largest = (0, (1 << bits) - 1) if kind == "u" else (-(1 << (bits - 1)), (1 << (bits - 1)) - 1)
        if rows and ((smallest < low and int(array.min()) < low) or (largest > high and int(array.max()) > high)):
            _range_error(array, name, low, high)
        return array, None
    on = None
    if _check_types(items, name, _accept_integer, "an integer", optional):
        on, items = _none_mask(items, rows)
    if rows:
        present = items[on] if on is not None else items
        if len(present) and (min(present) < low or max(present) > high):
            _range_error(present, name, low, high)
    return np.array(items, dtype=dtype), on


def _float_column(value, rows, name, optional):
    """A float argument, a scalar or one per row: (values, on) as `_integer_column`, values within
    float32's range (NaN and the infinities pass: the library judges them per row)."""
    if type(value) is float and -_F32_MAX <= value <= _F32_MAX:
        return value, None
    if _is_scalar(value):
        return _real(value[()] if isinstance(value, np.ndarray) else value, name), None
    array, items = _per_row(value, rows, name)
    on = None
    if array is not None:
        if array.dtype.kind not in "iuf":
            raise ValueError(f"{name} must hold numbers, got an array of {array.dtype}")
        values = array
    else:
        if _check_types(items, name, _accept_real, "a number", optional):
            on, items = _none_mask(items, rows)
        try:
            values = np.array(items, dtype=np.float64)
        except OverflowError:
            raise ValueError(f"{name} has a value outside float32's range") from None
    if values.dtype.kind != "f" or values.dtype.itemsize > 4:
        with np.errstate(over="ignore", invalid="ignore"):
            outside = np.isinf(values.astype(np.float32)) & np.isfinite(values)
        if outside.any():
            i = int(np.flatnonzero(outside)[0])
            raise ValueError(f"{name}[{i}] is outside float32's range: {values[i]!r}")
    return values, on


# tns_params' fields after struct_size, in order, and the filters' flags.
_FIELDS = ("flags", "seed", "temperature", "n_sigma", "top_p", "min_p", "top_k", "typical_p", "epsilon", "eta",
           "xtc_threshold", "xtc_probability", "dynatemp_range", "dynatemp_exponent", "sampler_order")
_FILTERS = (("n_sigma", _USE_N_SIGMA), ("top_k", _USE_TOP_K), ("top_p", _USE_TOP_P), ("min_p", _USE_MIN_P))
_ZOO_FILTERS = (("typical_p", _USE_TYPICAL_P), ("epsilon", _USE_EPSILON), ("eta", _USE_ETA),
                ("xtc_threshold", _USE_XTC), ("dynatemp_range", _USE_DYNATEMP))
# The other samplers' arguments, all off: typical_p, epsilon, eta, xtc_threshold, xtc_probability,
# dynatemp_range, dynatemp_exponent, p_less, samplers, llama_cpp_sentinels.
_NO_ZOO = (None, None, None, None, None, None, None, False, None, False)


def sampler_order(samplers):
    """The packed sampler order (tns_params.sampler_order) of a `--samplers` list such as
    "top_k;top_p;min_p;temperature" (names separated by ';' or ','; llama.cpp's names and aliases;
    "penalties" and "dry" accepted before every other step). ValueError names a bad entry."""
    if not isinstance(samplers, str):
        raise ValueError(f"samplers must be a string such as 'top_k;top_p;temperature', got {type(samplers).__name__}")
    if "\0" in samplers:
        raise ValueError("samplers must not contain a NUL character")
    # The library's name table (tns_sampler_order_parse), the one nsigma --samplers uses too.
    packed, message = ctypes.c_uint64(0), ctypes.create_string_buffer(512)
    status = _lib.tns_sampler_order_parse(samplers.encode("utf-8"), ctypes.byref(packed), message, len(message))
    if status != 0:
        raise ValueError(f"samplers: {message.value.decode('utf-8', 'replace')}")
    return int(packed.value)


def _bool_column(value, rows, name):
    """A bool argument (None is False), a scalar or one per row: a Python bool or a bool
    ndarray of `rows` entries. Anything else (0 and 1 included) raises ValueError naming it."""
    if value is None or type(value) is bool or type(value) is np.bool_:
        return bool(value)
    array, items = _per_row(value, rows, name)
    if array is not None:
        if array.dtype.kind != "b":
            raise ValueError(f"{name} must hold bools, got an array of {array.dtype}")
        return array
    for i, item in enumerate(items):
        if not (item is None or type(item) is bool or type(item) is np.bool_):
            raise ValueError(f"{name}[{i}] must be a bool, got {type(item).__name__}")
    return np.array([bool(item) for item in items], dtype=bool)


def _check_params(rows, temperature, n_sigma, seed, top_k, top_p, min_p, zoo=_NO_ZOO):
    """Checks every sampling parameter (ValueError naming it: a number of the right kind that its
    C field holds exactly, floats within float32's range, never wrapped or truncated).

    Returns (record, columns): `record` the tns_params record (as uint64 words) of the values
    given once for every row (0 in a field given per row), `columns` a tuple of (field, ndarray
    of `rows`) for the fields given per row (flags included when a filter is off in some rows
    only). Writes nothing: the caller stores them once it owns the buffer."""
    values = {
        "temperature": _float_column(temperature, rows, "temperature", optional=False)[0],
        "seed": _integer_column(seed, rows, "seed", 0, _UINT64_MAX, np.uint64)[0],
    }
    flags = 0
    for (field, flag), value in zip(_FILTERS, (n_sigma, top_k, top_p, min_p)):
        if value is None:
            values[field] = 0  # off in every row
            continue
        if field == "top_k":
            column, on = _integer_column(value, rows, field, _INT64_MIN, _INT64_MAX, np.int64, optional=True)
        else:
            column, on = _float_column(value, rows, field, optional=True)
        values[field] = column
        flags = flags | (flag if on is None else np.where(on, np.uint32(flag), np.uint32(0)))
    if zoo is not _NO_ZOO:
        (typical_p, epsilon, eta, xtc_threshold, xtc_probability, dynatemp_range, dynatemp_exponent, p_less, samplers,
         sentinels) = zoo
        for (field, flag), value in zip(_ZOO_FILTERS, (typical_p, epsilon, eta, xtc_threshold, dynatemp_range)):
            if value is None:
                continue
            column, on = _float_column(value, rows, field, optional=True)
            values[field] = column
            flags = flags | (flag if on is None else np.where(on, np.uint32(flag), np.uint32(0)))
        for field, value in (("xtc_probability", xtc_probability), ("dynatemp_exponent", dynatemp_exponent)):
            if value is not None:
                values[field] = _float_column(value, rows, field, optional=False)[0]
        less = _bool_column(p_less, rows, "p_less")
        if type(less) is np.ndarray:
            flags = flags | np.where(less, np.uint32(_USE_P_LESS), np.uint32(0))
        elif less:
            flags = flags | _USE_P_LESS
        if samplers is not None:
            if isinstance(samplers, str):
                values["sampler_order"] = np.uint64(sampler_order(samplers))
                flags = flags | _USE_SAMPLER_ORDER
            else:
                array, entries = _per_row(samplers, rows, "samplers")
                if entries is None:
                    entries = array.tolist()
                codes = np.array([0 if e is None else sampler_order(e) for e in entries], dtype=np.uint64)
                values["sampler_order"] = codes
                on = np.array([e is not None for e in entries])
                flags = flags | np.where(on, np.uint32(_USE_SAMPLER_ORDER), np.uint32(0))
        sentinel = _bool_column(sentinels, rows, "llama_cpp_sentinels")
        if type(sentinel) is np.ndarray:
            flags = flags | np.where(sentinel, np.uint32(_LLAMA_CPP_SENTINELS), np.uint32(0))
        elif sentinel:
            flags = flags | _LLAMA_CPP_SENTINELS
    values["flags"] = flags
    # The defaults of tns_params_init for the fields a call leaves off.
    for field, default in (("typical_p", 1.0), ("epsilon", 0.0), ("eta", 0.0), ("xtc_threshold", 0.1),
                           ("xtc_probability", 1.0), ("dynatemp_range", 0.0), ("dynatemp_exponent", 1.0),
                           ("sampler_order", 0)):
        values.setdefault(field, default)
    scalars, columns = [], []
    for field in _FIELDS:
        value = values[field]
        if type(value) is np.ndarray:
            scalars.append(0)
            columns.append((field, value))
        else:
            scalars.append(value)
    return _record_of(tuple(scalars)), columns


# Records of checked scalar values (_FIELDS' order), and of the scalar arguments of recent calls
# (Python ints, floats and None only: values that compare equal give the same record). Shared
# by all samplers; bounded.
_RECORDS = {}
_ARGUMENT_RECORDS = {}
_RECORDS_MAX = 256
_PY_REAL = frozenset({int, float})
_PY_REAL_OR_NONE = frozenset({int, float, _NONE})
_PY_INT_OR_NONE = frozenset({int, _NONE})


def _record_of(scalars):
    record = _RECORDS.get(scalars)
    if record is None:
        array = np.zeros(1, dtype=_PARAMS_DTYPE)
        array["struct_size"] = _PARAMS_DTYPE.itemsize
        for field, value in zip(_FIELDS, scalars):
            array[field] = value
        record = array.view(np.uint64)
        if len(_RECORDS) >= _RECORDS_MAX:
            _RECORDS.clear()
        _RECORDS[scalars] = record
    return record


def _record_for_arguments(key):
    """The record of scalar arguments (temperature, n_sigma, seed, top_k, top_p, min_p), checked."""
    record = _ARGUMENT_RECORDS.get(key)
    if record is None:
        record = _check_params(1, *key)[0]  # scalars only: no columns
        if len(_ARGUMENT_RECORDS) >= _RECORDS_MAX:
            _ARGUMENT_RECORDS.clear()
        _ARGUMENT_RECORDS[key] = record
    return record


# ---- The sampler -----------------------------------------------------------------------------------


class SampleResult:
    """One call's tokens: `tokens` (int64), `logprobs` (float64), `kept` (int64, the candidate
    count), `errors` (a message for each failed row, None for the others) and `status` (int32,
    each row's TNS_OK or TNS_ROW_* code). Each array is the result's own (no later call changes it).

    With request processing, also `top_logprobs` (per row, a list of `(id, logprob)` pairs, most
    probable first, in the processed distribution at T = 1 before truncation; None for a row that
    did not ask or failed), `sampled_logprobs` (float64: the sampled token's log-probability in
    that distribution; NaN where not asked) and `ranks` (int64: its 1-based rank there, ties
    sharing the worst; 0 where not asked). A call without processing has them as None, NaN and 0."""

    __slots__ = ("tokens", "logprobs", "kept", "errors", "status", "_top", "_asked", "_list")

    def __init__(self, tokens, logprobs, kept, errors, status, top=None, asked=None):
        self.tokens = tokens
        self.logprobs = logprobs
        self.kept = kept
        self.errors = errors
        self.status = status
        # top: the rows' tns_top_logprobs as uint64 words [rows, 32] (viewed as records when
        # read); asked: True, or a bool per row.
        self._top, self._asked, self._list = top, asked, None

    @property
    def top_logprobs(self):
        if self._list is None:
            if self._top is None:
                self._list = [None] * len(self.tokens)
            else:
                self._list = list(_processing.TopLogprobs(self._records(), self._asked & (self.status == _OK)))
        return self._list

    @property
    def sampled_logprobs(self):
        if self._top is None:
            return np.full(len(self.tokens), np.nan)
        return np.where(self._asked & (self.status == _OK), self._records()["sampled_logprob"], np.nan)

    @property
    def ranks(self):
        if self._top is None:
            return np.zeros(len(self.tokens), dtype=np.int64)
        return np.where(self._asked & (self.status == _OK), self._records()["rank"], 0).astype(np.int64)

    def _records(self):
        return self._top.reshape(-1).view(_processing.TOP_LOGPROBS_DTYPE)

    def __repr__(self):
        return f"SampleResult(tokens={self.tokens!r}, logprobs={self.logprobs!r}, kept={self.kept!r}, errors={self.errors!r})"


class VerifyResult:
    """One verification call's outcome per request: `accepted` (int64: accepted draft tokens,
    -1 for a failed request), `tokens` and `logprobs` (per request, an array of the accepted + 1
    emitted tokens and their log-probabilities under the target distribution; empty for a failed
    request), `errors` (a message per failed request, None for the others) and `status`."""

    __slots__ = ("accepted", "tokens", "logprobs", "errors", "status")

    def __init__(self, accepted, tokens, logprobs, errors, status):
        self.accepted = accepted
        self.tokens = tokens
        self.logprobs = logprobs
        self.errors = errors
        self.status = status

    def __repr__(self):
        return f"VerifyResult(accepted={self.accepted!r}, tokens={self.tokens!r}, errors={self.errors!r})"


_ndarray = np.ndarray
_empty = np.empty
_U64 = np.dtype(np.uint64)
_c_char_from_buffer = ctypes.c_char.from_buffer
_byref = ctypes.byref
_BUSY_MESSAGE = None  # set below, once the library's message is known


def _errors(status, tokens):
    rows = len(status)
    errors = [None] * rows
    for r in np.flatnonzero(status).tolist():
        errors[r] = f"row {r}: {_message(int(status[r]), int(tokens[r]))}"
    return errors


class Sampler:
    """A batched Top-nσ sampler over rows of `vocab_size` logits, batches of up to `max_batch`
    rows, with `threads` workers (None: every core). It owns its scratch memory and worker
    threads; one call at a time per sampler: a call made while another runs on the same sampler
    (from another thread) raises RuntimeError at once, before it writes anything the running
    call uses, and the running call's results are unaffected.

    vocab_size, max_batch, threads and a NUMA node id placement are integers (int or a NumPy
    integer; not bool, not float): anything else, or a value out of range, raises ValueError
    naming the argument. MemoryError when the scratch (about 64 bytes per logit per thread) is
    not below the machine's memory or cannot be allocated."""

    def __init__(self, vocab_size, max_batch, threads=None, placement="automatic"):
        self._handle = None
        self._lock = threading.Lock()  # held by the running call (and by close)
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
        # Buffers reused by every call (written only while the lock is held): the parameter
        # records, the steps, and the outputs, which each call copies into its result. A call
        # writes whole records (struct_size included) into the rows it uses; untouched rows cost
        # no memory (np.zeros).
        self._params = np.zeros(max_batch, dtype=_PARAMS_DTYPE)
        self._params_words = self._params.view(np.uint64).reshape(max_batch, _PARAMS_DTYPE.itemsize // 8)
        self._steps = np.zeros(max_batch, dtype=np.uint64)
        self._tokens = np.zeros(max_batch, dtype=np.int64)
        self._logprobs = np.zeros(max_batch, dtype=np.float64)
        self._kept = np.zeros(max_batch, dtype=np.int64)
        self._status = np.zeros(max_batch, dtype=np.int32)
        self._top = None  # tns_top_logprobs words, allocated by the first call that asks
        self._columns = {field: self._params[field] for field in _FIELDS}
        self._record = None  # the record the first `_filled` parameter rows hold (None: mixed rows)
        self._filled = 0
        self._step = None  # the scalar step the first `_step_rows` steps hold (None: per-row steps)
        self._step_rows = 0
        self._c_vocab = _i64(vocab_size)
        # tns_sample's arguments: [handle, logits, format, rows, row stride, params, steps,
        # tokens, logprobs, kept, row status]; a call sets logits, format, rows and the stride.
        self._args = [handle, None, _FORMAT_F32, None, self._c_vocab] + [
            _p(a.ctypes.data) for a in (self._params, self._steps, self._tokens, self._logprobs, self._kept,
                                        self._status)]
        self._set_rows(0)

    def _set_rows(self, rows):
        """Views of the reused buffers for calls of `rows` rows."""
        self._rows = rows
        self._args[3] = _i64(rows)
        self._steps_view = self._steps[:rows]
        self._outputs = (self._tokens[:rows], self._logprobs[:rows], self._kept[:rows], self._status[:rows])
        self._all_ok = bytes(4 * rows)

    def close(self):
        """Frees the sampler's memory and threads (also done when it is garbage-collected). Waits
        for a call running on it in another thread; calls afterwards raise ValueError."""
        if getattr(self, "_handle", None) is None:
            return
        with self._lock:
            handle, self._handle = self._handle, None
            if handle:
                _lib.tns_sampler_destroy(handle)

    def __del__(self):
        self.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _logits(self, logits, dtype):
        """(pointer, format, rows, row stride) of any logits argument, checked."""
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
        address = logits.ctypes.data
        if address % item != 0:
            raise ValueError("logits are not aligned to their element size")
        return _p(address), fmt, rows, (self._c_vocab if row_stride == vocab else _i64(row_stride))

    def sample(self, logits, temperature=1.0, n_sigma=1.0, seed=0, step=0,
               top_k=None, top_p=None, min_p=None, dtype=None, allowed=None, logit_bias=None,
               prompt_tokens=None, output_tokens=None, repetition_penalty=_ONE, frequency_penalty=_ZERO,
               presence_penalty=_ZERO, top_logprobs=None, typical_p=None, epsilon=None, eta=None, xtc_threshold=None, xtc_probability=None,
               dynatemp_range=None, dynatemp_exponent=None, p_less=False, samplers=None, llama_cpp_sentinels=False,
               dry_multiplier=None, dry_base=None,
               dry_allowed_length=None, dry_penalty_last_n=None, dry_sequence_breakers=None):
        """One token per row of `logits`, an ndarray [rows, vocab_size] (float32, float16, or
        uint16 bfloat16 bits with dtype="bfloat16"), read in place and never modified.

        Each of temperature, n_sigma, seed, step, top_k, top_p, min_p is a scalar or a per-row
        sequence (a list, tuple or 1-D array of `rows` entries); n_sigma / top_k / top_p / min_p
        None (or a None entry) turns that filter off.

        The other samplers (README "Semantics"), each a scalar or one per row, None (p_less False)
        off: typical_p (0, 1], epsilon and eta [0, 1), xtc_threshold [0, 1] with xtc_probability
        [0, 1] (default 1), dynatemp_range (>= 0) with dynatemp_exponent (>= 0, default 1), and
        p_less (a bool). `samplers`, a sampler order as llama.cpp's --samplers spells it
        ("top_k;top_p;min_p;temperature"; one string for every row, or one per row, None entries
        the fixed order): each listed step runs over what the steps before it kept (README "The
        other samplers"). `llama_cpp_sentinels=True` (or one bool per row) reads llama.cpp's off
        values (top_k <= 0, top_p >= 1, min_p <= 0, n_sigma <= 0, ...) as off instead of errors.
        A row with bad logits or parameters gets a message in `errors`; the others still sample.
        An argument of the wrong kind (seed, step and top_k are integers, the others numbers;
        bool is neither, and a float such as 2.0 is not an integer), the wrong length or dtype, or
        beyond its C field (seed and step 0 ... 2^64 - 1, top_k 64-bit, floats within float32's
        range) raises ValueError naming it. A call made while another call runs on this sampler
        raises RuntimeError (TNS_ERR_BUSY) and changes nothing the running call reads.

        Request processing (README "Request processing"), applied inside the pass before the
        sampling parameters: `allowed`, the allowed-token bitmask, an int32 or uint32 array
        [rows, ceil(V/32)] as llguidance.numpy.allocate_token_bitmask makes it (LSB-first);
        `logit_bias`, one dict {token id: bias} per row (or None; one dict alone applies to every
        row); `prompt_tokens` and `output_tokens`, one list or 1-D array of ids per row (or None);
        `repetition_penalty` (> 0, 1 off), `frequency_penalty` and `presence_penalty` (0 off),
        each a scalar or one per row; `top_logprobs`, None, 0 ... 20, or one per row (None
        entries: not asked), which fills the result's `top_logprobs`, `sampled_logprobs` and
        `ranks`. A value the library judges per row (a token id outside the vocabulary, a
        penalty that is not finite) fails that row alone.

        DRY (llama.cpp's `dry`, README "The other samplers"), over each row's prompt_tokens
        followed by its output_tokens: `dry_multiplier` (>= 0; None or 0 off), `dry_base` (>= 1,
        default 1.75), `dry_allowed_length` (>= 0, default 2), `dry_penalty_last_n` (-1 the whole
        context, the default; 0 off), each a scalar or one per row; `dry_sequence_breakers`, a list
        of token-id sequences (1 ... 21 ids each) for every row, or one such list (or None) per row.
        """
        # The logits: a C-contiguous native float32 array is the fast case; the rest is checked
        # in full by _logits. Nothing shared is read or written before the lock below.
        if dtype is None and type(logits) is _ndarray and logits.dtype is _F32:
            shape = logits.shape
            if len(shape) == 2 and shape[1] == self.vocab_size and shape[0] <= self.max_batch:
                rows = shape[0]
                try:  # C-contiguous, writable and not empty; else _logits
                    pointer = _byref(_c_char_from_buffer(logits))
                    fmt, stride = _FORMAT_F32, self._c_vocab
                except (TypeError, ValueError, BufferError):
                    pointer, fmt, rows, stride = self._logits(logits, dtype)
            else:
                pointer, fmt, rows, stride = self._logits(logits, dtype)
        else:
            pointer, fmt, rows, stride = self._logits(logits, dtype)

        # The parameters, checked into local values: Python scalars (the common call) map to a
        # cached record; anything else goes through the per-row checks.
        if (type(seed) is int and type(temperature) in _PY_REAL and type(n_sigma) in _PY_REAL_OR_NONE
                and type(top_k) in _PY_INT_OR_NONE and type(top_p) in _PY_REAL_OR_NONE
                and type(min_p) in _PY_REAL_OR_NONE and typical_p is None and epsilon is None and eta is None
                and xtc_threshold is None and xtc_probability is None and dynatemp_range is None
                and dynatemp_exponent is None and p_less is False and samplers is None
                and llama_cpp_sentinels is False):
            key = (temperature, n_sigma, seed, top_k, top_p, min_p)
            record = _ARGUMENT_RECORDS.get(key)
            if record is None:
                record = _record_for_arguments(key)
            columns = ()
        else:
            record, columns = _check_params(
                rows, temperature, n_sigma, seed, top_k, top_p, min_p,
                (typical_p, epsilon, eta, xtc_threshold, xtc_probability, dynatemp_range, dynatemp_exponent, p_less,
                 samplers, llama_cpp_sentinels))
        if not (type(step) is int and 0 <= step <= _UINT64_MAX):
            step = _integer_column(step, rows, "step", 0, _UINT64_MAX, np.uint64)[0]  # an int or per-row array

        # Request processing, checked into a local record array (the call's own, never shared).
        processing = None
        dry = None
        if not (dry_multiplier is None and dry_base is None and dry_allowed_length is None
                and dry_penalty_last_n is None and dry_sequence_breakers is None):
            dry = (dry_multiplier, dry_base, dry_allowed_length, dry_penalty_last_n, dry_sequence_breakers)
        if (dry is None and allowed is None and logit_bias is None and prompt_tokens is None
                and output_tokens is None and top_logprobs is None and repetition_penalty is _ONE
                and frequency_penalty is _ZERO and presence_penalty is _ZERO):
            pass  # no processing: the plain call
        elif not (dry is None and allowed is None and logit_bias is None and prompt_tokens is None
                  and output_tokens is None and top_logprobs is None
                  and _default_penalties(repetition_penalty, frequency_penalty, presence_penalty)):
            processing, reference, keep, asked = _processing.prepare(
                rows, self.vocab_size, allowed, logit_bias, prompt_tokens, output_tokens,
                repetition_penalty, frequency_penalty, presence_penalty, top_logprobs, dry)

        if not self._lock.acquire(False):
            raise RuntimeError(_BUSY_MESSAGE)
        try:
            if self._handle is None:
                raise ValueError("the sampler is closed")
            if rows != self._rows:
                self._set_rows(rows)
            if record is not self._record or rows > self._filled:
                self._params_words[:rows] = record
                self._record, self._filled = record, rows
            if columns:
                for field, values in columns:
                    self._columns[field][:rows] = values
                self._record = None
            if type(step) is int:
                if step != self._step or rows > self._step_rows:
                    self._steps_view.fill(step)
                    self._step, self._step_rows = step, rows
            else:
                self._steps_view[:] = step
                self._step = None
            args = self._args
            args[1] = pointer
            args[2] = fmt
            args[4] = stride
            top = None
            if processing is None:
                code = _sample_raw(*args)
            else:
                if asked is not None and self._top is None:
                    # tns_top_logprobs records as uint64 words (32 per row), copied out per call.
                    self._top = np.zeros((self.max_batch, 32), dtype=_U64)
                    self._top_pointer = _p(self._top.ctypes.data)
                code = _sample_processed(
                    args[0], args[1], args[2], args[3], args[4], args[5], reference,
                    args[6], args[7], args[8], args[9], args[10], self._top_pointer if asked is not None else None)
                if asked is not None:
                    top = self._top[:rows].copy()
            if code != _OK:
                raise _error(code, _message(code))
            tokens, logprobs, kept, status = self._outputs
            tokens, logprobs, kept, status = tokens.copy(), logprobs.copy(), kept.copy(), status.copy()
            all_ok = self._all_ok
        finally:
            self._lock.release()
        errors = [None] * rows if status.tobytes() == all_ok else _errors(status, tokens)
        if top is not None:
            return SampleResult(tokens, logprobs, kept, errors, status, top, asked)  # top: uint64 words
        return SampleResult(tokens, logprobs, kept, errors, status)

    def verify(self, target_logits, draft_tokens, draft_probs, draft_distributions=None, temperature=1.0,
               n_sigma=1.0, seed=0, step=0, top_k=None, top_p=None, min_p=None, dtype=None, typical_p=None, epsilon=None, eta=None, xtc_threshold=None, xtc_probability=None,
               dynatemp_range=None, dynatemp_exponent=None, p_less=False, samplers=None, llama_cpp_sentinels=False):
        """Speculative verification (README "Speculative decoding"): each request's k draft
        tokens against its k + 1 target rows, losslessly (every emitted token is distributed as
        the request's own target distribution under the sampling parameters).

        target_logits  [requests, k + 1, vocab_size], or [requests · (k + 1), vocab_size]
                       request-major (float32, float16, or bfloat16 bits with dtype="bfloat16")
        draft_tokens   [requests, k] integer ids
        draft_probs    [requests, k]: each draft token's draft probability q(d)
        draft_distributions  None (each q the point mass at its token), a dense array
                       [requests, k, vocab_size] of draft probabilities, or sparse: per request a
                       list of k dicts {id: probability} (or (id, probability) pairs)
        temperature, n_sigma, seed, step, top_k, top_p, min_p and the other samplers (typical_p,
                       epsilon, eta, xtc_threshold, xtc_probability, dynatemp_range,
                       dynatemp_exponent, p_less, samplers, llama_cpp_sentinels): per request, as
                       in sample()

        Returns a VerifyResult: accepted, tokens, logprobs and errors per request. A failing
        request (a bad target row, a draft id outside the vocabulary) fails alone. requests is
        at most max_batch.
        """
        tokens_array = draft_tokens if isinstance(draft_tokens, np.ndarray) else np.asarray(draft_tokens, dtype=object)
        if tokens_array.ndim != 2:
            raise ValueError(f"draft_tokens must be 2-D [requests, k], got shape {tokens_array.shape}")
        requests, k = tokens_array.shape
        if requests > self.max_batch:
            raise ValueError(f"draft_tokens has {requests} requests, the sampler's max_batch is {self.max_batch}")
        if not isinstance(target_logits, np.ndarray):
            raise ValueError(f"target_logits must be a numpy.ndarray, got {type(target_logits).__name__}")
        if target_logits.ndim == 3:
            if target_logits.shape[:2] != (requests, k + 1):
                raise ValueError(f"draft_tokens has shape [{requests}, {k}] (requests, k), so target_logits must have "
                                 f"shape [{requests}, {k + 1}, {self.vocab_size}] (requests, k + 1, V), got "
                                 f"{target_logits.shape}")
            target_logits = target_logits.reshape(requests * (k + 1), target_logits.shape[2])
        if target_logits.ndim != 2 or target_logits.shape[0] != requests * (k + 1):
            raise ValueError(f"target_logits must hold {requests} × {k + 1} rows (requests × (k + 1)), "
                             f"got shape {target_logits.shape}")
        fmt = _logit_format(target_logits, dtype)
        if target_logits.shape[1] != self.vocab_size:
            raise ValueError(f"target_logits have {target_logits.shape[1]} columns, the sampler's vocab_size is "
                             f"{self.vocab_size}")
        target_logits = np.ascontiguousarray(target_logits)
        d, keep = _processing.drafts_arguments(draft_tokens, draft_probs, draft_distributions, requests, k,
                                               self.vocab_size)
        record, columns = _check_params(
            requests, temperature, n_sigma, seed, top_k, top_p, min_p,
            (typical_p, epsilon, eta, xtc_threshold, xtc_probability, dynatemp_range, dynatemp_exponent, p_less,
                 samplers, llama_cpp_sentinels))
        params = np.empty(max(requests, 1), dtype=_PARAMS_DTYPE)
        params.view(np.uint64).reshape(-1, _PARAMS_DTYPE.itemsize // 8)[:] = record
        for field, values in columns:
            params[field][:requests] = values
        steps = np.empty(max(requests, 1), dtype=np.uint64)
        steps[:requests] = _integer_column(step, requests, "step", 0, _UINT64_MAX, np.uint64)[0]
        accepted = np.empty(requests, dtype=np.int64)
        out_tokens = np.empty((requests, k + 1), dtype=np.int64)
        out_logprobs = np.empty((requests, k + 1), dtype=np.float64)
        status = np.empty(requests, dtype=np.int32)
        position = np.empty(requests, dtype=np.int64)
        if not self._lock.acquire(False):
            raise RuntimeError(_BUSY_MESSAGE)
        try:
            if self._handle is None:
                raise ValueError("the sampler is closed")
            code = _verify_raw(
                self._handle, _p(target_logits.ctypes.data), _i32(fmt), _i64(requests), _i64(k),
                _i64(self.vocab_size), _p(params.ctypes.data), _p(steps.ctypes.data), ctypes.byref(d),
                _p(accepted.ctypes.data), _p(out_tokens.ctypes.data), _p(out_logprobs.ctypes.data),
                _p(status.ctypes.data), _p(position.ctypes.data))
        finally:
            self._lock.release()
        del keep
        if code != _OK:
            raise _error(code, _message(code))
        errors, tokens, logprobs = [None] * requests, [], []
        for r in range(requests):
            if status[r] == _OK:
                n = int(accepted[r]) + 1
                tokens.append(out_tokens[r, :n].copy())
                logprobs.append(out_logprobs[r, :n].copy())
                continue
            tokens.append(np.empty(0, dtype=np.int64))
            logprobs.append(np.empty(0, dtype=np.float64))
            index = int(out_tokens[r, 0])
            if status[r] == _ROW_INVALID_DRAFT:
                errors[r] = f"request {r}: draft position {int(position[r])}: {_message(int(status[r]))} (id {index})"
            else:
                errors[r] = f"request {r}: target row {int(position[r])}: {_message(int(status[r]), index)}"
        return VerifyResult(accepted, tokens, logprobs, errors, status)


_BUSY_MESSAGE = _message(_ERR_BUSY)


def _default_penalties(repetition, frequency, presence):
    """Whether the three penalties are off (Python numbers 1, 0, 0): the call needs no processing."""
    return (type(repetition) in _PY_REAL and repetition == 1 and type(frequency) in _PY_REAL and frequency == 0
            and type(presence) in _PY_REAL and presence == 0)


# ---- One row -------------------------------------------------------------------------------------


def filter(row, n_sigma=1.0, top_k=None, top_p=None, min_p=None, temperature=1.0, typical_p=None, epsilon=None,
           eta=None, xtc_threshold=None, xtc_probability=None, dynatemp_range=None, dynatemp_exponent=None,
           p_less=False, samplers=None, llama_cpp_sentinels=False):
    """The filtered set of one row of logits (1-D; float32, or float16 widened exactly; a list of
    numbers is read as float32), under the sampler's pipeline and parameters (n_sigma None turns
    Top-nσ off; the other samplers as in Sampler.sample, XTC's coin at seed 0, step 0).
    Every argument is checked as Sampler.sample's (ValueError naming it).

    Returns a dict: "max", "mean", "std" (Bessel-corrected, over the finite logits), "threshold"
    (the combined Top-nσ / min-p logit threshold), "finite" (count of finite logits), "kept"
    (np.ndarray of the kept token ids, ascending) and "probabilities" (float64, each kept token's
    probability in the distribution drawn from, in the order of "kept"). Raises ValueError for a bad row or parameter,
    MemoryError when the call's temporary scratch (about 64 bytes per logit) cannot be had.
    """
    if isinstance(row, np.ndarray):
        if row.dtype == np.float16:
            row = row.astype(np.float32)
        elif row.dtype != np.float32:
            raise ValueError(f"row must be float32 (or float16), got {row.dtype}")
    else:
        if isinstance(row, (str, bytes, dict, set)) or _is_scalar(row):
            raise ValueError(f"row must be a 1-D array or sequence of logits, got {type(row).__name__}")
        try:
            array = np.asarray(row)
        except Exception as error:  # noqa: BLE001 - anything NumPy cannot read is a bad argument
            raise ValueError(f"row must be a 1-D sequence of numbers: {error}") from None
        if array.dtype.kind not in "iuf":
            raise ValueError(f"row must hold numbers, got {array.dtype}")
        with np.errstate(over="ignore"):
            row = array.astype(np.float32)
    if row.ndim != 1:
        raise ValueError(f"row must be 1-D, got shape {row.shape}")
    row = np.ascontiguousarray(row)
    vocab = row.shape[0]
    if vocab == 0:
        raise ValueError("row is empty")
    record, columns = _check_params(
        1, temperature, n_sigma, 0, top_k, top_p, min_p,
        (typical_p, epsilon, eta, xtc_threshold, xtc_probability, dynatemp_range, dynatemp_exponent, p_less,
                 samplers, llama_cpp_sentinels))
    params = record.copy().view(_PARAMS_DTYPE)
    for field, values in columns:
        params[field] = values
    ids = np.empty(vocab, dtype=np.int32)
    probabilities = np.empty(vocab, dtype=np.float64)
    stats = _RowStats()
    count = _i64(0)
    code = _lib.tns_filtered_distribution(
        row.ctypes.data, vocab, params.ctypes.data, ctypes.byref(stats), ids.ctypes.data, probabilities.ctypes.data,
        vocab, ctypes.byref(count))
    if code != _OK:
        raise _error(code, _message(code, stats.error_index))
    order = np.argsort(ids[: count.value], kind="stable")
    kept = ids[: count.value][order].astype(np.int64)
    return {
        "probabilities": probabilities[: count.value][order],
        "max": stats.max,
        "mean": stats.mean,
        "std": stats.std,
        "threshold": stats.threshold,
        "finite": int(stats.finite),
        "kept": kept,
    }
