/*
 * topnsigma.h: the C ABI of TopNSigma, a batched CPU sampling kernel for LLM decoding built
 * around Top-nσ (Tang et al., arXiv 2411.07641). Link with -lTopNSigmaC (libTopNSigmaC.so, the
 * SwiftPM product `TopNSigmaC`; build it with `swift build -c release --product TopNSigmaC`).
 *
 * Semantics are the Swift library's (README "Semantics"): per row, keep the finite logits
 * >= max - n·std (Bessel-corrected std; -inf logits are masked and never kept), intersect with
 * min-p and top-k, apply top-p over what is left, softmax at temperature T, and draw with
 * Philox4x32-10 keyed by the row's seed, counter = its step. The token depends only on (row
 * logits, parameters, seed, step): never on the batch, the row's position or the thread count.
 *
 * Contract of every function:
 *   - It never traps or aborts on bad arguments: it validates every pointer, size and enum first
 *     and returns a tns_status (TNS_OK == 0). Nothing is written to an output when a call fails
 *     as a whole (a status other than TNS_OK), unless the function says otherwise.
 *   - It never hands memory to the caller: results go into caller-provided buffers. tns_sample,
 *     tns_sampler_filter and tns_sampler_filtered_distribution perform no heap allocation at all
 *     (the handle owns all scratch, sized at creation). The handle-less tns_filter and
 *     tns_filtered_distribution are conveniences for one-off rows: they allocate temporary
 *     scratch inside the call.
 *   - A handle serves one call at a time. A call made while another call is running on the same
 *     handle returns TNS_ERR_BUSY instead of corrupting results. Distinct handles are
 *     independent and may be used from any threads at once.
 *   - A handle is valid from a successful tns_sampler_create until tns_sampler_destroy. Passing
 *     a destroyed handle (or any pointer that no create returned) to any function is undefined
 *     behavior: it cannot be detected, and is not reported as an error.
 *
 * ABI evolution: tns_params starts with struct_size. Fill it with tns_params_init (an inline
 * function, so struct_size is the size this header declares). A library reads only the fields
 * that fit in struct_size; fields the caller's struct lacks take their defaults; a flag bit the
 * library does not know is an error (TNS_ERR_UNSUPPORTED), never silently ignored. Later
 * options are appended at the end. TNS_ABI_VERSION changes only on incompatible changes.
 */
#ifndef TOPNSIGMA_H
#define TOPNSIGMA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The ABI version this header describes; tns_abi_version() returns the library's. */
#define TNS_ABI_VERSION 1

/* ---- Status codes --------------------------------------------------------------------------- */

/* Whole-call statuses (0-99) and row statuses (100-199). tns_status_message() names each. */
enum {
    TNS_OK = 0,
    TNS_ERR_NULL_POINTER = 1,       /* a required pointer is NULL */
    TNS_ERR_VOCAB_SIZE = 2,         /* vocabulary size outside 1 ... TNS_MAX_VOCAB_SIZE */
    TNS_ERR_BATCH_SIZE = 3,         /* max_batch outside 1 ... TNS_MAX_BATCH, or rows outside 0 ... max_batch */
    TNS_ERR_THREADS = 4,            /* thread count outside 0 ... TNS_MAX_THREADS */
    TNS_ERR_PLACEMENT = 5,          /* placement below TNS_PLACEMENT_DISABLED */
    TNS_ERR_FORMAT = 6,             /* unknown logit format */
    TNS_ERR_ROW_STRIDE = 7,         /* row stride below the vocabulary size, or rows * stride overflows */
    TNS_ERR_STRUCT_SIZE = 8,        /* tns_params.struct_size outside TNS_PARAMS_V1_SIZE ... TNS_PARAMS_MAX_SIZE,
                                       not a multiple of 8, or not the same in every row */
    TNS_ERR_UNSUPPORTED = 9,        /* a tns_params flag bit this library does not know, or a sampler_order it
                                       cannot read */
    TNS_ERR_BUSY = 10,              /* another call is running on this handle */
    TNS_ERR_BUFFER_TOO_SMALL = 11,  /* the caller's buffer is too small; the needed count is written */
    TNS_ERR_OUT_OF_MEMORY = 12,     /* the scratch a handle (or a handle-less single-row call) needs is not below
                                       physical memory, or its allocation failed */
    TNS_ERR_DRAFT = 13,             /* tns_verify: k below 0, an unknown draft kind, a missing draft array, or
                                       sparse offsets that are negative or decrease */

