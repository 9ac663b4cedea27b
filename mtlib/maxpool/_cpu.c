/* CPU kernels of the tie-aware max pool (mtlib/maxpool/_cpu.py compiles and loads them).
 *
 * A pool over planes of shape (S0, S1, S2), contiguous, one plane after the other. Along axis
 * d, window o reads the input indices a_d[o] + t * step_d for t < c_d[o]: the taps that lie in
 * the input (padding is never read), in increasing order. A window's taps are visited in
 * row-major order, in which the flat index p = (p0 * S1 + p1) * S2 + p2 increases.
 *
 * pool_stats: for every window, in one pass over its taps, the window max m_w, the size of the
 * tie set T_w = {p in w : x_p = m_w} (-0 = +0) and its least and greatest p; in a window
 * holding a NaN, T_w is its NaN entries and m_w its last NaN (PyTorch's value). A window whose
 * taps form rows of at least BLOCK contiguous entries takes two vectorized passes instead (the
 * max, then the entries equal to it). It writes m_w (the input entry, bit for bit; -inf for a
 * window with no tap) and the companion index:
 *   rule 0 ("last"):    the greatest p of T_w, the least for a NaN window, -1 if empty;
 *   rule 1 ("uniform"): p when |T_w| = 1, -|T_w| from 2 on, -1 if empty.
 * pool_backward: the gradient in the order mtlib documents: every window with one selected
 * entry (aux >= 0: "last", or "uniform" with one maximum) adds g_w to it, in window order (as
 * PyTorch's backward kernel does), then every window with |T_w| >= 2 adds its share
 * s_w = g_w / |T_w| (float arithmetic for 16-bit floats, rounded to the dtype) to gx_p for p in
 * T_w, windows in row-major order, taps in row-major order; each addition rounded to the dtype
 * (as c10's 16-bit float types round).
 * Planes are independent (no window reaches two), so they run in parallel without changing
 * any sum. Only comparisons and additions: no flag of the compiler changes a result (no
 * -ffast-math: NaN must compare unordered). */
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#else
static int omp_get_thread_num(void) { return 0; }
#endif

typedef struct {
    int64_t size[3], out[3], step[3];
    const int64_t *a[3], *c[3];
} geometry;

static void read_geometry(geometry *g, const int64_t *buf) {
    const int64_t *p = buf + 9;
    for (int d = 0; d < 3; d++) {
        g->size[d] = buf[d];
        g->out[d] = buf[3 + d];
        g->step[d] = buf[6 + d];
    }
    for (int d = 0; d < 3; d++) {
        g->a[d] = p;
        g->c[d] = p + g->out[d];
        p += 2 * g->out[d];
    }
}

