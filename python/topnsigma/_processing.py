"""Request processing, top logprobs and speculative verification for `topnsigma.Sampler`:
the buffers and argument checks behind `Sampler.sample(..., allowed=..., top_logprobs=...)`
and `Sampler.verify(...)`, over the C ABI's `tns_sample_processed` and `tns_verify`
(include/topnsigma.h). Internal: use the `Sampler` methods.
"""

import ctypes
import numbers

import numpy as np

MAX_TOP_LOGPROBS = 20
_INT32_MIN, _INT32_MAX = -(1 << 31), (1 << 31) - 1
_FLOAT32_MAX = float(np.finfo(np.float32).max)

# tns_processing (128 bytes) and tns_top_logprobs (256 bytes), as NumPy records: the buffers are
# filled column by column, without a Python loop over rows for scalar arguments.
PROCESSING_DTYPE = np.dtype(
    {
        "names": [
            "struct_size", "top_logprobs", "allowed", "bias_ids", "bias_values", "bias_count",
            "prompt_tokens", "prompt_count", "output_tokens", "output_count",
            "repetition_penalty", "frequency_penalty", "presence_penalty", "reserved",
            "dry_multiplier", "dry_base", "dry_allowed_length", "dry_penalty_last_n",
            "dry_breaker_tokens", "dry_breaker_lengths", "dry_breaker_count",
        ],
        "formats": ["<u4", "<i4", "<u8", "<u8", "<u8", "<i8", "<u8", "<i8", "<u8", "<i8", "<f4", "<f4", "<f4", "<u4",
                    "<f4", "<f4", "<i4", "<i4", "<u8", "<u8", "<i8"],
        "offsets": [0, 4, 8, 16, 24, 32, 40, 48, 56, 64, 72, 76, 80, 84, 88, 92, 96, 100, 104, 112, 120],
        "itemsize": 128,
    }
)
MAX_DRY_BREAKER_LENGTH = 21
TOP_LOGPROBS_DTYPE = np.dtype(
    {
        "names": ["count", "rank", "sampled_logprob", "ids", "logprobs"],
        "formats": ["<i4", "<i4", "<f8", ("<i4", (MAX_TOP_LOGPROBS,)), ("<f8", (MAX_TOP_LOGPROBS,))],
        "offsets": [0, 4, 8, 16, 96],
        "itemsize": 256,
    }
)
DRAFT_POINT_MASS, DRAFT_DENSE, DRAFT_SPARSE = 0, 1, 2


class Drafts(ctypes.Structure):
    _fields_ = [
        ("kind", ctypes.c_int32),
        ("reserved", ctypes.c_int32),
        ("tokens", ctypes.c_void_p),
        ("probabilities", ctypes.c_void_p),
        ("dense", ctypes.c_void_p),
        ("sparse_offsets", ctypes.c_void_p),
        ("sparse_ids", ctypes.c_void_p),
        ("sparse_probabilities", ctypes.c_void_p),
    ]


def _default_record():
    record = np.zeros((), dtype=PROCESSING_DTYPE)
    record["struct_size"] = PROCESSING_DTYPE.itemsize
    record["top_logprobs"] = -1
    record["repetition_penalty"] = 1.0
    record["dry_base"] = 1.75
    record["dry_allowed_length"] = 2
    record["dry_penalty_last_n"] = -1
    return record


DEFAULT_RECORD = _default_record()


def is_integer(value):
    return isinstance(value, (numbers.Integral, np.integer)) and not isinstance(value, (bool, np.bool_))


_I32 = np.dtype(np.int32)
_array_interface = "__array_interface__"


def _address(array):
    """The address of an array's first element (through ctypes' buffer protocol when writable:
    about 4 times cheaper than __array_interface__)."""
    try:
        return ctypes.addressof(ctypes.c_char.from_buffer(array))
    except (TypeError, ValueError, BufferError):
        return array.__array_interface__["data"][0]


