/*
 * Randomised valley-filling dives (compiled core of model_place.skyline).
 *
 * A dive places buffers bottom-up on a skyline h(t), the top of the placed bytes
 * at each step. A *valley* is a maximal run of steps [a, b) at one height with
 * higher steps on both sides; a buffer sits in it at that height when its
 * lifetime lies inside [a, b). In a placement without waste, the valley's left
 * end (a, h) is covered by a buffer starting at a, its right end by one ending at
 * b. Each move takes the valley end with the fewest such candidates (fewest
 * remaining values first, as exact-cover solvers do). Ends with no candidate are
 * wasted: all of them are raised to their valley's lower wall in one move.
 * Otherwise the candidate preferred by a randomised score is placed (tops level
 * with the wall beside it first, then longer lifetimes). Steps whose buffers are
 * all placed become walls. Dives differ by their random tie-breaks; the best
 * arena is kept, and a dive stops once it cannot beat it. Each move scans the
 * steps and the unplaced buffers, so a dive costs O((buffers + steps) x moves).
 *
 * Arguments (checked here; model_place.exact.skyline_dives builds them): steps
 * 1..nsteps, every 1 <= start < end <= nsteps + 1, size > 0, alignment >= 1.
 */
#include "_search.h"

#include <stdlib.h>
#include <string.h>

#define WALL INT64_MAX

/* xorshift64*: a small, fast generator whose stream is fixed by the seed. */
static uint64_t rnd(uint64_t *s) {
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 2685821657736338717ULL;
}

typedef struct {
    int n, T;
    const i64 *start, *end, *size, *align;
    i64 *h, *off, *cover;
    int *seg_of, *seg_a, *seg_b, *cl, *cr, *unplaced, *pick;
    double deadline; /* CLOCK_MONOTONIC seconds; < 0: none */
    long generation; /* cancel() generation when the dives started */
} Dive;

static int stopped(const Dive *D) {
    return (D->deadline >= 0 && model_place_now() >= D->deadline) ||
           __atomic_load_n(&model_place_cancel_generation, __ATOMIC_RELAXED) != D->generation;
}

/* One dive: 1 when every buffer is placed below `cutoff`, 0 when it reached it,
 * -1 when the time ran out or cancel() was called. */