static inline float fp_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline uint32_t fp_word(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* 16-bit floats: exact widening to float, and float to the nearest 16-bit value (ties to even;
 * NaN stays NaN), as c10::BFloat16 and c10::Half convert. */
static inline float bf16_load(uint16_t h) { return fp_bits((uint32_t)h << 16); }

static inline uint16_t bf16_store(float f) {
    const uint32_t u = fp_word(f);
    if (f != f) return 0x7FC0;
    return (uint16_t)((u + 0x7FFF + ((u >> 16) & 1)) >> 16);
}

/* fp16_ieee_to_fp32_value / fp16_ieee_from_fp32_value of the FP16 library, which c10::Half
 * uses on CPUs without F16C instructions (the same results as those instructions). */
static inline float f16_load(uint16_t h) {
    const uint32_t w = (uint32_t)h << 16;
    const uint32_t sign = w & 0x80000000u;
    const uint32_t two_w = w + w;
    const float normalized = fp_bits((two_w >> 4) + (0xE0u << 23)) * 0x1.0p-112f;
    const float denormalized = fp_bits((two_w >> 17) | (126u << 23)) - 0.5f;
    const uint32_t result = sign | (two_w < (1u << 27) ? fp_word(denormalized)
                                                        : fp_word(normalized));
    return fp_bits(result);
}

static inline uint16_t f16_store(float f) {
    float base = (fabsf(f) * 0x1.0p+112f) * 0x1.0p-110f;
    const uint32_t w = fp_word(f);
    const uint32_t shl1_w = w + w;
    const uint32_t sign = w & 0x80000000u;
    uint32_t bias = shl1_w & 0xFF000000u;
    if (bias < 0x71000000u) bias = 0x71000000u;
    base = fp_bits((bias >> 1) + 0x07800000u) + base;
    const uint32_t bits = fp_word(base);
    const uint32_t exp_bits = (bits >> 13) & 0x00007C00u;
    const uint32_t mantissa_bits = bits & 0x00000FFFu;
    const uint32_t nonsign = exp_bits + mantissa_bits;
    return (uint16_t)((sign >> 16) | (shl1_w > 0xFF000000u ? 0x7E00u : nonsign));
}

static inline float f32_load(float v) { return v; }
static inline double f64_load(double v) { return v; }
static inline float f32_store(float v) { return v; }

/* A window: taps in rows0 x rows1 rows of len entries; row (r0, r1) starts at
 * base + r0 * stride0 + r1 * stride1 and its entries are step apart. */
typedef struct {
    int64_t base, rows0, rows1, stride0, stride1, len, step;
} window;

/* What one pass over a window finds: |T_w| and the least and greatest p in T_w (the NaN
 * entries when there is one). */
typedef struct {
    int64_t count, first, last, nans;
} ties;

/* The max of a row of float32 or bfloat16 entries, in vectors of 4 floats (GCC/clang vector
 * extensions: SSE2 or NEON, whatever the machine), 4 accumulators: v > a ? v : a lane by lane,
 * the scalar loop's rule (a NaN never wins; it is flagged instead). */
typedef float v4f __attribute__((vector_size(16)));
typedef int32_t v4i __attribute__((vector_size(16)));
typedef uint32_t v4u __attribute__((vector_size(16)));
typedef uint16_t v4h __attribute__((vector_size(8)));

static inline v4f vmax4(v4f a, v4f v) {
    const v4i gt = v > a;
    return (v4f)(((v4i)v & gt) | ((v4i)a & ~gt));
}

static inline v4f load4_f32(const float *p) {
    v4f v;
    memcpy(&v, p, sizeof v);
    return v;
}

static inline v4f load4_bf16(const uint16_t *p) {
    v4h h;
    memcpy(&h, p, sizeof h);
    return (v4f)(__builtin_convertvector(h, v4u) << 16);
}

#define ROW_MAX_V4(SUF, T, LOAD4, LOAD)                                                         \
static void row_max_v4_##SUF(const T *seg, int64_t len, float *best, int32_t *nan) {            \
    const float b0 = *best;                                                                     \
    v4f a0 = {b0, b0, b0, b0}, a1 = a0, a2 = a0, a3 = a0;                                       \
    v4i n = {0, 0, 0, 0};                                                                       \
    int64_t i = 0;                                                                              \
    for (; i + 16 <= len; i += 16) {                                                            \
        const v4f v0 = LOAD4(seg + i), v1 = LOAD4(seg + i + 4);                                 \
        const v4f v2 = LOAD4(seg + i + 8), v3 = LOAD4(seg + i + 12);                            \
        a0 = vmax4(a0, v0); a1 = vmax4(a1, v1); a2 = vmax4(a2, v2); a3 = vmax4(a3, v3);         \
        n |= (v0 != v0) | (v1 != v1) | (v2 != v2) | (v3 != v3);                                 \
    }                                                                                           \
    float b = b0;                                                                               \
    int32_t any = *nan | n[0] | n[1] | n[2] | n[3];                                             \
    for (int j = 0; j < 4; j++) {                                                               \
        b = a0[j] > b ? a0[j] : b; b = a1[j] > b ? a1[j] : b;                                   \
        b = a2[j] > b ? a2[j] : b; b = a3[j] > b ? a3[j] : b;                                   \
    }                                                                                           \
    for (; i < len; i++) {                                                                      \
        const float v = LOAD(seg[i]);                                                           \
        b = v > b ? v : b;                                                                      \
        any |= v != v;                                                                          \
    }                                                                                           \
    *best = b;                                                                                  \
    *nan = any != 0;                                                                            \
}

ROW_MAX_V4(f32, float, load4_f32, f32_load)
ROW_MAX_V4(bf16, uint16_t, load4_bf16, bf16_load)

#define LANES 16  /* lanes of the max */
#define BLOCK 32  /* entries per block of the count (the last block with a tie is kept) */