def _ids(value, name, row):
    """A token-id list as a contiguous int32 array: integers within int32, no wrap (bool and
    non-integral values are refused)."""
    where = f"{name}[{row}]"
    if type(value) is np.ndarray:
        if value.dtype == _I32 and value.ndim == 1 and value.flags.c_contiguous:
            return value  # the fast case: nothing to check or convert
        if value.ndim != 1:
            raise ValueError(f"{where} must be a 1-D array of token ids, got shape {value.shape}")
        if value.size and value.dtype.kind not in "iu":
            raise ValueError(f"{where} must hold integers, got dtype {value.dtype}")
        array = value
    else:
        if isinstance(value, (str, bytes, dict, set)) or not hasattr(value, "__len__"):
            raise ValueError(f"{where} must be a sequence of token ids, got {type(value).__name__}")
        if len(value) == 0:
            return np.empty(0, dtype=np.int32)
        # Python ints only (not bool, not float): one pass in C over the items' types.
        types = set(map(type, value))
        if not types <= {int} and not all(issubclass(t, (int, np.integer)) and t is not bool for t in types):
            raise ValueError(f"{where} must hold integer token ids (not bool or float)")
        try:
            array = np.array(value, dtype=np.int64)
        except OverflowError:
            raise ValueError(f"{where} holds a token id outside int32") from None
    if array.size and (int(array.min()) < _INT32_MIN or int(array.max()) > _INT32_MAX):
        raise ValueError(f"{where} holds a token id outside int32")
    return np.ascontiguousarray(array, dtype=np.int32)


def _per_row(value, rows, name):
    """`value` as `rows` entries: a list or tuple or 1-D array of that length."""
    if isinstance(value, np.ndarray) and value.ndim == 2 and value.dtype != object:
        value = list(value)
    if not isinstance(value, (list, tuple, np.ndarray)):
        raise ValueError(f"{name} must hold one entry per row ({rows}), got {type(value).__name__}")
    if len(value) != rows:
        raise ValueError(f"{name} holds {len(value)} entries for {rows} rows")
    return value


def _float_column(value, rows, name, default):
    """A float32 column: a scalar or one number per row, each a real number within float32's range
    (NaN and ±inf pass: the library judges them per row)."""
    if value is None:
        value = default
    if isinstance(value, (numbers.Real, np.floating, np.integer)) and not isinstance(value, (bool, np.bool_)):
        v = float(value)
        if abs(v) > _FLOAT32_MAX and not np.isinf(v):
            raise ValueError(f"{name} = {value!r} is outside float32's range")
        return np.float32(v)
    entries = _per_row(value, rows, name)
    out = np.empty(rows, dtype=np.float32)
    for r, item in enumerate(entries):
        if not isinstance(item, (numbers.Real, np.floating, np.integer)) or isinstance(item, (bool, np.bool_)):
            raise ValueError(f"{name}[{r}] must be a number, got {item!r}")
        v = float(item)
        if abs(v) > _FLOAT32_MAX and not np.isinf(v):
            raise ValueError(f"{name}[{r}] = {item!r} is outside float32's range")
        out[r] = v
    return out


def _top_column(value, rows):
    """top_logprobs as an int32 column (-1: not asked): None, an integer, or one per row."""
    def one(item, where):
        if item is None:
            return -1
        if not is_integer(item):
            raise ValueError(f"{where} must be an integer in 0...{MAX_TOP_LOGPROBS} or None, got {item!r}")
        if not 0 <= int(item) <= MAX_TOP_LOGPROBS:
            raise ValueError(f"{where} must be in 0...{MAX_TOP_LOGPROBS}, got {item}")
        return int(item)

    if value is None or is_integer(value):
        return np.int32(one(value, "top_logprobs"))
    entries = _per_row(value, rows, "top_logprobs")
    return np.array([one(item, f"top_logprobs[{r}]") for r, item in enumerate(entries)], dtype=np.int32)


WORDS = PROCESSING_DTYPE.itemsize // 8  # a tns_processing record as 16 uint64 words
_ARANGE = np.arange(64, dtype=np.uint64)
_c_char_from_buffer = ctypes.c_char.from_buffer
_addressof = ctypes.addressof

# Records of scalar settings (repetition, frequency, presence, top_logprobs), checked: the
# common call (a bitmask and scalar settings) copies one into every row and writes only the
# bitmask pointers. Bounded.
_RECORDS = {}
_RECORDS_MAX = 256
_PY_NUMBER = (int, float)


def _scalar_record(repetition, frequency, presence, top):
    key = (repetition, frequency, presence, top)
    record = _RECORDS.get(key)
    if record is None:
        one = np.zeros(1, dtype=PROCESSING_DTYPE)
        one[0] = DEFAULT_RECORD
        one["repetition_penalty"] = _float_column(repetition, 1, "repetition_penalty", 1.0)
        one["frequency_penalty"] = _float_column(frequency, 1, "frequency_penalty", 0.0)
        one["presence_penalty"] = _float_column(presence, 1, "presence_penalty", 0.0)
        one["top_logprobs"] = _top_column(top, 1)
        record = one.view(np.uint64).copy()
        if len(_RECORDS) >= _RECORDS_MAX:
            _RECORDS.clear()
        _RECORDS[key] = record
    return record