    TNS_ROW_NAN = 100,                  /* a logit is NaN (its index is reported) */
    TNS_ROW_POSITIVE_INFINITY = 101,    /* a logit is +inf (its index is reported). A row holding both
                                           NaN and +inf logits reports the one at the lowest index,
                                           whichever it is, with that one's code */
    TNS_ROW_NO_FINITE_LOGIT = 102,      /* every logit is -inf (or the row is empty) */
    TNS_ROW_INVALID_TEMPERATURE = 103,  /* temperature negative or NaN */
    TNS_ROW_INVALID_N_SIGMA = 104,      /* n negative or NaN */
    TNS_ROW_INVALID_TOP_K = 105,        /* top-k below 1 */
    TNS_ROW_INVALID_TOP_P = 106,        /* top-p outside (0, 1] */
    TNS_ROW_INVALID_MIN_P = 107,        /* min-p outside [0, 1] */
    TNS_ROW_INVALID_PROCESSING = 108,   /* the row's tns_processing is invalid: a penalty not finite (or repetition
                                           <= 0), top_logprobs outside -1 ... 20, a bias not finite, a token id
                                           (bias, prompt, output, DRY breaker) outside 0 ... vocab - 1 (tokens[r]
                                           names it), a count negative or above 2^31 - 1, a NULL array with a
                                           positive count,
                                           or top_logprobs asked without a top_logprobs output */
    TNS_ROW_INVALID_DRAFT = 109,        /* tns_verify: a draft token or a sparse draft id outside 0 ... vocab - 1
                                           (error_position names the draft position) */
    TNS_ROW_INVALID_SAMPLER = 110       /* typical_p outside (0, 1], epsilon or eta outside [0, 1), xtc_threshold or
                                           xtc_probability outside [0, 1], dynatemp_range or dynatemp_exponent
                                           negative or not finite (each read when its flag is set); in a
                                           tns_processing, dry_multiplier negative or not finite, or while it is not
                                           0: dry_base below 1 or not finite, dry_allowed_length negative,
                                           dry_penalty_last_n below -1, a breaker length outside
                                           1 ... TNS_MAX_DRY_BREAKER_LENGTH */
};
typedef int32_t tns_status;

/* A static, NUL-terminated English message for any status code ("unknown status" otherwise). */
const char *tns_status_message(tns_status status);

/* The library's ABI version (TNS_ABI_VERSION of the header it was built from). */
int32_t tns_abi_version(void);
/* The largest vocab_size the library accepts (TNS_MAX_VOCAB_SIZE). */
int64_t tns_max_vocab_size(void);
/* The library's version string, e.g. "0.1.0" (static storage). */
const char *tns_version(void);
/* The SIMD features the library was compiled for, space-separated (static storage): "sse2" for
 * the portable default build (`swift build`, `scripts/install-python --portable`), e.g.
 * "avx2 fma f16c avx512f" for the host's build (scripts/simd-flags), which scripts/install-python
 * and the README's C build command make by default. */
const char *tns_build_info(void);

/* ---- Logit formats, placement, limits -------------------------------------------------------- */

enum {
    TNS_FORMAT_F32 = 0,   /* IEEE binary32 */
    TNS_FORMAT_F16 = 1,   /* IEEE binary16, as raw uint16_t bits */
    TNS_FORMAT_BF16 = 2   /* bfloat16 (high half of a binary32), as raw uint16_t bits */
};

/* Placement of the handle's worker threads and scratch: one of these, or a NUMA node id >= 0
 * (every worker and all scratch on that node; a node the machine lacks runs unbound). */
enum {
    TNS_PLACEMENT_AUTOMATIC = -1,  /* spread over the NUMA nodes, each worker bound to its node */
    TNS_PLACEMENT_DISABLED = -2    /* no binding, scratch from the heap (first touch) */
};

