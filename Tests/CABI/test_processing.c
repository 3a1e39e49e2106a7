/*
 * The C ABI's request processing (tns_sample_processed) and verification (tns_verify), checked
 * against the Swift library's CLI on the same inputs. Compiled with `cc` against
 * include/topnsigma.h and libTopNSigmaC.so; scripts/test runs it in three steps:
 *
 *   test_processing write FIXTURE.npy DIR
 *       writes the inputs, generated here and nowhere else: DIR/allowed.bin (bitmasks),
 *       DIR/bias.json, DIR/history.json, DIR/drafts.json and DIR/draft_q.f32 (dense drafts)
 *   nsigma sample / nsigma verify on FIXTURE.npy with those files (the Swift API's results):
 *       DIR/sample.jsonl, DIR/verify_dense.jsonl, DIR/verify_point.jsonl
 *   test_processing check FIXTURE.npy DIR
 *       the same requests through the C ABI; every token, kept count, log-probability, top
 *       logprob, sampled logprob and rank must equal the CLI's (log-probabilities to 1e-12
 *       relative); sparse drafts holding a dense draft's nonzero entries must verify exactly as
 *       the dense ones; and the processing's own errors come back as row statuses.
 *
 * The constants below (seed, temperature, penalties, draws, k, trials) are the ones scripts/test
 * passes to the CLI: keep the two in step.
 */
#define _POSIX_C_SOURCE 200809L
#include "topnsigma.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

enum { ROWS = 8, DRAWS = 4, TOP = 5, K = 1, REQUESTS = ROWS / (K + 1), TRIALS = 4 };
static const uint64_t SEED = 7, VERIFY_SEED = 3;
static const float TEMPERATURE = 0.8f, REPETITION = 1.3f, FREQUENCY = 0.4f, PRESENCE = 0.25f;
/* DRY, as scripts/test passes it to nsigma: --dry-multiplier 0.8 --dry-allowed-length 1
 * --dry-sequence-breakers '[[7], [1, 2]]' (33 ends both the prompt and the output: the output's
 * first token extends a repeat of 1). */
static const float DRY_MULTIPLIER = 0.8f;
static const int32_t DRY_ALLOWED = 1, DRY_BREAKER_TOKENS[3] = {7, 1, 2}, DRY_BREAKER_LENGTHS[2] = {1, 2};

/* ---- The inputs, generated the same way for the CLI and for the ABI ------------------------ */

static uint32_t hash(uint32_t x) {
    x ^= x >> 16; x *= 0x7feb352dU; x ^= x >> 15; x *= 0x846ca68bU; x ^= x >> 16;
    return x;
}

/* Row r's bitmask: all allowed (row 0), about a third masked (rows 1, 4-7), only 24 tokens
 * (row 2), or the low 64 ids only (row 3). */
static void fill_mask(uint32_t *words, long vocab, int r) {
    long w = (vocab + 31) / 32;
    for (long i = 0; i < w; i++) words[i] = 0;
    for (long t = 0; t < vocab; t++) {
        int allowed;
        switch (r) {
        case 0: allowed = 1; break;
        case 2: allowed = hash((uint32_t)t * 7u + 11u) % 2048u == 0 || t == 33 || t == 39; break;
        case 3: allowed = t < 64; break;
        default: allowed = hash((uint32_t)t + 1000u * (uint32_t)r) % 3u != 0; break;
        }
        if (allowed) words[t / 32] |= 1u << (t % 32);
    }
}

/* Row r's bias: three ids (one of them twice on row 5, whose entries then add up). */
static int bias_of(int r, long vocab, int32_t *ids, float *values) {
    ids[0] = (int32_t)((r * 977 + 13) % vocab); values[0] = 4.5f;
    ids[1] = (int32_t)((r * 131 + 17) % vocab); values[1] = -3.0f;
    ids[2] = 33; values[2] = 1.25f;
    if (r == 5) { ids[3] = 33; values[3] = 0.5f; return 4; }
    return 3;
}

/* Row r's history: a prompt and an output with repeats. */
static int prompt_of(int r, int32_t *ids) {
    int n = 0;
    for (int i = 0; i < 6; i++) ids[n++] = (int32_t)(hash((uint32_t)(r * 100 + i)) % 2000u);
    ids[n++] = 33;
    return n;
}
static int output_of(int r, int32_t *ids) {
    int n = 0;
    for (int i = 0; i < 5; i++) ids[n++] = (int32_t)(hash((uint32_t)(r * 300 + i)) % 500u);
    ids[n++] = 39; ids[n++] = 39; ids[n++] = 33;
    return n;
}