def _allowed_pointers(allowed, rows, vocab):
    """The checked bitmask (possibly a contiguous copy) and its rows' addresses."""
    if type(allowed) is not np.ndarray:
        raise ValueError("allowed must be a NumPy array [rows, ceil(V/32)] of int32 or uint32 words "
                         "(llguidance.numpy.allocate_token_bitmask)")
    if allowed.dtype.kind not in "iu" or allowed.dtype.itemsize != 4:
        raise ValueError(f"allowed must hold int32 or uint32 words, got dtype {allowed.dtype}")
    if allowed.ndim == 1 and rows == 1:
        allowed = allowed.reshape(1, -1)
    words = (vocab + 31) // 32
    if allowed.ndim != 2 or allowed.shape[0] != rows or allowed.shape[1] < words:
        raise ValueError(f"allowed must have shape [{rows}, {words}] (rows, ceil(V/32)), got {allowed.shape}")
    if not allowed.dtype.isnative:
        raise ValueError("allowed must be in native byte order")
    if allowed.strides[1] != 4 or allowed.strides[0] < 0:
        allowed = np.ascontiguousarray(allowed)
    try:
        base = _addressof(_c_char_from_buffer(allowed))  # fast; needs a writable array
    except (TypeError, ValueError, BufferError):
        base = allowed.ctypes.data
    arange = _ARANGE if rows <= len(_ARANGE) else np.arange(rows, dtype=np.uint64)
    return allowed, arange[:rows] * np.uint64(allowed.strides[0]) + np.uint64(base)


_LAST = None


def prepare(rows, vocab, allowed, logit_bias, prompt_tokens, output_tokens,
            repetition_penalty, frequency_penalty, presence_penalty, top_logprobs, dry=None):
    """The call's tns_processing records as a uint64 array [rows, 16] and a ctypes reference to
    them, the arrays they point into (to keep alive during the call), and the rows asking for top
    logprobs (True for all, a bool array, or None for none). Raises ValueError naming the
    argument. The records are never written once made, so calls may share them."""
    global _LAST
    last = _LAST if dry is None else None
    # The same bitmask array and the same (Python number) settings as the last such call: a
    # server's decode loop refills one bitmask in place. Identity, not equality: the cache holds
    # only Python numbers and None, so an identical object has the same value.
    if (last is not None and last[0] is allowed and last[1] is repetition_penalty and last[2] is frequency_penalty
            and last[3] is presence_penalty and last[4] is top_logprobs and logit_bias is None
            and prompt_tokens is None and output_tokens is None and last[5] == rows and last[6] == vocab
            and (allowed is None or last[7] == allowed.shape)):
        return last[8], last[9], last[10], last[11]
    if (dry is None and logit_bias is None and prompt_tokens is None and output_tokens is None
            and type(repetition_penalty) in _PY_NUMBER and type(frequency_penalty) in _PY_NUMBER
            and type(presence_penalty) in _PY_NUMBER and (top_logprobs is None or type(top_logprobs) is int)):
        record = _scalar_record(repetition_penalty, frequency_penalty, presence_penalty, top_logprobs)
        out = np.empty((rows, WORDS), dtype=np.uint64)
        out[:] = record
        keep = None
        if allowed is not None:
            keep, out[:, 1] = _allowed_pointers(allowed, rows, vocab)
        asked = True if top_logprobs is not None else None
        reference = ctypes.byref(_c_char_from_buffer(out))
        # Only a bitmask read in place may be reused: a copy would miss the caller's next fill.
        if allowed is None or keep is allowed:
            _LAST = (allowed, repetition_penalty, frequency_penalty, presence_penalty, top_logprobs, rows, vocab,
                     None if allowed is None else allowed.shape, out, reference, keep, asked)
        return out, reference, keep, asked
    out = np.empty((rows, WORDS), dtype=np.uint64)
    out[:] = DEFAULT_RECORD.reshape(1).view(np.uint64)
    keep, asked = fill(out.reshape(-1).view(PROCESSING_DTYPE), rows, vocab, allowed, logit_bias, prompt_tokens,
                       output_tokens, repetition_penalty, frequency_penalty, presence_penalty, top_logprobs, dry)
    return out, ctypes.byref(_c_char_from_buffer(out)), keep, asked