#define TNS_MAX_BATCH (1 << 24)   /* largest max_batch a handle accepts */
#define TNS_MAX_THREADS 1024      /* largest thread count a handle accepts (BatchSampler.maximumThreadCount) */
/* The largest vocab_size any function accepts: 2^31 - 2, the library's one limit (Swift's
 * Vocabulary.maximumSize; token ids are int32_t with INT32_MAX to spare). tns_max_vocab_size()
 * returns the library's own, which the Python package reads. */
#define TNS_MAX_VOCAB_SIZE 2147483646LL

/* ---- Per-row sampling parameters ------------------------------------------------------------ */

/* Which optional filters are on (tns_params.flags). */
enum {
    TNS_USE_N_SIGMA = 1u << 0,   /* Top-nσ with n = n_sigma; clear it to sample from every finite logit */
    TNS_USE_TOP_K = 1u << 1,     /* keep the top_k largest logits (ties: lower id first) */
    TNS_USE_TOP_P = 1u << 2,     /* nucleus: smallest most-probable set with mass >= top_p */
    TNS_USE_MIN_P = 1u << 3,     /* keep probability >= min_p × the top probability */
    TNS_USE_TYPICAL_P = 1u << 4, /* locally typical sampling with mass typical_p */
    TNS_USE_EPSILON = 1u << 5,   /* ε-sampling: keep probability > epsilon (and the most probable) */
    TNS_USE_ETA = 1u << 6,       /* η-sampling: keep probability > min(eta, sqrt(eta)·exp(-entropy)) */
    TNS_USE_XTC = 1u << 7,       /* XTC: with probability xtc_probability, drop the tokens with probability
                                    >= xtc_threshold but the least probable of them */
    TNS_USE_DYNATEMP = 1u << 8,  /* dynamic temperature: temperature ± dynatemp_range by the kept set's
                                    normalized entropy to the power dynatemp_exponent */
    TNS_USE_P_LESS = 1u << 9,    /* p-less: keep probability >= Σ p² (no parameter) */
    TNS_USE_SAMPLER_ORDER = 1u << 10, /* run the filters as the chain sampler_order lists them (llama.cpp's
                                         --samplers) instead of the fixed order below */
    TNS_LLAMA_CPP_SENTINELS = 1u << 11 /* read llama.cpp's off values as llama.cpp does: top_k <= 0, top_p >= 1,
                                         min_p <= 0, n_sigma <= 0, typical_p >= 1, xtc_threshold > 0.5 or
                                         xtc_probability <= 0, dynatemp_range <= 0 turn that filter off (each
                                         still read only when its flag is set); temperature < 0 is greedy;
                                         top_p <= 0 keeps one token, min_p > 1 the maximum */
};
#define TNS_KNOWN_FLAGS 0xFFFu

/* sampler_order's step codes, 4 bits each, the first step in the lowest bits, a 0 code ending the
 * list (TNS_SAMPLER_ORDER(a, b, …) is not provided: shift by 4 per step). */
enum {
    TNS_STEP_TOP_N_SIGMA = 1,
    TNS_STEP_TOP_K = 2,
    TNS_STEP_TYPICAL_P = 3,
    TNS_STEP_TOP_P = 4,
    TNS_STEP_MIN_P = 5,
    TNS_STEP_XTC = 6,
    TNS_STEP_TEMPERATURE = 7,
    TNS_STEP_EPSILON = 8,
    TNS_STEP_ETA = 9,
    TNS_STEP_P_LESS = 10
};
/* llama.cpp's default chain top_n_sigma;top_k;typ_p;top_p;min_p;xtc;temperature. */
#define TNS_SAMPLER_ORDER_LLAMA_CPP 0x7654321ull
/* The packed sampler_order of a `--samplers` list such as "top_k;top_p;min_p;temperature" (names
 * separated by ';' or ',', llama.cpp's names and aliases; "penalties" and "dry" accepted before
 * every other step): the library's one name table, which the Python package and nsigma use.
 * TNS_OK with *out set; TNS_ERR_UNSUPPORTED for an unknown, repeated or misplaced name, with a
 * NUL-terminated message naming it written to message (truncated to capacity bytes; none when
 * capacity is 0 or message is NULL); TNS_ERR_NULL_POINTER when text or out is NULL. */
tns_status tns_sampler_order_parse(const char *text, uint64_t *out, char *message, int64_t capacity);
/* The order: processing; Top-nσ, min-p, top-k, ε, η and p-less intersected (each over the whole row);
   typical-p; top-p; XTC; the temperature (dynamic or not); the draw. Every probability a filter reads
   is the softmax at `temperature`. */

