/* Hits straight from the packed row cache: the search hot path's last step, compiled.
 *
 * Why: turning 10 labels into 10 hits in Python (the row cache's decode, a StoredRow per row, the JSON
 * metadata, a Hit per row) measured ~55 us warm and ~90 us with a cold CPU cache on this machine's
 * interpreter, next to ~150 us for the HNSW search itself: the largest part of what the engine adds to
 * the native search. This does the same work in one call.
 *
 * The reference is Python: RowCache.get + SearchExecutor.to_hits (embeddix_core/cache/row_cache.py,
 * embeddix_core/query/executor.py). This module is optional (the build skips it without a C compiler)
 * and tests/unit/test_native_hits.py checks that both give equal hits. The layout it reads is the one
 * row_cache.py writes: chunks of rows, each a 16-byte header (<IIII: encoded bytes, characters of id,
 * document, metadata; 0xFFFFFFFF for None) and the three strings UTF-8 encoded back to back; a page
 * table {label >> 6: array('q') of 64 global offsets}, -1 for "not here".
 *
 * Called under the row cache's lock, with the GIL held throughout.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define PAGE_BITS 6
#define PAGE_MASK ((1 << PAGE_BITS) - 1)
#define NONE_LEN 0xFFFFFFFFu
#define N_SLOTS 8

/* The Hit type and its slot descriptors, from setup(): id, score, distance, document, metadata,
 * metric, vector, rank_score (the order of embeddix_core.types.Hit). */
static PyTypeObject *hit_type = NULL;
static PyObject *slots[N_SLOTS];

static int set_slot(PyObject *hit, int i, PyObject *value) {
    /* the member descriptor's own setter: what object.__setattr__ ends in, without the frozen
     * dataclass's __setattr__ (which only raises) */
    return Py_TYPE(slots[i])->tp_descr_set(slots[i], hit, value);
}

/* A new Hit with its 8 slots set from `values` (in slot order), or NULL with an exception set. */
static PyObject *new_hit(PyObject *values[N_SLOTS]) {
    PyObject *hit = hit_type->tp_alloc(hit_type, 0);
    if (hit == NULL) return NULL;
    for (int j = 0; j < N_SLOTS; j++) {
        if (set_slot(hit, j, values[j]) < 0) {
            Py_DECREF(hit);
            return NULL;
        }
    }
    return hit;
}

/* A hit's metadata: a fresh dict, parsed by `loads` from the JSON text, empty for None or "". */
static PyObject *metadata_dict(PyObject *meta, PyObject *loads) {
    int truthy = PyObject_IsTrue(meta);
    if (truthy < 0) return NULL;
    return truthy ? PyObject_CallOneArg(loads, meta) : PyDict_New();
}

static PyObject *setup(PyObject *self, PyObject *args) {
    PyObject *type, *names;
    if (!PyArg_ParseTuple(args, "O!O!", &PyType_Type, &type, &PyTuple_Type, &names)) return NULL;
    if (PyTuple_GET_SIZE(names) != N_SLOTS) {
        PyErr_Format(PyExc_ValueError, "expected %d slot names, got %zd", N_SLOTS, PyTuple_GET_SIZE(names));
        return NULL;
    }
    PyObject *dict = ((PyTypeObject *)type)->tp_dict;
    for (int i = 0; i < N_SLOTS; i++) {
        PyObject *d = PyDict_GetItemWithError(dict, PyTuple_GET_ITEM(names, i));
        if (d == NULL || Py_TYPE(d)->tp_descr_set == NULL) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "%R has no slot %R", type, PyTuple_GET_ITEM(names, i));
            return NULL;
        }
        Py_INCREF(d);
        Py_XSETREF(slots[i], d);
    }
    Py_INCREF(type);
    Py_XSETREF(hit_type, (PyTypeObject *)type);
    Py_RETURN_NONE;
}

/* The Hits type (a list subclass) and its two slot descriptors (partial, plan), from setup_hits(). */
static PyTypeObject *hits_type = NULL;
static PyObject *hits_slots[2];