def fill(out, rows, vocab, allowed, logit_bias, prompt_tokens, output_tokens,
         repetition_penalty, frequency_penalty, presence_penalty, top_logprobs, dry=None):
    """Fills `out` (`rows` default PROCESSING_DTYPE records) from the keyword arguments; returns
    the arrays that must stay alive during the call, and the rows asking for top logprobs (a bool
    array, or None when none asks). Raises ValueError naming the argument."""
    keep = []
    if allowed is not None:
        allowed, out["allowed"] = _allowed_pointers(allowed, rows, vocab)
        keep.append(allowed)
    if logit_bias is not None:
        entries = [logit_bias] * rows if isinstance(logit_bias, dict) else _per_row(logit_bias, rows, "logit_bias")
        ids_column, values_column, counts = out["bias_ids"], out["bias_values"], out["bias_count"]
        for r, bias in enumerate(entries):
            if bias is None:
                continue
            if not isinstance(bias, dict):
                raise ValueError(f"logit_bias[{r}] must be a dict {{token id: bias}} or None, got {type(bias).__name__}")
            if not bias:
                continue
            ids = _ids(list(bias.keys()), "logit_bias", r)
            values = _float_column(list(bias.values()), len(bias), f"logit_bias[{r}] values", 0.0)
            values = np.ascontiguousarray(values, dtype=np.float32)
            keep += [ids, values]
            ids_column[r] = _address(ids)
            values_column[r] = _address(values)
            counts[r] = len(ids)
    for name, count_name, tokens in (("prompt_tokens", "prompt_count", prompt_tokens),
                                     ("output_tokens", "output_count", output_tokens)):
        if tokens is None:
            continue
        entries = _per_row(tokens, rows, name)
        addresses, sizes = [0] * rows, [0] * rows
        for r, ids in enumerate(entries):
            if ids is None:
                continue
            array = _ids(ids, name, r)
            if array.size:
                keep.append(array)
                addresses[r] = _address(array)
                sizes[r] = array.size
        out[name] = addresses  # one column assignment each, not one per row
        out[count_name] = sizes
    if not (type(repetition_penalty) in (int, float) and repetition_penalty == 1):
        out["repetition_penalty"] = _float_column(repetition_penalty, rows, "repetition_penalty", 1.0)
    if not (type(frequency_penalty) in (int, float) and frequency_penalty == 0):
        out["frequency_penalty"] = _float_column(frequency_penalty, rows, "frequency_penalty", 0.0)
    if not (type(presence_penalty) in (int, float) and presence_penalty == 0):
        out["presence_penalty"] = _float_column(presence_penalty, rows, "presence_penalty", 0.0)
    if dry is not None:
        keep += _fill_dry(out, rows, *dry)
    asked = None
    if top_logprobs is not None:
        top = _top_column(top_logprobs, rows)
        out["top_logprobs"] = top
        if type(top) is np.int32:
            asked = np.ones(rows, dtype=bool) if top >= 0 else None
        else:
            asked = top >= 0
            if not asked.any():
                asked = None
    return keep, asked


def _int_column(value, rows, name, low, high, default):
    """An int32 column: None (the default), an integer in low ... high, or one per row."""
    def one(item, where):
        if item is None:
            return default
        if not is_integer(item):
            raise ValueError(f"{where} must be an integer, got {item!r}")
        if not low <= int(item) <= high:
            raise ValueError(f"{where} must be in {low} ... {high}, got {item}")
        return int(item)

    if value is None or is_integer(value):
        return np.int32(one(value, name))
    entries = _per_row(value, rows, name)
    return np.array([one(item, f"{name}[{r}]") for r, item in enumerate(entries)], dtype=np.int32)


def _is_breaker(value):
    """Whether `value` reads as one breaker: a sequence (or 1-D integer array) of token ids."""
    if isinstance(value, np.ndarray):
        return value.ndim == 1 and (value.size == 0 or value.dtype.kind in "iu")
    return isinstance(value, (list, tuple)) and all(is_integer(t) for t in value)