typedef struct tns_params {
    uint32_t struct_size;  /* sizeof(tns_params) as the caller compiled it: set by tns_params_init */
    uint32_t flags;        /* TNS_USE_* bits */
    uint64_t seed;         /* the request's seed: key of the counter-based generator */
    float temperature;     /* >= 0; 0 is greedy argmax (lowest id on ties, logprob 0); +inf (INFINITY)
                              is accepted and samples uniformly from the kept set (each kept token
                              has probability 1/kept, logprob -log(kept)); NaN is a row error */
    float n_sigma;         /* Top-nσ's n (>= 0), read when TNS_USE_N_SIGMA is set */
    float top_p;           /* (0, 1], read when TNS_USE_TOP_P is set */
    float min_p;           /* [0, 1], read when TNS_USE_MIN_P is set */
    int64_t top_k;         /* >= 1, read when TNS_USE_TOP_K is set */
    /* Since 0.2 (struct_size 72): the other samplers, each read when its flag is set. */
    float typical_p;         /* (0, 1] */
    float epsilon;           /* [0, 1) */
    float eta;               /* [0, 1) */
    float xtc_threshold;     /* [0, 1] */
    float xtc_probability;   /* [0, 1] (default 1) */
    float dynatemp_range;    /* finite, >= 0 */
    float dynatemp_exponent; /* finite, >= 0 (default 1) */
    uint32_t reserved;       /* 0 */
    /* Since 0.3 (struct_size 80): */
    uint64_t sampler_order;  /* read when TNS_USE_SAMPLER_ORDER is set: TNS_STEP_* codes (above); each step
                                runs over what the steps before it kept, renormalized, at T = 1 until the
                                temperature step (applied last when not listed). A code this library does
                                not know, a repeated step or a step after a 0 code is TNS_ERR_UNSUPPORTED */
    /* Later options are appended here. */
} tns_params;

#define TNS_PARAMS_V1_SIZE 40u   /* the smallest struct_size a library accepts */
#define TNS_PARAMS_MAX_SIZE 4096u /* the largest struct_size a library accepts (a larger one is taken
                                     for an uninitialized field: TNS_ERR_STRUCT_SIZE) */

/* Defaults: temperature 1, Top-nσ on with n = 1, seed 0, no other filter. */
static inline void tns_params_init(tns_params *p) {
    if (!p) return;
    p->struct_size = (uint32_t)sizeof(tns_params);
    p->flags = TNS_USE_N_SIGMA;
    p->seed = 0;
    p->temperature = 1.0f;
    p->n_sigma = 1.0f;
    p->top_p = 1.0f;
    p->min_p = 0.0f;
    p->top_k = 0;
    p->typical_p = 1.0f;
    p->epsilon = 0.0f;
    p->eta = 0.0f;
    p->xtc_threshold = 0.1f;
    p->xtc_probability = 1.0f;
    p->dynatemp_range = 0.0f;
    p->dynatemp_exponent = 1.0f;
    p->reserved = 0;
    p->sampler_order = TNS_SAMPLER_ORDER_LLAMA_CPP;
}

/* ---- The batched sampler ---------------------------------------------------------------------- */

/* An opaque sampler: owns its scratch memory and its worker threads. */
typedef struct tns_sampler tns_sampler;

/*
 * Creates a sampler for rows of vocab_size logits (1 ... TNS_MAX_VOCAB_SIZE), batches of up to max_batch
 * rows (1 ... TNS_MAX_BATCH), with `threads` workers (0: every active processor; at most
 * TNS_MAX_THREADS) and a placement (TNS_PLACEMENT_* or a NUMA node id).
 * The handle allocates one row scratch per thread, of 64 to 70 bytes per logit (in all about
 * 64 × vocab_size × threads bytes): TNS_ERR_OUT_OF_MEMORY when that is not below the machine's
 * physical memory, or when the allocation fails.
 * On success *out holds the handle (destroy it with tns_sampler_destroy); on failure *out is set
 * to NULL (when out is not NULL).
 */
tns_status tns_sampler_create(int64_t vocab_size, int64_t max_batch, int32_t threads, int32_t placement,
                              tns_sampler **out);

