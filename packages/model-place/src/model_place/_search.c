/*
 * Exact placement search (compiled core of model_place.exact).
 *
 * Decides whether buffers with fixed lifetimes fit an arena of `capacity` bytes,
 * by the depth-first search over canonical solutions of MiniMalloc (Moffitt,
 * ASPLOS 2023), written from the paper's description:
 *
 *  - canonical solutions: buffers are placed in non-decreasing offset order, each
 *    at its lowest feasible (aligned) offset above the overlapping buffers already
 *    placed; ties at one offset are broken by a static preorder;
 *  - dominance: a buffer whose lowest offset is at or above the top of another
 *    unplaced buffer's lowest slot would leave a gap that buffer could fill: skip;
 *  - section inference: a "section" is a maximal set of buffers alive together;
 *    its floor (lowest offset any unplaced member can take) plus the bytes of its
 *    unplaced members must fit the capacity;
 *  - dynamic decomposition: once no unplaced buffer spans a section boundary, the
 *    two sides are solved independently;
 *  - round robin over three static preorders with doubling node limits.
 *
 * Python-side preconditions (checked by model_place.exact): n >= 1, every size
 * > 0, lower < upper, alignment >= 1. All sizes and offsets are int64 bytes.
 * The search releases the GIL and recurses once per placed buffer, so callers run
 * it in a thread with a large stack (model_place.exact does); cancel() stops every
 * search running at that moment.
 */
#include "_search.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { ST_FOUND = 0, ST_NOTFOUND, ST_TIMEOUT, ST_ABORT, ST_INTERRUPT, ST_NOMEM };

static const char *status_names[] = {"found", "infeasible", "timeout", "abort", "interrupted", "nomem"};

typedef struct {
    i64 area, width, total;
    int idx;
} Pre;

typedef struct {
    int *bufs;
    int nb;
    int slo, shi; /* section range [slo, shi) */
} Part;

typedef struct {
    int who;
    i64 old;
} Change;

typedef struct {
    Change *v;
    size_t len, cap;
} Trail;

typedef struct {
    int n, nsec;
    const i64 *lower, *upper, *size, *align;
    i64 capacity;
    int *sec_lo, *sec_hi;        /* per buffer: section range [lo, hi) */
    int *mem_start, *members;    /* CSR: buffers active in each section */
    int *ov_start, *ov;          /* CSR: buffers whose lifetimes intersect */
    i64 *offset, *solution, *min_off, *floor_, *total;
    int *cuts;                   /* unplaced buffers spanning boundary s|s+1 */
    int *mark, stamp;
    int *affected;
    Trail otrail, strail;
    double deadline;             /* CLOCK_MONOTONIC seconds; < 0: none */
    long generation;             /* cancel() generation when this search started */
    i64 nodes_remaining, nodes, backtracks;
    const char *heur;
    int failed;                  /* ST_NOMEM after an allocation failure */
} Solver;

double model_place_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int trail_push(Solver *S, Trail *t, int who, i64 old) {
    if (t->len == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 1024;
        Change *v = realloc(t->v, cap * sizeof(Change));
        if (!v) {
            S->failed = ST_NOMEM;
            return -1;
        }
        t->v = v;
        t->cap = cap;
    }
    t->v[t->len].who = who;
    t->v[t->len].old = old;
    t->len++;
    return 0;
}

static i64 align_up(i64 x, i64 a) {
    i64 r = x % a;
    return r ? x + (a - r) : x;
}

long model_place_cancel_generation;

/* qsort has no context argument: the heuristic in force, per thread. */
static _Thread_local const char *g_heur;

static int cmp_pre(const void *pa, const void *pb) {
    const Pre *a = pa, *b = pb;
    for (const char *c = g_heur; *c; ++c) {
        if (*c == 'W' && a->width != b->width) return a->width > b->width ? -1 : 1;
        if (*c == 'A' && a->area != b->area) return a->area > b->area ? -1 : 1;
        if (*c == 'T' && a->total != b->total) return a->total > b->total ? -1 : 1;
    }
    return (a->idx > b->idx) - (a->idx < b->idx);
}

typedef struct {
    i64 off;
    int pidx;
} Ord;

static int cmp_ord(const void *pa, const void *pb) {
    const Ord *a = pa, *b = pb;
    if (a->off != b->off) return a->off < b->off ? -1 : 1;
    return (a->pidx > b->pidx) - (a->pidx < b->pidx);
}