/* SCALAR: one pass, tap by tap, in row-major order. ROWS: for rows of at least BLOCK
 * contiguous entries (long windows: global and adaptive pools), two vectorized passes: the max
 * (ROWMAX: row_max_v4 for float32/bfloat16, the LANES-lane loop below for the others), then
 * per row the number of entries equal to it and the last one (a NaN sends the window to
 * SCALAR); the first tie is looked for only when there are several (m_w is its value, bit for
 * bit: -0 and +0 tie). */
#define WINDOW_FUNCTIONS(SUF, T, ACC, LOAD, ROWMAX)                                             \
static ties scalar_##SUF(const T *xp, const window *w) {                                        \
    ACC best = -INFINITY;                                                                       \
    ties r = {0, -1, -1, 0};                                                                    \
    int64_t nan_first = -1, nan_last = -1;                                                      \
    for (int64_t r0 = 0; r0 < w->rows0; r0++)                                                   \
        for (int64_t r1 = 0; r1 < w->rows1; r1++) {                                             \
            const int64_t row = w->base + r0 * w->stride0 + r1 * w->stride1;                    \
            for (int64_t i = 0; i < w->len; i++) {                                              \
                const int64_t p = row + i * w->step;                                            \
                const ACC v = LOAD(xp[p]);                                                      \
                if (v < best) continue; /* the usual case: one comparison */                    \
                if (v > best || (r.count == 0 && v == v)) {                                     \
                    best = v; r.count = 1; r.first = p; r.last = p;                             \
                } else if (v == best) {                                                         \
                    r.count++; r.last = p;                                                      \
                } else if (v != v) {                                                            \
                    if (r.nans++ == 0) nan_first = p;                                           \
                    nan_last = p;                                                               \
                }                                                                               \
            }                                                                                   \
        }                                                                                       \
    if (r.nans) { r.count = r.nans; r.first = nan_first; r.last = nan_last; }                   \
    return r;                                                                                   \
}                                                                                               \
                                                                                                \
/* The max of row seg[0 .. len) folded into *best, and whether it holds a NaN. */               \
static inline void row_max_##SUF(const T *seg, int64_t len, ACC *best, int32_t *nan) {          \
    ACC lane[LANES];                                                                            \
    int32_t nan_lane[LANES];                                                                    \
    for (int j = 0; j < LANES; j++) { lane[j] = *best; nan_lane[j] = 0; }                       \
    int64_t i = 0;                                                                              \
    for (; i + LANES <= len; i += LANES)                                                        \
        for (int j = 0; j < LANES; j++) {                                                       \
            const ACC v = LOAD(seg[i + j]);                                                     \
            lane[j] = v > lane[j] ? v : lane[j];                                                \
            nan_lane[j] |= v != v;                                                              \
        }                                                                                       \
    ACC b = *best;                                                                              \
    int32_t n = *nan;                                                                           \
    for (int j = 0; j < LANES; j++) { b = lane[j] > b ? lane[j] : b; n |= nan_lane[j]; }        \
    for (; i < len; i++) {                                                                      \
        const ACC v = LOAD(seg[i]);                                                             \
        b = v > b ? v : b;                                                                      \
        n |= v != v;                                                                            \
    }                                                                                           \
    *best = b;                                                                                  \
    *nan = n;                                                                                   \
}                                                                                               \
                                                                                                \