/* Request q's draft: a token and its q(d); the dense draft row has it and two other ids. */
static int64_t draft_token(int q) { static const int64_t t[] = {33, 1398, 39, 12}; return t[q % 4]; }
static double draft_q(int q) { static const double v[] = {0.5, 0.9, 0.05, 0.3}; return v[q % 4]; }
static int draft_entries(int q, long vocab, int32_t *ids, double *probs) {
    ids[0] = (int32_t)draft_token(q); probs[0] = draft_q(q);
    ids[1] = (int32_t)((q * 4099 + 33) % vocab); probs[1] = 0.2;
    ids[2] = 39; probs[2] = q == 2 ? 0 : 0.1;
    if (ids[1] == ids[0] || ids[1] == 39) ids[1] = (int32_t)((ids[1] + 1) % vocab);
    return 3;
}

static int write_inputs(const char *dir, long vocab) {
    char path[4096];
    long w = (vocab + 31) / 32;
    uint32_t *words = malloc((size_t)w * 4);
    snprintf(path, sizeof path, "%s/allowed.bin", dir);
    FILE *f = fopen(path, "wb");
    if (!f || !words) return 1;
    for (int r = 0; r < ROWS; r++) { fill_mask(words, vocab, r); fwrite(words, 4, (size_t)w, f); }
    fclose(f);
    free(words);

    snprintf(path, sizeof path, "%s/bias.json", dir);
    f = fopen(path, "w");
    if (!f) return 1;
    fprintf(f, "[");
    for (int r = 0; r < ROWS; r++) {
        int32_t ids[4]; float values[4];
        int n = bias_of(r, vocab, ids, values);
        /* The CLI's object holds each id once: the duplicate's values are summed here. */
        fprintf(f, "%s{", r ? ", " : "");
        int first = 1;
        for (int i = 0; i < n; i++) {
            int seen = 0;
            for (int j = 0; j < i; j++) seen |= ids[j] == ids[i];
            if (seen) continue;
            double sum = 0;
            for (int j = i; j < n; j++) if (ids[j] == ids[i]) sum += values[j];
            fprintf(f, "%s\"%d\": %.9g", first ? "" : ", ", ids[i], sum);
            first = 0;
        }
        fprintf(f, "}");
    }
    fprintf(f, "]\n");
    fclose(f);

    snprintf(path, sizeof path, "%s/history.json", dir);
    f = fopen(path, "w");
    if (!f) return 1;
    fprintf(f, "[");
    for (int r = 0; r < ROWS; r++) {
        int32_t ids[16];
        int n = prompt_of(r, ids);
        fprintf(f, "%s{\"prompt\": [", r ? ", " : "");
        for (int i = 0; i < n; i++) fprintf(f, "%s%d", i ? ", " : "", ids[i]);
        n = output_of(r, ids);
        fprintf(f, "], \"output\": [");
        for (int i = 0; i < n; i++) fprintf(f, "%s%d", i ? ", " : "", ids[i]);
        fprintf(f, "]}");
    }
    fprintf(f, "]\n");
    fclose(f);

    snprintf(path, sizeof path, "%s/drafts.json", dir);
    f = fopen(path, "w");
    if (!f) return 1;
    fprintf(f, "[");
    for (int q = 0; q < REQUESTS; q++)
        fprintf(f, "%s{\"tokens\": [%lld], \"q\": [%.17g]}", q ? ", " : "", (long long)draft_token(q), draft_q(q));
    fprintf(f, "]\n");
    fclose(f);

    snprintf(path, sizeof path, "%s/draft_q.f32", dir);
    f = fopen(path, "wb");
    float *row = calloc((size_t)vocab, sizeof(float));
    if (!f || !row) return 1;
    for (int q = 0; q < REQUESTS; q++) {
        int32_t ids[3]; double probs[3];
        int n = draft_entries(q, vocab, ids, probs);
        memset(row, 0, (size_t)vocab * sizeof(float));
        for (int i = 0; i < n; i++) row[ids[i]] += (float)probs[i];
        fwrite(row, sizeof(float), (size_t)vocab, f);
    }
    fclose(f);
    free(row);
    return 0;
}

/* ---- Reading the CLI's JSON lines --------------------------------------------------------- */