static int sub_solve(Solver *S, const Part *part);

static int poll(Solver *S) {
    if (S->nodes_remaining <= 0) return ST_ABORT;
    S->nodes_remaining--;
    S->nodes++;
    if ((S->nodes & 15) == 0) {  /* a node can cost milliseconds on 100k buffers */
        if (S->deadline >= 0 && model_place_now() > S->deadline) return ST_TIMEOUT;
        if (__atomic_load_n(&model_place_cancel_generation, __ATOMIC_RELAXED) != S->generation) return ST_INTERRUPT;
    }
    return ST_FOUND;
}

static int check(const Solver *S, const Part *part, i64 off) {
    for (int s = part->slo; s < part->shi; ++s) {
        i64 f = S->floor_[s] > off ? S->floor_[s] : off;
        if (f + S->total[s] > S->capacity) return 0;
    }
    return 1;
}

static int search(Solver *S, const Part *part, const Pre *pre, const int *ord_in, int nord_in,
                  i64 min_offset, int min_pidx);

/* Place-time bookkeeping for the cut counts, then either go on searching this
 * partition or split it into independent sub-partitions. */
static int decompose(Solver *S, const Part *part, const Pre *pre, const int *ord, int nord,
                     i64 off, int pidx, int b) {
    S->solution[b] = S->offset[b];
    int lo = S->sec_lo[b], hi = S->sec_hi[b];
    int *cutpoints = malloc(sizeof(int) * (size_t)(hi - lo + 2));
    if (!cutpoints) return S->failed = ST_NOMEM;
    int ncut = 0;
    cutpoints[ncut++] = part->slo;
    for (int s = lo; s + 1 < hi; ++s)
        if (--S->cuts[s] == 0) cutpoints[ncut++] = s + 1;
    int st = ST_FOUND;
    if (ncut == 1) {
        st = search(S, part, pre, ord, nord, off, pidx);
    } else {
        cutpoints[ncut++] = part->shi;
        int *bufs = malloc(sizeof(int) * (size_t)part->nb);
        if (!bufs) st = S->failed = ST_NOMEM;
        for (int c = 1; c < ncut && st == ST_FOUND; ++c) {
            int c0 = cutpoints[c - 1], c1 = cutpoints[c];
            int nb = 0;
            for (int i = 0; i < part->nb; ++i) {
                int o = part->bufs[i];
                if (S->offset[o] >= 0) continue;
                if (!(S->sec_hi[o] <= c0 || c1 <= S->sec_lo[o])) bufs[nb++] = o;
            }
            if (nb == 0) continue;
            Part sub = {bufs, nb, c0, c1};
            st = sub_solve(S, &sub);
        }
        free(bufs);
    }
    for (int s = lo; s + 1 < hi; ++s) S->cuts[s]++;
    free(cutpoints);
    return st;
}

