/*
 * What _search.c and _skyline.c share: they build one extension module,
 * model_place._search (solve, skyline, cancel).
 */
#ifndef MODEL_PLACE_SEARCH_H
#define MODEL_PLACE_SEARCH_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>

typedef int64_t i64;

/* Bumped by cancel(); a search or a dive stops when it differs from its own generation. */
extern long model_place_cancel_generation;

/* CLOCK_MONOTONIC seconds. */
double model_place_now(void);

/* `n` int64 values of the sequence `seq` into `out`: 0, or -1 with a Python exception set. */
int model_place_read_i64s(PyObject *seq, int n, i64 *out, const char *what);

/* _skyline.c: randomised valley-filling dives (model_place.skyline). */
PyObject *model_place_skyline(PyObject *self, PyObject *args);
extern const char model_place_skyline_doc[];

#endif