static float *read_npy(const char *path, long *rows, long *cols) {
    FILE *f = fopen(path, "rb");
    if (!f) { perror(path); return NULL; }
    unsigned char magic[10];
    if (fread(magic, 1, 10, f) != 10 || memcmp(magic, "\x93NUMPY", 6) != 0 || magic[6] != 1) { fclose(f); return NULL; }
    unsigned long header_len = magic[8] | (magic[9] << 8);
    char *header = calloc(header_len + 1, 1);
    if (fread(header, 1, header_len, f) != header_len) { free(header); fclose(f); return NULL; }
    char *shape = strstr(header, "'shape': (");
    if (!strstr(header, "'<f4'") || !shape || sscanf(shape, "'shape': (%ld, %ld)", rows, cols) != 2) {
        free(header); fclose(f); return NULL;
    }
    free(header);
    size_t n = (size_t)(*rows) * (size_t)(*cols);
    float *data = malloc(n * sizeof(float));
    if (fread(data, sizeof(float), n, f) != n) { free(data); fclose(f); return NULL; }
    fclose(f);
    return data;
}

/* The numbers of the JSON array after `key` (nested brackets flattened), at most max. */
static int numbers_after(const char *line, const char *key, double *out, int max) {
    const char *p = strstr(line, key);
    if (!p) return -1;
    p = strchr(p, '[');
    if (!p) return -1;
    int depth = 0, n = 0;
    for (; *p; ) {
        if (*p == '[') { depth++; p++; continue; }
        if (*p == ']') { if (--depth == 0) break; p++; continue; }
        if (*p == ',' || *p == ' ') { p++; continue; }
        char *end;
        double v = strtod(p, &end);
        if (end == p) return -1;
        if (n < max) out[n] = v;
        n++;
        p = end;
    }
    return n;
}

static int close_enough(double a, double b) {
    if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
    return fabs(a - b) <= 1e-12 * (1 + fabs(b));
}

/* ---- tns_sample_processed against `nsigma sample` ----------------------------------------- */

typedef struct {
    int32_t bias_ids[4], prompt[16], output[16];
    float bias_values[4];
} row_inputs;

static void processing_of(int r, long vocab, const uint32_t *masks, row_inputs *in, tns_processing *p) {
    tns_processing_init(p);
    long w = (vocab + 31) / 32;
    p->allowed = masks + (size_t)r * (size_t)w;
    p->bias_count = bias_of(r, vocab, in->bias_ids, in->bias_values);
    p->bias_ids = in->bias_ids;
    p->bias_values = in->bias_values;
    p->prompt_count = prompt_of(r, in->prompt);
    p->prompt_tokens = in->prompt;
    p->output_count = output_of(r, in->output);
    p->output_tokens = in->output;
    p->repetition_penalty = REPETITION;
    p->frequency_penalty = FREQUENCY;
    p->presence_penalty = PRESENCE;
    p->top_logprobs = TOP;
    p->dry_multiplier = DRY_MULTIPLIER;
    p->dry_allowed_length = DRY_ALLOWED;
    p->dry_breaker_tokens = DRY_BREAKER_TOKENS;
    p->dry_breaker_lengths = DRY_BREAKER_LENGTHS;
    p->dry_breaker_count = 2;
}

