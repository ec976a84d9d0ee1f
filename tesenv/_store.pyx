# cython: freethreading_compatible = False
"""The shared-memory store: codec, Store, Handle and the default store.

Values are encoded in a data-only format (see the tags below), published as
immutable records by the C core in csrc/store.c, and decoded once per version
per process.  Reading an unchanged key costs one dict lookup and one atomic
load of the key's version word.
"""

import atexit
import os
import pickle
import sys
import threading
import time
import weakref

import numpy as np

cimport cython
from cpython.buffer cimport PyBuffer_FillInfo
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.dict cimport PyDict_GetItem
from cpython.exc cimport PyErr_CheckSignals
from cpython.object cimport PyObject
from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy, memset, strlen

from tesenv.frozen import FrozenDict, FrozenList

__all__ = [
    "Store", "Handle", "StoreError", "StoreNotFoundError", "StoreFullError",
    "CorruptStoreError", "get_environment_data", "set_environment_data",
    "delete_environment_data", "default_store", "use_store",
    "remove_orphaned_stores", "list_stores",
]

DEFAULT_SIZE_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_KEYS = 4096
DEFAULT_MAX_READERS = 128
MAX_KEY_BYTES = TES_KEY_MAX_BYTES
MAX_NAME_CHARS = TES_NAME_MAX_CHARS
MAX_NESTING = 100
ENV_VAR = "TESENV_STORE"
DEFAULT_NAME_PREFIX = "tesenv-"
SHM_DIR = "/dev/shm"


# --------------------------------------------------------------------------
# Errors: one table from C codes to exception classes.

class StoreError(Exception):
    """A store could not do what was asked."""


class StoreNotFoundError(StoreError, FileNotFoundError):
    """No store of that name exists."""


class StoreFullError(StoreError):
    """The store has no room left; nothing stored was changed."""


class CorruptStoreError(StoreError):
    """The segment's bytes fail validation: foreign, damaged or scribbled."""


_ERRORS = {
    TES_ENOENT: StoreNotFoundError,
    TES_EEXIST: FileExistsError,
    TES_ENOTSTORE: CorruptStoreError,
    TES_ELAYOUT: CorruptStoreError,
    TES_ETRUNC: CorruptStoreError,
    TES_EOWNER: PermissionError,
    TES_ENOSPC: StoreFullError,
    TES_EFULL: StoreFullError,
    TES_EKEYS: StoreFullError,
    TES_EREADERS: StoreFullError,
    TES_ENOKEY: KeyError,
    TES_EKEY: ValueError,
    TES_EINVAL: ValueError,
    TES_ECORRUPT: CorruptStoreError,
    TES_ETIMEOUT: TimeoutError,
    TES_ESYS: OSError,
}


cdef int _raise(const tes_error *err) except -1:
    cls = _ERRORS.get(err.code, StoreError)
    message = PyUnicode_DecodeUTF8(err.message, strlen(err.message),
                                   "replace")
    if cls is OSError:
        raise OSError(err.sys_errno, message)
    raise cls(message)


# --------------------------------------------------------------------------
# The codec.  A payload is one value; every length is a little-endian u64
# and every array's data starts on a 64-byte boundary of the payload, which
# is itself 64-byte aligned in the segment.

cdef enum:
    TAG_NONE = 0
    TAG_FALSE = 1
    TAG_TRUE = 2
    TAG_INT = 3        # 8 bytes, signed
    TAG_BIGINT = 4     # u64 length, signed little-endian bytes
    TAG_FLOAT = 5      # 8 bytes, IEEE double
    TAG_STR = 6        # u64 length, UTF-8
    TAG_BYTES = 7      # u64 length, bytes
    TAG_LIST = 8       # u64 count, items
    TAG_TUPLE = 9      # u64 count, items
    TAG_DICT = 10      # u64 count, key then value
    TAG_ARRAY = 11     # u8 dtype length, dtype str, u8 ndim, u64 shape...,
                       # u64 data bytes, padding, data
    TAG_SPLINE = 12    # a dict of metadata, then a dict of arrays
    TAG_PICKLE = 13    # u64 length, pickle bytes (opt-in stores only)

_TAG_NAMES = {
    TAG_NONE: "None", TAG_FALSE: "bool", TAG_TRUE: "bool", TAG_INT: "int",
    TAG_BIGINT: "int", TAG_FLOAT: "float", TAG_STR: "str",
    TAG_BYTES: "bytes", TAG_LIST: "list", TAG_TUPLE: "tuple",
    TAG_DICT: "dict", TAG_ARRAY: "ndarray", TAG_SPLINE: "Spline",
    TAG_PICKLE: "pickle",
}

cdef int ARRAY_ALIGN = TES_RECORD_ALIGN_BYTES
_ARRAY_KINDS = frozenset("biufc")
_KEY_TYPES = (str, int, float, bytes, bool, type(None))

cdef object _spline_type = None


cdef object _get_spline_type():
    global _spline_type
    if _spline_type is None:
        from tesenv._spline import Spline
        _spline_type = Spline
    return _spline_type


class _EncodeError(Exception):
    """Carries the path to the offending part of a value while unwinding."""

    def __init__(self, message, exc_type):
        self.message = message
        self.exc_type = exc_type
        self.path = []