static int search(Solver *S, const Part *part, const Pre *pre, const int *ord_in, int nord_in,
                  i64 min_offset, int min_pidx) {
    int st = poll(S);
    if (st != ST_FOUND) return st;
    Ord *ord = malloc(sizeof(Ord) * (size_t)(nord_in ? nord_in : 1));
    int *next = malloc(sizeof(int) * (size_t)(nord_in ? nord_in : 1));
    if (!ord || !next) {
        free(ord);
        free(next);
        return S->failed = ST_NOMEM;
    }
    int nord = 0;
    for (int i = 0; i < nord_in; ++i) {
        int b = pre[ord_in[i]].idx;
        if (S->offset[b] >= 0) continue;
        ord[nord].off = S->min_off[b];
        ord[nord].pidx = ord_in[i];
        nord++;
    }
    if (nord == 0) {
        for (int i = 0; i < part->nb; ++i) S->solution[part->bufs[i]] = S->offset[part->bufs[i]];
        free(ord);
        free(next);
        return ST_FOUND;
    }
    qsort(ord, (size_t)nord, sizeof(Ord), cmp_ord);
    for (int i = 0; i < nord; ++i) next[i] = ord[i].pidx;
    i64 min_height = INT64_MAX;
    for (int i = 0; i < nord; ++i) {
        i64 h = ord[i].off + S->size[pre[ord[i].pidx].idx];
        if (h < min_height) min_height = h;
    }
    st = ST_NOTFOUND;
    for (int i = 0; i < nord; ++i) {
        i64 off = ord[i].off;
        int pidx = ord[i].pidx;
        int b = pre[pidx].idx;
        if (off < min_offset || (off == min_offset && pidx < min_pidx)) continue; /* canonical */
        if (off >= min_height) continue;                                          /* dominance */
        i64 height = off + S->size[b];
        S->offset[b] = off;
        size_t omark = S->otrail.len, smark = S->strail.len;
        /* Raise the lowest offset of every unplaced overlapping buffer. */
        S->stamp++;
        int naff = 0;
        for (int k = S->ov_start[b]; k < S->ov_start[b + 1] && !S->failed; ++k) {
            int o = S->ov[k];
            if (S->offset[o] >= 0 || S->min_off[o] >= height) continue;
            if (trail_push(S, &S->otrail, o, S->min_off[o]) < 0) break;
            S->min_off[o] = align_up(height, S->align[o]);
            for (int s = S->sec_lo[o]; s < S->sec_hi[o]; ++s)
                if (S->mark[s] != S->stamp) {
                    S->mark[s] = S->stamp;
                    S->affected[naff++] = s;
                }
        }
        /* b's sections: floor at its top, its bytes no longer pending. */
        for (int s = S->sec_lo[b]; s < S->sec_hi[b] && !S->failed; ++s) {
            if (trail_push(S, &S->strail, s, S->floor_[s]) < 0) break;
            S->floor_[s] = height;
            S->total[s] -= S->size[b];
        }
        /* A section's floor is at least the lowest offset of its unplaced members. */
        for (int a = 0; a < naff && !S->failed; ++a) {
            int s = S->affected[a];
            i64 lowest = INT64_MAX;
            for (int k = S->mem_start[s]; k < S->mem_start[s + 1]; ++k) {
                int m = S->members[k];
                if (S->offset[m] < 0 && S->min_off[m] < lowest) lowest = S->min_off[m];
            }
            if (lowest != INT64_MAX && S->floor_[s] < lowest) {
                if (trail_push(S, &S->strail, s, S->floor_[s]) < 0) break;
                S->floor_[s] = lowest;
            }
        }
        int sub = ST_NOTFOUND;
        if (S->failed)
            sub = S->failed;
        else if (check(S, part, off))
            sub = decompose(S, part, pre, next, nord, off, pidx, b);
        while (S->strail.len > smark) {
            Change *c = &S->strail.v[--S->strail.len];
            S->floor_[c->who] = c->old;
        }
        for (int s = S->sec_lo[b]; s < S->sec_hi[b]; ++s) S->total[s] += S->size[b];
        while (S->otrail.len > omark) {
            Change *c = &S->otrail.v[--S->otrail.len];
            S->min_off[c->who] = c->old;
        }
        S->offset[b] = -1;
        if (sub != ST_NOTFOUND) {
            st = sub;
            break;
        }
    }
    if (st == ST_NOTFOUND) S->backtracks++;
    free(ord);
    free(next);
    return st;
}

static int sub_solve(Solver *S, const Part *part) {
    Pre *pre = malloc(sizeof(Pre) * (size_t)part->nb);
    int *ord = malloc(sizeof(int) * (size_t)part->nb);
    if (!pre || !ord) {
        free(pre);
        free(ord);
        return S->failed = ST_NOMEM;
    }
    for (int i = 0; i < part->nb; ++i) {
        int b = part->bufs[i];
        i64 total = 0;
        for (int s = S->sec_lo[b]; s < S->sec_hi[b]; ++s)
            if (S->total[s] > total) total = S->total[s];
        pre[i].idx = b;
        pre[i].width = S->upper[b] - S->lower[b];
        pre[i].area = pre[i].width * S->size[b];
        pre[i].total = total;
    }
    g_heur = S->heur;
    qsort(pre, (size_t)part->nb, sizeof(Pre), cmp_pre);
    for (int i = 0; i < part->nb; ++i) ord[i] = i;
    int st = search(S, part, pre, ord, part->nb, 0, 0);
    free(pre);
    free(ord);
    return st;
}

typedef struct {
    i64 t;
    int kind; /* 0: end (processed first at equal times), 1: start */
    int idx;
} Point;

static int cmp_point(const void *pa, const void *pb) {
    const Point *a = pa, *b = pb;
    if (a->t != b->t) return a->t < b->t ? -1 : 1;
    if (a->kind != b->kind) return a->kind - b->kind;
    return (a->idx > b->idx) - (a->idx < b->idx);
}