def _breakers(value, where):
    """One row's breakers as (tokens, lengths) int32 arrays; ValueError naming a bad one."""
    if isinstance(value, (str, bytes, dict, set)) or not hasattr(value, "__len__"):
        raise ValueError(f"{where} must be a list of token-id sequences, got {type(value).__name__}")
    tokens, lengths = [], []
    for i, breaker in enumerate(value):
        if not _is_breaker(breaker):
            raise ValueError(f"{where}[{i}] must be a sequence of token ids, got {breaker!r}")
        ids = [int(t) for t in breaker]
        if not 1 <= len(ids) <= MAX_DRY_BREAKER_LENGTH:
            raise ValueError(f"{where}[{i}] must hold 1 ... {MAX_DRY_BREAKER_LENGTH} token ids, got {len(ids)}")
        if any(not _INT32_MIN <= t <= _INT32_MAX for t in ids):
            raise ValueError(f"{where}[{i}] holds a token id outside int32")
        tokens += ids
        lengths.append(len(ids))
    return np.array(tokens or [0], dtype=np.int32), np.array(lengths or [0], dtype=np.int32), len(lengths)


def _fill_dry(out, rows, multiplier, base, allowed_length, penalty_last_n, breakers):
    """Writes the DRY fields of `out`; returns the arrays that must stay alive during the call."""
    out["dry_multiplier"] = _float_column(multiplier, rows, "dry_multiplier", 0.0)
    out["dry_base"] = _float_column(base, rows, "dry_base", 1.75)
    out["dry_allowed_length"] = _int_column(allowed_length, rows, "dry_allowed_length", 0, _INT32_MAX, 2)
    out["dry_penalty_last_n"] = _int_column(penalty_last_n, rows, "dry_penalty_last_n", -1, _INT32_MAX, -1)
    if breakers is None or (isinstance(breakers, (list, tuple)) and len(breakers) == 0):
        return []
    # One list of breakers for every row, or one list (or None) per row.
    if len(breakers) and all(_is_breaker(b) for b in breakers) and not all(
            isinstance(b, (list, tuple)) and len(b) == 0 for b in breakers):
        per_row = [breakers] * rows
    else:
        per_row = _per_row(breakers, rows, "dry_sequence_breakers")
    keep, shared = [], {}
    token_column, length_column, count_column = [0] * rows, [0] * rows, [0] * rows
    for r, entry in enumerate(per_row):
        if entry is None:
            continue
        made = shared.get(id(entry))
        if made is None:
            made = _breakers(entry, f"dry_sequence_breakers[{r}]" if entry is not breakers else "dry_sequence_breakers")
            shared[id(entry)] = made
            keep += [made[0], made[1]]
        tokens, lengths, count = made
        token_column[r], length_column[r], count_column[r] = _address(tokens), _address(lengths), count
    out["dry_breaker_tokens"] = token_column
    out["dry_breaker_lengths"] = length_column
    out["dry_breaker_count"] = count_column
    return keep


def is_active(allowed, logit_bias, prompt_tokens, output_tokens, repetition_penalty, frequency_penalty,
              presence_penalty, top_logprobs):
    """Whether a call has any processing (the plain tns_sample serves it otherwise)."""
    return not (allowed is None and logit_bias is None and prompt_tokens is None and output_tokens is None
                and top_logprobs is None and _is_value(repetition_penalty, 1.0)
                and _is_value(frequency_penalty, 0.0) and _is_value(presence_penalty, 0.0))


def _is_value(value, default):
    return value is None or (type(value) in (float, int) and value == default)


class TopLogprobs:
    """Each row's top logprobs, read from a copy of the C buffer: `rows[r]` is a list of
    `(id, logprob)` pairs, most probable first, or None for a row that did not ask or failed."""

    __slots__ = ("_records", "_asked", "_list")

    def __init__(self, records, asked):
        self._records, self._asked, self._list = records, asked, None

    def _materialize(self):
        if self._list is None:
            rows = []
            for r in range(len(self._records)):
                if not self._asked[r]:
                    rows.append(None)
                    continue
                n = int(self._records["count"][r])
                ids, lps = self._records["ids"][r], self._records["logprobs"][r]
                rows.append([(int(ids[i]), float(lps[i])) for i in range(n)])
            self._list = rows
        return self._list

    def __len__(self):
        return len(self._records)

    def __getitem__(self, index):
        return self._materialize()[index]

    def __iter__(self):
        return iter(self._materialize())

    def __eq__(self, other):
        return list(self) == list(other)

    def __repr__(self):
        return repr(self._materialize())


