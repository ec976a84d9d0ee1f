# Declarations for the worker registry's shared counters: the slot layout,
# the atomic word operations, and the Telemetry writer other Cython code can
# cimport.  The protocol is described at the top of _telemetry.pyx.

from libc.stdint cimport uint64_t


cdef extern from *:
    """
    #include <stdint.h>
    #include <time.h>

    /* Every word in a registry region is 8-byte aligned (the region is
     * 64-byte aligned and slots are whole cache lines), so these are plain
     * loads and stores on x86-64 and arm64; the builtins make them atomic
     * for the compiler too, which then neither tears nor caches them. */
    _Static_assert(__atomic_always_lock_free(sizeof(uint64_t), 0),
                   "64-bit atomics must be lock-free for shared memory");

    static inline uint64_t tt_load_relaxed(const uint64_t *p)
    { return __atomic_load_n(p, __ATOMIC_RELAXED); }

    static inline uint64_t tt_load_acquire(const uint64_t *p)
    { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

    static inline void tt_store_relaxed(uint64_t *p, uint64_t v)
    { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

    static inline void tt_store_release(uint64_t *p, uint64_t v)
    { __atomic_store_n(p, v, __ATOMIC_RELEASE); }

    static inline int tt_cas_acq_rel(uint64_t *p, uint64_t expected,
                                     uint64_t desired)
    {
        return __atomic_compare_exchange_n(p, &expected, desired, 0,
                                           __ATOMIC_ACQ_REL,
                                           __ATOMIC_ACQUIRE);
    }

    static inline void tt_fence_release(void)
    { __atomic_thread_fence(__ATOMIC_RELEASE); }

    static inline void tt_fence_acquire(void)
    { __atomic_thread_fence(__ATOMIC_ACQUIRE); }

    /* clock_gettime on these clocks is served by the vDSO on Linux: no
     * system call.  CLOCK_MONOTONIC is what time.perf_counter_ns() and
     * time.monotonic_ns() read there. */
    static inline uint64_t tt_wall_ns(void)
    {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    }

    static inline uint64_t tt_mono_ns(void)
    {
        struct timespec ts;
        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    }

    /* floor(log2(ns)), with 0 and 1 in bucket 0 and the last bucket
     * catching everything longer. */
    static inline unsigned tt_bucket(uint64_t ns, unsigned bucket_count)
    {
        unsigned b = ns > 1 ? 63u - (unsigned)__builtin_clzll(ns) : 0u;
        return b < bucket_count ? b : bucket_count - 1u;
    }
    """
    uint64_t tt_load_relaxed(const uint64_t *p) nogil
    uint64_t tt_load_acquire(const uint64_t *p) nogil
    void tt_store_relaxed(uint64_t *p, uint64_t v) nogil
    void tt_store_release(uint64_t *p, uint64_t v) nogil
    bint tt_cas_acq_rel(uint64_t *p, uint64_t expected,
                        uint64_t desired) nogil
    void tt_fence_release() nogil
    void tt_fence_acquire() nogil
    uint64_t tt_wall_ns() nogil
    uint64_t tt_mono_ns() nogil
    unsigned tt_bucket(uint64_t ns, unsigned bucket_count) nogil


# The region's geometry, in 64-bit words.  Changing any of these changes
# LAYOUT_WORD, so processes built from different layouts refuse each other.
cdef enum:
    TT_HEADER_WORDS = 8
    TT_SLOT_COUNT = 128
    TT_JOB_TYPES = 8
    TT_BUCKETS = 44
    TT_ID_WORDS = 8            # 64 bytes of UTF-8
    TT_NAME_WORDS = 4          # 32 bytes of UTF-8 per job type name

    # Word offsets inside a slot.
    TT_OWNER = 0               # claim token; 0 = never claimed
    TT_SEQ = 1                 # identity sequence: odd while rewritten
    TT_PID = 2
    TT_KIND = 3
    TT_START_NS = 4            # wall clock
    TT_GENERATION = 5          # claims of this slot so far
    TT_STATE = 6
    TT_JOBS = 8
    TT_ERRORS = 9
    TT_HEARTBEAT_NS = 10       # wall clock
    TT_CONFIG_VERSION = 11
    TT_JOB_TYPE_COUNT = 12
    TT_ID = 16
    TT_NAMES = 24              # TT_JOB_TYPES names of TT_NAME_WORDS
    TT_STATS = 56              # TT_JOB_TYPES blocks of TT_STAT_WORDS

    # Word offsets inside one job type's block of statistics.
    TT_STAT_COUNT = 0
    TT_STAT_SUM_NS = 1
    TT_STAT_MAX_NS = 2
    TT_STAT_BUCKETS = 4
    TT_STAT_WORDS = 48         # 4 + TT_BUCKETS

    TT_SLOT_WORDS = 440        # TT_STATS + TT_JOB_TYPES * TT_STAT_WORDS


cdef class Telemetry:
    cdef uint64_t *slot_words
    cdef readonly object region     # keeps the shared mapping alive
    cdef readonly int slot
    cdef readonly str worker_id
    cdef list _job_types

    cdef int _check(self) except -1


cdef class JobType:
    cdef uint64_t *slot_words
    cdef uint64_t *stats
    cdef readonly Telemetry telemetry
    cdef readonly int index
    cdef readonly str name