static PyObject *setup_hits(PyObject *self, PyObject *args) {
    PyObject *type, *names;
    if (!PyArg_ParseTuple(args, "O!O!", &PyType_Type, &type, &PyTuple_Type, &names)) return NULL;
    if (!PyType_IsSubtype((PyTypeObject *)type, &PyList_Type) || PyTuple_GET_SIZE(names) != 2) {
        PyErr_SetString(PyExc_TypeError, "setup_hits expects a list subclass and its 2 slot names");
        return NULL;
    }
    PyObject *dict = ((PyTypeObject *)type)->tp_dict;
    for (int i = 0; i < 2; i++) {
        PyObject *d = PyDict_GetItemWithError(dict, PyTuple_GET_ITEM(names, i));
        if (d == NULL || Py_TYPE(d)->tp_descr_set == NULL) {
            if (!PyErr_Occurred())
                PyErr_Format(PyExc_TypeError, "%R has no slot %R", type, PyTuple_GET_ITEM(names, i));
            return NULL;
        }
        Py_INCREF(d);
        Py_XSETREF(hits_slots[i], d);
    }
    Py_INCREF(type);
    Py_XSETREF(hits_type, (PyTypeObject *)type);
    Py_RETURN_NONE;
}

/* make_hits(items, partial, plan): Hits(items, partial=partial, plan=plan) without its Python
 * __init__ (a frame that costs ~6 us on a search's cold caches). */
static PyObject *make_hits(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "make_hits expects 3 arguments (items, partial, plan), got %zd", nargs);
        return NULL;
    }
    if (hits_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "embeddix_core._hits.setup_hits() was not called");
        return NULL;
    }
    if (!PyList_Check(args[0])) {
        PyErr_Format(PyExc_TypeError, "make_hits: items must be a list, got %s", Py_TYPE(args[0])->tp_name);
        return NULL;
    }
    /* a zeroed list object is a valid empty list (list.__new__ is the generic allocator too) */
    PyObject *out = hits_type->tp_alloc(hits_type, 0);
    if (out == NULL) return NULL;
    if (PyList_SetSlice(out, 0, 0, args[0]) < 0 ||
        Py_TYPE(hits_slots[0])->tp_descr_set(hits_slots[0], out, args[1]) < 0 ||
        Py_TYPE(hits_slots[1])->tp_descr_set(hits_slots[1], out, args[2]) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

/* numpy's ndarray type, np.empty and the float32 dtype, from setup_query(). */
static PyObject *ndarray_type = NULL, *np_empty = NULL, *f32_dtype = NULL;

static PyObject *setup_query(PyObject *self, PyObject *args) {
    PyObject *t, *e, *d;
    if (!PyArg_ParseTuple(args, "O!OO", &PyType_Type, &t, &e, &d)) return NULL;
    Py_INCREF(t);
    Py_XSETREF(ndarray_type, t);
    Py_INCREF(e);
    Py_XSETREF(np_empty, e);
    Py_INCREF(d);
    Py_XSETREF(f32_dtype, d);
    Py_RETURN_NONE;
}

/* prepare_query(vector, dim, normalize): prepared_query's usual case in one call, or None for the
 * Python path. The usual case is an exact ndarray, C-contiguous float32 of shape (dim,), finite and
 * not all zeros; the result is a new unit-length array when `normalize`, else `vector` itself.
 * Anything else gives None, and the Python path converts it or raises its typed error. */
static PyObject *prepare_query(PyObject *self, PyObject *const *args, Py_ssize_t nargs) {
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "prepare_query expects 3 arguments (vector, dim, normalize), got %zd",
                     nargs);
        return NULL;
    }
    if (ndarray_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "embeddix_core._hits.setup_query() was not called");
        return NULL;
    }
    PyObject *vector = args[0];
    if ((PyObject *)Py_TYPE(vector) != ndarray_type) Py_RETURN_NONE;
    Py_ssize_t dim = PyLong_AsSsize_t(args[1]);
    if (dim == -1 && PyErr_Occurred()) return NULL;
    int normalize = PyObject_IsTrue(args[2]);
    if (normalize < 0) return NULL;
    Py_buffer src;
    if (PyObject_GetBuffer(vector, &src, PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) {
        PyErr_Clear(); /* not contiguous (or no buffer): the Python path copies */
        Py_RETURN_NONE;
    }
    const char *fmt = src.format;
    int f32 = src.itemsize == 4 && fmt != NULL &&
              (strcmp(fmt, "f") == 0 || strcmp(fmt, "<f") == 0 || strcmp(fmt, "=f") == 0);
    if (!f32 || src.ndim != 1 || src.shape == NULL || src.shape[0] != dim) {
        PyBuffer_Release(&src);
        Py_RETURN_NONE;
    }
    const float *x = (const float *)src.buf;
    double sq = 0.0;
    for (Py_ssize_t i = 0; i < dim; i++) sq += (double)x[i] * (double)x[i];
    if (!(sq > 0.0 && isfinite(sq))) {
        PyBuffer_Release(&src); /* zeros, NaN or inf: the Python path accepts or raises */
        Py_RETURN_NONE;
    }
    if (!normalize) {
        PyBuffer_Release(&src);
        Py_INCREF(vector);
        return vector;
    }
    double scale = 1.0 / sqrt(sq);
    if (!(scale < 3.4028234663852886e38)) {
        PyBuffer_Release(&src); /* denormals: the Python path scales in float64 */
        Py_RETURN_NONE;
    }
    PyObject *shape = PyLong_FromSsize_t(dim);
    if (shape == NULL) {
        PyBuffer_Release(&src);
        return NULL;
    }
    PyObject *eargs[2] = {shape, f32_dtype};
    PyObject *out = PyObject_Vectorcall(np_empty, eargs, 2, NULL);
    Py_DECREF(shape);
    if (out == NULL) {
        PyBuffer_Release(&src);
        return NULL;
    }
    Py_buffer dst;
    if (PyObject_GetBuffer(out, &dst, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE) < 0 || dst.len != src.len) {
        if (!PyErr_Occurred()) {
            PyBuffer_Release(&dst);
            PyErr_SetString(PyExc_ValueError, "prepare_query: np.empty gave an array of another size");
        }
        PyBuffer_Release(&src);
        Py_DECREF(out);
        return NULL;
    }
    float s = (float)scale;
    float *y = (float *)dst.buf;
    for (Py_ssize_t i = 0; i < dim; i++) y[i] = x[i] * s;
    PyBuffer_Release(&dst);
    PyBuffer_Release(&src);
    return out;
}

