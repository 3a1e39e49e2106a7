/*
 * The C ABI's test program: compiled with `cc` against include/topnsigma.h and libTopNSigmaC.so.
 *
 *   test_abi FIXTURE.npy EXPECTED.jsonl SEED DRAWS
 *
 * FIXTURE.npy is a 2-D float32 .npy file; EXPECTED.jsonl is what the Swift library's CLI prints
 * for it, `nsigma sample --logits FIXTURE.npy --seed SEED --draws DRAWS` (n = 1, T = 1, draw j at
 * step j). The program checks the ABI's tokens, kept counts and log-probabilities against that
 * file, then the ABI's own properties (formats, strides, row independence, single-row calls
 * against a double-precision oracle, and that every bad argument returns an error code).
 * Exit status 0 when every check passes; each failure prints a line.
 */
#define _POSIX_C_SOURCE 200809L
#include "topnsigma.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

static int failures = 0;
#define CHECK(cond, ...)                                                        \
    do {                                                                        \
        if (!(cond)) {                                                          \
            failures++;                                                         \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);    \
            fprintf(stderr, __VA_ARGS__);                                       \
            fprintf(stderr, "\n");                                              \
        }                                                                       \
    } while (0)

/* ---- .npy reading (2-D, '<f4', C order) ---------------------------------------------------- */

static float *read_npy(const char *path, long *rows, long *cols) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); return NULL; }
    unsigned char magic[10];
    if (fread(magic, 1, 10, f) != 10 || memcmp(magic, "\x93NUMPY", 6) != 0) { fclose(f); return NULL; }
    unsigned long header_len;
    if (magic[6] == 1) {
        header_len = magic[8] | (magic[9] << 8);
    } else {
        unsigned char more[2];
        if (fread(more, 1, 2, f) != 2) { fclose(f); return NULL; }
        header_len = magic[8] | (magic[9] << 8) | ((unsigned long)more[0] << 16) | ((unsigned long)more[1] << 24);
    }
    char *header = calloc(header_len + 1, 1);
    if (fread(header, 1, header_len, f) != header_len) { free(header); fclose(f); return NULL; }
    if (!strstr(header, "'<f4'") || strstr(header, "'fortran_order': True")) {
        fprintf(stderr, "%s: need a C-order float32 array\n", path);
        free(header); fclose(f); return NULL;
    }
    char *shape = strstr(header, "'shape': (");
    if (!shape || sscanf(shape, "'shape': (%ld, %ld)", rows, cols) != 2) { free(header); fclose(f); return NULL; }
    free(header);
    size_t n = (size_t)(*rows) * (size_t)(*cols);
    float *data = malloc(n * sizeof(float));
    if (fread(data, sizeof(float), n, f) != n) { free(data); fclose(f); return NULL; }
    fclose(f);
    return data;
}

/* ---- Expected output of `nsigma sample` (JSON lines) ------------------------------------------ */

typedef struct {
    long tokens[64];
    double logprobs[64];
    long kept;
    int draws;
} expected_row;

static int parse_array(const char *line, const char *key, double *out, int max) {
    const char *p = strstr(line, key);
    if (!p) return -1;
    p = strchr(p, '[');
    if (!p) return -1;
    p++;
    int n = 0;
    while (*p && *p != ']' && n < max) {
        char *end;
        out[n++] = strtod(p, &end);
        if (end == p) return -1;
        p = end;
        while (*p == ',' || *p == ' ') p++;
    }
    return n;
}

static int read_expected(const char *path, expected_row *rows, long nrows) {
    FILE *f = fopen(path, "r");
    if (!f) { perror(path); return -1; }
    char *line = NULL;
    size_t cap = 0;
    long r = 0;
    while (getline(&line, &cap, f) > 0 && r < nrows) {
        double values[64];
        long row;
        if (sscanf(line, "{\"row\": %ld", &row) != 1 || row != r) { free(line); fclose(f); return -1; }
        int n = parse_array(line, "\"tokens\"", values, 64);
        if (n < 0) { free(line); fclose(f); return -1; }
        rows[r].draws = n;
        for (int j = 0; j < n; j++) rows[r].tokens[j] = (long)values[j];
        if (parse_array(line, "\"logprobs\"", rows[r].logprobs, 64) != n) { free(line); fclose(f); return -1; }
        const char *k = strstr(line, "\"kept\": ");
        if (!k) { free(line); fclose(f); return -1; }
        rows[r].kept = strtol(k + 8, NULL, 10);
        r++;
    }
    free(line);
    fclose(f);
    return r == nrows ? 0 : -1;
}

/* ---- Half-precision conversions (round to nearest even), and back ---------------------------- */

static uint16_t to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, 4);
    u += 0x7FFF + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

static float from_bf16(uint16_t b) {
    uint32_t u = (uint32_t)b << 16;
    float x;
    memcpy(&x, &u, 4);
    return x;
}

static uint16_t to_f16(float x) {
    _Float16 h = (_Float16)x;
    uint16_t b;
    memcpy(&b, &h, 2);
    return b;
}

static float from_f16(uint16_t b) {
    _Float16 h;
    memcpy(&h, &b, 2);
    return (float)h;
}

/* ---- Checks ----------------------------------------------------------------------------------- */

static void check_against_cli(const float *logits, long rows, long vocab, const expected_row *expected, uint64_t seed) {
    tns_sampler *s = NULL;
    CHECK(tns_sampler_create(vocab, rows, 0, TNS_PLACEMENT_AUTOMATIC, &s) == TNS_OK && s != NULL, "create");
    if (!s) return;
    CHECK(tns_sampler_vocab_size(s) == vocab, "vocab_size");
    CHECK(tns_sampler_max_batch(s) == rows, "max_batch");
    CHECK(tns_sampler_threads(s) >= 1, "threads");
    tns_params params[64];
    uint64_t steps[64];
    int64_t tokens[64], kept[64];
    double logprobs[64];
    tns_status status[64];
    for (long r = 0; r < rows; r++) { tns_params_init(&params[r]); params[r].seed = seed; }
    int compared = 0;
    for (int j = 0; j < expected[0].draws; j++) {
        for (long r = 0; r < rows; r++) steps[r] = (uint64_t)j;
        tns_status st = tns_sample(s, logits, TNS_FORMAT_F32, rows, vocab, params, steps, tokens, logprobs, kept, status);
        CHECK(st == TNS_OK, "tns_sample: %s", tns_status_message(st));
        for (long r = 0; r < rows; r++) {
            CHECK(status[r] == TNS_OK, "row %ld: %s", r, tns_status_message(status[r]));
            CHECK(tokens[r] == expected[r].tokens[j], "row %ld draw %d: token %lld, nsigma sample says %ld",
                  r, j, (long long)tokens[r], expected[r].tokens[j]);
            CHECK(fabs(logprobs[r] - expected[r].logprobs[j]) <= 1e-12 * (1 + fabs(logprobs[r])),
                  "row %ld draw %d: logprob %.17g, nsigma sample says %.17g", r, j, logprobs[r], expected[r].logprobs[j]);
            CHECK(kept[r] == expected[r].kept, "row %ld: kept %lld, nsigma sample says %ld", r, (long long)kept[r], expected[r].kept);
            compared++;
        }
    }
    printf("tokens equal to nsigma sample: %d draws (%ld rows x %d steps)\n", compared, rows, expected[0].draws);
    tns_sampler_destroy(s);
}

/* The token of a row does not depend on its position, the batch, the stride or the format's
 * storage: f16 / bf16 rows give the f32 API's tokens on the converted values. */