static int dive(Dive *D, uint64_t *seed, i64 cutoff) {
    int n = D->n, T = D->T, nu = n;
    i64 *h = D->h;
    for (int t = 0; t <= T + 1; ++t) D->cover[t] = 0;
    for (int j = 0; j < n; ++j) {
        D->unplaced[j] = j;
        D->cover[D->start[j]] += 1;
        D->cover[D->end[j]] -= 1;
    }
    for (int t = 1; t <= T; ++t) D->cover[t] += D->cover[t - 1];
    h[0] = h[T + 1] = WALL;
    for (int t = 1; t <= T; ++t) h[t] = D->cover[t] ? 0 : WALL;
    for (unsigned moves = 1; nu > 0; ++moves) {
        if (!(moves & 63) && stopped(D)) return -1;
        /* segments of equal height between walls */
        int ns = 0;
        for (int t = 1; t <= T;) {
            if (h[t] == WALL) {
                ++t;
                continue;
            }
            int u = t;
            while (u <= T && h[u] == h[t]) D->seg_of[u++] = ns;
            D->seg_a[ns] = t;
            D->seg_b[ns] = u;
            D->cl[ns] = D->cr[ns] = (h[t - 1] > h[t] && h[u] > h[t]) ? 0 : -1; /* -1: not a valley */
            ++ns;
            t = u;
        }
        for (int k = 0; k < nu; ++k) {
            int j = D->unplaced[k];
            int s = D->seg_of[D->start[j]];
            if (D->cl[s] < 0 || D->end[j] > D->seg_b[s] || h[D->start[j]] % D->align[j]) continue;
            if (D->start[j] == D->seg_a[s]) D->cl[s]++;
            if (D->end[j] == D->seg_b[s]) D->cr[s]++;
        }
        /* the valley end with the fewest candidates; ties: lowest, then at random */
        int best_s = -1, best_left = 1, best_c = INT32_MAX, ties = 0;
        i64 best_h = WALL;
        for (int s = 0; s < ns; ++s) {
            if (D->cl[s] < 0) continue;
            for (int side = 0; side < 2; ++side) {
                int c = side ? D->cr[s] : D->cl[s];
                i64 hs = h[D->seg_a[s]];
                if (c > best_c || (c == best_c && hs > best_h)) continue;
                if (c == best_c && hs == best_h) {
                    if (rnd(seed) % (uint64_t)++ties) continue;
                } else {
                    ties = 1;
                }
                best_s = s, best_left = !side, best_c = c, best_h = hs;
            }
        }
        if (best_c == 0) {
            /* Waste: every valley end no buffer can cover is raised to its valley's lower
             * wall (all at once: raising one end leaves the other valleys as they were). */
            for (int s = 0; s < ns; ++s) {
                if (D->cl[s] != 0 && D->cr[s] != 0) continue;
                int a = D->seg_a[s], b = D->seg_b[s];
                i64 hs = h[a], to = h[a - 1] < h[b] ? h[a - 1] : h[b];
                if (to == WALL) { /* only alignment kept the buffers out: their next aligned offset */
                    for (int k = 0; k < nu; ++k) {
                        int j = D->unplaced[k];
                        i64 up = hs + D->align[j] - hs % D->align[j];
                        if (D->start[j] < b && a < D->end[j] && up < to) to = up;
                    }
                }
                if (to >= cutoff) return 0;
                if (D->cl[s] == 0) h[a] = to;
                if (D->cr[s] == 0) h[b - 1] = to;
            }
            continue;
        }
        int a = D->seg_a[best_s], b = D->seg_b[best_s];
        i64 wall = best_left ? h[a - 1] : h[b];
        int np = 0;
        for (int k = 0; k < nu; ++k) {
            int j = D->unplaced[k];
            if (D->seg_of[D->start[j]] != best_s || D->end[j] > b || best_h % D->align[j]) continue;
            if (best_left ? D->start[j] == a : D->end[j] == b) D->pick[np++] = k;
        }
        int chosen = -1;
        double top = -1.0;
        for (int q = 0; q < np; ++q) {
            int j = D->unplaced[D->pick[q]];
            double score = 4.0 * (best_h + D->size[j] == wall) +
                           2.0 * (double)(D->end[j] - D->start[j]) / (double)(b - a) +
                           (double)(rnd(seed) >> 11) * 0x1.0p-53;
            if (score > top) top = score, chosen = D->pick[q];
        }
        int j = D->unplaced[chosen];
        D->unplaced[chosen] = D->unplaced[--nu];
        if (best_h + D->size[j] >= cutoff) return 0;
        D->off[j] = best_h;
        for (i64 t = D->start[j]; t < D->end[j]; ++t) h[t] = --D->cover[t] ? best_h + D->size[j] : WALL;
    }
    return 1;
}

const char model_place_skyline_doc[] =
    "skyline(start, end, size, alignment, nsteps, cutoff, goal, seed, max_dives, time_limit)\n"
    "  -> (arena, offsets, dives, interrupted)\n\n"
    "Randomised valley-filling dives (see model_place.skyline): steps 1..nsteps, lifetimes\n"
    "[start, end). Returns the smallest arena below `cutoff` and its offsets (None when no\n"
    "dive got below it) once an arena <= `goal` is found, after `max_dives` dives,\n"
    "`time_limit` seconds (negative: none) or cancel().";