/* The global offset of a label's row, or -1 (absent, or evicted: below `low`). */
static int64_t row_offset(PyObject *pages, long long label, int64_t low) {
    PyObject *key = PyLong_FromLongLong(label >> PAGE_BITS);
    if (key == NULL) return -2;
    PyObject *page = PyDict_GetItemWithError(pages, key);
    Py_DECREF(key);
    if (page == NULL) return PyErr_Occurred() ? -2 : -1;
    Py_buffer view;
    if (PyObject_GetBuffer(page, &view, PyBUF_SIMPLE) < 0) return -2;
    int64_t off = -1;
    if ((size_t)view.len >= sizeof(int64_t) << PAGE_BITS)
        memcpy(&off, (char *)view.buf + sizeof(int64_t) * (label & PAGE_MASK), sizeof(int64_t));
    PyBuffer_Release(&view);
    return off < low ? -1 : off;
}

static uint32_t u32(const unsigned char *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* One field of a row: None, or `chars` characters starting at character `start` of the row's text.
 * `data` is the encoded text; `ascii` says one byte per character (then no decode of the whole). */
static PyObject *field(const char *data, Py_ssize_t n, PyObject **text, int ascii, Py_ssize_t start,
                       uint32_t chars) {
    if (chars == NONE_LEN) Py_RETURN_NONE;
    if (ascii) return PyUnicode_DecodeUTF8(data + start, chars, "strict");
    if (*text == NULL && (*text = PyUnicode_DecodeUTF8(data, n, "strict")) == NULL) return NULL;
    return PyUnicode_Substring(*text, start, start + chars);
}

/* The id, document and metadata JSON of the row at global offset `off` (new references; the
 * document and metadata may be None). Returns 0, or -1 with an exception set. */
static int read_row(PyObject *chunks, int64_t off, long long size, long long first, PyObject **rid,
                    PyObject **doc, PyObject **meta) {
    *rid = *doc = *meta = NULL;
    PyObject *chunk = PyList_GET_ITEM(chunks, off / size - first);
    Py_ssize_t pos = (Py_ssize_t)(off % size);
    if (!PyByteArray_Check(chunk) || pos + 16 > PyByteArray_GET_SIZE(chunk)) {
        PyErr_SetString(PyExc_ValueError, "a row header runs past its chunk (or a chunk is no bytearray)");
        return -1;
    }
    const unsigned char *head = (const unsigned char *)PyByteArray_AS_STRING(chunk) + pos;
    uint32_t nbytes = u32(head), a = u32(head + 4), b = u32(head + 8), c = u32(head + 12);
    if (pos + 16 + (Py_ssize_t)nbytes > PyByteArray_GET_SIZE(chunk)) {
        PyErr_SetString(PyExc_ValueError, "a row runs past its chunk");
        return -1;
    }
    const char *data = (const char *)head + 16;
    Py_ssize_t chars = (Py_ssize_t)a + (b == NONE_LEN ? 0 : b) + (c == NONE_LEN ? 0 : c);
    int ascii = chars == (Py_ssize_t)nbytes;
    PyObject *text = NULL;
    if ((*rid = field(data, nbytes, &text, ascii, 0, a)) == NULL ||
        (*doc = field(data, nbytes, &text, ascii, a, b)) == NULL ||
        (*meta = field(data, nbytes, &text, ascii, a + (b == NONE_LEN ? 0 : b), c)) == NULL) {
        Py_XDECREF(text);
        Py_CLEAR(*rid);
        Py_CLEAR(*doc);
        return -1;
    }
    Py_XDECREF(text);
    return 0;
}

/* rows_to_hits(pages, chunks, first, chunk_size, labels, dists, l2, metric, loads, raw[, rank_scores])
 *
 * Hits for `labels` (with distances `dists`), in order, from the packed rows; None when any label's
 * row is not in the cache (the caller then takes the Python path, which reads the store). With `raw` a
 * list, (id, score, distance, document, metadata JSON) is appended per hit, as to_hits does; with
 * `rank_scores`, hit i gets rank_scores[i] as its rank_score (None otherwise). */
static PyObject *rows_to_hits(PyObject *self, PyObject *args) {
    PyObject *pages, *chunks, *labels, *dists, *metric, *loads, *raw, *ranks = Py_None;
    long long first, size;
    int l2;
    if (!PyArg_ParseTuple(args, "O!O!LLOOpUOO|O", &PyDict_Type, &pages, &PyList_Type, &chunks, &first, &size,
                          &labels, &dists, &l2, &metric, &loads, &raw, &ranks))
        return NULL;
    if (hit_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "embeddix_core._hits.setup() was not called");
        return NULL;
    }
    if (size <= 0) {
        PyErr_SetString(PyExc_ValueError, "chunk_size must be positive");
        return NULL;
    }
    if (raw != Py_None && !PyList_Check(raw)) {
        PyErr_SetString(PyExc_TypeError, "raw must be a list or None");
        return NULL;
    }
    PyObject *lab = PySequence_Fast(labels, "labels must be a sequence");
    if (lab == NULL) return NULL;
    PyObject *dis = PySequence_Fast(dists, "dists must be a sequence");
    if (dis == NULL) {
        Py_DECREF(lab);
        return NULL;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(lab);
    PyObject *out = NULL, *rk = NULL;
    int64_t offs_small[64];
    int64_t *offs = n <= 64 ? offs_small : PyMem_Malloc(sizeof(int64_t) * (size_t)n);
    if (offs == NULL) {
        PyErr_NoMemory();
        goto done;
    }
    if (PySequence_Fast_GET_SIZE(dis) < n) {
        PyErr_SetString(PyExc_ValueError, "fewer distances than labels");
        goto done;
    }
    if (ranks != Py_None) {
        if ((rk = PySequence_Fast(ranks, "rank_scores must be a sequence")) == NULL) goto done;
        if (PySequence_Fast_GET_SIZE(rk) < n) {
            PyErr_SetString(PyExc_ValueError, "fewer rank scores than labels");
            goto done;
        }
    }
    /* first pass: every row must be here, or nothing is built */
    int64_t low = first * size;
    Py_ssize_t nchunks = PyList_GET_SIZE(chunks);
    for (Py_ssize_t i = 0; i < n; i++) {
        long long label = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(lab, i));
        if (label == -1 && PyErr_Occurred()) goto done;
        if (label < 0) {
            PyErr_Format(PyExc_ValueError, "labels must be >= 0, got %lld", label);
            goto done;
        }
        int64_t off = row_offset(pages, label, low);
        if (off == -2) goto done;
        if (off < 0 || off / size - first >= nchunks) {
            out = Py_None;
            Py_INCREF(out);
            goto done;
        }
        offs[i] = off;
    }
    out = PyList_New(n);
    if (out == NULL) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *rid, *doc, *meta, *metadict = NULL, *hit = NULL, *score = NULL, *dist = NULL;
        if (read_row(chunks, offs[i], size, first, &rid, &doc, &meta) < 0) goto fail;
        if ((metadict = metadata_dict(meta, loads)) == NULL) goto row_fail;
        double d = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(dis, i));
        if (d == -1.0 && PyErr_Occurred()) goto row_fail;
        double s;
        if (l2) {
            d = pow(d, 0.5); /* as Python's d ** 0.5, to the last bit (sqrt may differ by an ulp) */
            s = 1.0 / (1.0 + d);
        } else {
            s = 1.0 - d;
        }
        if ((score = PyFloat_FromDouble(s)) == NULL || (dist = PyFloat_FromDouble(d)) == NULL) goto row_fail;
        PyObject *rank = rk == NULL ? Py_None : PySequence_Fast_GET_ITEM(rk, i);
        PyObject *values[N_SLOTS] = {rid, score, dist, doc, metadict, metric, Py_None, rank};
        if ((hit = new_hit(values)) == NULL) goto row_fail;
        if (raw != Py_None) {
            PyObject *entry = PyTuple_Pack(5, rid, score, dist, doc, meta);
            if (entry == NULL) goto row_fail;
            int r = PyList_Append(raw, entry);
            Py_DECREF(entry);
            if (r < 0) goto row_fail;
        }
        PyList_SET_ITEM(out, i, hit);
        hit = NULL;
    row_fail:
        Py_XDECREF(rid);
        Py_XDECREF(doc);
        Py_XDECREF(meta);
        Py_XDECREF(metadict);
        Py_XDECREF(score);
        Py_XDECREF(dist);
        if (hit != NULL || PyErr_Occurred()) {
            Py_XDECREF(hit);
            goto fail;
        }
    }
    goto done;
