# Declarations of the C store in csrc/store.h, for tesenv._store and for
# other Cython code that wants to read records without Python in the way.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t


cdef extern from "store.h" nogil:
    enum:
        TES_NAME_MAX_CHARS
        TES_KEY_MAX_BYTES
        TES_PIN_SLOTS
        TES_RECORD_ALIGN_BYTES
        TES_FLAG_ALLOW_PICKLE

    enum tes_code:
        TES_OK
        TES_ENOENT
        TES_EEXIST
        TES_ENOTSTORE
        TES_ELAYOUT
        TES_ETRUNC
        TES_EOWNER
        TES_ENOSPC
        TES_EFULL
        TES_EKEYS
        TES_EREADERS
        TES_EPINS
        TES_ENOKEY
        TES_EKEY
        TES_EINVAL
        TES_ECORRUPT
        TES_ETIMEOUT
        TES_ESYS

    ctypedef struct tes_error:
        int code
        int sys_errno
        char message[256]

    ctypedef struct tes_store:
        pass

    ctypedef uint64_t tes_version_word

    ctypedef struct tes_create_options:
        uint64_t size_bytes
        uint32_t max_keys
        uint32_t max_readers
        uint32_t mode
        uint32_t flags

    ctypedef struct tes_record:
        const uint8_t *payload
        uint64_t payload_bytes
        uint64_t version
        uint64_t block_offset

    ctypedef struct tes_stats:
        uint64_t size_bytes
        uint64_t heap_bytes
        uint64_t live_bytes
        uint64_t retired_bytes
        uint64_t free_bytes
        uint64_t largest_free_bytes
        uint64_t generation
        uint64_t publish_count
        uint64_t reclaim_count
        uint64_t repair_count
        uint32_t key_count
        uint32_t max_keys
        uint32_t reader_count
        uint32_t max_readers
        int32_t creator_pid
        uint32_t flags

    ctypedef struct tes_probe:
        int is_store
        int creator_alive
        int32_t creator_pid
        uint64_t size_bytes

    int tes_store_create(const char *name, const tes_create_options *options,
                         tes_store **out, tes_error *err)
    int tes_store_attach(const char *name, tes_store **out, tes_error *err)
    void tes_store_close(tes_store *store)
    int tes_store_unlink(const char *name, tes_error *err)
    int tes_store_probe(const char *name, tes_probe *out, tes_error *err)
    int tes_store_check_name(const char *name, tes_error *err)
    int tes_process_alive(int32_t pid)
    const uint8_t *tes_store_base(const tes_store *store)
    uint64_t tes_store_size(const tes_store *store)
    uint32_t tes_store_flags(const tes_store *store)
    int32_t tes_store_creator_pid(const tes_store *store)
    int tes_store_lookup(const tes_store *store, const char *key,
                         size_t key_bytes, uint32_t *slot, tes_error *err)
    const tes_version_word *tes_store_version_word(const tes_store *store,
                                                   uint32_t slot)
    uint64_t tes_version_load(const tes_version_word *word)
    int tes_store_publish(tes_store *store, const char *key, size_t key_bytes,
                          const void *payload, size_t payload_bytes,
                          uint64_t *version, tes_error *err)
    int tes_store_delete(tes_store *store, const char *key, size_t key_bytes,
                         uint64_t *version, tes_error *err)
    int tes_store_read_begin(tes_store *store, uint32_t slot,
                             tes_record *out, tes_error *err)
    void tes_store_read_end(tes_store *store)
    int tes_store_fork_prepare(tes_store *store)
    void tes_store_fork_parent(tes_store *store)
    int tes_store_fork_child(tes_store *store, tes_error *err)
    int tes_store_pin(tes_store *store, uint64_t block_offset)
    void tes_store_unpin(tes_store *store, uint64_t block_offset)
    int tes_store_wait(tes_store *store, uint32_t slot, uint64_t after_version,
                       int64_t timeout_ns, uint64_t *version)
    int tes_store_region(tes_store *store, const char *name, size_t name_bytes,
                         uint64_t region_bytes, uint64_t *offset, int *created,
                         tes_error *err)
    int tes_store_find_region(const tes_store *store, const char *name,
                              size_t name_bytes, uint64_t *offset,
                              uint64_t *region_bytes, tes_error *err)
    int tes_store_slot_key(const tes_store *store, uint32_t i, char *key_out,
                           size_t *key_bytes, uint64_t *version)
    uint32_t tes_store_slot_count(const tes_store *store)
    int tes_store_stats(tes_store *store, tes_stats *out, tes_error *err)
    uint64_t tes_store_reclaim(tes_store *store)


cdef class _Mapping:
    """Owns one attachment; unmapped when the last view of it is gone."""
    cdef tes_store *st
    cdef readonly str name
    cdef object __weakref__


cdef class _Entry:
    """What one process cached of one key."""
    cdef uint32_t slot
    cdef const tes_version_word *word
    cdef uint64_t version
    cdef object value


cdef class Store:
    cdef _Mapping _mapping
    cdef tes_store *_st
    cdef dict _cache
    cdef readonly str name
    cdef bint _owner
    cdef bint _unlinked
    cdef int _owner_pid
    cdef bint _allow_pickle
    cdef object __weakref__

    cdef int _check_open(self) except -1
    cdef _Entry _entry(self, str key)
    cdef int _find_slot(self, bytes key_bytes, uint32_t *slot) except -1
    cdef _Entry _refresh(self, str key, _Entry entry)
    cdef object _lookup(self, str key, object default)

    @staticmethod
    cdef Store _wrap(tes_store *st, str name)


cdef class Handle:
    cdef Store _store
    cdef readonly str key
    cdef _Entry _e

    cdef object _slow(self)