static ties rows_##SUF(const T *xp, const window *w) {                                          \
    const int64_t len = w->len; /* locals: the compiler then vectorizes the loops */            \
    ACC best = -INFINITY;                                                                       \
    int32_t nan_seen = 0;                                                                       \
    for (int64_t r0 = 0; r0 < w->rows0; r0++)                                                   \
        for (int64_t r1 = 0; r1 < w->rows1; r1++)                                               \
            ROWMAX(xp + w->base + r0 * w->stride0 + r1 * w->stride1, len, &best, &nan_seen);    \
    if (nan_seen) return scalar_##SUF(xp, w);                                                   \
    ties r = {0, -1, -1, 0};                                                                    \
    for (int64_t r0 = 0; r0 < w->rows0; r0++)                                                   \
        for (int64_t r1 = 0; r1 < w->rows1; r1++) {                                             \
            const int64_t start = w->base + r0 * w->stride0 + r1 * w->stride1;                  \
            const T *seg = xp + start;                                                          \
            int64_t hits = 0, block = -1, i = 0, at = -1;                                       \
            for (; i + BLOCK <= len; i += BLOCK) {                                              \
                int32_t h = 0;                                                                  \
                for (int j = 0; j < BLOCK; j++) h += LOAD(seg[i + j]) == best;                  \
                hits += h;                                                                      \
                block = h ? i : block;                                                          \
            }                                                                                   \
            for (; i < len; i++)                                                                \
                if (LOAD(seg[i]) == best) { hits++; at = i; }                                   \
            for (int64_t k = block + BLOCK - 1; at < 0 && block >= 0 && k >= block; k--)        \
                if (LOAD(seg[k]) == best) at = k;                                               \
            if (hits) {                                                                         \
                if (r.count == 0) r.first = start + at;                                         \
                r.count += hits;                                                                \
                r.last = start + at;                                                            \
            }                                                                                   \
        }                                                                                       \
    if (r.count >= 2) { /* the least tie: a scan from the front, to the first hit */            \
        r.first = -1;                                                                           \
        for (int64_t r0 = 0; r0 < w->rows0 && r.first < 0; r0++)                                \
            for (int64_t r1 = 0; r1 < w->rows1 && r.first < 0; r1++) {                          \
                const int64_t start = w->base + r0 * w->stride0 + r1 * w->stride1;              \
                for (int64_t i = 0; i < len; i++)                                               \
                    if (LOAD(xp[start + i]) == best) { r.first = start + i; break; }            \
            }                                                                                   \
    }                                                                                           \
    return r;                                                                                   \
}

/* Window (o0, o1, o2) as rows (whole rows merged into one where the window holds them). */
static window window_at(const geometry *g, int64_t o0, int64_t o1, int64_t o2) {
    const int64_t c0 = g->c[0][o0], c1 = g->c[1][o1], c2 = g->c[2][o2];
    window w = {(g->a[0][o0] * g->size[1] + g->a[1][o1]) * g->size[2] + g->a[2][o2], c0, c1,
                g->step[0] * g->size[1] * g->size[2], g->step[1] * g->size[2], c2, g->step[2]};
    if (c0 == 0 || c1 == 0 || c2 == 0) {
        w.rows0 = 0;
    } else if (w.step == 1 && c2 == g->size[2] && g->step[1] == 1) {
        w.len *= c1;
        w.rows1 = 1;
        if (c1 == g->size[1] && g->step[0] == 1) { w.len *= c0; w.rows0 = 1; }
    }
    return w;
}

#define STATS_KERNEL(SUF, T, ACC, LOAD, ROWMAX)                                                 \
WINDOW_FUNCTIONS(SUF, T, ACC, LOAD, ROWMAX)                                                     \
void pool_stats_##SUF(const T *x, T *m, int64_t *aux, int64_t planes, const int64_t *buf,       \
                      int rule, const T *neg_inf, int threads) {                                \
    geometry geo, *g = &geo;                                                                    \
    read_geometry(g, buf);                                                                      \
    const int64_t plane = g->size[0] * g->size[1] * g->size[2];                                 \
    const int64_t outs = g->out[0] * g->out[1] * g->out[2];                                     \
    const int64_t rows = planes * g->out[0] * g->out[1];                                        \
    _Pragma("omp parallel for num_threads(threads) schedule(static) if(threads > 1)")           \
    for (int64_t r = 0; r < rows; r++) {                                                        \
        const int64_t n = r / (g->out[0] * g->out[1]), o01 = r % (g->out[0] * g->out[1]);       \
        const T *xp = x + n * plane;                                                            \
        for (int64_t o2 = 0; o2 < g->out[2]; o2++) {                                            \
            const window w = window_at(g, o01 / g->out[1], o01 % g->out[1], o2);                \
            const int rowwise = w.step == 1 && w.len >= BLOCK;                                  \
            const ties t = rowwise && w.rows0 > 0 ? rows_##SUF(xp, &w) : scalar_##SUF(xp, &w);  \
            const int64_t at = n * outs + o01 * g->out[2] + o2;                                 \
            m[at] = t.count ? xp[t.nans ? t.last : t.first] : *neg_inf;                         \
            if (t.count == 0) aux[at] = -1;                                                     \
            else if (rule == 0) aux[at] = t.nans ? t.first : t.last;                            \
            else aux[at] = t.count == 1 ? t.first : -t.count;                                   \
        }                                                                                       \
    }                                                                                           \
}