static void check_sample(const float *logits, long vocab, const char *dir) {
    char path[4096];
    snprintf(path, sizeof path, "%s/sample.jsonl", dir);
    FILE *f = fopen(path, "r");
    CHECK(f != NULL, "cannot read %s", path);
    if (!f) return;
    long w = (vocab + 31) / 32;
    uint32_t *masks = malloc((size_t)ROWS * (size_t)w * 4);
    for (int r = 0; r < ROWS; r++) fill_mask(masks + (size_t)r * (size_t)w, vocab, r);
    row_inputs inputs[ROWS];
    tns_processing processing[ROWS];
    tns_params params[ROWS];
    for (int r = 0; r < ROWS; r++) {
        processing_of(r, vocab, masks, &inputs[r], &processing[r]);
        tns_params_init(&params[r]);
        params[r].seed = SEED;
        params[r].temperature = TEMPERATURE;
    }
    tns_sampler *s = NULL;
    CHECK(tns_sampler_create(vocab, ROWS, 2, TNS_PLACEMENT_DISABLED, &s) == TNS_OK, "create");
    int64_t tokens[DRAWS][ROWS], kept[DRAWS][ROWS];
    double logprobs[DRAWS][ROWS];
    tns_status status[DRAWS][ROWS];
    tns_top_logprobs top[DRAWS][ROWS];
    for (int j = 0; j < DRAWS; j++) {
        uint64_t steps[ROWS];
        for (int r = 0; r < ROWS; r++) steps[r] = (uint64_t)j;
        tns_status st = tns_sample_processed(s, logits, TNS_FORMAT_F32, ROWS, vocab, params, processing, steps,
                                             tokens[j], logprobs[j], kept[j], status[j], top[j]);
        CHECK(st == TNS_OK, "tns_sample_processed: %s", tns_status_message(st));
    }
    char *line = NULL;
    size_t cap = 0;
    int compared = 0;
    for (int r = 0; r < ROWS; r++) {
        CHECK(getline(&line, &cap, f) > 0, "%s: row %d missing", path, r);
        double t[DRAWS], lp[DRAWS], sampled[DRAWS], ranks[DRAWS], pairs[2 * TOP];
        CHECK(numbers_after(line, "\"tokens\"", t, DRAWS) == DRAWS, "row %d tokens", r);
        CHECK(numbers_after(line, "\"logprobs\"", lp, DRAWS) == DRAWS, "row %d logprobs", r);
        CHECK(numbers_after(line, "\"sampled_logprobs\"", sampled, DRAWS) == DRAWS, "row %d sampled", r);
        CHECK(numbers_after(line, "\"ranks\"", ranks, DRAWS) == DRAWS, "row %d ranks", r);
        int entries = numbers_after(line, "\"top_logprobs\"", pairs, 2 * TOP);
        CHECK(entries == 2 * TOP, "row %d: %d top logprob numbers", r, entries);
        const char *k = strstr(line, "\"kept\": ");
        long expected_kept = k ? strtol(k + 8, NULL, 10) : -1;
        for (int j = 0; j < DRAWS; j++) {
            CHECK(status[j][r] == TNS_OK, "row %d: %s", r, tns_status_message(status[j][r]));
            CHECK(tokens[j][r] == (int64_t)t[j], "row %d draw %d: token %lld, nsigma sample says %.0f", r, j,
                  (long long)tokens[j][r], t[j]);
            CHECK(close_enough(logprobs[j][r], lp[j]), "row %d draw %d: logprob %.17g vs %.17g", r, j,
                  logprobs[j][r], lp[j]);
            CHECK(kept[j][r] == expected_kept, "row %d: kept %lld vs %ld", r, (long long)kept[j][r], expected_kept);
            const tns_top_logprobs *o = &top[j][r];
            CHECK(o->count == TOP, "row %d: %d top logprobs", r, o->count);
            CHECK(close_enough(o->sampled_logprob, sampled[j]), "row %d draw %d: sampled logprob %.17g vs %.17g", r,
                  j, o->sampled_logprob, sampled[j]);
            CHECK(o->rank == (int32_t)ranks[j], "row %d draw %d: rank %d vs %.0f", r, j, o->rank, ranks[j]);
            for (int i = 0; i < TOP && i < o->count; i++) {
                CHECK(o->ids[i] == (int32_t)pairs[2 * i], "row %d: top id %d is %d, CLI %.0f", r, i, o->ids[i],
                      pairs[2 * i]);
                CHECK(close_enough(o->logprobs[i], pairs[2 * i + 1]), "row %d: top logprob %d %.17g vs %.17g", r, i,
                      o->logprobs[i], pairs[2 * i + 1]);
            }
            /* The bitmask holds: no disallowed token is drawn. */
            int64_t tok = tokens[j][r];
            CHECK(tok >= 0 && tok < vocab && (masks[(size_t)r * (size_t)w + (size_t)tok / 32] >> (tok % 32) & 1),
                  "row %d: token %lld is masked", r, (long long)tok);
            compared++;
        }
    }
    free(line);
    fclose(f);
    printf("tns_sample_processed equal to nsigma sample: %d draws with top logprobs, ranks and kept counts\n",
           compared);

    /* Without the top_logprobs output, a row that asks fails alone; the others are unaffected. */
    {
        tns_processing plain[2];
        tns_processing_init(&plain[0]);
        tns_processing_init(&plain[1]);
        plain[1].top_logprobs = 3;
        uint64_t steps[2] = {0, 0};
        int64_t tk[2]; double l[2]; int64_t kp[2]; tns_status rs[2];
        tns_status st = tns_sample_processed(s, logits, TNS_FORMAT_F32, 2, vocab, params, plain, steps, tk, l, kp, rs,
                                             NULL);
        CHECK(st == TNS_OK && rs[0] == TNS_OK && rs[1] == TNS_ROW_INVALID_PROCESSING,
              "missing top_logprobs output: %d %d %d", st, rs[0], rs[1]);
        /* Default processing on every row is tns_sample. */
        int64_t tk2[2]; double l2[2]; int64_t kp2[2]; tns_status rs2[2];
        plain[1].top_logprobs = -1;
        st = tns_sample_processed(s, logits, TNS_FORMAT_F32, 2, vocab, params, plain, steps, tk, l, kp, rs, NULL);
        CHECK(st == TNS_OK, "defaults");
        st = tns_sample(s, logits, TNS_FORMAT_F32, 2, vocab, params, steps, tk2, l2, kp2, rs2);
        CHECK(st == TNS_OK && tk[0] == tk2[0] && tk[1] == tk2[1] && l[0] == l2[0] && l[1] == l2[1],
              "default processing differs from tns_sample");
    }

    /* Each invalid processing fails its own row with TNS_ROW_INVALID_PROCESSING. */
    {
        tns_processing bad[ROWS];
        int32_t out_of_range[1] = {(int32_t)vocab};
        float one[1] = {1.0f}, inf[1] = {INFINITY};
        int32_t ok_id[1] = {5};
        for (int r = 0; r < ROWS; r++) tns_processing_init(&bad[r]);
        bad[0].repetition_penalty = 0;                                         /* <= 0 */
        bad[1].frequency_penalty = NAN;                                        /* not finite */
        bad[2].top_logprobs = 21;                                              /* above 20 */
        bad[3].bias_ids = out_of_range; bad[3].bias_values = one; bad[3].bias_count = 1;
        bad[4].bias_ids = ok_id; bad[4].bias_values = inf; bad[4].bias_count = 1;
        bad[5].output_tokens = NULL; bad[5].output_count = 3;                  /* NULL with a count */
        bad[6].prompt_tokens = ok_id; bad[6].prompt_count = -1;                /* negative count */
        bad[7].top_logprobs = -2;
        uint64_t steps[ROWS] = {0};
        int64_t tk[ROWS], kp[ROWS]; double l[ROWS]; tns_status rs[ROWS];
        tns_top_logprobs o[ROWS];
        tns_status st = tns_sample_processed(s, logits, TNS_FORMAT_F32, ROWS, vocab, params, bad, steps, tk, l, kp,
                                             rs, o);
        CHECK(st == TNS_OK, "bad processing: whole call %s", tns_status_message(st));
        for (int r = 0; r < ROWS; r++) {
            CHECK(rs[r] == TNS_ROW_INVALID_PROCESSING, "bad processing row %d: %s", r, tns_status_message(rs[r]));
            CHECK(isnan(l[r]) && kp[r] == 0 && o[r].count == 0 && isnan(o[r].sampled_logprob), "row %d outputs", r);
        }
        CHECK(tk[3] == vocab, "the out-of-range id is reported: %lld", (long long)tk[3]);
        /* DRY: settings out of range fail with TNS_ROW_INVALID_SAMPLER, a NULL array with a count
         * with TNS_ROW_INVALID_PROCESSING; a version-1 struct_size (88) reads no DRY field. */
        int32_t zero_length[1] = {0};
        for (int r = 0; r < ROWS; r++) tns_processing_init(&bad[r]);
        bad[0].dry_multiplier = -1;
        bad[1].dry_multiplier = 1; bad[1].dry_base = 0.5f;
        bad[2].dry_multiplier = 1; bad[2].dry_penalty_last_n = -2;
        bad[3].dry_multiplier = 1; bad[3].dry_breaker_tokens = ok_id; bad[3].dry_breaker_lengths = zero_length;
        bad[3].dry_breaker_count = 1;
        bad[4].dry_multiplier = 1; bad[4].dry_breaker_lengths = NULL; bad[4].dry_breaker_count = 1;
        bad[5].dry_multiplier = 1; bad[5].dry_breaker_tokens = out_of_range;
        bad[5].dry_breaker_lengths = DRY_BREAKER_LENGTHS; bad[5].dry_breaker_count = 1;
        bad[6].dry_multiplier = NAN;
        bad[7].dry_multiplier = NAN; bad[7].struct_size = TNS_PROCESSING_V1_SIZE;
        static const tns_status dry_expected[ROWS] = {
            TNS_ROW_INVALID_SAMPLER, TNS_ROW_INVALID_SAMPLER, TNS_ROW_INVALID_SAMPLER, TNS_ROW_INVALID_SAMPLER,
            TNS_ROW_INVALID_PROCESSING, TNS_ROW_INVALID_PROCESSING, TNS_ROW_INVALID_SAMPLER, TNS_OK};
        for (int r = 0; r < ROWS - 1; r++) {
            st = tns_sample_processed(s, logits, TNS_FORMAT_F32, 1, vocab, params, &bad[r], steps, tk, l, kp, rs, o);
            CHECK(st == TNS_OK && rs[0] == dry_expected[r], "DRY row %d: %s", r, tns_status_message(rs[0]));
        }
        st = tns_sample_processed(s, logits, TNS_FORMAT_F32, 1, vocab, params, &bad[7], steps, tk, l, kp, rs, o);
        CHECK(st == TNS_OK && rs[0] == TNS_OK, "version-1 struct: %s", tns_status_message(rs[0]));
        /* A struct_size that is not a tns_processing's is a whole-call error. */
        bad[0].struct_size = 40;
        st = tns_sample_processed(s, logits, TNS_FORMAT_F32, ROWS, vocab, params, bad, steps, tk, l, kp, rs, o);
        CHECK(st == TNS_ERR_STRUCT_SIZE, "struct_size 40: %s", tns_status_message(st));
        bad[0].struct_size = sizeof(tns_processing);
        bad[1].struct_size = sizeof(tns_processing) + 8;
        st = tns_sample_processed(s, logits, TNS_FORMAT_F32, ROWS, vocab, params, bad, steps, tk, l, kp, rs, o);
        CHECK(st == TNS_ERR_STRUCT_SIZE, "mixed struct_size: %s", tns_status_message(st));
    }
    tns_sampler_destroy(s);
    free(masks);
}

