# cython: language_level=3, boundscheck=False, wraparound=False, initializedcheck=False
"""Compiled helpers of the ``redact`` filter (built by scripts/bootstrap with Cython).

``filters/redact.py`` keeps the same steps in Python (the reference, used
where this module is not built); ``tests/test_speedups.py`` compares them.
"""

from cpython.dict cimport PyDict_Next
from cpython.object cimport PyObject


def nested_objects(list batch):
    """The objects (dicts) one level inside the batch's events: each value that is
    an object, and each object in a value that is a list -- what ``by_field_name``
    walks below the top level. ``None`` when there is none (most batches)."""
    cdef list out = None
    cdef Py_ssize_t pos
    cdef PyObject *key
    cdef PyObject *value
    cdef object item, kind
    for event in batch:
        pos = 0
        while PyDict_Next(<dict?>event, &pos, &key, &value):
            kind = type(<object>value)
            if kind is dict:
                if out is None:
                    out = []
                out.append(<object>value)
            elif kind is list:
                for item in <list>value:
                    if type(item) is dict:
                        if out is None:
                            out = []
                        out.append(item)
    return out