fail:
    Py_CLEAR(out);
done:
    if (offs != NULL && offs != offs_small) PyMem_Free(offs);
    Py_XDECREF(rk);
    Py_DECREF(lab);
    Py_DECREF(dis);
    return out;
}

/* rows_get(pages, chunks, first, chunk_size, labels, row_type) -> {label: row} or None
 *
 * RowCache.get's loop, compiled, for the case where every label's row is here (else None: the caller
 * takes the Python path, which reads the missing rows from the store). Each row is a `row_type`
 * (StoredRow, a NamedTuple: label, id, document, metadata JSON, vector None), made as tuple.__new__
 * makes a tuple subclass. */
static PyObject *rows_get(PyObject *self, PyObject *args) {
    PyObject *pages, *chunks, *labels, *row_type;
    long long first, size;
    if (!PyArg_ParseTuple(args, "O!O!LLOO!", &PyDict_Type, &pages, &PyList_Type, &chunks, &first, &size, &labels,
                          &PyType_Type, &row_type))
        return NULL;
    PyTypeObject *rt = (PyTypeObject *)row_type;
    if (!PyType_IsSubtype(rt, &PyTuple_Type) || size <= 0) {
        PyErr_SetString(PyExc_TypeError, "rows_get: row_type must be a tuple type and chunk_size positive");
        return NULL;
    }
    PyObject *lab = PySequence_Fast(labels, "labels must be a sequence");
    if (lab == NULL) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(lab);
    int64_t low = first * size;
    Py_ssize_t nchunks = PyList_GET_SIZE(chunks);
    PyObject *out = PyDict_New();
    if (out == NULL) goto done;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *label_obj = PySequence_Fast_GET_ITEM(lab, i);
        long long label = PyLong_AsLongLong(label_obj);
        if (label == -1 && PyErr_Occurred()) goto fail;
        if (label < 0) {
            PyErr_Format(PyExc_ValueError, "labels must be >= 0, got %lld", label);
            goto fail;
        }
        int64_t off = row_offset(pages, label, low);
        if (off == -2) goto fail;
        if (off < 0 || off / size - first >= nchunks) {
            Py_DECREF(out);
            out = Py_None;
            Py_INCREF(out);
            goto done;
        }
        PyObject *rid, *doc, *meta, *row;
        if (read_row(chunks, off, size, first, &rid, &doc, &meta) < 0) goto fail;
        if ((row = rt->tp_alloc(rt, 5)) == NULL) {
            Py_DECREF(rid);
            Py_DECREF(doc);
            Py_DECREF(meta);
            goto fail;
        }
        Py_INCREF(label_obj);
        PyTuple_SET_ITEM(row, 0, label_obj);
        PyTuple_SET_ITEM(row, 1, rid);
        PyTuple_SET_ITEM(row, 2, doc);
        PyTuple_SET_ITEM(row, 3, meta);
        Py_INCREF(Py_None);
        PyTuple_SET_ITEM(row, 4, Py_None);
        int r = PyDict_SetItem(out, label_obj, row);
        Py_DECREF(row);
        if (r < 0) goto fail;
    }
    goto done;