@cython.final
cdef class _Writer:
    cdef uint8_t *buf
    cdef size_t size
    cdef size_t cap
    cdef bint allow_pickle

    def __dealloc__(self):
        free(self.buf)

    cdef int reserve(self, size_t extra) except -1:
        cdef size_t want = self.size + extra
        cdef size_t cap = self.cap if self.cap else 256
        cdef uint8_t *grown
        if want <= self.cap:
            return 0
        while cap < want:
            cap *= 2
        grown = <uint8_t *>realloc(self.buf, cap)
        if grown == NULL:
            raise MemoryError(f"cannot encode a value of {want} bytes")
        self.buf = grown
        self.cap = cap
        return 0

    cdef int put(self, const void *data, size_t n) except -1:
        self.reserve(n)
        memcpy(self.buf + self.size, data, n)
        self.size += n
        return 0

    cdef int put_u8(self, uint8_t v) except -1:
        self.reserve(1)
        self.buf[self.size] = v
        self.size += 1
        return 0

    cdef int put_u64(self, uint64_t v) except -1:
        return self.put(&v, 8)

    cdef int pad(self) except -1:
        cdef size_t n = (ARRAY_ALIGN - self.size % ARRAY_ALIGN) % ARRAY_ALIGN
        self.reserve(n)
        memset(self.buf + self.size, 0, n)
        self.size += n
        return 0

    cdef int put_blob(self, uint8_t tag, bytes data) except -1:
        self.put_u8(tag)
        self.put_u64(<uint64_t>PyBytes_GET_SIZE(data))
        self.put(PyBytes_AS_STRING(data), <size_t>PyBytes_GET_SIZE(data))
        return 0


cdef int _encode_array(_Writer w, object arr) except -1:
    cdef const uint8_t[::1] raw
    if isinstance(arr, np.ma.MaskedArray):
        raise _EncodeError("masked arrays are not supported; store "
                           "arr.filled() and the mask separately", TypeError)
    if arr.dtype.kind not in _ARRAY_KINDS or arr.dtype.fields is not None:
        raise _EncodeError(f"arrays of dtype {arr.dtype} are not supported; "
                           f"use a numeric or bool dtype", TypeError)
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    # ascontiguousarray would turn a 0-d array into a 1-d one.
    arr = np.array(arr, order="C", copy=not arr.flags.c_contiguous,
                   subok=False)
    if arr.ndim > 32:
        raise _EncodeError("arrays of more than 32 dimensions are not "
                           "supported", TypeError)
    dtype = arr.dtype.str.encode("ascii")
    w.put_u8(TAG_ARRAY)
    w.put_u8(<uint8_t>len(dtype))
    w.put(<const char *>dtype, len(dtype))
    w.put_u8(<uint8_t>arr.ndim)
    for n in arr.shape:
        w.put_u64(<uint64_t>n)
    w.put_u64(<uint64_t>arr.nbytes)
    w.pad()
    if arr.nbytes:
        raw = arr.reshape(-1).view(np.uint8)
        w.put(&raw[0], <size_t>arr.nbytes)
    return 0