def drafts_arguments(draft_tokens, draft_probs, draft_distributions, requests, k, vocab):
    """The tns_drafts struct and the arrays it points to for `Sampler.verify`; ValueError naming
    the argument."""
    tokens = np.asarray(draft_tokens) if not isinstance(draft_tokens, np.ndarray) else draft_tokens
    if tokens.ndim != 2 or tokens.shape != (requests, k):
        raise ValueError(f"draft_tokens must have shape [{requests}, {k}] (requests, k), got {tokens.shape}")
    if tokens.size and not np.issubdtype(tokens.dtype, np.integer):
        if tokens.dtype == object and all(is_integer(t) for t in tokens.ravel()):
            pass
        else:
            raise ValueError(f"draft_tokens must hold integers, got dtype {tokens.dtype}")
    try:
        tokens = np.ascontiguousarray(tokens, dtype=np.int64)
    except OverflowError:
        raise ValueError("draft_tokens holds an id outside int64") from None
    probs = np.asarray(draft_probs) if not isinstance(draft_probs, np.ndarray) else draft_probs
    if probs.shape != (requests, k):
        raise ValueError(f"draft_probs must have shape [{requests}, {k}] (requests, k), got {probs.shape}")
    if probs.size and not (np.issubdtype(probs.dtype, np.floating) or np.issubdtype(probs.dtype, np.integer)):
        raise ValueError(f"draft_probs must hold numbers, got dtype {probs.dtype}")
    probs = np.ascontiguousarray(probs, dtype=np.float64)
    keep = [tokens, probs]
    d = Drafts(kind=DRAFT_POINT_MASS, tokens=tokens.ctypes.data, probabilities=probs.ctypes.data)
    if draft_distributions is None:
        return d, keep
    if isinstance(draft_distributions, np.ndarray) and draft_distributions.dtype != object:
        dense = draft_distributions
        if dense.shape != (requests, k, vocab):
            raise ValueError(f"draft_distributions (dense) must have shape [{requests}, {k}, {vocab}] "
                             f"(requests, k, V), got {dense.shape}")
        if not (np.issubdtype(dense.dtype, np.floating) or np.issubdtype(dense.dtype, np.integer)):
            raise ValueError(f"draft_distributions must hold probabilities, got dtype {dense.dtype}")
        dense = np.ascontiguousarray(dense, dtype=np.float32)
        keep.append(dense)
        d.kind, d.dense = DRAFT_DENSE, dense.ctypes.data
        return d, keep
    # Sparse: one list per request of k entries, each a dict {id: probability} or (id, p) pairs.
    per_request = _per_row(draft_distributions, requests, "draft_distributions")
    offsets = np.zeros(requests * k + 1, dtype=np.int64)
    ids, values = [], []
    for r, positions in enumerate(per_request):
        positions = _per_row(positions, k, f"draft_distributions[{r}]")
        for i, entries in enumerate(positions):
            where = f"draft_distributions[{r}][{i}]"
            pairs = entries.items() if isinstance(entries, dict) else entries
            try:
                pairs = list(pairs)
            except TypeError:
                raise ValueError(f"{where} must be a dict {{id: probability}} or (id, probability) pairs") from None
            for pair in pairs:
                try:
                    token, p = pair
                except (TypeError, ValueError):
                    raise ValueError(f"{where} must be a dict {{id: probability}} or (id, probability) pairs") from None
                if not is_integer(token) or not _INT32_MIN <= int(token) <= _INT32_MAX:
                    raise ValueError(f"{where} has a token id that is not an int32 integer: {token!r}")
                if not isinstance(p, (numbers.Real, np.floating, np.integer)) or isinstance(p, (bool, np.bool_)):
                    raise ValueError(f"{where} has a probability that is not a number: {p!r}")
                ids.append(int(token))
                values.append(float(p))
            offsets[r * k + i + 1] = len(ids)
    sparse_ids = np.array(ids, dtype=np.int32) if ids else np.zeros(1, dtype=np.int32)
    sparse_probs = np.array(values, dtype=np.float64) if values else np.zeros(1, dtype=np.float64)
    keep += [offsets, sparse_ids, sparse_probs]
    d.kind = DRAFT_SPARSE
    d.sparse_offsets, d.sparse_ids, d.sparse_probabilities = (
        offsets.ctypes.data, sparse_ids.ctypes.data, sparse_probs.ctypes.data)
    return d, keep