static void check_layouts(const float *logits, long rows, long vocab) {
    tns_sampler *s = NULL;
    if (tns_sampler_create(vocab, rows, 2, TNS_PLACEMENT_DISABLED, &s) != TNS_OK) { CHECK(0, "create"); return; }
    tns_params params[64];
    uint64_t steps[64];
    int64_t base[64], tokens[64];
    tns_status status[64];
    for (long r = 0; r < rows; r++) {
        tns_params_init(&params[r]);
        params[r].seed = 1000 + (uint64_t)r;
        steps[r] = 5 + (uint64_t)r;
    }
    CHECK(tns_sample(s, logits, TNS_FORMAT_F32, rows, vocab, params, steps, base, NULL, NULL, status) == TNS_OK, "sample");

    /* Reversed order, one row at a time, and with a padded stride. */
    long stride = vocab + 37;
    float *padded = malloc((size_t)rows * (size_t)stride * sizeof(float));
    for (long r = 0; r < rows; r++) {
        memcpy(padded + r * stride, logits + (rows - 1 - r) * vocab, (size_t)vocab * sizeof(float));
        for (long i = vocab; i < stride; i++) padded[r * stride + i] = NAN; /* never read */
    }
    tns_params rparams[64];
    uint64_t rsteps[64];
    for (long r = 0; r < rows; r++) { rparams[r] = params[rows - 1 - r]; rsteps[r] = steps[rows - 1 - r]; }
    CHECK(tns_sample(s, padded, TNS_FORMAT_F32, rows, stride, rparams, rsteps, tokens, NULL, NULL, status) == TNS_OK, "strided");
    for (long r = 0; r < rows; r++) {
        CHECK(status[r] == TNS_OK && tokens[r] == base[rows - 1 - r], "reversed, strided row %ld: %lld vs %lld", r,
              (long long)tokens[r], (long long)base[rows - 1 - r]);
    }
    for (long r = 0; r < rows; r++) {
        CHECK(tns_sample(s, logits + r * vocab, TNS_FORMAT_F32, 1, vocab, &params[r], &steps[r], tokens, NULL, NULL, status) == TNS_OK,
              "single");
        CHECK(tokens[0] == base[r], "row %ld alone: %lld vs %lld", r, (long long)tokens[0], (long long)base[r]);
    }

    /* Half precision: the 16-bit rows against the f32 API on their exact float values. */
    uint16_t *bits = malloc((size_t)rows * (size_t)vocab * 2);
    float *widened = malloc((size_t)rows * (size_t)vocab * sizeof(float));
    int32_t formats[2] = {TNS_FORMAT_F16, TNS_FORMAT_BF16};
    for (int f = 0; f < 2; f++) {
        for (long i = 0; i < rows * vocab; i++) {
            bits[i] = f == 0 ? to_f16(logits[i]) : to_bf16(logits[i]);
            widened[i] = f == 0 ? from_f16(bits[i]) : from_bf16(bits[i]);
        }
        int64_t want[64], kept16[64], kept32[64];
        double lp16[64], lp32[64];
        CHECK(tns_sample(s, widened, TNS_FORMAT_F32, rows, vocab, params, steps, want, lp32, kept32, status) == TNS_OK, "f32");
        CHECK(tns_sample(s, bits, formats[f], rows, vocab, params, steps, tokens, lp16, kept16, status) == TNS_OK, "16-bit");
        for (long r = 0; r < rows; r++) {
            CHECK(status[r] == TNS_OK && tokens[r] == want[r] && kept16[r] == kept32[r] && lp16[r] == lp32[r],
                  "%s row %ld: token %lld vs %lld", f == 0 ? "f16" : "bf16", r, (long long)tokens[r], (long long)want[r]);
        }
    }
    free(bits);
    free(widened);
    free(padded);
    tns_sampler_destroy(s);
}

/* A failing row fails alone, with the code and the index of its bad logit. */
static void check_row_errors(const float *logits, long rows, long vocab) {
    if (rows < 3) return;
    tns_sampler *s = NULL;
    if (tns_sampler_create(vocab, rows, 0, TNS_PLACEMENT_AUTOMATIC, &s) != TNS_OK) { CHECK(0, "create"); return; }
    float *copy = malloc((size_t)rows * (size_t)vocab * sizeof(float));
    memcpy(copy, logits, (size_t)rows * (size_t)vocab * sizeof(float));
    copy[0 * vocab + 17] = NAN;
    copy[1 * vocab + 4242] = INFINITY;
    tns_params params[64];
    uint64_t steps[64] = {0};
    int64_t tokens[64], kept[64], clean[64];
    double lp[64];
    tns_status status[64];
    for (long r = 0; r < rows; r++) tns_params_init(&params[r]);
    params[2].temperature = -1;
    CHECK(tns_sample(s, logits, TNS_FORMAT_F32, rows, vocab, params, steps, clean, NULL, NULL, status) == TNS_OK, "clean");
    CHECK(tns_sample(s, copy, TNS_FORMAT_F32, rows, vocab, params, steps, tokens, lp, kept, status) == TNS_OK, "errors");
    CHECK(status[0] == TNS_ROW_NAN && tokens[0] == 17 && kept[0] == 0 && isnan(lp[0]), "NaN row: %d %lld", status[0], (long long)tokens[0]);
    CHECK(status[1] == TNS_ROW_POSITIVE_INFINITY && tokens[1] == 4242, "+inf row: %d %lld", status[1], (long long)tokens[1]);
    CHECK(status[2] == TNS_ROW_INVALID_TEMPERATURE && tokens[2] == -1, "temperature row: %d", status[2]);
    for (long r = 3; r < rows; r++) CHECK(status[r] == TNS_OK && tokens[r] == clean[r], "row %ld unaffected", r);

    /* Parameter errors per row. */
    tns_params p;
    int64_t t;
    tns_status st;
    struct { int flag; int expect; } cases[] = {
        {TNS_USE_N_SIGMA, TNS_ROW_INVALID_N_SIGMA}, {TNS_USE_TOP_K, TNS_ROW_INVALID_TOP_K},
        {TNS_USE_TOP_P, TNS_ROW_INVALID_TOP_P}, {TNS_USE_MIN_P, TNS_ROW_INVALID_MIN_P},
    };
    for (int c = 0; c < 4; c++) {
        tns_params_init(&p);
        p.flags |= (uint32_t)cases[c].flag;
        p.n_sigma = -1; p.top_k = 0; p.top_p = 0; p.min_p = 2;
        if (cases[c].flag != TNS_USE_N_SIGMA) p.n_sigma = 1;
        CHECK(tns_sample(s, logits, TNS_FORMAT_F32, 1, vocab, &p, steps, &t, NULL, NULL, &st) == TNS_OK, "call");
        CHECK(st == cases[c].expect, "case %d: status %d, want %d", c, st, cases[c].expect);
    }
    /* All masked. */
    for (long i = 0; i < vocab; i++) copy[i] = -INFINITY;
    tns_params_init(&p);
    CHECK(tns_sample(s, copy, TNS_FORMAT_F32, 1, vocab, &p, steps, &t, NULL, NULL, &st) == TNS_OK && st == TNS_ROW_NO_FINITE_LOGIT,
          "masked row: %d", st);
    free(copy);
    tns_sampler_destroy(s);
}