STATS_KERNEL(f32, float, float, f32_load, row_max_v4_f32)
STATS_KERNEL(f64, double, double, f64_load, row_max_f64)
STATS_KERNEL(bf16, uint16_t, float, bf16_load, row_max_v4_bf16)
STATS_KERNEL(f16, uint16_t, float, f16_load, row_max_f16)

/* The backward of one plane after another: gx = 0; then every window with one selected entry
 * (aux >= 0: "last", or "uniform" with one maximal entry) adds g_w there (window order:
 * PyTorch's backward kernel), then every window with |T_w| >= 2 adds its share to each tie
 * (window order, taps in row-major order); each addition rounded to T. DIV(g, count) is the
 * share g_w / |T_w| before rounding. */
#define BACKWARD_KERNEL(SUF, T, ACC, LOAD, STORE, DIV)                                          \
void pool_backward_##SUF(T *gx, const T *x, const T *m, const int64_t *aux,                     \
                         const T *grad, int64_t planes, const int64_t *buf, int64_t *scratch,   \
                         int threads) {                                                         \
    geometry geo, *g = &geo;                                                                    \
    read_geometry(g, buf);                                                                      \
    const int64_t plane = g->size[0] * g->size[1] * g->size[2];                                 \
    const int64_t outs = g->out[0] * g->out[1] * g->out[2];                                     \
    _Pragma("omp parallel for num_threads(threads) schedule(static) if(threads > 1)")           \
    for (int64_t n = 0; n < planes; n++) {                                                      \
        const T *xp = x + n * plane;                                                            \
        const int64_t *ap = aux + n * outs;                                                     \
        const T *gw = grad + n * outs;                                                          \
        T *gp = gx + n * plane;                                                                 \
        int64_t *tied = scratch + omp_get_thread_num() * outs, count = 0;                       \
        T spare = 0; /* where a window without one selected entry adds: no branch */            \
        memset(gp, 0, (size_t)plane * sizeof(T));                                               \
        for (int64_t o = 0; o < outs; o++) {                                                    \
            T *to = ap[o] >= 0 ? gp + ap[o] : &spare;                                           \
            *to = STORE(LOAD(*to) + LOAD(gw[o]));                                               \
            tied[count] = o; /* the tied windows, listed without a branch */                    \
            count += ap[o] <= -2;                                                               \
        }                                                                                       \
        for (int64_t k = 0; k < count; k++) {                                                   \
            const int64_t o = tied[k];                                                          \
            const window w = window_at(g, o / (g->out[1] * g->out[2]),                          \
                                       o / g->out[2] % g->out[1], o % g->out[2]);               \
            const ACC mw = LOAD(m[n * outs + o]);                                               \
            const ACC share = LOAD(STORE(DIV(LOAD(gw[o]), -ap[o])));                            \
            for (int64_t r0 = 0; r0 < w.rows0; r0++)                                            \
                for (int64_t r1 = 0; r1 < w.rows1; r1++) {                                      \
                    const int64_t row = w.base + r0 * w.stride0 + r1 * w.stride1;               \
                    for (int64_t i = 0; i < w.len; i++) {                                       \
                        const int64_t p = row + i * w.step;                                     \
                        const ACC v = LOAD(xp[p]);                                              \
                        if (v == mw || (v != v && mw != mw))                                    \
                            gp[p] = STORE(LOAD(gp[p]) + share);                                 \
                    }                                                                           \
                }                                                                               \
        }                                                                                       \
    }                                                                                           \
}

/* PyTorch divides in float for float and the 16-bit floats, in double for double */
#define FLOAT_DIV(a, count) ((a) / (float)(count))
#define DOUBLE_DIV(a, count) ((a) / (double)(count))
static inline double f64_store(double v) { return v; }
BACKWARD_KERNEL(f32, float, float, f32_load, f32_store, FLOAT_DIV)
BACKWARD_KERNEL(f64, double, double, f64_load, f64_store, DOUBLE_DIV)
BACKWARD_KERNEL(bf16, uint16_t, float, bf16_load, bf16_store, FLOAT_DIV)
BACKWARD_KERNEL(f16, uint16_t, float, f16_load, f16_store, FLOAT_DIV)