/* ---- tns_verify against `nsigma verify` --------------------------------------------------- */

typedef struct { long accepted; long tokens[K + 1]; double logprobs[K + 1]; int emitted; } verify_line;

static int read_verify(const char *path, verify_line lines[REQUESTS][TRIALS]) {
    FILE *f = fopen(path, "r");
    if (!f) { perror(path); return -1; }
    char *line = NULL;
    size_t cap = 0;
    int n = 0;
    while (getline(&line, &cap, f) > 0) {
        int q, t;
        long a;
        if (sscanf(line, "{\"request\": %d, \"trial\": %d, \"accepted\": %ld", &q, &t, &a) != 3 || q < 0 ||
            q >= REQUESTS || t < 0 || t >= TRIALS) { n = -1; break; }
        double v[K + 1];
        verify_line *l = &lines[q][t];
        l->accepted = a;
        l->emitted = numbers_after(line, "\"tokens\"", v, K + 1);
        for (int i = 0; i < l->emitted && i <= K; i++) l->tokens[i] = (long)v[i];
        if (numbers_after(line, "\"logprobs\"", l->logprobs, K + 1) != l->emitted) { n = -1; break; }
        n++;
    }
    free(line);
    fclose(f);
    return n;
}

static void verify_all(tns_sampler *s, const float *logits, long vocab, const tns_drafts *drafts, int trial,
                       int64_t *accepted, int64_t *tokens, double *logprobs, tns_status *status) {
    tns_params params[REQUESTS];
    uint64_t steps[REQUESTS];
    for (int q = 0; q < REQUESTS; q++) {
        tns_params_init(&params[q]);
        params[q].seed = VERIFY_SEED;
        steps[q] = (uint64_t)trial;
    }
    int64_t position[REQUESTS];
    tns_status st = tns_verify(s, logits, TNS_FORMAT_F32, REQUESTS, K, vocab, params, steps, drafts, accepted, tokens,
                               logprobs, status, position);
    CHECK(st == TNS_OK, "tns_verify: %s", tns_status_message(st));
}