/* Every bad argument is an error code, never a crash; nothing is written on failure. */
static void check_bad_arguments(const float *logits, long vocab) {
    tns_sampler *s = (tns_sampler *)0x1;
    CHECK(tns_sampler_create(0, 1, 0, -1, &s) == TNS_ERR_VOCAB_SIZE && s == NULL, "vocab 0");
    CHECK(tns_sampler_create(-5, 1, 0, -1, &s) == TNS_ERR_VOCAB_SIZE, "vocab < 0");
    CHECK(tns_sampler_create(2147483648LL, 1, 0, -1, &s) == TNS_ERR_VOCAB_SIZE, "vocab 2^31");
    CHECK(tns_sampler_create(2147483647LL, 1, 0, -1, &s) == TNS_ERR_VOCAB_SIZE, "vocab 2^31 - 1");
    CHECK(tns_max_vocab_size() == TNS_MAX_VOCAB_SIZE && TNS_MAX_VOCAB_SIZE == 2147483646LL, "one vocabulary limit");
    CHECK(tns_sampler_create(TNS_MAX_VOCAB_SIZE + 1, 1, 0, -1, &s) == TNS_ERR_VOCAB_SIZE, "vocab limit + 1");
    /* 2^31 - 2 logits of scratch for each of 1024 threads: more memory than any machine has. */
    CHECK(tns_sampler_create(2147483646LL, 1, 1024, -1, &s) == TNS_ERR_OUT_OF_MEMORY && s == NULL, "scratch too large");
    CHECK(tns_sampler_create(vocab, 0, 0, -1, &s) == TNS_ERR_BATCH_SIZE, "batch 0");
    CHECK(tns_sampler_create(vocab, (int64_t)1 << 40, 0, -1, &s) == TNS_ERR_BATCH_SIZE, "batch huge");
    CHECK(tns_sampler_create(vocab, 4, -1, -1, &s) == TNS_ERR_THREADS, "threads -1");
    CHECK(tns_sampler_create(vocab, 4, 100000, -1, &s) == TNS_ERR_THREADS, "threads huge");
    CHECK(tns_sampler_create(vocab, 4, 1, -3, &s) == TNS_ERR_PLACEMENT, "placement -3");
    CHECK(tns_sampler_create(vocab, 4, 1, -1, NULL) == TNS_ERR_NULL_POINTER, "out NULL");
    /* A NUMA node the machine lacks runs unbound (not an error). */
    CHECK(tns_sampler_create(vocab, 1, 1, 4000, &s) == TNS_OK, "placement: missing node");
    {
        tns_params q;
        tns_params_init(&q);
        uint64_t step = 0;
        int64_t token = -1;
        tns_status row = -1;
        CHECK(tns_sample(s, logits, TNS_FORMAT_F32, 1, vocab, &q, &step, &token, NULL, NULL, &row) == TNS_OK && row == TNS_OK,
              "sample on a missing node");
    }
    tns_sampler_destroy(s);
    tns_sampler_destroy(NULL);
    CHECK(tns_sampler_vocab_size(NULL) == 0 && tns_sampler_threads(NULL) == 0, "NULL getters");

    CHECK(tns_sampler_create(vocab, 2, 1, TNS_PLACEMENT_DISABLED, &s) == TNS_OK, "create");
    tns_params p[3];
    for (int i = 0; i < 3; i++) tns_params_init(&p[i]);
    uint64_t steps[3] = {0, 0, 0};
    int64_t tokens[3] = {-7, -7, -7};
    tns_status st[3] = {-7, -7, -7};
    CHECK(tns_sample(NULL, logits, 0, 1, vocab, p, steps, tokens, NULL, NULL, st) == TNS_ERR_NULL_POINTER, "NULL sampler");
    CHECK(tns_sample(s, NULL, 0, 1, vocab, p, steps, tokens, NULL, NULL, st) == TNS_ERR_NULL_POINTER, "NULL logits");
    CHECK(tns_sample(s, logits, 0, 1, vocab, NULL, steps, tokens, NULL, NULL, st) == TNS_ERR_NULL_POINTER, "NULL params");
    CHECK(tns_sample(s, logits, 0, 1, vocab, p, NULL, tokens, NULL, NULL, st) == TNS_ERR_NULL_POINTER, "NULL steps");
    CHECK(tns_sample(s, logits, 0, 1, vocab, p, steps, NULL, NULL, NULL, st) == TNS_ERR_NULL_POINTER, "NULL tokens");
    CHECK(tns_sample(s, logits, 0, 1, vocab, p, steps, tokens, NULL, NULL, NULL) == TNS_ERR_NULL_POINTER, "NULL status");
    CHECK(tns_sample(s, logits, 0, 3, vocab, p, steps, tokens, NULL, NULL, st) == TNS_ERR_BATCH_SIZE, "rows > max batch");
    CHECK(tns_sample(s, logits, 0, -1, vocab, p, steps, tokens, NULL, NULL, st) == TNS_ERR_BATCH_SIZE, "rows < 0");
    CHECK(tns_sample(s, logits, 0, 1, vocab - 1, p, steps, tokens, NULL, NULL, st) == TNS_ERR_ROW_STRIDE, "stride < vocab");
    CHECK(tns_sample(s, logits, 0, 2, INT64_MAX / 2, p, steps, tokens, NULL, NULL, st) == TNS_ERR_ROW_STRIDE, "stride overflow");
    CHECK(tns_sample(s, logits, 3, 1, vocab, p, steps, tokens, NULL, NULL, st) == TNS_ERR_FORMAT, "format 3");
    CHECK(tns_sample(s, logits, -1, 1, vocab, p, steps, tokens, NULL, NULL, st) == TNS_ERR_FORMAT, "format -1");
    p[0].struct_size = 8;
    CHECK(tns_sample(s, logits, 0, 1, vocab, p, steps, tokens, NULL, NULL, st) == TNS_ERR_STRUCT_SIZE, "struct_size 8");
    p[0].struct_size = sizeof(tns_params);
    p[1].struct_size = 0;
    CHECK(tns_sample(s, logits, 0, 2, vocab, p, steps, tokens, NULL, NULL, st) == TNS_ERR_STRUCT_SIZE, "struct_size mixed");
    p[1].struct_size = sizeof(tns_params);
    p[1].flags |= 1u << 20;
    CHECK(tns_sample(s, logits, 0, 2, vocab, p, steps, tokens, NULL, NULL, st) == TNS_ERR_UNSUPPORTED, "unknown flag");
    CHECK(tokens[0] == -7 && tokens[1] == -7 && st[0] == -7 && st[1] == -7, "nothing written on failure");
    CHECK(tns_sample(s, logits, 0, 0, vocab, NULL, NULL, NULL, NULL, NULL, NULL) == TNS_OK, "0 rows");

    /* A newer caller's larger struct (zeros appended) and an older library read the same. */
    struct { tns_params p; uint64_t appended; } big[2];
    memset(big, 0, sizeof big);
    for (int i = 0; i < 2; i++) { tns_params_init(&big[i].p); big[i].p.struct_size = sizeof big[0]; big[i].p.seed = 9; }
    p[0].flags = TNS_USE_N_SIGMA; p[0].seed = 9; p[1] = p[0];
    int64_t a[2], b[2];
    float two_rows[2 * 8];
    (void)two_rows;
    CHECK(tns_sample(s, logits, 0, 1, vocab, p, steps, a, NULL, NULL, st) == TNS_OK, "v1 struct");
    CHECK(tns_sample(s, logits, 0, 1, vocab, &big[0].p, steps, b, NULL, NULL, st) == TNS_OK, "larger struct");
    CHECK(a[0] == b[0], "larger struct gives the same token");
    tns_sampler_destroy(s);

    /* Single-row calls. */
    int64_t count = -7;
    int32_t ids[4];
    double probs[4];
    tns_row_stats stats;
    CHECK(tns_filter(NULL, vocab, 1, 1, &stats, ids, 4, &count) == TNS_ERR_NULL_POINTER, "filter NULL row");
    CHECK(tns_filter(logits, vocab, 1, 1, &stats, ids, 4, NULL) == TNS_ERR_NULL_POINTER, "filter NULL count");
    CHECK(tns_filter(logits, 0, 1, 1, &stats, ids, 4, &count) == TNS_ERR_VOCAB_SIZE, "filter vocab 0");
    CHECK(tns_filter(logits, 2147483648LL, 1, 1, &stats, ids, 4, &count) == TNS_ERR_VOCAB_SIZE, "filter vocab 2^31");
    CHECK(tns_filter(logits, vocab, 1, 1, &stats, NULL, 4, &count) == TNS_ERR_NULL_POINTER, "filter NULL ids");
    CHECK(tns_filter(logits, vocab, 1, 1, &stats, ids, -1, &count) == TNS_ERR_BUFFER_TOO_SMALL && count > 0,
          "filter capacity < 0: count %lld", (long long)count);
    CHECK(tns_filter(logits, vocab, 1, -2, &stats, ids, 4, &count) == TNS_ROW_INVALID_N_SIGMA, "filter n < 0");
    CHECK(tns_filter(logits, vocab, 0, 0, &stats, ids, 4, &count) == TNS_ERR_BUFFER_TOO_SMALL && count > 4,
          "filter off: %lld kept", (long long)count);
    tns_params_init(&p[0]);
    CHECK(tns_filtered_distribution(logits, vocab, NULL, &stats, ids, probs, 4, &count) == TNS_ERR_NULL_POINTER, "dist NULL params");
    CHECK(tns_filtered_distribution(logits, vocab, p, &stats, NULL, probs, 4, &count) == TNS_ERR_NULL_POINTER, "dist NULL tokens");
    p[0].struct_size = 4;
    CHECK(tns_filtered_distribution(logits, vocab, p, &stats, ids, probs, 4, &count) == TNS_ERR_STRUCT_SIZE, "dist struct_size");

    /* The other samplers through tns_params: p-less on p = (3/4, 1/4) keeps the first alone (Σp² = 5/8);
       XTC at 0.2 on it keeps the second; a version-1 struct (40 bytes) reads none of their fields. */
    {
        const float two[2] = {1.0986123f, 0.0f};
        tns_params_init(&p[0]);
        p[0].flags = TNS_USE_P_LESS;
        CHECK(tns_filtered_distribution(two, 2, p, &stats, ids, probs, 4, &count) == TNS_OK && count == 1 && ids[0] == 0,
              "p-less: %lld kept", (long long)count);
        p[0].flags = TNS_USE_XTC;
        p[0].xtc_threshold = 0.2f;
        CHECK(tns_filtered_distribution(two, 2, p, &stats, ids, probs, 4, &count) == TNS_OK && count == 1 && ids[0] == 1,
              "xtc: %lld kept, first %d", (long long)count, ids[0]);
        p[0].xtc_probability = 0.0f;
        CHECK(tns_filtered_distribution(two, 2, p, &stats, ids, probs, 4, &count) == TNS_OK && count == 2, "xtc off");
        p[0].flags = TNS_USE_EPSILON;
        p[0].epsilon = 1.0f;
        CHECK(tns_filtered_distribution(two, 2, p, &stats, ids, probs, 4, &count) == TNS_ROW_INVALID_SAMPLER,
              "epsilon 1");
        p[0].struct_size = TNS_PARAMS_V1_SIZE;
        p[0].flags = 0;
        CHECK(tns_filtered_distribution(two, 2, p, &stats, ids, probs, 4, &count) == TNS_OK && count == 2, "v1 struct");
        p[0].flags = 1u << 12;
        p[0].struct_size = sizeof(tns_params);
        CHECK(tns_filtered_distribution(two, 2, p, &stats, ids, probs, 4, &count) == TNS_ERR_UNSUPPORTED, "unknown flag");
    }

    /* A sampler order on p = (0.4, 0.3, 0.2, 0.1), top-k 2 and top-p 0.5: top_k;top_p keeps 0.4
       alone (4/7 >= 0.5 after top-k), top_p;top_k keeps two (0.4 < 0.5 of the whole row). The
       sentinels read top_k 0 as off; an unknown step code is TNS_ERR_UNSUPPORTED. */
    {
        const float four[4] = {-0.91629073f, -1.2039728f, -1.6094379f, -2.3025851f};
        CHECK(sizeof(tns_params) == 80 && offsetof(tns_params, sampler_order) == 72, "tns_params layout");
        tns_params_init(&p[0]);
        p[0].flags = TNS_USE_TOP_K | TNS_USE_TOP_P | TNS_USE_SAMPLER_ORDER;
        p[0].top_k = 2;
        p[0].top_p = 0.5f;
        p[0].sampler_order = TNS_STEP_TOP_K | (TNS_STEP_TOP_P << 4);
        CHECK(tns_filtered_distribution(four, 4, p, &stats, ids, probs, 4, &count) == TNS_OK && count == 1 && ids[0] == 0,
              "top_k;top_p: %lld kept", (long long)count);
        p[0].sampler_order = TNS_STEP_TOP_P | (TNS_STEP_TOP_K << 4);
        CHECK(tns_filtered_distribution(four, 4, p, &stats, ids, probs, 4, &count) == TNS_OK && count == 2,
              "top_p;top_k: %lld kept", (long long)count);
        p[0].sampler_order = TNS_SAMPLER_ORDER_LLAMA_CPP;
        CHECK(tns_filtered_distribution(four, 4, p, &stats, ids, probs, 4, &count) == TNS_OK && count == 1,
              "llama.cpp's default order: %lld kept", (long long)count);
        p[0].sampler_order = 0xF;
        CHECK(tns_filtered_distribution(four, 4, p, &stats, ids, probs, 4, &count) == TNS_ERR_UNSUPPORTED,
              "unknown step code");
        p[0].sampler_order = TNS_STEP_TOP_K | (TNS_STEP_TOP_K << 4);
        CHECK(tns_filtered_distribution(four, 4, p, &stats, ids, probs, 4, &count) == TNS_ERR_UNSUPPORTED,
              "repeated step");
        /* The library's name table: the packed order of a `--samplers` list, or the bad entry named. */
        uint64_t packed = 0;
        char message[160];
        CHECK(tns_sampler_order_parse("top_k;top_p", &packed, message, sizeof message) == TNS_OK && packed == 0x42,
              "parse top_k;top_p: %llx", (unsigned long long)packed);
        CHECK(tns_sampler_order_parse("penalties;dry;top_n_sigma;top_k;typ_p;top_p;min_p;xtc;temperature", &packed,
                                      NULL, 0) == TNS_OK && packed == TNS_SAMPLER_ORDER_LLAMA_CPP,
              "parse llama.cpp's default chain");
        CHECK(tns_sampler_order_parse("top_k;mirostat", &packed, message, sizeof message) == TNS_ERR_UNSUPPORTED &&
                  strstr(message, "unknown sampler \"mirostat\"") != NULL,
              "parse an unknown name: %s", message);
        CHECK(tns_sampler_order_parse("top_k,top_k", &packed, message, 8) == TNS_ERR_UNSUPPORTED &&
                  strlen(message) == 7,
              "parse a repeated name, message truncated to its buffer: %s", message);
        CHECK(tns_sampler_order_parse(NULL, &packed, message, sizeof message) == TNS_ERR_NULL_POINTER &&
                  tns_sampler_order_parse("top_k", NULL, message, sizeof message) == TNS_ERR_NULL_POINTER,
              "parse with NULL");
        tns_params_init(&p[0]);
        p[0].flags = TNS_USE_TOP_K;
        p[0].top_k = 0;
        CHECK(tns_filtered_distribution(four, 4, p, &stats, ids, probs, 4, &count) == TNS_ROW_INVALID_TOP_K,
              "top_k 0 without sentinels");
        p[0].flags = TNS_USE_TOP_K | TNS_LLAMA_CPP_SENTINELS;
        CHECK(tns_filtered_distribution(four, 4, p, &stats, ids, probs, 4, &count) == TNS_OK && count == 4,
              "top_k 0 with llama.cpp's sentinels: %lld kept", (long long)count);
    }

    /* Messages: every code has its own. */
    int codes[] = {TNS_OK, TNS_ERR_NULL_POINTER, TNS_ERR_VOCAB_SIZE, TNS_ERR_BATCH_SIZE, TNS_ERR_THREADS,
                   TNS_ERR_PLACEMENT, TNS_ERR_FORMAT, TNS_ERR_ROW_STRIDE, TNS_ERR_STRUCT_SIZE, TNS_ERR_UNSUPPORTED,
                   TNS_ERR_BUSY, TNS_ERR_BUFFER_TOO_SMALL, TNS_ERR_OUT_OF_MEMORY, TNS_ROW_NAN, TNS_ROW_POSITIVE_INFINITY,
                   TNS_ROW_NO_FINITE_LOGIT, TNS_ROW_INVALID_TEMPERATURE, TNS_ROW_INVALID_N_SIGMA, TNS_ROW_INVALID_TOP_K,
                   TNS_ROW_INVALID_TOP_P, TNS_ROW_INVALID_MIN_P, TNS_ROW_INVALID_SAMPLER};
    int ncodes = (int)(sizeof codes / sizeof codes[0]);
    const char *unknown = tns_status_message(12345);
    CHECK(unknown && strcmp(unknown, "unknown status") == 0, "unknown: %s", unknown ? unknown : "(null)");
    for (int i = 0; i < ncodes; i++) {
        const char *m = tns_status_message(codes[i]);
        CHECK(m && strlen(m) > 1 && strcmp(m, unknown) != 0, "message of %d", codes[i]);
        for (int j = 0; j < i; j++) CHECK(strcmp(m, tns_status_message(codes[j])) != 0, "codes %d and %d share a message", codes[i], codes[j]);
    }
    CHECK(tns_abi_version() == TNS_ABI_VERSION, "abi version %d", tns_abi_version());
    CHECK(strlen(tns_version()) >= 5, "version '%s'", tns_version());
}