/* Destroys a sampler (joins its threads, frees its memory). NULL is a no-op. Not concurrently
 * with a call on the same handle. Afterwards the pointer is dangling: using it again, in any
 * function (tns_sampler_destroy included), is undefined behavior. */
void tns_sampler_destroy(tns_sampler *sampler);

/* The handle's vocabulary size, maximum batch and thread count (0 for NULL). */
int64_t tns_sampler_vocab_size(const tns_sampler *sampler);
int64_t tns_sampler_max_batch(const tns_sampler *sampler);
int32_t tns_sampler_threads(const tns_sampler *sampler);

/*
 * Samples one token per row.
 *
 *   logits      row 0's first logit, stored as `format`; row r starts at element r * row_stride
 *   format      TNS_FORMAT_F32, TNS_FORMAT_F16 or TNS_FORMAT_BF16
 *   rows        0 ... the handle's max_batch (0 does nothing and returns TNS_OK)
 *   row_stride  elements (not bytes) between row starts, >= vocab_size
 *   params      `rows` parameter structs, each initialized with tns_params_init (all rows the
 *               same struct_size; the array is read with that stride)
 *   steps       `rows` decode steps (the generator's counter)
 *   tokens      out, `rows`: the drawn token id. For a failed row: the offending logit's index
 *               for TNS_ROW_NAN / TNS_ROW_POSITIVE_INFINITY (the lowest index holding a NaN or
 *               +inf), otherwise -1
 *   logprobs    out, `rows`, may be NULL: log p(token) under the distribution sampled from
 *               (0 for greedy); NaN for a failed row
 *   kept        out, `rows`, may be NULL: how many tokens the row was drawn from; 0 for a failed row
 *   row_status  out, `rows`: TNS_OK or the row's TNS_ROW_* code. A failing row never affects
 *               the others.
 *
 * Returns TNS_OK when the rows were sampled (check row_status per row), or a whole-call error
 * (nothing written). The logits are never written. No heap allocation.
 */
tns_status tns_sample(tns_sampler *sampler, const void *logits, int32_t format, int64_t rows, int64_t row_stride,
                      const tns_params *params, const uint64_t *steps,
                      int64_t *tokens, double *logprobs, int64_t *kept, tns_status *row_status);

/* ---- Request processing: grammar masks, logit bias, penalties, top logprobs --------------------- */

#define TNS_MAX_TOP_LOGPROBS 20  /* the most top logprobs a row can ask for (OpenAI's limit) */

/*
 * One row's request processing (tns_sample_processed), applied inside the sampling pass with the
 * Swift library's semantics and order (README "Request processing"): the bitmask masks tokens to
 * -inf, then per token: logit + bias, the repetition penalty (divide a positive logit by it,
 * multiply a negative one; tokens in the prompt or the output), then frequency × count and
 * presence (tokens in the output). Sampling parameters then apply to the processed logits.
 * Fill it with tns_processing_init; every pointer is read only during the call.
 */
typedef struct tns_processing {
    uint32_t struct_size;          /* sizeof(tns_processing) as the caller compiled it: set by tns_processing_init */
    int32_t top_logprobs;          /* -1: none (default). 0 ... TNS_MAX_TOP_LOGPROBS: the row's most probable
                                      tokens in the processed distribution (log_softmax at T = 1, before any
                                      truncation: vLLM's processed_logprobs), plus the sampled token's logprob
                                      and rank (0: those two only) */
    const uint32_t *allowed;       /* the allowed-token bitmask, ceil(vocab / 32) words, LSB-first: token t is
                                      allowed when bit t % 32 of word t / 32 is set (the xgrammar / llguidance
                                      int32 layout). NULL: every token allowed. Bits past vocab are ignored */
    const int32_t *bias_ids;       /* bias_count token ids ... */
    const float *bias_values;      /* ... and their additive biases (finite); one id twice adds up */
    int64_t bias_count;
    const int32_t *prompt_tokens;  /* the prompt's ids (repetition penalty only) */
    int64_t prompt_count;
    const int32_t *output_tokens;  /* the ids generated so far (all three penalties) */
    int64_t output_count;
    float repetition_penalty;      /* > 0 and finite; 1 is off */
    float frequency_penalty;       /* finite; 0 is off */
    float presence_penalty;        /* finite; 0 is off */
    uint32_t reserved;             /* 0 */
    /* DRY (llama.cpp's dry sampler; README "The other samplers"), over the context prompt_tokens followed
       by output_tokens. Added in struct_size 128; read only while dry_multiplier != 0. */
    float dry_multiplier;          /* finite, >= 0; 0 is off (default) */
    float dry_base;                /* finite, >= 1 (default 1.75) */
    int32_t dry_allowed_length;    /* >= 0 (default 2) */
    int32_t dry_penalty_last_n;    /* -1: the whole context (default); 0: off; else the last N tokens */
    const int32_t *dry_breaker_tokens;   /* the sequence breakers' ids, one breaker after the other ... */
    const int32_t *dry_breaker_lengths;  /* ... each breaker's length, 1 ... TNS_MAX_DRY_BREAKER_LENGTH */
    int64_t dry_breaker_count;     /* breakers (entries of dry_breaker_lengths) */
    /* Later options are appended here. */
} tns_processing;