static void compare_verify(const char *what, verify_line expected[REQUESTS][TRIALS], int trial,
                           const int64_t *accepted, const int64_t *tokens, const double *logprobs,
                           const tns_status *status, int *compared) {
    for (int q = 0; q < REQUESTS; q++) {
        const verify_line *e = &expected[q][trial];
        CHECK(status[q] == TNS_OK, "%s request %d: %s", what, q, tns_status_message(status[q]));
        CHECK(accepted[q] == e->accepted, "%s request %d trial %d: accepted %lld, CLI %ld", what, q, trial,
              (long long)accepted[q], e->accepted);
        for (int i = 0; i <= K; i++) {
            if (i < e->emitted) {
                CHECK(tokens[q * (K + 1) + i] == e->tokens[i], "%s request %d trial %d: token %d is %lld, CLI %ld",
                      what, q, trial, i, (long long)tokens[q * (K + 1) + i], e->tokens[i]);
                CHECK(close_enough(logprobs[q * (K + 1) + i], e->logprobs[i]), "%s request %d: logprob %.17g vs %.17g",
                      what, q, logprobs[q * (K + 1) + i], e->logprobs[i]);
            } else {
                CHECK(tokens[q * (K + 1) + i] == -1 && isnan(logprobs[q * (K + 1) + i]), "%s: unused slot", what);
            }
        }
        (*compared)++;
    }
}