/* ---- Hostile inputs (issue 20) ------------------------------------------------------------------ */

/* Runs `body` in a child process whose address space may grow by only `headroom` bytes, so that
 * a larger allocation fails there (whatever the machine's memory and overcommit policy) without
 * touching a page. Returns the child's exit status, or 128 + the signal that killed it. */
static int in_limited_child(unsigned long long headroom, int (*body)(void)) {
    unsigned long long pages = 0;
    FILE *statm = fopen("/proc/self/statm", "r");
    if (!statm || fscanf(statm, "%llu", &pages) != 1) pages = (8ull << 30) / 4096; /* assume 8 GiB mapped */
    if (statm) fclose(statm);
    rlim_t limit = (rlim_t)(pages * (unsigned long long)sysconf(_SC_PAGESIZE) + headroom);
    fflush(stdout);
    fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) { perror("fork"); return -1; }
    if (pid == 0) {
        struct rlimit r = {limit, limit};
        if (setrlimit(RLIMIT_AS, &r) != 0) _exit(90);
        _exit(body());
    }
    int status = 0;
    if (waitpid(pid, &status, 0) != pid) return -1;
    if (WIFSIGNALED(status)) return 128 + WTERMSIG(status);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Vocabularies inside the accepted range whose temporary scratch (about 64 bytes per logit) is
 * 6.4 GB (below most machines' memory: only the failed allocation can refuse it), 64 GB and
 * 137 GB: each single-row call returns TNS_ERR_OUT_OF_MEMORY and writes nothing. The row is
 * never read (a short buffer: reading it would crash the child). Exit 0 when all do. */
static int huge_temporary_scratch(void) {
    static const float row[4] = {1, 2, 3, 4};
    const int64_t vocabs[3] = {100000000LL, 1000000000LL, 2147483646LL};
    int bad = 0;
    for (int i = 0; i < 3; i++) {
        tns_row_stats stats;
        memset(&stats, 0x5A, sizeof stats);
        int32_t ids[4];
        double probs[4];
        int64_t count = -7;
        tns_status st = tns_filter(row, vocabs[i], 1, 1, &stats, ids, 4, &count);
        if (st != TNS_ERR_OUT_OF_MEMORY || count != -7) {
            fprintf(stderr, "tns_filter(vocab %lld): status %d, count %lld\n", (long long)vocabs[i], st, (long long)count);
            bad++;
        }
        tns_params p;
        tns_params_init(&p);
        st = tns_filtered_distribution(row, vocabs[i], &p, &stats, ids, probs, 4, &count);
        if (st != TNS_ERR_OUT_OF_MEMORY || count != -7) {
            fprintf(stderr, "tns_filtered_distribution(vocab %lld): status %d\n", (long long)vocabs[i], st);
            bad++;
        }
    }
    return bad == 0 ? 0 : 1;
}

static void check_hostile_inputs(const float *logits, long vocab) {
    /* 1. A single-row call whose scratch cannot be had returns TNS_ERR_OUT_OF_MEMORY (it aborted
     * in Swift's trapping allocator). 1 GiB more address space: far below every scratch. */
    int child = in_limited_child(1ull << 30, huge_temporary_scratch);
    CHECK(child == 0, "single-row calls with a huge vocabulary: child exited %d (>128: killed by signal %d)", child,
          child > 128 ? child - 128 : 0);

    /* 3. An implausible struct_size (an uninitialized field) is TNS_ERR_STRUCT_SIZE, never read
     * as a stride or a length; 4096, the largest accepted, reads as version 1's fields. */
    tns_sampler *s = NULL;
    CHECK(tns_sampler_create(vocab, 2, 1, TNS_PLACEMENT_DISABLED, &s) == TNS_OK, "create");
    static uint64_t storage[2 * 4096 / 8];
    tns_params *p = (tns_params *)storage;
    uint64_t steps[2] = {3, 3};
    int64_t tokens[2] = {-7, -7}, reference[2] = {-1, -1};
    tns_status st[2] = {-7, -7};
    tns_params v1[2];
    for (int r = 0; r < 2; r++) { tns_params_init(&v1[r]); v1[r].seed = 11; }
    CHECK(tns_sample(s, logits, TNS_FORMAT_F32, 2, vocab, v1, steps, reference, NULL, NULL, st) == TNS_OK
              && st[0] == TNS_OK && st[1] == TNS_OK,
          "v1 structs");
    tns_params_init(p);
    p->seed = 11;
    const uint32_t implausible[] = {0x10000u, 4096u + 8u, 0x7FFFFFF8u, 0xFFFFFFF8u};
    for (int i = 0; i < 4; i++) {
        p->struct_size = implausible[i];
        tokens[0] = -7;
        st[0] = -7;
        CHECK(tns_sample(s, logits, TNS_FORMAT_F32, 1, vocab, p, steps, tokens, NULL, NULL, st) == TNS_ERR_STRUCT_SIZE
                  && tokens[0] == -7 && st[0] == -7,
              "struct_size %#x, one row", implausible[i]);
        CHECK(tns_sample(s, logits, TNS_FORMAT_F32, 2, vocab, p, steps, tokens, NULL, NULL, st) == TNS_ERR_STRUCT_SIZE,
              "struct_size %#x, two rows", implausible[i]);
        int32_t ids[4];
        double probs[4];
        int64_t count = -7;
        CHECK(tns_filtered_distribution(logits, vocab, p, NULL, ids, probs, 4, &count) == TNS_ERR_STRUCT_SIZE && count == -7,
              "filtered_distribution struct_size %#x", implausible[i]);
        CHECK(tns_sampler_filtered_distribution(s, logits, p, NULL, ids, probs, 4, &count) == TNS_ERR_STRUCT_SIZE
                  && count == -7,
              "sampler_filtered_distribution struct_size %#x", implausible[i]);
    }
    p->struct_size = TNS_PARAMS_MAX_SIZE;
    tns_params_init((tns_params *)((char *)storage + 4096));
    ((tns_params *)((char *)storage + 4096))->struct_size = TNS_PARAMS_MAX_SIZE;
    ((tns_params *)((char *)storage + 4096))->seed = 11;
    CHECK(tns_sample(s, logits, TNS_FORMAT_F32, 2, vocab, p, steps, tokens, NULL, NULL, st) == TNS_OK
              && st[0] == TNS_OK && st[1] == TNS_OK && tokens[0] == reference[0] && tokens[1] == reference[1],
          "struct_size 4096: %lld %lld vs %lld %lld", (long long)tokens[0], (long long)tokens[1], (long long)reference[0],
          (long long)reference[1]);

    /* 4. A negative capacity is taken as 0: TNS_ERR_BUFFER_TOO_SMALL with the count written. */
    {
        int64_t want = -1, dwant = -1;
        CHECK(tns_filter(logits, vocab, 1, 1, NULL, NULL, 0, &want) == TNS_ERR_BUFFER_TOO_SMALL && want > 0, "capacity 0");
        tns_params q;
        tns_params_init(&q);
        CHECK(tns_filtered_distribution(logits, vocab, &q, NULL, NULL, NULL, 0, &dwant) == TNS_ERR_BUFFER_TOO_SMALL
                  && dwant == want,
              "distribution capacity 0");
        const int64_t negative[] = {-1, -4, INT64_MIN};
        for (int i = 0; i < 3; i++) {
            int64_t c[4] = {-7, -7, -7, -7};
            int32_t ids[4] = {-7, -7, -7, -7};
            CHECK(tns_filter(logits, vocab, 1, 1, NULL, ids, negative[i], &c[0]) == TNS_ERR_BUFFER_TOO_SMALL,
                  "filter capacity %lld", (long long)negative[i]);
            CHECK(tns_sampler_filter(s, logits, 1, 1, NULL, NULL, negative[i], &c[1]) == TNS_ERR_BUFFER_TOO_SMALL,
                  "sampler_filter capacity %lld", (long long)negative[i]);
            CHECK(tns_filtered_distribution(logits, vocab, &q, NULL, NULL, NULL, negative[i], &c[2])
                      == TNS_ERR_BUFFER_TOO_SMALL,
                  "filtered_distribution capacity %lld", (long long)negative[i]);
            CHECK(tns_sampler_filtered_distribution(s, logits, &q, NULL, NULL, NULL, negative[i], &c[3])
                      == TNS_ERR_BUFFER_TOO_SMALL,
                  "sampler_filtered_distribution capacity %lld", (long long)negative[i]);
            CHECK(c[0] == want && c[1] == want && c[2] == want && c[3] == want,
                  "capacity %lld: counts %lld %lld %lld %lld, want %lld", (long long)negative[i], (long long)c[0],
                  (long long)c[1], (long long)c[2], (long long)c[3], (long long)want);
            CHECK(ids[0] == -7, "capacity %lld: no id written", (long long)negative[i]);
        }
    }
    tns_sampler_destroy(s);
}

/* 5. What the header promises about a row holding both NaN and +inf (the lowest such index is
 * reported, with its own code), on every route through the library: each filter combination and
 * greedy, split rows (2 threads, a batch large enough to wake them) and single-row calls. */
static void check_first_bad_logit(const float *logits, long rows, long vocab) {
    if (vocab < 40000) return;
    tns_sampler *s = NULL;
    if (tns_sampler_create(vocab, 8, 2, TNS_PLACEMENT_DISABLED, &s) != TNS_OK) { CHECK(0, "create"); return; }
    long n = rows < 8 ? rows : 8;
    float *copy = malloc((size_t)8 * (size_t)vocab * sizeof(float));
    /* Positions: same chunk (100, 3000), different chunks (5000, 30000), adjacent (4095, 4096). */
    const long pairs[3][2] = {{100, 3000}, {5000, 30000}, {4095, 4096}};
    for (int pair = 0; pair < 3; pair++) {
        for (int nan_first = 0; nan_first < 2; nan_first++) {
            long lo = pairs[pair][0], hi = pairs[pair][1];
            for (long r = 0; r < 8; r++) {
                memcpy(copy + r * vocab, logits + (r % n) * vocab, (size_t)vocab * sizeof(float));
                copy[r * vocab + lo] = nan_first ? NAN : INFINITY;
                copy[r * vocab + hi] = nan_first ? INFINITY : NAN;
            }
            tns_status want = nan_first ? TNS_ROW_NAN : TNS_ROW_POSITIVE_INFINITY;
            tns_params params[8];
            uint64_t steps[8] = {0};
            int64_t tokens[8];
            tns_status status[8];
            for (int r = 0; r < 8; r++) {
                tns_params_init(&params[r]);
                switch (r) {
                case 1: params[r].temperature = 0; break;
                case 2: params[r].flags = 0; break;
                case 3: params[r].flags = TNS_USE_TOP_K; params[r].top_k = 20; break;
                case 4: params[r].flags = TNS_USE_TOP_P; params[r].top_p = 0.9f; break;
                case 5: params[r].flags = TNS_USE_MIN_P; params[r].min_p = 0.1f; break;
                case 6: params[r].flags |= TNS_USE_TOP_K | TNS_USE_TOP_P; params[r].top_k = 50; params[r].top_p = 0.5f; break;
                case 7: params[r].temperature = INFINITY; break;
                default: break;
                }
            }
            CHECK(tns_sample(s, copy, TNS_FORMAT_F32, 8, vocab, params, steps, tokens, NULL, NULL, status) == TNS_OK, "sample");
            for (int r = 0; r < 8; r++)
                CHECK(status[r] == want && tokens[r] == lo, "pair %d nan_first %d row %d: status %d index %lld, want %d at %ld",
                      pair, nan_first, r, status[r], (long long)tokens[r], want, lo);
            /* One row at a time: a row the two threads may split by chunks. */
            for (int r = 0; r < 8; r++) {
                CHECK(tns_sample(s, copy + r * vocab, TNS_FORMAT_F32, 1, vocab, &params[r], steps, tokens, NULL, NULL, status)
                          == TNS_OK && status[0] == want && tokens[0] == lo,
                      "alone: pair %d nan_first %d row %d: status %d index %lld", pair, nan_first, r, status[0],
                      (long long)tokens[0]);
            }
            tns_row_stats stats;
            int64_t count = -7;
            stats.error_index = -7;
            CHECK(tns_filter(copy, vocab, 1, 1, &stats, NULL, 0, &count) == want && stats.error_index == lo,
                  "filter pair %d nan_first %d: index %lld", pair, nan_first, (long long)stats.error_index);
            stats.error_index = -7;
            CHECK(tns_sampler_filter(s, copy, 0, 0, &stats, NULL, 0, &count) == want && stats.error_index == lo,
                  "sampler_filter pair %d nan_first %d: index %lld", pair, nan_first, (long long)stats.error_index);
            stats.error_index = -7;
            CHECK(tns_filtered_distribution(copy, vocab, &params[1], &stats, NULL, NULL, 0, &count) == want
                      && stats.error_index == lo,
                  "greedy distribution pair %d nan_first %d: index %lld", pair, nan_first, (long long)stats.error_index);
        }
    }
    free(copy);
    tns_sampler_destroy(s);
}

/* 5. T = +inf is accepted and samples uniformly from the kept set: equal probabilities, logprob
 * -log(kept), and draws spread evenly over the kept tokens however far apart their logits are. */
static void check_infinite_temperature(const float *logits, long vocab) {
    tns_params p;
    tns_params_init(&p);
    p.temperature = INFINITY;
    int32_t *ids = malloc((size_t)vocab * sizeof(int32_t));
    double *probs = malloc((size_t)vocab * sizeof(double));
    int64_t count = -1;
    CHECK(tns_filtered_distribution(logits, vocab, &p, NULL, ids, probs, vocab, &count) == TNS_OK && count > 1,
          "T = inf distribution: %lld", (long long)count);
    for (int64_t i = 0; i < count; i++)
        CHECK(fabs(probs[i] - 1.0 / (double)count) <= 1e-12, "T = inf: p[%lld] = %.17g, kept %lld", (long long)i, probs[i],
              (long long)count);
    free(ids);
    free(probs);

    /* Four logits 0, -40, -80, 20 (a 1e-35 spread of probabilities at T = 1), Top-nσ off. */
    float row[64 * 4];
    for (int r = 0; r < 64; r++) { row[4 * r] = 0; row[4 * r + 1] = -40; row[4 * r + 2] = -80; row[4 * r + 3] = 20; }
    tns_sampler *s = NULL;
    if (tns_sampler_create(4, 64, 1, TNS_PLACEMENT_DISABLED, &s) != TNS_OK) { CHECK(0, "create"); return; }
    tns_params params[64];
    uint64_t steps[64];
    int64_t tokens[64], kept[64];
    double lp[64];
    tns_status status[64];
    long hits[4] = {0, 0, 0, 0}, wrong = 0;
    double worst = 0;
    for (int r = 0; r < 64; r++) {
        tns_params_init(&params[r]);
        params[r].flags = 0;
        params[r].temperature = INFINITY;
        params[r].seed = (uint64_t)r;
    }
    for (uint64_t call = 0; call < 64; call++) {
        for (int r = 0; r < 64; r++) steps[r] = call;
        CHECK(tns_sample(s, row, TNS_FORMAT_F32, 64, 4, params, steps, tokens, lp, kept, status) == TNS_OK, "sample");
        for (int r = 0; r < 64; r++) {
            if (status[r] != TNS_OK || kept[r] != 4 || !(fabs(lp[r] + log(4.0)) <= 1e-12)) {
                wrong++;
                if (!(fabs(lp[r] + log(4.0)) <= worst)) worst = fabs(lp[r] + log(4.0));
            }
            if (status[r] == TNS_OK && tokens[r] >= 0 && tokens[r] < 4) hits[tokens[r]]++;
        }
    }
    CHECK(wrong == 0, "T = inf: %ld draws of 4096 failed, kept != 4 or logprob != -log 4 (off by up to %.3g)", wrong, worst);
    /* 4096 draws, 1024 expected per token (sd 28): every count within 6 sd. */
    for (int t = 0; t < 4; t++) CHECK(labs(hits[t] - 1024) < 170, "T = inf: token %d drawn %ld times of 4096", t, hits[t]);
    tns_sampler_destroy(s);
}

/* 6. A row with std 0 keeps its maximum whatever n (n = +inf gave NaN = inf * 0); a row with no
 * finite logit reports max -inf, mean 0, std 0, threshold -inf, finite 0, argmax -1. */
static void check_degenerate_statistics(void) {
    float flat[4] = {2.5f, -INFINITY, 2.5f, 2.5f}, none[4] = {-INFINITY, -INFINITY, -INFINITY, -INFINITY};
    tns_row_stats st;
    int32_t ids[4];
    int64_t n = 0;
    CHECK(tns_filter(flat, 4, 1, INFINITY, &st, ids, 4, &n) == TNS_OK && st.threshold == 2.5 && st.std == 0 && n == 3,
          "std 0, n = inf: threshold %g, kept %lld", st.threshold, (long long)n);
    CHECK(tns_filter(none, 4, 1, 1.0f, &st, ids, 4, &n) == TNS_ROW_NO_FINITE_LOGIT && st.max == -INFINITY &&
              st.mean == 0 && st.std == 0 && st.threshold == -INFINITY && st.finite == 0 && st.argmax == -1 &&
              st.error_index == -1,
          "no finite logit: max %g mean %g std %g threshold %g", st.max, st.mean, st.std, st.threshold);
}

/* Two threads calling one handle at once: each call either samples correctly or returns
 * TNS_ERR_BUSY; it never traps or corrupts the other call's results. */
typedef struct {
    tns_sampler *s;
    const float *logits;
    long rows, vocab;
    const int64_t *expected;
    int ok, busy, wrong;
} hammer_arg;

static void *hammer(void *p) {
    hammer_arg *a = p;
    tns_params params[64];
    uint64_t steps[64] = {0};
    int64_t tokens[64];
    tns_status status[64];
    for (long r = 0; r < a->rows; r++) tns_params_init(&params[r]);
    for (int i = 0; i < 200; i++) {
        tns_status st = tns_sample(a->s, a->logits, TNS_FORMAT_F32, a->rows, a->vocab, params, steps, tokens, NULL, NULL, status);
        if (st == TNS_ERR_BUSY) { a->busy++; continue; }
        if (st != TNS_OK) { a->wrong++; continue; }
        a->ok++;
        for (long r = 0; r < a->rows; r++) if (status[r] != TNS_OK || tokens[r] != a->expected[r]) a->wrong++;
    }
    return NULL;
}

static void check_concurrent_calls(const float *logits, long rows, long vocab) {
    tns_sampler *s = NULL;
    if (tns_sampler_create(vocab, rows, 1, TNS_PLACEMENT_DISABLED, &s) != TNS_OK) { CHECK(0, "create"); return; }
    tns_params params[64];
    uint64_t steps[64] = {0};
    int64_t expected[64];
    tns_status status[64];
    for (long r = 0; r < rows; r++) tns_params_init(&params[r]);
    CHECK(tns_sample(s, logits, TNS_FORMAT_F32, rows, vocab, params, steps, expected, NULL, NULL, status) == TNS_OK, "sample");
    hammer_arg args[2] = {{s, logits, rows, vocab, expected, 0, 0, 0}, {s, logits, rows, vocab, expected, 0, 0, 0}};
    pthread_t threads[2];
    for (int t = 0; t < 2; t++) pthread_create(&threads[t], NULL, hammer, &args[t]);
    for (int t = 0; t < 2; t++) pthread_join(threads[t], NULL);
    CHECK(args[0].wrong == 0 && args[1].wrong == 0, "concurrent calls: %d + %d wrong results", args[0].wrong, args[1].wrong);
    CHECK(args[0].ok + args[1].ok > 0 && args[0].ok + args[0].busy == 200 && args[1].ok + args[1].busy == 200, "call counts");
    printf("concurrent calls on one handle: %d sampled, %d TNS_ERR_BUSY\n", args[0].ok + args[1].ok, args[0].busy + args[1].busy);
    tns_sampler_destroy(s);
}

/* tns_filter against a double-precision two-pass oracle; tns_filtered_distribution's shape. */
static void check_single_rows(const float *logits, long rows, long vocab) {
    int32_t *ids = malloc((size_t)vocab * sizeof(int32_t));
    double *probs = malloc((size_t)vocab * sizeof(double));
    int32_t *ids2 = malloc((size_t)vocab * sizeof(int32_t));
    double *probs2 = malloc((size_t)vocab * sizeof(double));
    tns_sampler *handle = NULL;
    CHECK(tns_sampler_create(vocab, 1, 1, TNS_PLACEMENT_DISABLED, &handle) == TNS_OK, "single-row handle");
    for (long r = 0; r < rows; r++) {
        const float *x = logits + r * vocab;
        double max = -INFINITY, sum = 0, m2 = 0;
        long argmax = -1;
        for (long i = 0; i < vocab; i++) { sum += x[i]; if (x[i] > max) { max = x[i]; argmax = i; } }
        double mean = sum / (double)vocab;
        for (long i = 0; i < vocab; i++) m2 += (x[i] - mean) * (x[i] - mean);
        double std = sqrt(m2 / (double)(vocab - 1));
        float ns[3] = {0.0f, 1.0f, 2.5f};
        for (int k = 0; k < 3; k++) {
            double threshold = max - ns[k] * std;
            tns_row_stats stats;
            int64_t count = -1;
            tns_status st = tns_filter(x, vocab, 1, ns[k], &stats, ids, vocab, &count);
            CHECK(st == TNS_OK, "filter row %ld: %s", r, tns_status_message(st));
            CHECK(stats.max == max && stats.argmax == argmax && stats.finite == vocab, "row %ld stats", r);
            /* The kernel sums 4096-logit chunks in float before merging them in double: agreement
             * to about float precision relative to the spread. */
            CHECK(fabs(stats.mean - mean) <= 1e-6 * std, "row %ld mean %.17g vs %.17g", r, stats.mean, mean);
            CHECK(fabs(stats.std - std) <= 1e-6 * std, "row %ld std %.17g vs %.17g", r, stats.std, std);
            CHECK(fabs(stats.threshold - threshold) <= 1e-6 * (1 + ns[k]) * std, "row %ld threshold", r);
            long j = 0, mismatches = 0;
            for (long i = 0; i < vocab; i++) {
                if ((double)x[i] >= stats.threshold) {
                    if (j >= count || ids[j] != i) mismatches++;
                    j++;
                }
            }
            CHECK(mismatches == 0 && j == count, "row %ld n %g: kept %lld, oracle %ld", r, ns[k], (long long)count, j);

            /* The handle's allocation-free call gives exactly the same answer. */
            tns_row_stats hstats;
            int64_t hcount = -1;
            CHECK(tns_sampler_filter(handle, x, 1, ns[k], &hstats, ids2, vocab, &hcount) == TNS_OK, "sampler filter");
            CHECK(hcount == count && memcmp(ids, ids2, (size_t)count * sizeof(int32_t)) == 0, "sampler filter row %ld ids", r);
            CHECK(hstats.mean == stats.mean && hstats.std == stats.std && hstats.threshold == stats.threshold, "sampler filter stats");
            CHECK(tns_sampler_filter(handle, x, 1, ns[k], &hstats, ids2, 0, &hcount) == TNS_ERR_BUFFER_TOO_SMALL && hcount == count,
                  "sampler filter, no room");

            /* The distribution under n only: the same set, probabilities descending, summing to 1. */
            tns_params p;
            tns_params_init(&p);
            p.n_sigma = ns[k];
            int64_t dcount = -1;
            tns_row_stats dstats;
            CHECK(tns_filtered_distribution(x, vocab, &p, &dstats, ids, probs, vocab, &dcount) == TNS_OK, "dist");
            CHECK(dcount == count && dstats.threshold == stats.threshold, "dist row %ld: %lld vs %lld", r, (long long)dcount, (long long)count);
            double total = 0;
            for (long i = 0; i < dcount; i++) {
                total += probs[i];
                if (i > 0) CHECK(probs[i] <= probs[i - 1], "descending");
                CHECK((double)x[ids[i]] >= stats.threshold, "kept token above the threshold");
            }
            CHECK(fabs(total - 1) < 1e-9, "row %ld total %.17g", r, total);
            int64_t hdcount = -1;
            CHECK(tns_sampler_filtered_distribution(handle, x, &p, NULL, ids2, probs2, vocab, &hdcount) == TNS_OK, "sampler dist");
            CHECK(hdcount == dcount && memcmp(ids, ids2, (size_t)dcount * sizeof(int32_t)) == 0
                      && memcmp(probs, probs2, (size_t)dcount * sizeof(double)) == 0,
                  "sampler dist row %ld equals tns_filtered_distribution", r);
        }
        tns_params p;
        tns_params_init(&p);
        p.flags = TNS_USE_TOP_K;
        p.top_k = 5;
        int64_t dcount = -1;
        CHECK(tns_filtered_distribution(x, vocab, &p, NULL, ids, probs, vocab, &dcount) == TNS_OK && dcount == 5,
              "top-k 5: %lld", (long long)dcount);
        CHECK(ids[0] == argmax, "top-k: argmax first");
        int64_t hdcount = -1;
        CHECK(tns_sampler_filtered_distribution(handle, x, &p, NULL, ids2, probs2, vocab, &hdcount) == TNS_OK && hdcount == 5
                  && memcmp(ids, ids2, 5 * sizeof(int32_t)) == 0 && memcmp(probs, probs2, 5 * sizeof(double)) == 0,
              "sampler dist top-k 5");
        p.temperature = 0;
        CHECK(tns_sampler_filtered_distribution(handle, x, &p, NULL, ids2, probs2, vocab, &hdcount) == TNS_OK && hdcount == 1
                  && ids2[0] == argmax && probs2[0] == 1, "sampler dist greedy");
    }
    CHECK(tns_sampler_filter(NULL, logits, 1, 1, NULL, ids, vocab, NULL) == TNS_ERR_NULL_POINTER, "sampler filter NULL");
    tns_sampler_destroy(handle);
    free(ids);
    free(probs);
    free(ids2);
    free(probs2);
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s FIXTURE.npy EXPECTED.jsonl SEED DRAWS\n", argv[0]);
        return 2;
    }
    long rows, vocab;
    float *logits = read_npy(argv[1], &rows, &vocab);
    if (!logits || rows < 1 || rows > 64) { fprintf(stderr, "cannot read %s (1-64 rows)\n", argv[1]); return 2; }
    uint64_t seed = strtoull(argv[3], NULL, 10);
    int draws = atoi(argv[4]);
    expected_row *expected = calloc((size_t)rows, sizeof(expected_row));
    if (read_expected(argv[2], expected, rows) != 0 || expected[0].draws != draws) {
        fprintf(stderr, "cannot read %s (nsigma sample output, %d draws)\n", argv[2], draws);
        return 2;
    }
    printf("topnsigma %s (ABI %d): %ld rows x %ld logits from %s\n", tns_version(), tns_abi_version(), rows, vocab, argv[1]);
    check_hostile_inputs(logits, vocab);
    check_against_cli(logits, rows, vocab, expected, seed);
    check_layouts(logits, rows, vocab);
    check_row_errors(logits, rows, vocab);
    check_bad_arguments(logits, vocab);
    check_single_rows(logits, rows, vocab);
    check_first_bad_logit(logits, rows, vocab);
    check_infinite_temperature(logits, vocab);
    check_degenerate_statistics();
    check_concurrent_calls(logits, rows, vocab);
    free(expected);
    free(logits);
    if (failures) { fprintf(stderr, "%d checks failed\n", failures); return 1; }
    printf("all C ABI checks passed\n");
    return 0;
}