cdef int _encode(_Writer w, object v, int depth) except -1:
    cdef int64_t small
    if depth > MAX_NESTING:
        raise _EncodeError(f"nests deeper than {MAX_NESTING} levels "
                           f"(a container that holds itself?)", ValueError)
    if v is None:
        return w.put_u8(TAG_NONE)
    if v is True or v is False or isinstance(v, np.bool_):
        return w.put_u8(TAG_TRUE if v else TAG_FALSE)
    if isinstance(v, (int, np.integer)):
        v = int(v)
        if -(2 ** 63) <= v < 2 ** 63:
            small = v
            w.put_u8(TAG_INT)
            return w.put(&small, 8)
        return w.put_blob(TAG_BIGINT, v.to_bytes(
            (v.bit_length() + 8) // 8, "little", signed=True))
    if isinstance(v, (float, np.floating)):
        d = <double>float(v)
        w.put_u8(TAG_FLOAT)
        return w.put(&d, 8)
    if isinstance(v, str):
        return w.put_blob(TAG_STR, (<str>v).encode("utf-8", "surrogatepass"))
    if isinstance(v, (bytes, bytearray)):
        return w.put_blob(TAG_BYTES, bytes(v))
    if isinstance(v, (list, tuple)):
        # One pass over the items decides both the count and what is
        # written, whatever a subclass's __len__ says.
        items = list(v)
        w.put_u8(TAG_TUPLE if isinstance(v, tuple) else TAG_LIST)
        w.put_u64(len(items))
        for i, item in enumerate(items):
            try:
                _encode(w, item, depth + 1)
            except _EncodeError as e:
                e.path.insert(0, f"[{i}]")
                raise
        return 0
    if isinstance(v, dict):
        pairs = list(dict.items(v))
        w.put_u8(TAG_DICT)
        w.put_u64(len(pairs))
        for k, item in pairs:
            if not isinstance(k, _KEY_TYPES):
                e = _EncodeError(f"dict key of type {type(k).__name__} is "
                                 f"not supported; use str, int, float, "
                                 f"bytes, bool or None", TypeError)
                raise e
            _encode(w, k, depth + 1)
            try:
                _encode(w, item, depth + 1)
            except _EncodeError as e:
                e.path.insert(0, f"[{k!r}]")
                raise
        return 0
    if isinstance(v, np.ndarray):
        return _encode_array(w, v)
    # No Spline can exist before its module is imported.
    spline_module = sys.modules.get("tesenv._spline")
    if spline_module is not None and isinstance(v, spline_module.Spline):
        meta, arrays = v._store_parts()
        w.put_u8(TAG_SPLINE)
        _encode(w, meta, depth + 1)
        return _encode(w, arrays, depth + 1)
    if w.allow_pickle:
        return w.put_blob(TAG_PICKLE, pickle.dumps(v, protocol=5))
    raise _EncodeError(f"{type(v).__name__} is not supported", TypeError)


cdef _Writer _encode_value(object value, bint allow_pickle):
    """Encodes value, raising TypeError that names where a bad part sits."""
    cdef _Writer w = _Writer()
    w.allow_pickle = allow_pickle
    try:
        _encode(w, value, 0)
    except _EncodeError as e:
        path = "".join(e.path)
        raise e.exc_type(f"value{path}: {e.message}") from None
    return w


@cython.final
cdef class _Pin:
    """Keeps one record from being reclaimed while views of it exist.

    Exposes the record's payload as a read-only buffer; numpy arrays made
    from it hold the pin, and the pin holds the mapping.
    """
    cdef _Mapping mapping
    cdef uint64_t block_offset
    cdef const uint8_t *payload
    cdef Py_ssize_t payload_bytes

    def __getbuffer__(self, Py_buffer *view, int flags):
        PyBuffer_FillInfo(view, self, <void *>self.payload,
                          self.payload_bytes, 1, flags)

    def __dealloc__(self):
        # A pin inherited through fork belongs to the parent's reader slot;
        # the child copied it into its own, which this one then releases.
        if self.mapping is not None and self.mapping.st != NULL:
            tes_store_unpin(self.mapping.st, self.block_offset)


@cython.final
cdef class _Reader:
    cdef const uint8_t *p
    cdef uint64_t n
    cdef uint64_t pos
    cdef _Mapping mapping
    cdef uint64_t block_offset
    cdef object pin            # the _Pin, made at the first array
    cdef bint copy_arrays      # pin table full: arrays are copied
    cdef bint allow_pickle

    cdef const uint8_t *take(self, uint64_t k) except NULL:
        cdef const uint8_t *at
        if k > self.n - self.pos:
            raise CorruptStoreError(
                f"record is damaged: {k} bytes wanted at offset {self.pos} of "
                f"a {self.n}-byte payload")
        at = self.p + self.pos
        self.pos += k
        return at

    cdef uint64_t u64(self) except? 0xFFFFFFFFFFFFFFFF:
        cdef uint64_t v
        memcpy(&v, self.take(8), 8)
        return v

    cdef uint64_t count(self, uint64_t min_item_bytes) except? 0xFFFFFFFFFFFFFFFF:
        # A count can never exceed what the rest of the payload could hold,
        # so hostile counts cannot make us allocate without bound.
        cdef uint64_t c = self.u64()
        if c > (self.n - self.pos) // min_item_bytes:
            raise CorruptStoreError(f"record is damaged: count {c} exceeds "
                                    f"the payload")
        return c

    cdef object pin_object(self):
        cdef _Pin pin
        if self.pin is None and not self.copy_arrays:
            if tes_store_pin(self.mapping.st, self.block_offset) != TES_OK:
                self.copy_arrays = True
                return None
            pin = _Pin.__new__(_Pin)
            pin.mapping = self.mapping
            pin.block_offset = self.block_offset
            pin.payload = self.p
            pin.payload_bytes = <Py_ssize_t>self.n
            self.pin = pin
        return self.pin


cdef object _decode_array(_Reader r):
    cdef uint64_t dtype_len = r.take(1)[0]
    cdef bytes dtype_str = (<const char *>r.take(dtype_len))[:dtype_len]
    cdef uint64_t ndim = r.take(1)[0]
    cdef uint64_t nbytes, start
    try:
        dtype = np.dtype(dtype_str.decode("ascii"))
    except (TypeError, ValueError, UnicodeDecodeError):
        raise CorruptStoreError(f"record is damaged: bad dtype {dtype_str!r}")
    if dtype.kind not in _ARRAY_KINDS or dtype.itemsize == 0 or ndim > 32:
        raise CorruptStoreError(f"record is damaged: bad array header")
    shape = tuple([r.u64() for _ in range(ndim)])
    nbytes = r.u64()
    count = 1
    for n in shape:
        count *= n
    if count * dtype.itemsize != nbytes:
        raise CorruptStoreError("record is damaged: array shape and size "
                                "disagree")
    r.take((ARRAY_ALIGN - r.pos % ARRAY_ALIGN) % ARRAY_ALIGN)
    start = r.pos
    r.take(nbytes)
    pin = r.pin_object()
    if pin is None:
        data = (<const char *>(r.p + start))[:nbytes]
        arr = np.frombuffer(data, dtype=dtype, count=count).reshape(shape)
    else:
        arr = np.frombuffer(pin, dtype=dtype, count=count,
                            offset=start).reshape(shape)
    return arr


cdef object _decode(_Reader r, int depth):
    cdef uint8_t tag
    cdef uint64_t n, i
    cdef int64_t small
    cdef double d
    if depth > MAX_NESTING + 2:
        raise CorruptStoreError("record is damaged: nested too deeply")
    tag = r.take(1)[0]
    if tag == TAG_NONE:
        return None
    if tag == TAG_FALSE:
        return False
    if tag == TAG_TRUE:
        return True
    if tag == TAG_INT:
        memcpy(&small, r.take(8), 8)
        return small
    if tag == TAG_FLOAT:
        memcpy(&d, r.take(8), 8)
        return d
    if tag == TAG_STR:
        n = r.u64()
        try:
            return PyUnicode_DecodeUTF8(<const char *>r.take(n), n,
                                        "surrogatepass")
        except UnicodeDecodeError:
            raise CorruptStoreError("record is damaged: invalid UTF-8")
    if tag == TAG_BYTES:
        n = r.u64()
        return (<const char *>r.take(n))[:n]
    if tag == TAG_BIGINT:
        n = r.u64()
        return int.from_bytes((<const char *>r.take(n))[:n], "little",
                              signed=True)
    if tag == TAG_LIST or tag == TAG_TUPLE:
        n = r.count(1)
        items = [_decode(r, depth + 1) for i in range(n)]
        return tuple(items) if tag == TAG_TUPLE else FrozenList(items)
    if tag == TAG_DICT:
        n = r.count(2)
        out = {}
        for i in range(n):
            k = _decode(r, depth + 1)
            try:
                out[k] = _decode(r, depth + 1)
            except TypeError:
                raise CorruptStoreError("record is damaged: unhashable key")
        return FrozenDict(out)
    if tag == TAG_ARRAY:
        return _decode_array(r)
    if tag == TAG_SPLINE:
        meta = _decode(r, depth + 1)
        arrays = _decode(r, depth + 1)
        if not isinstance(meta, dict) or not isinstance(arrays, dict):
            raise CorruptStoreError("record is damaged: bad spline parts")
        try:
            return _get_spline_type()._from_store_parts(dict(meta),
                                                        dict(arrays))
        except (TypeError, ValueError) as e:
            raise CorruptStoreError(f"record is damaged: {e}") from None
    if tag == TAG_PICKLE:
        if not r.allow_pickle:
            raise CorruptStoreError("record holds pickled data but the store "
                                    "was not created with allow_pickle=True")
        n = r.u64()
        return pickle.loads((<const char *>r.take(n))[:n])
    raise CorruptStoreError(f"record is damaged: unknown tag {tag}")


# --------------------------------------------------------------------------
# Attachments and the per-process cache.

@cython.final
cdef class _Mapping:
    def __dealloc__(self):
        tes_store_close(self.st)
        self.st = NULL


@cython.final
cdef class _Entry:
    pass


cdef object _MISSING = object()
cdef object _owned = weakref.WeakSet()
cdef object _mappings = weakref.WeakSet()


# A forked child inherits every view its parent holds.  Before the fork the
# parent fills a spare reader slot with its pins; the child takes it over as
# it starts, so those records stay pinned whatever the parent does next.

cdef enum:
    FORK_PREPARE = 0
    FORK_PARENT = 1
    FORK_CHILD = 2


cdef int _fork_step(int step) except -1:
    cdef tes_error err
    cdef _Mapping m
    for obj in list(_mappings):
        m = <_Mapping>obj
        if m.st == NULL:
            continue
        if step == FORK_PREPARE:
            tes_store_fork_prepare(m.st)
        elif step == FORK_PARENT:
            tes_store_fork_parent(m.st)
        else:
            tes_store_fork_child(m.st, &err)
    return 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=lambda: _fork_step(FORK_PREPARE),
                        after_in_parent=lambda: _fork_step(FORK_PARENT),
                        after_in_child=lambda: _fork_step(FORK_CHILD))

_lock = threading.RLock()


cdef bytes _key_bytes(object key):
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, got {type(key).__name__}")
    try:
        b = (<str>key).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError(f"key {key!r} holds a lone surrogate; keys must be "
                         f"text that UTF-8 can encode") from None
    if len(b) == 0:
        raise ValueError("key must not be empty")
    if len(b) > MAX_KEY_BYTES:
        raise ValueError(f"key is {len(b)} bytes in UTF-8; the limit is "
                         f"{MAX_KEY_BYTES}")
    return b


cdef bytes _name_bytes(object name):
    cdef tes_error err
    if not isinstance(name, str):
        raise TypeError(f"store name must be a str, got "
                        f"{type(name).__name__}")
    b = (<str>name).encode("utf-8", "surrogatepass")
    if b"\0" in b:
        raise ValueError("store name must not contain NUL characters")
    if tes_store_check_name(b, &err) != TES_OK:
        _raise(&err)
    return b


cdef class Store:
    """A keyed configuration store in one shared-memory segment.

    Create one with ``Store.create()`` or attach with ``Store.attach(name)``.
    It behaves as a read-mostly mapping from str keys to values; every
    process attached to the same name sees the same keys.  Reads never wait
    for writers.  The creating process removes the segment on ``close()`` or
    at exit; attaching processes never do.

    One Store may be shared by the threads of a process: reads run under
    the GIL, and a publish or wait that releases it keeps the mapping alive
    until it returns, even if another thread closes the store meanwhile.
    """

    def __init__(self, *args, **kwargs):
        raise TypeError("use Store.create() or Store.attach(name)")

    @staticmethod
    def create(name=None, *, size=DEFAULT_SIZE_BYTES,
               max_keys=DEFAULT_MAX_KEYS, max_readers=DEFAULT_MAX_READERS,
               mode=0o600, allow_pickle=False):
        """Creates a new store and returns it, attached.

        ``name`` defaults to a fresh random name.  ``size`` is the whole
        segment in bytes, allocated at once so that a full /dev/shm fails
        here and not later.  ``mode`` gives the permission bits.
        ``allow_pickle`` lets values of other types be stored pickled; only
        turn it on when every process that can write the segment is trusted.
        """
        cdef tes_create_options opts
        cdef tes_error err
        cdef tes_store *st = NULL
        cdef const char *cname
        cdef int rc
        if name is None:
            name = f"tesenv-{os.urandom(6).hex()}"
        bname = _name_bytes(name)
        for arg, value in (("size", size), ("max_keys", max_keys),
                           ("max_readers", max_readers), ("mode", mode)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{arg} must be an int, got "
                                f"{type(value).__name__}")
            if value < 0:
                raise ValueError(f"{arg} must not be negative, got {value}")
        if not isinstance(allow_pickle, bool):
            raise TypeError(f"allow_pickle must be True or False, got "
                            f"{allow_pickle!r}")
        for arg, value, limit in (("size", size, 2**62),
                                  ("max_keys", max_keys, 2**24),
                                  ("max_readers", max_readers, 65536)):
            if value > limit:
                raise ValueError(f"{arg} must be at most {limit}, got "
                                 f"{value}")
        if mode > 0o777:
            raise ValueError(f"mode must be permission bits (0 to 0o777), "
                             f"got {mode:#o}")
        memset(&opts, 0, sizeof(opts))
        opts.size_bytes = size
        opts.max_keys = max_keys
        opts.max_readers = max_readers
        opts.mode = mode
        opts.flags = TES_FLAG_ALLOW_PICKLE if allow_pickle else 0
        cname = bname
        with nogil:
            rc = tes_store_create(cname, &opts, &st, &err)
        if rc != TES_OK:
            _raise(&err)
        store = Store._wrap(st, name)
        store._owner = True
        store._owner_pid = os.getpid()
        _owned.add(store)
        _watch_exit()
        return store

    @staticmethod
    def attach(name):
        """Attaches to an existing store.

        Raises StoreNotFoundError if there is none of that name,
        CorruptStoreError if the segment is not a tesenv store of this
        layout (or is truncated), PermissionError if another user owns it.
        """
        cdef tes_error err
        cdef tes_store *st = NULL
        cdef const char *cname
        cdef int rc
        bname = _name_bytes(name)
        cname = bname
        with nogil:
            rc = tes_store_attach(cname, &st, &err)
        if rc != TES_OK:
            _raise(&err)
        return Store._wrap(st, name)

    @staticmethod
    cdef Store _wrap(tes_store *st, str name):
        cdef Store store = Store.__new__(Store)
        cdef _Mapping mapping = _Mapping.__new__(_Mapping)
        mapping.st = st
        mapping.name = name
        _mappings.add(mapping)
        store._mapping = mapping
        store._st = st
        store._cache = {}
        store.name = name
        store._allow_pickle = bool(tes_store_flags(st) & TES_FLAG_ALLOW_PICKLE)
        return store

    cdef int _check_open(self) except -1:
        if self._st == NULL:
            raise ValueError(f"store {self.name} is closed")
        return 0

    # ---- lifecycle -------------------------------------------------------

    @property
    def closed(self):
        return self._st == NULL

    @property
    def owner(self):
        """True in the process that created the segment."""
        return self._owner and self._owner_pid == os.getpid()

    @property
    def allow_pickle(self):
        return self._allow_pickle

    @property
    def creator_pid(self):
        """The pid of the process that created the segment."""
        self._check_open()
        return tes_store_creator_pid(self._st)

    def close(self):
        """Detaches.  The creator also removes the segment.

        Values already read stay valid: their arrays keep the mapping alive
        until they are gone.  Closing twice is harmless.
        """
        if self._st == NULL:
            return
        if self._owner and self._owner_pid == os.getpid():
            self.unlink()
        self._st = NULL
        self._cache = {}
        self._mapping = None
        _owned.discard(self)
        global _default
        if _default is self:
            _default = None

    def unlink(self):
        """Removes the segment's name now; attached processes keep working
        until they close.  Raises StoreNotFoundError if it is gone already.
        """
        cdef tes_error err
        if self._unlinked:
            return
        if tes_store_unlink(self.name.encode(), &err) != TES_OK:
            if err.code == TES_ENOENT and self._owner:
                self._unlinked = True
                return
            _raise(&err)
        # The name may be taken by a new store from now on: never unlink
        # it again from here.
        self._unlinked = True

    def __dealloc__(self):
        cdef tes_error err
        if self._st != NULL and self._owner and not self._unlinked and \
                self._owner_pid == os.getpid():
            tes_store_unlink(self.name.encode(), &err)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "closed" if self._st == NULL else (
            "owner" if self.owner else "attached")
        return f"<tesenv.Store {self.name!r} {state}>"

    def __reduce__(self):
        # Pickling a store passes its name: the receiver attaches.
        return (Store.attach, (self.name,))

    # ---- reading ---------------------------------------------------------

    cdef _Entry _entry(self, str key):
        cdef PyObject *p = PyDict_GetItem(self._cache, key)
        if p == NULL:
            return None
        return <_Entry>p

    cdef int _find_slot(self, bytes key_bytes, uint32_t *slot) except -1:
        """Sets *slot and returns 1 if the key was ever published, else 0."""
        cdef tes_error err
        cdef int rc = tes_store_lookup(self._st, key_bytes, len(key_bytes),
                                       slot, &err)
        if rc == TES_ENOKEY:
            return 0
        if rc != TES_OK:
            _raise(&err)
        return 1

    cdef _Entry _refresh(self, str key, _Entry entry):
        """Decodes the key's current record into the cache.  Returns None
        if the key was never published."""
        cdef tes_error err
        cdef tes_record rec
        cdef uint32_t slot
        cdef int rc
        cdef _Reader r
        self._check_open()
        if entry is None:
            if not self._find_slot(_key_bytes(key), &slot):
                return None
            entry = _Entry.__new__(_Entry)
            entry.slot = slot
            entry.word = tes_store_version_word(self._st, slot)
        rc = tes_store_read_begin(self._st, entry.slot, &rec, &err)
        try:
            if rc == TES_OK:
                r = _Reader.__new__(_Reader)
                r.p = rec.payload
                r.n = rec.payload_bytes
                r.mapping = self._mapping
                r.block_offset = rec.block_offset
                r.allow_pickle = self._allow_pickle
                value = _decode(r, 0)
                if r.pos != r.n:
                    raise CorruptStoreError("record is damaged: trailing "
                                            "bytes")
            elif rc == TES_ENOKEY:
                value = _MISSING
            else:
                _raise(&err)
        finally:
            tes_store_read_end(self._st)
        entry.version = rec.version
        entry.value = value
        self._cache[key] = entry
        return entry

    cdef object _lookup(self, str key, object default):
        """The slow path of get: refresh, then answer."""
        cdef _Entry e = self._entry(key)
        if e is None or tes_version_load(e.word) != e.version:
            e = self._refresh(key, e)
        if e is None or e.value is _MISSING:
            return default
        return e.value

    def get(self, key, default=None):
        """The key's current value, or default if it has none."""
        return _get(self, key, default)

    def __getitem__(self, key):
        value = self.get(key, _MISSING)
        if value is _MISSING:
            raise KeyError(key)
        return value

    def __contains__(self, key):
        return self.get(key, _MISSING) is not _MISSING

    def version(self, key):
        """The key's current version without decoding its value: 0 if it
        was never published.  Versions only grow; a delete is a version."""
        cdef uint32_t slot
        cdef _Entry e
        self._check_open()
        e = self._entry(key) if isinstance(key, str) else None
        if e is not None:
            return tes_version_load(e.word)
        if not self._find_slot(_key_bytes(key), &slot):
            return 0
        return tes_version_load(tes_store_version_word(self._st, slot))

    def wait(self, key, after_version, timeout=None):
        """Blocks until key has a version newer than after_version, or
        timeout seconds pass, and returns the key's version then.

        On timeout the returned version is not newer than after_version.
        The wait sleeps in the kernel; a key not yet published is polled
        every millisecond until it appears.
        """
        cdef uint32_t slot
        cdef uint64_t version = 0
        cdef uint64_t after
        cdef int64_t chunk_ns
        cdef int rc
        cdef _Mapping mapping
        self._check_open()
        kb = _key_bytes(key)
        if not isinstance(after_version, int) or isinstance(after_version,
                                                            bool):
            raise TypeError(f"after_version must be an int, got "
                            f"{type(after_version).__name__}")
        if not 0 <= after_version < 2**64:
            raise ValueError(f"after_version must be 0 to 2**64-1, got "
                             f"{after_version}")
        after = after_version
        if timeout is not None:
            if not isinstance(timeout, (int, float)) or isinstance(timeout,
                                                                   bool):
                raise TypeError(f"timeout must be a number of seconds or "
                                f"None, got {type(timeout).__name__}")
            if not timeout >= 0:
                raise ValueError(f"timeout must be >= 0 seconds, got "
                                 f"{timeout}")
            if timeout == float("inf"):
                timeout = None
        deadline = None if timeout is None else time.monotonic() + timeout

        while not self._find_slot(kb, &slot):
            if deadline is not None and time.monotonic() >= deadline:
                return 0
            time.sleep(0.001)

        # Sleep in slices so that Ctrl-C and signals are seen.
        while True:
            left = 0.1 if deadline is None else min(
                0.1, max(0.0, deadline - time.monotonic()))
            chunk_ns = <int64_t>(left * 1e9)
            self._check_open()
            mapping = self._mapping
            with nogil:
                rc = tes_store_wait(mapping.st, slot, after, chunk_ns,
                                    &version)
            if rc == TES_OK:
                return version
            PyErr_CheckSignals()
            if deadline is not None and time.monotonic() >= deadline:
                return version

    def handle(self, key):
        """An object bound to key whose ``.value`` is the cheapest read."""
        return Handle(self, key)

    def keys(self):
        """The keys that have a value now, in table order."""
        cdef char buf[TES_KEY_MAX_BYTES + 1]
        cdef size_t n = 0
        cdef uint64_t version
        cdef uint32_t i
        self._check_open()
        out = []
        for i in range(tes_store_slot_count(self._st)):
            if tes_store_slot_key(self._st, i, buf, &n, &version):
                try:
                    out.append(buf[:n].decode("utf-8", "surrogatepass"))
                except UnicodeDecodeError:
                    raise CorruptStoreError(f"key slot {i} is damaged")
        return out

    def __iter__(self):
        return iter(self.keys())

    def __len__(self):
        return len(self.keys())

    def items(self):
        out = []
        for k in self.keys():
            v = self.get(k, _MISSING)
            if v is not _MISSING:
                out.append((k, v))
        return out

    def values(self):
        return [v for _, v in self.items()]

    def describe(self):
        """One dict per key: key, version, type and payload bytes, read
        without keeping the value."""
        cdef tes_error err
        cdef tes_record rec
        cdef uint32_t slot
        cdef int rc
        self._check_open()
        out = []
        for k in self.keys():
            if not self._find_slot(_key_bytes(k), &slot):
                continue
            rc = tes_store_read_begin(self._st, slot, &rec, &err)
            try:
                if rc == TES_ENOKEY:
                    continue
                if rc != TES_OK:
                    _raise(&err)
                kind = _TAG_NAMES.get(rec.payload[0] if rec.payload_bytes
                                      else 255, "?")
                if kind == "ndarray":
                    kind = self._array_type(k, kind)
                out.append({"key": k, "version": rec.version, "type": kind,
                            "bytes": rec.payload_bytes})
            finally:
                tes_store_read_end(self._st)
        return out

    def _array_type(self, key, kind):
        value = self.get(key)
        if isinstance(value, np.ndarray):
            return f"ndarray[{value.dtype}, {value.shape}]"
        return kind

    def info(self):
        """Sizes, space in use and attached readers, as a dict."""
        cdef tes_stats s
        cdef tes_error err
        cdef _Mapping mapping
        self._check_open()
        mapping = self._mapping
        with nogil:
            rc = tes_store_stats(mapping.st, &s, &err)
        if rc != TES_OK:
            _raise(&err)
        return {
            "name": self.name, "size_bytes": s.size_bytes,
            "heap_bytes": s.heap_bytes, "live_bytes": s.live_bytes,
            "retired_bytes": s.retired_bytes, "free_bytes": s.free_bytes,
            "largest_free_bytes": s.largest_free_bytes,
            "generation": s.generation, "publish_count": s.publish_count,
            "reclaim_count": s.reclaim_count,
            "repair_count": s.repair_count, "key_count": s.key_count,
            "max_keys": s.max_keys, "reader_count": s.reader_count,
            "max_readers": s.max_readers, "creator_pid": s.creator_pid,
            "allow_pickle": bool(s.flags & TES_FLAG_ALLOW_PICKLE),
        }

    def reclaim(self):
        """Frees superseded records that no reader holds; returns bytes."""
        self._check_open()
        return tes_store_reclaim(self._st)

    # ---- writing ---------------------------------------------------------

    def set(self, key, value):
        """Publishes value under key and returns the new version.

        Raises TypeError naming the part of value that cannot be stored,
        StoreFullError if there is no room.  On any error the key keeps its
        previous value.
        """
        cdef tes_error err
        cdef uint64_t version = 0
        cdef _Writer w
        cdef int rc
        cdef const char *kp
        cdef size_t kn
        cdef _Mapping mapping
        self._check_open()
        kb = _key_bytes(key)
        w = _encode_value(value, self._allow_pickle)
        kp = kb
        kn = len(kb)
        # Held so that a close() from another thread cannot unmap the
        # segment while the publish runs without the GIL.
        mapping = self._mapping
        with nogil:
            rc = tes_store_publish(mapping.st, kp, kn, w.buf, w.size,
                                   &version, &err)
        if rc != TES_OK:
            _raise(&err)
        return version

    def __setitem__(self, key, value):
        self.set(key, value)

    def delete(self, key):
        """Removes key's value and returns the new version; KeyError if it
        has none."""
        cdef tes_error err
        cdef uint64_t version = 0
        cdef int rc
        self._check_open()
        kb = _key_bytes(key)
        rc = tes_store_delete(self._st, kb, len(kb), &version, &err)
        if rc == TES_ENOKEY:
            raise KeyError(key)
        if rc != TES_OK:
            _raise(&err)
        return version

    def __delitem__(self, key):
        self.delete(key)

    # ---- shared regions and introspection ---------------------------------

    def region(self, name, size=None, *, create=True):
        """A writable uint8 array over a named region that every attached
        process shares: made zeroed on first use with size bytes, found by
        name after that, never reclaimed while the store exists.

        With create=False an existing region is returned (size, if given,
        must not exceed it) and KeyError raised if there is none.
        """
        cdef tes_error err
        cdef uint64_t offset = 0
        cdef uint64_t found_bytes = 0
        cdef int created = 0
        cdef int rc
        self._check_open()
        nb = _key_bytes(name)
        if size is not None and (not isinstance(size, int) or
                                 isinstance(size, bool) or
                                 not 0 < size < 2**62):
            raise ValueError(f"region size must be a positive int below "
                             f"2**62, got {size!r}")
        if not create:
            rc = tes_store_find_region(self._st, nb, len(nb), &offset,
                                       &found_bytes, &err)
            if rc == TES_ENOKEY:
                raise KeyError(name)
            if rc != TES_OK:
                _raise(&err)
            if size is not None and size > found_bytes:
                raise ValueError(f"region {name!r} has {found_bytes} bytes, "
                                 f"fewer than the {size} asked for")
            size = found_bytes if size is None else size
        else:
            if size is None:
                raise ValueError("a region to create needs a size")
            if tes_store_region(self._st, nb, len(nb), size, &offset,
                                &created, &err) != TES_OK:
                _raise(&err)
        whole = np.frombuffer(_SegmentView.of(self._mapping, True), np.uint8)
        return whole[offset:offset + size]

    def _segment_array(self):
        """The whole segment as a read-only uint8 array, for tests that
        check where values live."""
        self._check_open()
        return np.frombuffer(_SegmentView.of(self._mapping, False), np.uint8)


cdef inline object _get(Store s, object key, object default):
    """The read every get goes through.  An unchanged key costs one dict
    lookup, one acquire load of its version word and a compare; anything
    else (a new version, an unknown or invalid key) takes the slow path."""
    cdef PyObject *p = PyDict_GetItem(s._cache, key)
    cdef _Entry e
    if p != NULL:
        e = <_Entry>p
        if tes_version_load(e.word) == e.version:
            return default if e.value is _MISSING else e.value
    if not isinstance(key, str):
        _key_bytes(key)
    return s._lookup(key, default)


@cython.final
cdef class _SegmentView:
    """A buffer over a whole segment that keeps its mapping alive."""
    cdef _Mapping mapping
    cdef bint writable

    @staticmethod
    cdef _SegmentView of(_Mapping mapping, bint writable):
        cdef _SegmentView v = _SegmentView.__new__(_SegmentView)
        v.mapping = mapping
        v.writable = writable
        return v

    def __getbuffer__(self, Py_buffer *view, int flags):
        PyBuffer_FillInfo(view, self, <void *>tes_store_base(self.mapping.st),
                          <Py_ssize_t>tes_store_size(self.mapping.st),
                          not self.writable, flags)


cdef class Handle:
    """One key of one store, bound for hot loops.

    ``handle.value`` costs one atomic load and a compare while the key is
    unchanged; ``handle.version`` is the key's current version.  Raises
    KeyError from ``.value`` while the key has no value.
    """

    def __init__(self, Store store not None, key):
        store._check_open()
        _key_bytes(key)
        self._store = store
        self.key = key
        self._e = None

    @property
    def value(self):
        cdef _Entry e = self._e
        if e is not None and self._store._st != NULL and \
                tes_version_load(e.word) == e.version and \
                e.value is not _MISSING:
            return e.value
        return self._slow()

    cdef object _slow(self):
        self._store._check_open()
        value = self._store._lookup(self.key, _MISSING)
        self._e = self._store._entry(self.key)
        if value is _MISSING:
            raise KeyError(self.key)
        return value

    def get(self, default=None):
        try:
            return self.value
        except KeyError:
            return default

    @property
    def version(self):
        if self._e is not None and self._store._st != NULL:
            return tes_version_load(self._e.word)
        return self._store.version(self.key)

    def wait(self, after_version, timeout=None):
        return self._store.wait(self.key, after_version, timeout)

    def __repr__(self):
        return f"<tesenv.Handle {self.key!r} of {self._store.name!r}>"


# --------------------------------------------------------------------------
# The default store: created by the first publish in a process that has
# none, and found by every descendant, however it was started.

cdef Store _default = None
cdef double _next_discovery = 0.0
DISCOVERY_RETRY_SECONDS = 0.05


def _ancestor_pids(limit=64):
    """This process's ancestors, nearest first."""
    pid = os.getppid()
    seen = 0
    while pid > 1 and seen < limit:
        yield pid
        seen += 1
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            pid = int(stat[stat.rindex(b")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            return


def default_name(pid=None):
    """The name of the default store a process with this pid creates."""
    return f"{DEFAULT_NAME_PREFIX}{os.getpid() if pid is None else pid}"


cdef Store _discover():
    """Finds the default store of this process or an ancestor, or None."""
    name = os.environ.get(ENV_VAR)
    if name:
        try:
            return Store.attach(name)
        except (StoreNotFoundError, CorruptStoreError, PermissionError,
                ValueError):
            pass
    for pid in _ancestor_pids():
        name = default_name(pid)
        if sys.platform.startswith("linux") and \
                not os.path.exists(os.path.join(SHM_DIR, name)):
            continue
        try:
            store = Store.attach(name)
        except (StoreError, PermissionError, FileExistsError, OSError):
            continue
        if store.creator_pid == pid:
            return store
        store.close()
    return None


cdef Store _find_default():
    global _default, _next_discovery
    if _default is not None:
        return _default
    with _lock:
        if _default is None and time.monotonic() >= _next_discovery:
            _default = _discover()
            if _default is None:
                _next_discovery = time.monotonic() + DISCOVERY_RETRY_SECONDS
            else:
                os.environ[ENV_VAR] = _default.name
        return _default


def default_store(create=False):
    """The store that the module-level functions use in this process.

    Found through the TESENV_STORE environment variable or an ancestor
    process's default store; with create=True one is made if none exists.
    Returns None if there is none and create is false.
    """
    global _default
    store = _find_default()
    if store is None and create:
        with _lock:
            if _default is None:
                _default = _create_default()
                os.environ[ENV_VAR] = _default.name
            store = _default
    return store


cdef Store _create_default():
    name = default_name()
    try:
        return Store.create(name)
    except FileExistsError:
        pass
    # A process that had this pid before us died and left its store: it
    # is ours to replace.  A live creator's store is never touched.
    entry = _probe(name)
    if entry is not None and not entry["creator_alive"]:
        try:
            Store.attach(name).unlink()
        except (StoreError, OSError):
            pass
        return Store.create(name)
    raise FileExistsError(f"a segment named {name} exists and its creator "
                          f"is alive; remove it or use_store() another")


def use_store(store):
    """Makes store the default of this process and of the processes it
    starts from now on; None forgets the current default."""
    global _default
    if store is not None and not isinstance(store, Store):
        raise TypeError(f"use_store() takes a Store, got "
                        f"{type(store).__name__}")
    with _lock:
        _default = store
        if store is None:
            os.environ.pop(ENV_VAR, None)
        else:
            os.environ[ENV_VAR] = store.name


def get_environment_data(key, default=None):
    """The value published under key, or default.

    Costs about a dict lookup while the key is unchanged; the first read
    after a publish decodes the new value once for the whole process.
    """
    cdef Store s = _default
    if s is None:
        s = _find_default()
        if s is None:
            _key_bytes(key)
            return default
    return _get(s, key, default)


def set_environment_data(key, value):
    """Publishes value under key in the default store, creating the store if
    this process and its ancestors have none.  Returns the new version."""
    return default_store(create=True).set(key, value)


def delete_environment_data(key):
    """Removes key from the default store.  KeyError if it has no value."""
    store = _find_default()
    if store is None:
        _key_bytes(key)
        raise KeyError(key)
    return store.delete(key)


# --------------------------------------------------------------------------
# Segments left behind.

def process_alive(pid):
    """True if a process with this pid exists and is not a zombie (one that
    has ended and only waits for its exit status to be read)."""
    if not isinstance(pid, int) or not 0 < pid < 2**31:
        return False
    return bool(tes_process_alive(pid))


cdef dict _probe(str name):
    """What the header of the segment called name says, read without
    attaching: None if it is no tesenv store (or cannot be read)."""
    cdef tes_probe probe
    cdef tes_error err
    bname = name.encode("utf-8", "surrogateescape")
    if tes_store_check_name(bname, &err) != TES_OK or \
            tes_store_probe(bname, &probe, &err) != TES_OK or \
            not probe.is_store:
        return None
    return {"name": name, "size_bytes": probe.size_bytes,
            "creator_pid": probe.creator_pid,
            "creator_alive": bool(probe.creator_alive)}


def list_stores():
    """Every tesenv segment on this machine: name, size, creator pid, and
    whether that creator is alive.  Linux only (it lists /dev/shm)."""
    try:
        names = sorted(os.listdir(SHM_DIR))
    except OSError:
        return []
    return [e for e in map(_probe, names) if e is not None]


def remove_orphaned_stores():
    """Removes every tesenv segment whose creator is dead; returns their
    names.  Processes still attached keep their mappings."""
    cdef tes_error err
    removed = []
    for entry in list_stores():
        if not entry["creator_alive"]:
            if tes_store_unlink(entry["name"].encode(), &err) == TES_OK:
                removed.append(entry["name"])
    return removed


@atexit.register
def _remove_owned_at_exit():
    for store in list(_owned):
        try:
            store.close()
        except Exception:
            pass


cdef int _exit_watch_pid = 0


cdef _watch_exit():
    """Makes sure stores created here are removed when this process ends.

    multiprocessing children leave through os._exit, which skips atexit but
    runs multiprocessing's own finalizers first.
    """
    global _exit_watch_pid
    if _exit_watch_pid == os.getpid():
        return
    _exit_watch_pid = os.getpid()
    import multiprocessing.util
    multiprocessing.util.Finalize(None, _remove_owned_at_exit,
                                  exitpriority=-100)