fail:
    Py_CLEAR(out);
done:
    Py_DECREF(lab);
    return out;
}

/* kept_to_hits(rows, metric, loads)
 *
 * Hits from a result-cache entry's rows, (id, score, distance, document, metadata JSON or None) each,
 * as cached_search.py builds them in Python: a fresh metadata dict per hit, so a caller may mutate
 * what it got without touching the cache. */
static PyObject *kept_to_hits(PyObject *self, PyObject *args) {
    PyObject *rows, *metric, *loads;
    if (!PyArg_ParseTuple(args, "O!UO", &PyList_Type, &rows, &metric, &loads)) return NULL;
    if (hit_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "embeddix_core._hits.setup() was not called");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(rows);
    PyObject *out = PyList_New(n);
    if (out == NULL) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *row = PyList_GET_ITEM(rows, i);
        if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != 5) {
            PyErr_SetString(PyExc_TypeError, "a kept row must be a 5-tuple");
            goto fail;
        }
        PyObject *metadict = metadata_dict(PyTuple_GET_ITEM(row, 4), loads);
        if (metadict == NULL) goto fail;
        PyObject *values[N_SLOTS] = {PyTuple_GET_ITEM(row, 0), PyTuple_GET_ITEM(row, 1), PyTuple_GET_ITEM(row, 2),
                                     PyTuple_GET_ITEM(row, 3), metadict, metric, Py_None, Py_None};
        PyObject *hit = new_hit(values);
        Py_DECREF(metadict);
        if (hit == NULL) goto fail;
        PyList_SET_ITEM(out, i, hit);
    }
    return out;