static void check_verify(const float *logits, long vocab, const char *dir) {
    char path[4096];
    static verify_line dense_expected[REQUESTS][TRIALS], point_expected[REQUESTS][TRIALS];
    snprintf(path, sizeof path, "%s/verify_dense.jsonl", dir);
    CHECK(read_verify(path, dense_expected) == REQUESTS * TRIALS, "cannot read %s", path);
    snprintf(path, sizeof path, "%s/verify_point.jsonl", dir);
    CHECK(read_verify(path, point_expected) == REQUESTS * TRIALS, "cannot read %s", path);

    int64_t draft_tokens[REQUESTS * K];
    double draft_probs[REQUESTS * K];
    float *dense = calloc((size_t)REQUESTS * K * (size_t)vocab, sizeof(float));
    int64_t offsets[REQUESTS * K + 1];
    int32_t sparse_ids[REQUESTS * K * 3];
    double sparse_probs[REQUESTS * K * 3];
    offsets[0] = 0;
    for (int q = 0; q < REQUESTS; q++) {
        draft_tokens[q] = draft_token(q);
        draft_probs[q] = draft_q(q);
        int32_t ids[3]; double probs[3];
        int n = draft_entries(q, vocab, ids, probs);
        for (int i = 0; i < n; i++) {
            dense[(size_t)q * (size_t)vocab + (size_t)ids[i]] += (float)probs[i];
            /* Sparse entries as the dense row holds them (float), so both describe the same q. */
            sparse_ids[offsets[q] + i] = ids[i];
            sparse_probs[offsets[q] + i] = (double)(float)probs[i];
        }
        offsets[q + 1] = offsets[q] + n;
    }
    tns_drafts point = {TNS_DRAFT_POINT_MASS, 0, draft_tokens, draft_probs, NULL, NULL, NULL, NULL};
    tns_drafts dense_drafts = {TNS_DRAFT_DENSE, 0, draft_tokens, draft_probs, dense, NULL, NULL, NULL};
    tns_drafts sparse = {TNS_DRAFT_SPARSE, 0, draft_tokens, draft_probs, NULL, offsets, sparse_ids, sparse_probs};

    tns_sampler *s = NULL;
    CHECK(tns_sampler_create(vocab, REQUESTS, 2, TNS_PLACEMENT_DISABLED, &s) == TNS_OK, "create");
    int compared = 0, rejections = 0;
    for (int t = 0; t < TRIALS; t++) {
        int64_t accepted[REQUESTS], tokens[REQUESTS * (K + 1)];
        double logprobs[REQUESTS * (K + 1)];
        tns_status status[REQUESTS];
        verify_all(s, logits, vocab, &dense_drafts, t, accepted, tokens, logprobs, status);
        compare_verify("dense", dense_expected, t, accepted, tokens, logprobs, status, &compared);
        for (int q = 0; q < REQUESTS; q++) rejections += accepted[q] < K;
        verify_all(s, logits, vocab, &sparse, t, accepted, tokens, logprobs, status);
        compare_verify("sparse", dense_expected, t, accepted, tokens, logprobs, status, &compared);
        verify_all(s, logits, vocab, &point, t, accepted, tokens, logprobs, status);
        compare_verify("point mass", point_expected, t, accepted, tokens, logprobs, status, &compared);
    }
    CHECK(rejections > 0 && rejections < REQUESTS * TRIALS, "the drafts should both pass and fail: %d rejections",
          rejections);
    printf("tns_verify equal to nsigma verify: %d request outcomes (dense, sparse as dense, point mass)\n", compared);

    /* Errors: a draft id out of range fails its request alone; bad offsets or kind, the call. */
    {
        int64_t accepted[REQUESTS], tokens[REQUESTS * (K + 1)], position[REQUESTS];
        double logprobs[REQUESTS * (K + 1)];
        tns_status status[REQUESTS];
        tns_params params[REQUESTS];
        uint64_t steps[REQUESTS] = {0};
        for (int q = 0; q < REQUESTS; q++) tns_params_init(&params[q]);
        draft_tokens[1] = vocab;
        tns_status st = tns_verify(s, logits, TNS_FORMAT_F32, REQUESTS, K, vocab, params, steps, &point, accepted,
                                   tokens, logprobs, status, position);
        CHECK(st == TNS_OK && status[1] == TNS_ROW_INVALID_DRAFT && position[1] == 0 && tokens[K + 1] == vocab &&
                  accepted[1] == -1,
              "draft id out of range: %d %d %lld", st, status[1], (long long)tokens[K + 1]);
        CHECK(status[0] == TNS_OK && status[2] == TNS_OK, "the other requests are unaffected");
        draft_tokens[1] = draft_token(1);
        sparse_ids[4] = -1;
        st = tns_verify(s, logits, TNS_FORMAT_F32, REQUESTS, K, vocab, params, steps, &sparse, accepted, tokens,
                        logprobs, status, position);
        CHECK(st == TNS_OK && status[1] == TNS_ROW_INVALID_DRAFT && tokens[K + 1] == -1, "sparse id out of range");
        sparse_ids[4] = 39;
        offsets[2] = offsets[1] - 1;
        st = tns_verify(s, logits, TNS_FORMAT_F32, REQUESTS, K, vocab, params, steps, &sparse, accepted, tokens,
                        logprobs, status, position);
        CHECK(st == TNS_ERR_DRAFT, "decreasing offsets: %s", tns_status_message(st));
        offsets[2] = offsets[1] + 3;
        tns_drafts unknown = point;
        unknown.kind = 7;
        st = tns_verify(s, logits, TNS_FORMAT_F32, REQUESTS, K, vocab, params, steps, &unknown, accepted, tokens,
                        logprobs, status, position);
        CHECK(st == TNS_ERR_DRAFT, "unknown kind: %s", tns_status_message(st));
        st = tns_verify(s, logits, TNS_FORMAT_F32, REQUESTS, -1, vocab, params, steps, &point, accepted, tokens,
                        logprobs, status, position);
        CHECK(st == TNS_ERR_DRAFT, "k = -1: %s", tns_status_message(st));
        st = tns_verify(s, logits, TNS_FORMAT_F32, REQUESTS, INT64_MAX, vocab, params, steps, &point, accepted, tokens,
                        logprobs, status, position);
        CHECK(st == TNS_ERR_ROW_STRIDE, "k = INT64_MAX: %s", tns_status_message(st));
        st = tns_verify(s, logits, TNS_FORMAT_F32, REQUESTS + 1, K, vocab, params, steps, &point, accepted, tokens,
                        logprobs, status, position);
        CHECK(st == TNS_ERR_BATCH_SIZE, "requests above max_batch: %s", tns_status_message(st));
        /* A target row's error fails its request, with the row's status and position. */
        float *copy = malloc((size_t)ROWS * (size_t)vocab * sizeof(float));
        memcpy(copy, logits, (size_t)ROWS * (size_t)vocab * sizeof(float));
        copy[(size_t)(2 * (K + 1) + 1) * (size_t)vocab + 17] = NAN;
        st = tns_verify(s, copy, TNS_FORMAT_F32, REQUESTS, K, vocab, params, steps, &point, accepted, tokens, logprobs,
                        status, position);
        CHECK(st == TNS_OK && status[2] == TNS_ROW_NAN && position[2] == 1 && tokens[2 * (K + 1)] == 17,
              "NaN in request 2's row 1: %d %lld %lld", status[2], (long long)position[2],
              (long long)tokens[2 * (K + 1)]);
        free(copy);
    }
    tns_sampler_destroy(s);
    free(dense);
}

int main(int argc, char **argv) {
    if (argc != 4 || (strcmp(argv[1], "write") != 0 && strcmp(argv[1], "check") != 0)) {
        fprintf(stderr, "usage: %s write|check FIXTURE.npy DIR\n", argv[0]);
        return 2;
    }
    long rows, vocab;
    float *logits = read_npy(argv[2], &rows, &vocab);
    if (!logits || rows != ROWS || vocab < 64) {
        fprintf(stderr, "cannot read %s (%d rows of at least 64 logits)\n", argv[2], ROWS);
        return 2;
    }
    if (strcmp(argv[1], "write") == 0) {
        int status = write_inputs(argv[3], vocab);
        free(logits);
        return status;
    }
    check_sample(logits, vocab, argv[3]);
    check_verify(logits, vocab, argv[3]);
    free(logits);
    if (failures) { fprintf(stderr, "%d processing/verification checks failed\n", failures); return 1; }
    printf("all C ABI processing and verification checks passed\n");
    return 0;
}