static _Thread_local const i64 *g_lower;
static int cmp_idx_lower(const void *pa, const void *pb) {
    int a = *(const int *)pa, b = *(const int *)pb;
    if (g_lower[a] != g_lower[b]) return g_lower[a] < g_lower[b] ? -1 : 1;
    return (a > b) - (a < b);
}

/* Sections (sweep), overlaps, partitions. Returns 0, or -1 when out of memory. */
/* Whether the deadline passed (checked every 256 calls with k: the tables of a large,
 * dense instance take seconds to build). */
static int late(const Solver *S, int k) {
    return (k & 255) == 0 && S->deadline >= 0 && model_place_now() > S->deadline;
}

/* Build the search tables: 0, -1 out of memory, -2 past the deadline. */
static int prepare(Solver *S, Part **parts_out, int *nparts_out, int **part_bufs_out) {
    int n = S->n;
    Point *pts = malloc(sizeof(Point) * 2 * (size_t)n);
    S->sec_lo = malloc(sizeof(int) * n);
    S->sec_hi = malloc(sizeof(int) * n);
    if (!pts || !S->sec_lo || !S->sec_hi) return -1;
    for (int i = 0; i < n; ++i) {
        pts[2 * i] = (Point){S->lower[i], 1, i};
        pts[2 * i + 1] = (Point){S->upper[i], 0, i};
    }
    qsort(pts, 2 * (size_t)n, sizeof(Point), cmp_point);
    /* A new section starts at each end time: it holds the buffers active just
     * before that time. Only ends close sections, so a section is a maximal set
     * of buffers alive together. */
    int nsec = 0;
    i64 last = pts[0].t;
    for (int k = 0; k < 2 * n; ++k) {
        Point *p = &pts[k];
        if (p->kind == 0) {
            if (last < p->t) {
                last = p->t;
                nsec++;
            }
            S->sec_hi[p->idx] = nsec;
        } else {
            S->sec_lo[p->idx] = nsec;
        }
    }
    free(pts);
    S->nsec = nsec;
    S->mem_start = calloc((size_t)nsec + 1, sizeof(int));
    if (!S->mem_start) return -1;
    size_t nmem = 0;
    for (int i = 0; i < n; ++i) {
        if (late(S, i)) return -2;
        for (int s = S->sec_lo[i]; s < S->sec_hi[i]; ++s) S->mem_start[s + 1]++;
        nmem += (size_t)(S->sec_hi[i] - S->sec_lo[i]);
    }
    for (int s = 0; s < nsec; ++s) S->mem_start[s + 1] += S->mem_start[s];
    S->members = malloc(sizeof(int) * (nmem ? nmem : 1));
    int *fill = malloc(sizeof(int) * (size_t)(nsec ? nsec : 1));
    if (!S->members || !fill) return -1;
    memcpy(fill, S->mem_start, sizeof(int) * (size_t)nsec);
    for (int i = 0; i < n; ++i) {
        if (late(S, i)) {
            free(fill);
            return -2;
        }
        for (int s = S->sec_lo[i]; s < S->sec_hi[i]; ++s) S->members[fill[s]++] = i;
    }
    free(fill);

    /* Overlaps: pairs of intersecting half-open lifetimes. */
    int *byl = malloc(sizeof(int) * n);
    S->ov_start = calloc((size_t)n + 1, sizeof(int));
    if (!byl || !S->ov_start) return -1;
    for (int i = 0; i < n; ++i) byl[i] = i;
    g_lower = S->lower;
    qsort(byl, (size_t)n, sizeof(int), cmp_idx_lower);
    size_t nov = 0;
    for (int x = 0; x < n; ++x) {
        if (late(S, x)) {
            free(byl);
            return -2;
        }
        for (int y = x + 1; y < n && S->lower[byl[y]] < S->upper[byl[x]]; ++y) {
            S->ov_start[byl[x] + 1]++;
            S->ov_start[byl[y] + 1]++;
            nov += 2;
        }
    }
    for (int i = 0; i < n; ++i) S->ov_start[i + 1] += S->ov_start[i];
    S->ov = malloc(sizeof(int) * (nov ? nov : 1));
    fill = malloc(sizeof(int) * n);
    if (!S->ov || !fill) return -1;
    memcpy(fill, S->ov_start, sizeof(int) * n);
    for (int x = 0; x < n; ++x) {
        if (late(S, x)) {
            free(fill);
            free(byl);
            return -2;
        }
        for (int y = x + 1; y < n && S->lower[byl[y]] < S->upper[byl[x]]; ++y) {
            S->ov[fill[byl[x]]++] = byl[y];
            S->ov[fill[byl[y]]++] = byl[x];
        }
    }
    free(fill);

    /* Partitions: connected runs of section ranges. */
    int *bys = byl; /* reuse: sort buffers by first section */
    for (int i = 0; i < n; ++i) bys[i] = i;
    {
        /* counting sort by sec_lo keeps it O(n + nsec) */
        int *cnt = calloc((size_t)nsec + 1, sizeof(int));
        int *out = malloc(sizeof(int) * n);
        if (!cnt || !out) return -1;
        for (int i = 0; i < n; ++i) cnt[S->sec_lo[i] + 1]++;
        for (int s = 0; s < nsec; ++s) cnt[s + 1] += cnt[s];
        for (int i = 0; i < n; ++i) out[cnt[S->sec_lo[i]]++] = i;
        memcpy(bys, out, sizeof(int) * n);
        free(cnt);
        free(out);
    }
    Part *parts = malloc(sizeof(Part) * n);
    if (!parts) return -1;
    int np = 0;
    int reach = -1;
    for (int k = 0; k < n; ++k) {
        int b = bys[k];
        if (S->sec_lo[b] >= reach) {
            parts[np].bufs = bys + k;
            parts[np].nb = 0;
            parts[np].slo = S->sec_lo[b];
            np++;
        }
        parts[np - 1].nb++;
        if (S->sec_hi[b] > reach) reach = S->sec_hi[b];
        parts[np - 1].shi = reach;
    }
    *parts_out = parts;
    *nparts_out = np;
    *part_bufs_out = bys;

    S->cuts = calloc((size_t)(nsec ? nsec : 1), sizeof(int));
    S->offset = malloc(sizeof(i64) * n);
    S->solution = malloc(sizeof(i64) * n);
    S->min_off = calloc((size_t)n, sizeof(i64));
    S->floor_ = calloc((size_t)nsec, sizeof(i64));
    S->total = calloc((size_t)nsec, sizeof(i64));
    S->mark = calloc((size_t)nsec, sizeof(int));
    S->affected = malloc(sizeof(int) * (size_t)(nsec ? nsec : 1));
    if (!S->cuts || !S->offset || !S->solution || !S->min_off || !S->floor_ || !S->total ||
        !S->mark || !S->affected)
        return -1;
    for (int i = 0; i < n; ++i) {
        S->offset[i] = -1;
        S->solution[i] = -1;
        for (int s = S->sec_lo[i]; s + 1 < S->sec_hi[i]; ++s) S->cuts[s]++;
        for (int s = S->sec_lo[i]; s < S->sec_hi[i]; ++s) S->total[s] += S->size[i];
    }
    return 0;
}