fail:
    Py_DECREF(out);
    return NULL;
}

/* field_sums(metadata, by_field, loads, decode_error, max_pairs, max_chars) -> (net, weight) or None
 *
 * ProfileState._sums_of (embeddix_core/personalize/model.py), compiled: the field preferences a
 * record's metadata JSON matches, summed, read off its own fields. None where the Python caller must
 * take its general path: JSON that does not parse (`decode_error`) or is no object, more than
 * `max_pairs` fields, or a list value. `by_field` is {field: {(tag, value): [net, weight]}} with tag
 * "b" (bool), "i" (int) or "s" (str of at most `max_chars` characters); other values match nothing. */
static PyObject *tag_b = NULL, *tag_i = NULL, *tag_s = NULL;

static PyObject *field_sums(PyObject *self, PyObject *args) {
    PyObject *text, *by, *loads, *decode_error;
    Py_ssize_t max_pairs, max_chars;
    if (!PyArg_ParseTuple(args, "OO!OOnn", &text, &PyDict_Type, &by, &loads, &decode_error, &max_pairs,
                          &max_chars))
        return NULL;
    if (tag_b == NULL && ((tag_b = PyUnicode_InternFromString("b")) == NULL ||
                          (tag_i = PyUnicode_InternFromString("i")) == NULL ||
                          (tag_s = PyUnicode_InternFromString("s")) == NULL))
        return NULL;
    PyObject *meta = PyObject_CallOneArg(loads, text);
    if (meta == NULL) {
        if (!PyErr_ExceptionMatches(decode_error)) return NULL;
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    double net = 0.0, wt = 0.0;
    int general = !PyDict_CheckExact(meta) || PyDict_GET_SIZE(meta) > max_pairs;
    Py_ssize_t pos = 0;
    PyObject *name, *v;
    while (!general && PyDict_Next(meta, &pos, &name, &v)) {
        if (PyList_CheckExact(v)) {
            general = 1;
            break;
        }
        PyObject *table = PyDict_GetItemWithError(by, name);
        if (table == NULL) {
            if (PyErr_Occurred()) goto fail;
            continue;
        }
        PyObject *tag;
        if (PyBool_Check(v))
            tag = tag_b;
        else if (PyLong_CheckExact(v))
            tag = tag_i;
        else if (PyUnicode_CheckExact(v) && PyUnicode_GET_LENGTH(v) <= max_chars)
            tag = tag_s;
        else
            continue;
        PyObject *key = PyTuple_Pack(2, tag, v);
        if (key == NULL) goto fail;
        PyObject *st = PyDict_Check(table) ? PyDict_GetItemWithError(table, key) : NULL;
        Py_DECREF(key);
        if (st == NULL) {
            if (PyErr_Occurred()) goto fail;
            continue;
        }
        PyObject *a = PySequence_GetItem(st, 0), *b = a == NULL ? NULL : PySequence_GetItem(st, 1);
        double x = a == NULL ? -1.0 : PyFloat_AsDouble(a), y = b == NULL ? -1.0 : PyFloat_AsDouble(b);
        Py_XDECREF(a);
        Py_XDECREF(b);
        if (PyErr_Occurred()) goto fail;
        net += x;
        wt += y;
    }
    Py_DECREF(meta);
    if (general) Py_RETURN_NONE;
    return Py_BuildValue("(dd)", net, wt);
fail:
    Py_DECREF(meta);
    return NULL;
}


static PyMethodDef methods[] = {
    {"field_sums", field_sums, METH_VARARGS,
     "field_sums(metadata, by_field, loads, decode_error, max_pairs, max_chars): (net, weight) of the "
     "field preferences a record's metadata matches, or None for the general path."},
    {"rows_get", rows_get, METH_VARARGS,
     "rows_get(pages, chunks, first, chunk_size, labels, row_type): {label: row} from the packed row cache, "
     "or None when a row is not cached."},
    {"kept_to_hits", kept_to_hits, METH_VARARGS,
     "kept_to_hits(rows, metric, loads): hits from a result-cache entry's (id, score, distance, document, "
     "metadata JSON) rows."},
    {"setup_query", setup_query, METH_VARARGS, "setup_query(ndarray, empty, float32): numpy's parts for prepare_query."},
    {"prepare_query", (PyCFunction)(void (*)(void))prepare_query, METH_FASTCALL,
     "prepare_query(vector, dim, normalize): the checked (and, with normalize, unit-length) query, or None "
     "for the Python path."},
    {"setup_hits", setup_hits, METH_VARARGS, "setup_hits(hits_type, slot_names): the Hits type and its 2 slots."},
    {"make_hits", (PyCFunction)(void (*)(void))make_hits, METH_FASTCALL,
     "make_hits(items, partial, plan): a Hits of the list items, without the Python __init__."},
    {"setup", setup, METH_VARARGS, "setup(hit_type, slot_names): the Hit type and its 8 slots, in order."},
    {"rows_to_hits", rows_to_hits, METH_VARARGS,
     "rows_to_hits(pages, chunks, first, chunk_size, labels, dists, l2, metric, loads, raw): hits from "
     "the packed row cache, or None when a row is not cached."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "embeddix_core._hits", "Hits from the packed row cache (see _hits.c).", -1, methods,
};

PyMODINIT_FUNC PyInit__hits(void) { return PyModule_Create(&module); }