#define TNS_MAX_DRY_BREAKER_LENGTH 21  /* a breaker's head token and llama.cpp's 20-token tail */

#define TNS_PROCESSING_V1_SIZE 88u  /* the smallest struct_size a library accepts */

/* Defaults: nothing to do (no bitmask, bias, history or logprobs; penalties and DRY off). */
static inline void tns_processing_init(tns_processing *p) {
    if (!p) return;
    p->struct_size = (uint32_t)sizeof(tns_processing);
    p->top_logprobs = -1;
    p->allowed = NULL;
    p->bias_ids = NULL;
    p->bias_values = NULL;
    p->bias_count = 0;
    p->prompt_tokens = NULL;
    p->prompt_count = 0;
    p->output_tokens = NULL;
    p->output_count = 0;
    p->repetition_penalty = 1.0f;
    p->frequency_penalty = 0.0f;
    p->presence_penalty = 0.0f;
    p->reserved = 0;
    p->dry_multiplier = 0.0f;
    p->dry_base = 1.75f;
    p->dry_allowed_length = 2;
    p->dry_penalty_last_n = -1;
    p->dry_breaker_tokens = NULL;
    p->dry_breaker_lengths = NULL;
    p->dry_breaker_count = 0;
}

/* A row's top logprobs (tns_sample_processed's top_logprobs output). */
typedef struct tns_top_logprobs {
    int32_t count;                          /* entries in ids / logprobs: the row's top_logprobs (0 for a row that
                                               did not ask, or failed) */
    int32_t rank;                           /* the sampled token's rank, 1-based: how many tokens have a processed
                                               logit at or above its own (ties share the worst rank); 0 when not
                                               asked or failed */
    double sampled_logprob;                 /* the sampled token's log-probability in the processed distribution;
                                               NaN when not asked or failed */
    int32_t ids[TNS_MAX_TOP_LOGPROBS];      /* most probable first (ties: lower id first) */
    double logprobs[TNS_MAX_TOP_LOGPROBS];
} tns_top_logprobs;

/*
 * tns_sample with per-row request processing and top logprobs. Arguments as tns_sample, plus:
 *
 *   processing    `rows` structs, each initialized with tns_processing_init (all rows the same
 *                 struct_size, read with that stride), or NULL: no processing on any row
 *                 (exactly tns_sample)
 *   top_logprobs  out, `rows`, may be NULL unless a row asks for top logprobs (such a row then
 *                 fails with TNS_ROW_INVALID_PROCESSING): each row's top logprobs
 *
 * A row whose processing is invalid fails alone with TNS_ROW_INVALID_PROCESSING (tokens[r] is
 * the offending token id when an id is out of range, else -1). Whole-call errors as tns_sample,
 * plus TNS_ERR_STRUCT_SIZE for a tns_processing.struct_size outside TNS_PROCESSING_V1_SIZE ...
 * TNS_PARAMS_MAX_SIZE, not a multiple of 8, or not the same in every row. No heap allocation.
 */
tns_status tns_sample_processed(tns_sampler *sampler, const void *logits, int32_t format, int64_t rows,
                                int64_t row_stride, const tns_params *params, const tns_processing *processing,
                                const uint64_t *steps, int64_t *tokens, double *logprobs, int64_t *kept,
                                tns_status *row_status, tns_top_logprobs *top_logprobs);