static void release(Solver *S) {
    free(S->sec_lo); free(S->sec_hi); free(S->mem_start); free(S->members);
    free(S->ov_start); free(S->ov); free(S->offset); free(S->solution); free(S->min_off);
    free(S->floor_); free(S->total); free(S->cuts); free(S->mark); free(S->affected);
    free(S->otrail.v); free(S->strail.v);
}

static int round_robin(Solver *S, Part *parts, int np, const char **heurs, int nh) {
    i64 limit = S->n;
    for (;;) {
        limit = limit > INT64_MAX / 2 ? INT64_MAX : 2 * limit;
        int st = ST_FOUND;
        for (int h = 0; h < nh; ++h) {
            S->heur = heurs[h];
            S->nodes_remaining = limit;
            st = ST_FOUND;
            for (int p = 0; p < np; ++p) {
                st = sub_solve(S, &parts[p]);
                if (st == ST_ABORT) break;
                if (st != ST_FOUND) return st;
            }
            if (st == ST_FOUND) return ST_FOUND;
        }
    }
}

int model_place_read_i64s(PyObject *seq, int n, i64 *out, const char *what) {
    PyObject *fast = PySequence_Fast(seq, what);
    if (!fast) return -1;
    if (PySequence_Fast_GET_SIZE(fast) != n) {
        Py_DECREF(fast);
        PyErr_Format(PyExc_ValueError, "%s: expected %d values", what, n);
        return -1;
    }
    PyObject **items = PySequence_Fast_ITEMS(fast);
    for (int i = 0; i < n; ++i) {
        out[i] = PyLong_AsLongLong(items[i]);
        if (out[i] == -1 && PyErr_Occurred()) {
            Py_DECREF(fast);
            return -1;
        }
    }
    Py_DECREF(fast);
    return 0;
}