PyObject *model_place_skyline(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *st, *en, *sz, *al;
    int T;
    long long cutoff, goal, max_dives;
    unsigned long long seed;
    double time_limit;
    if (!PyArg_ParseTuple(args, "OOOOiLLKLd", &st, &en, &sz, &al, &T, &cutoff, &goal, &seed, &max_dives,
                          &time_limit))
        return NULL;
    Py_ssize_t n_ = PySequence_Size(st);
    if (n_ < 0) return NULL;
    if (n_ < 1 || n_ > INT32_MAX / 8 || T < 1 || T > INT32_MAX / 8) {
        PyErr_SetString(PyExc_ValueError, "need 1 to 2**28 buffers and steps");
        return NULL;
    }
    int n = (int)n_;
    Dive D = {.n = n, .T = T};
    i64 *data = malloc(sizeof(i64) * (6 * (size_t)n + 2 * ((size_t)T + 2)));
    int *ints = malloc(sizeof(int) * (5 * ((size_t)T + 2) + 2 * (size_t)n));
    if (!data || !ints) {
        free(data);
        free(ints);
        return PyErr_NoMemory();
    }
    i64 *start = data, *end = data + n, *size = data + 2 * n, *align = data + 3 * n;
    D.off = data + 4 * n;
    i64 *best = data + 5 * n;
    D.h = data + 6 * n;
    D.cover = D.h + T + 2;
    D.seg_of = ints, D.seg_a = ints + (T + 2), D.seg_b = ints + 2 * (T + 2), D.cl = ints + 3 * (T + 2);
    D.cr = ints + 4 * (T + 2), D.unplaced = ints + 5 * (T + 2), D.pick = D.unplaced + n;
    if (model_place_read_i64s(st, n, start, "start") < 0 || model_place_read_i64s(en, n, end, "end") < 0 ||
        model_place_read_i64s(sz, n, size, "size") < 0 || model_place_read_i64s(al, n, align, "alignment") < 0) {
        free(data);
        free(ints);
        return NULL;
    }
    for (int j = 0; j < n; ++j)
        if (start[j] < 1 || start[j] >= end[j] || end[j] > (i64)T + 1 || size[j] <= 0 || align[j] < 1) {
            free(data);
            free(ints);
            PyErr_Format(PyExc_ValueError, "buffer %d: need 1 <= start < end <= nsteps + 1, size > 0, "
                         "alignment >= 1", j);
            return NULL;
        }
    D.start = start, D.end = end, D.size = size, D.align = align;
    D.generation = __atomic_load_n(&model_place_cancel_generation, __ATOMIC_RELAXED);
    long long dives = 0;
    i64 arena = cutoff;
    int found = 0;
    uint64_t state = seed * 0x9E3779B97F4A7C15ULL + 0x632BE59BD9B4E019ULL;
    if (!state) state = 1;
    Py_BEGIN_ALLOW_THREADS
    D.deadline = time_limit < 0 ? -1.0 : model_place_now() + time_limit;
    while (arena > goal && dives < max_dives && !stopped(&D)) {
        int done = dive(&D, &state, arena);
        if (done < 0) break;
        ++dives;
        if (!done) continue;
        i64 top = 0;
        for (int j = 0; j < n; ++j)
            if (D.off[j] + size[j] > top) top = D.off[j] + size[j];
        arena = top;
        memcpy(best, D.off, sizeof(i64) * (size_t)n);
        found = 1;
    }
    Py_END_ALLOW_THREADS
    PyObject *offsets = Py_None;
    if (found) {
        offsets = PyList_New(n);
        if (!offsets) {
            free(data);
            free(ints);
            return NULL;
        }
        for (int j = 0; j < n; ++j) PyList_SET_ITEM(offsets, j, PyLong_FromLongLong(best[j]));
    } else {
        Py_INCREF(Py_None);
    }
    free(data);
    free(ints);
    int interrupted = __atomic_load_n(&model_place_cancel_generation, __ATOMIC_RELAXED) != D.generation;
    return Py_BuildValue("LNLO", (long long)arena, offsets, dives, interrupted ? Py_True : Py_False);
}