/* ---- Speculative decoding: verifying a draft ---------------------------------------------------- */

/* The draft distributions a tns_verify call gives (tns_drafts.kind). */
enum {
    TNS_DRAFT_POINT_MASS = 0,  /* none: each q_i is the point mass at d_i (n-gram lookup, prompt lookup) */
    TNS_DRAFT_DENSE = 1,       /* dense: k rows of vocab float probabilities per request */
    TNS_DRAFT_SPARSE = 2       /* sparse: per (request, position) a list of (id, probability); an id absent
                                  from its list has probability 0, one id twice adds up */
};

/* The drafts of a tns_verify call: k tokens per request, request-major. */
typedef struct tns_drafts {
    int32_t kind;                         /* TNS_DRAFT_* */
    int32_t reserved;                     /* 0 */
    const int64_t *tokens;                /* requests × k draft tokens d_i */
    const double *probabilities;          /* requests × k: q_i(d_i), the probability the acceptance test divides
                                             by (NaN or <= 0 is taken as 0: acceptance 1 where p(d) > 0; above 1
                                             as 1) */
    const float *dense;                   /* DENSE: requests × k rows of vocab probabilities (request r's
                                             position i at row r·k + i) */
    const int64_t *sparse_offsets;        /* SPARSE: requests × k + 1 offsets, starting at 0 and non-decreasing:
                                             list r·k + i is entries offsets[r·k+i] ... offsets[r·k+i+1] - 1 */
    const int32_t *sparse_ids;            /* SPARSE: the entries' token ids */
    const double *sparse_probabilities;   /* SPARSE: the entries' probabilities */
} tns_drafts;

/*
 * Verifies each request's k draft tokens against its k + 1 target rows (speculative decoding,
 * Leviathan et al. 2023, Chen et al. 2023), losslessly: the contract of the Swift library's
 * BatchSampler.verify (README "Speculative decoding"). Per request, for i = 1 ... k: accept d_i
 * with probability min(1, p_i(d_i) / q_i(d_i)) (Philox keyed by the seed, counter step + i - 1,
 * stream 1); at the first rejection emit a draw from normalize(max(0, p_i - q_i)) and stop; when
 * all k are accepted, emit a bonus draw from p_{k+1} (stream 2). p_i is the distribution
 * tns_sample draws row i from under the request's params.
 *
 *   logits          request r's row i (0 ... k) starts at element (r·(k+1) + i) · row_stride
 *   requests        0 ... the handle's max_batch (0 does nothing)
 *   k               draft tokens per request, >= 0
 *   params, steps   `requests` entries: each request's parameters (all its rows) and decode step
 *   accepted        out, `requests`: accepted draft tokens (0 ... k); -1 for a failed request
 *   out_tokens      out, requests × (k + 1): request r's accepted[r] + 1 emitted tokens at r·(k+1);
 *                   the rest of its slots -1
 *   out_logprobs    out, requests × (k + 1), may be NULL: each emitted token's log-probability under
 *                   p_i (NaN in unused slots)
 *   request_status  out, `requests`: TNS_OK, a TNS_ROW_* code of a target row (error_position: the
 *                   row, 0 ... k; out_tokens[r·(k+1)] the offending logit index for NaN / +inf), or
 *                   TNS_ROW_INVALID_DRAFT (error_position: the draft position; out_tokens[r·(k+1)]:
 *                   the id; such a request fails before its rows are read). Every target row of a
 *                   request with valid drafts is read and checked, whatever the draft outcome; a
 *                   failing request never affects the others
 *   error_position  out, `requests`, may be NULL: -1 for a request that did not fail
 *
 * Returns TNS_OK (check request_status), or a whole-call error with nothing written:
 * TNS_ERR_NULL_POINTER, TNS_ERR_BATCH_SIZE, TNS_ERR_FORMAT, TNS_ERR_ROW_STRIDE (also when
 * requests·(k+1) rows overflow), TNS_ERR_STRUCT_SIZE, TNS_ERR_UNSUPPORTED, TNS_ERR_DRAFT,
 * TNS_ERR_BUSY. No heap allocation.
 */