PyDoc_STRVAR(solve_doc,
"solve(lower, upper, size, alignment, capacity, time_limit) -> (status, offsets, nodes, backtracks)\n\n"
"Search for offsets placing every buffer within `capacity` bytes. `status` is\n"
"'found' (offsets is a list), 'infeasible' (proven; offsets is None), 'timeout'\n"
"or 'interrupted'. `time_limit` in seconds; negative means none.");

static PyObject *py_solve(PyObject *self, PyObject *args) {
    (void)self;
    PyObject *lo, *up, *sz, *al;
    long long capacity;
    double time_limit;
    if (!PyArg_ParseTuple(args, "OOOOLd", &lo, &up, &sz, &al, &capacity, &time_limit)) return NULL;
    Py_ssize_t n_ = PySequence_Size(lo);
    if (n_ < 0) return NULL;
    if (n_ < 1 || n_ > INT32_MAX / 4) {
        PyErr_SetString(PyExc_ValueError, "need between 1 and 2**29 buffers");
        return NULL;
    }
    int n = (int)n_;
    i64 *data = malloc(sizeof(i64) * 4 * (size_t)n);
    if (!data) return PyErr_NoMemory();
    if (model_place_read_i64s(lo, n, data, "lower") < 0 || model_place_read_i64s(up, n, data + n, "upper") < 0 ||
        model_place_read_i64s(sz, n, data + 2 * n, "size") < 0 ||
        model_place_read_i64s(al, n, data + 3 * n, "alignment") < 0) {
        free(data);
        return NULL;
    }
    for (int i = 0; i < n; ++i)
        if (data[i] >= data[n + i] || data[2 * n + i] <= 0 || data[3 * n + i] < 1) {
            free(data);
            PyErr_Format(PyExc_ValueError, "buffer %d: need lower < upper, size > 0, alignment >= 1", i);
            return NULL;
        }
    Solver S;
    memset(&S, 0, sizeof S);
    S.n = n;
    S.lower = data;
    S.upper = data + n;
    S.size = data + 2 * n;
    S.align = data + 3 * n;
    S.capacity = capacity;
    S.deadline = time_limit < 0 ? -1.0 : model_place_now() + time_limit;
    S.generation = __atomic_load_n(&model_place_cancel_generation, __ATOMIC_RELAXED);
    Part *parts = NULL;
    int np = 0;
    int *part_bufs = NULL;
    int st;
    Py_BEGIN_ALLOW_THREADS
    int prepared = prepare(&S, &parts, &np, &part_bufs);
    if (prepared == -2) {
        st = ST_TIMEOUT;
    } else if (prepared < 0) {
        st = ST_NOMEM;
    } else {
        static const char *heurs[] = {"WAT", "TAW", "TWA"};
        st = round_robin(&S, parts, np, heurs, 3);
    }
    Py_END_ALLOW_THREADS
    PyObject *offsets = Py_None;
    Py_INCREF(Py_None);
    if (st == ST_FOUND) {
        Py_DECREF(Py_None);
        offsets = PyList_New(n);
        if (offsets)
            for (int i = 0; i < n; ++i) PyList_SET_ITEM(offsets, i, PyLong_FromLongLong(S.solution[i]));
    }
    release(&S);
    free(parts);
    free(part_bufs);
    free(data);
    if (!offsets) return NULL;
    if (st == ST_NOMEM) {
        Py_DECREF(offsets);
        return PyErr_NoMemory();
    }
    return Py_BuildValue("sNLL", status_names[st], offsets, (long long)S.nodes, (long long)S.backtracks);
}

static PyObject *py_cancel(PyObject *self, PyObject *unused) {
    (void)self;
    (void)unused;
    __atomic_add_fetch(&model_place_cancel_generation, 1, __ATOMIC_RELAXED);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"solve", py_solve, METH_VARARGS, solve_doc},
    {"skyline", model_place_skyline, METH_VARARGS, model_place_skyline_doc},
    {"cancel", py_cancel, METH_NOARGS, "cancel() -> None: stop every search and dive running now."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_search", "Compiled exact placement search (see model_place.exact).", -1, methods,
    NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC PyInit__search(void) { return PyModule_Create(&module); }