tns_status tns_verify(tns_sampler *sampler, const void *logits, int32_t format, int64_t requests, int64_t k,
                      int64_t row_stride, const tns_params *params, const uint64_t *steps, const tns_drafts *drafts,
                      int64_t *accepted, int64_t *out_tokens, double *out_logprobs, tns_status *request_status,
                      int64_t *error_position);

/* ---- Single rows -------------------------------------------------------------------------------- */

/* A row's statistics over its finite logits, and the filter's threshold. Also written for a
 * row without a finite logit (TNS_ROW_NO_FINITE_LOGIT): max -inf, mean 0, std 0, threshold -inf,
 * finite 0, argmax -1. Any other row error leaves max, mean, std and threshold NaN (finite 0,
 * argmax -1, error_index as below). */
typedef struct tns_row_stats {
    double max;          /* largest finite logit (-inf when none) */
    double mean;         /* mean of the finite logits (0 when none) */
    double std;          /* Bessel-corrected standard deviation (0 with fewer than two finite logits) */
    double threshold;    /* the combined Top-nσ / min-p logit threshold (-inf when both are off). Top-nσ's
                            part is max - n·std, and max itself when std is 0, whatever n (n = +inf
                            included: never NaN) */
    int64_t finite;      /* number of finite logits */
    int64_t argmax;      /* lowest index holding max (-1 when none) */
    int64_t error_index; /* for TNS_ROW_NAN / TNS_ROW_POSITIVE_INFINITY: the offending index (the lowest
                            NaN or +inf one); else -1 */
} tns_row_stats;

/*
 * Top-nσ's kept set of one float32 row: statistics, threshold max - n·std, and the kept token
 * ids ascending. use_n_sigma == 0 keeps every finite logit.
 *
 *   stats       out (may be NULL)
 *   kept_ids    out, `capacity` entries (vocab always suffices; may be NULL when capacity <= 0)
 *   capacity    entries of kept_ids; a negative capacity is taken as 0
 *   kept_count  out: the number of kept tokens, also when the buffer is too small
 *
 * Returns TNS_OK, a TNS_ROW_* code for a bad row or n (stats->error_index names a bad logit),
 * TNS_ERR_BUFFER_TOO_SMALL (only *kept_count written: always so when capacity <= 0 and the row
 * is valid), or a whole-call error. The temporary scratch is 64 to 70 bytes per logit:
 * TNS_ERR_OUT_OF_MEMORY (nothing written) when that is not below physical memory or cannot be
 * allocated.
 */
tns_status tns_filter(const float *row, int64_t vocab, int32_t use_n_sigma, float n_sigma,
                      tns_row_stats *stats, int32_t *kept_ids, int64_t capacity, int64_t *kept_count);

/*
 * The distribution one float32 row is sampled from under `params` (the batched sampler's
 * pipeline and combination rule): the kept tokens with their renormalized probabilities, most
 * probable first (ties: lower id first). Greedy (temperature 0) keeps the argmax with
 * probability 1. The seed is not used.
 *
 *   tokens, probabilities  out, `capacity` entries each (vocab always suffices; may be NULL when
 *                          capacity <= 0; a negative capacity is taken as 0)
 *   count                  out: the number of kept tokens, also when the buffers are too small
 *
 * Returns as tns_filter.
 */
tns_status tns_filtered_distribution(const float *row, int64_t vocab, const tns_params *params,
                                     tns_row_stats *stats, int32_t *tokens, double *probabilities,
                                     int64_t capacity, int64_t *count);

/*
 * tns_filter and tns_filtered_distribution on a handle's scratch: no heap allocation. The row has
 * the handle's vocabulary size. Same outputs and statuses as the handle-less calls, plus
 * TNS_ERR_BUSY while another call runs on the handle.
 */
tns_status tns_sampler_filter(tns_sampler *sampler, const float *row, int32_t use_n_sigma, float n_sigma,
                              tns_row_stats *stats, int32_t *kept_ids, int64_t capacity, int64_t *kept_count);
tns_status tns_sampler_filtered_distribution(tns_sampler *sampler, const float *row, const tns_params *params,
                                             tns_row_stats *stats, int32_t *tokens, double *probabilities,
                                             int64_t capacity, int64_t *count);

#ifdef __cplusplus
}
#endif

#endif /* TOPNSIGMA_H */
