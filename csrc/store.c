/*
 * store.c - the shared-memory record store.  The protocol is described in
 * store.h; this file keeps to it.  Public names are tes_store_*, internal
 * ones tes__*.
 */
#define _GNU_SOURCE
#include "store.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
#include <unistd.h>

#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

/* Robust mutexes tell the next locker that the owner died.  glibc has them
 * (as an enum, so there is no macro to test); macOS does not. */
#if defined(__GLIBC__) || defined(__FreeBSD__)
#define TES__HAVE_ROBUST_MUTEX 1
#else
#define TES__HAVE_ROBUST_MUTEX 0
#endif

_Static_assert(ATOMIC_LLONG_LOCK_FREE == 2, "64-bit atomics must be lock-free");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "32-bit atomics must be lock-free");

/* ------------------------------------------------------------------------
 * Layout.  Every struct here lives in shared memory: fixed-width fields,
 * explicit padding, sizes checked at compile time.
 */

#define TES__MAGIC UINT64_C(0x31764E4553455423) /* "#TESENv1" */
#define TES__HEADER_BYTES 4096u
#define TES__SLOT_BYTES 256u
#define TES__BLOCK_HEADER_BYTES 64u
#define TES__MIN_SPLIT_BYTES 256u
#define TES__MIN_HEAP_BYTES 65536u
#define TES__RECLAIM_EVERY_PUBLISHES 4096u

/* How long a publish waits for readers caught mid-read to let go of space
 * before it reports the store full, and its first pause. */
#define TES__FULL_PATIENCE_NS 500000000
#define TES__FULL_FIRST_NAP_NS 20000
#define TES__LOCK_PATIENCE_S 30

/* A forked child takes over its hand-over slot as it starts; one left
 * longer than this belonged to a child that died first. */
#define TES__HANDOFF_PATIENCE_NS INT64_C(2000000000)
#define TES__MAX_PENDING_HANDOFFS 8
#define TES__OWNER_RELEASING UINT64_C(0xFFFFFFFF) /* pid -1: no one */

/* What tes__alloc returns when its walk meets a block that cannot be. */
#define TES__HEAP_DAMAGED (UINT64_MAX - 1)

/* Block states.  Distinct bit patterns so that stray bytes rarely pass. */
#define TES__BLOCK_FREE 0x46524545u    /* "FREE" */
#define TES__BLOCK_WRITING 0x57524954u /* "WRIT" */
#define TES__BLOCK_LIVE 0x4C495645u    /* "LIVE" */
#define TES__BLOCK_RETIRED 0x52455449u /* "RETI" */
#define TES__BLOCK_REGION 0x52454749u  /* "REGI" */

/* Key slot states. */
#define TES__SLOT_EMPTY 0u
#define TES__SLOT_KEY 1u
#define TES__SLOT_REGION 2u

typedef struct tes__header {
    uint64_t magic;
    uint32_t layout;
    uint32_t flags;
    uint64_t size_bytes;
    uint32_t slot_count;
    uint32_t reader_count;
    uint64_t readers_offset;
    uint64_t slots_offset;
    uint64_t heap_offset;
    uint64_t heap_bytes;
    int32_t creator_pid;
    uint32_t creator_uid;
    uint64_t creator_start;
    uint64_t created_ns;
    uint32_t max_keys;        /* as asked at creation */
    uint32_t pad0;
    uint8_t pad0b[32];

    /* offset 128: writers only */
    union {
        pthread_mutex_t mutex;
        uint8_t mutex_bytes[64];
    } writer;
    uint64_t rover;           /* next-fit position, relative to the heap */
    uint64_t publish_count;
    uint64_t reclaim_count;
    uint64_t repair_count;    /* writers found dead holding the mutex */
    uint64_t keys_used;       /* key slots taken, deleted keys included */
    uint8_t pad1[24];

    /* offset 256: read by everyone, on its own cache line */
    _Atomic uint64_t generation;
    uint8_t pad2[56];

    /* offset 320: waiters registered in tes_store_wait */
    _Atomic uint32_t waiter_count;
    uint8_t pad3[60];
} tes__header;

_Static_assert(sizeof(pthread_mutex_t) <= 64, "mutex must fit its field");
_Static_assert(offsetof(tes__header, writer) == 128, "header layout");
_Static_assert(offsetof(tes__header, generation) == 256, "header layout");
_Static_assert(sizeof(tes__header) == 384, "header layout");
_Static_assert(sizeof(tes__header) <= TES__HEADER_BYTES, "header fits");

typedef struct tes__pin {
    _Atomic uint64_t block_offset;  /* 0: empty */
    uint64_t count;                 /* owner process only */
} tes__pin;

/* A reader slot's owner is one word, so that who holds it and since when
 * change together: the pid in the low 32 bits, the low 32 bits of the
 * process's start time (to tell a reused pid apart) above.  0: free. */
typedef struct tes__reader {
    _Atomic uint64_t owner;
    uint64_t pad0;
    _Atomic uint64_t active;        /* announced generation, 0: idle */
    uint8_t pad1[40];
    tes__pin pins[TES_PIN_SLOTS];
} tes__reader;

_Static_assert(offsetof(tes__reader, pins) == 64, "reader layout");
_Static_assert(sizeof(tes__reader) % 64 == 0, "reader slots are lines");

typedef struct tes__slot {
    tes_version_word version;       /* 0: never published */
    _Atomic uint64_t block;         /* heap-relative offset, 0: no value */
    _Atomic uint32_t state;         /* TES__SLOT_* */
    _Atomic uint32_t wake;          /* futex word, bumped per publish */
    uint64_t hash;
    uint32_t key_bytes;
    uint32_t pad0;
    char key[TES_KEY_MAX_BYTES];
} tes__slot;

_Static_assert(sizeof(tes__slot) == TES__SLOT_BYTES, "slot layout");

typedef struct tes__block {
    _Atomic uint32_t state;
    uint32_t slot;
    _Atomic uint64_t size_bytes;    /* whole block, multiple of 64 */
    uint64_t version;
    uint64_t retired_generation;
    uint64_t payload_bytes;
    uint64_t checksum;              /* of key and payload */
    uint32_t key_bytes;
    uint32_t pad0;
    uint64_t pad1;
} tes__block;

_Static_assert(sizeof(tes__block) == TES__BLOCK_HEADER_BYTES, "block layout");

/* A format word derived from the sizes of what lives in shared memory, so a
 * build with another layout refuses the segment instead of misreading it. */
#define TES__LAYOUT                                                    \
    ((uint32_t)(0x0100u ^ (sizeof(tes__header) << 20)                  \
                ^ (sizeof(tes__reader) << 8) ^ (sizeof(tes__slot) << 4) \
                ^ sizeof(tes__block) ^ (sizeof(pthread_mutex_t) << 26)))

struct tes_store {
    uint8_t *base;
    uint64_t size_bytes;
    tes__header *header;
    tes__reader *readers;
    tes__slot *slots;
    uint8_t *heap;
    int32_t reader_pid;         /* process that owns reader_index */
    uint64_t reader_owner;      /* its owner word */
    uint32_t reader_index;      /* UINT32_MAX: none */

    /* Copies of the header's geometry, validated at attach: every bound
     * is checked against these, never against bytes others can rewrite. */
    uint64_t heap_bytes;
    uint32_t slot_count;
    uint32_t reader_count;
    uint32_t max_keys;
    uint32_t read_depth;        /* nested reads keep the outer announcement */

    /* Reader slots filled with our pins for a child about to be forked,
     * kept until the child takes them over or is seen not to. */
    uint32_t handoff_index;     /* UINT32_MAX: no fork under way */
    int fork_pinned;            /* we held pins when the fork began */
    uint32_t pending_count;
    struct {
        uint32_t index;
        uint64_t since_ns;
    } pending[TES__MAX_PENDING_HANDOFFS];
};

/* ------------------------------------------------------------------------
 * Small helpers.
 */

static int tes__fail(tes_error *err, int code, int sys_errno,
                     const char *fmt, ...)
{
    if (err) {
        va_list ap;
        err->code = code;
        err->sys_errno = sys_errno;
        va_start(ap, fmt);
        vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
    }
    return code;
}

static uint64_t tes__round_up(uint64_t n, uint64_t align)
{
    return (n + align - 1) / align * align;
}

static uint64_t tes__now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* FNV-1a over the key: slot hashing, not integrity. */
static uint64_t tes__key_hash(const char *key, size_t n)
{
    uint64_t h = UINT64_C(0xcbf29ce484222325);
    for (size_t i = 0; i < n; i++) {
        h ^= (uint8_t)key[i];
        h *= UINT64_C(0x100000001b3);
    }
    return h ? h : 1;
}

static uint64_t tes__mix(uint64_t h)
{
    h ^= h >> 33;
    h *= UINT64_C(0xff51afd7ed558ccd);
    h ^= h >> 33;
    h *= UINT64_C(0xc4ceb9fe1a85ec53);
    h ^= h >> 33;
    return h;
}

/* Integrity checksum of a record: four independent multiply lanes so it
 * runs near memory speed.  Detects scribbles, not adversaries. */
static uint64_t tes__checksum(const uint8_t *p, uint64_t n, uint64_t seed)
{
    const uint64_t k = UINT64_C(0x9E3779B97F4A7C15);
    uint64_t a = seed ^ n, b = ~seed, c = seed * k, d = n * k;
    uint64_t i = 0, w[4];

    for (; i + 32 <= n; i += 32) {
        memcpy(w, p + i, 32);
        a = (a ^ w[0]) * k;
        b = (b ^ w[1]) * k;
        c = (c ^ w[2]) * k;
        d = (d ^ w[3]) * k;
        a ^= a >> 29;
        b ^= b >> 29;
        c ^= c >> 29;
        d ^= d >> 29;
    }
    for (; i < n; i++)
        a = (a ^ p[i]) * k;
    return tes__mix(a ^ tes__mix(b) ^ tes__mix(c + 1) ^ tes__mix(d + 2));
}

/* Reads a process's state letter and start time (clock ticks since boot)
 * from /proc.  With the pid, the start time names a process even after the
 * pid is reused.  Returns 0 and leaves *state 0 if they cannot be read. */
static uint64_t tes__process_stat(int32_t pid, char *state)
{
    *state = 0;
#ifdef __linux__
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return 0;
    buf[n] = '\0';

    /* The command name may hold spaces and parentheses: count fields from
     * the last ")".  Field 3 is the state; field 22, the start time, is the
     * 20th token after the ")". */
    char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ')
        return 0;
    *state = p[2];
    p++;
    for (int token = 1; token < 20 && p; token++)
        p = strchr(p + 1, ' ');
    return p ? strtoull(p + 1, NULL, 10) : 0;
#else
    (void)pid;
    return 0;
#endif
}

static uint64_t tes__process_start(int32_t pid)
{
    char state;
    return tes__process_stat(pid, &state);
}

/* Returns 1 if pid still names the process that started at start (0: not
 * known).  A zombie is dead: it will never read or write again. */
static int tes__process_alive(int32_t pid, uint64_t start)
{
    char state;
    if (pid <= 0)
        return 0;
    if (kill(pid, 0) != 0 && errno == ESRCH)
        return 0;
    uint64_t now = tes__process_stat(pid, &state);
    if (state == 'Z' || state == 'X')
        return 0;
    if ((uint32_t)start != 0 && now != 0 && (uint32_t)now != (uint32_t)start)
        return 0;
    return 1;
}

int tes_process_alive(int32_t pid)
{
    return tes__process_alive(pid, 0);
}

static inline uint64_t tes__owner_of(int32_t pid, uint64_t start)
{
    return (uint64_t)(uint32_t)start << 32 | (uint32_t)pid;
}

static inline int32_t tes__owner_pid(uint64_t owner)
{
    return (int32_t)(uint32_t)owner;
}

/* Returns 1 if the process named by a reader slot's owner word lives. */
static int tes__owner_alive(uint64_t owner)
{
    return tes__process_alive(tes__owner_pid(owner), owner >> 32);
}

static inline tes__block *tes__block_at(const tes_store *s, uint64_t off)
{
    return (tes__block *)(s->heap + off);
}

static inline uint64_t tes__block_size(const tes__block *b)
{
    return atomic_load_explicit(&b->size_bytes, memory_order_relaxed);
}

static inline uint32_t tes__block_state(const tes__block *b)
{
    return atomic_load_explicit(&b->state, memory_order_relaxed);
}

static uint64_t tes__key_area_bytes(uint32_t key_bytes)
{
    return tes__round_up(key_bytes, TES_RECORD_ALIGN_BYTES);
}

static uint64_t tes__record_checksum(const tes__block *b, uint64_t version)
{
    const uint8_t *key = (const uint8_t *)b + TES__BLOCK_HEADER_BYTES;
    const uint8_t *payload = key + tes__key_area_bytes(b->key_bytes);
    uint64_t h = tes__checksum(key, b->key_bytes, version);
    return tes__checksum(payload, b->payload_bytes, h);
}

/* ------------------------------------------------------------------------
 * Futex wrappers.  Elsewhere than Linux, waiting falls back to short
 * sleeps: slower to wake, never wrong.
 */

static void tes__futex_wake_all(_Atomic uint32_t *word)
{
#ifdef __linux__
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
#else
    (void)word;
#endif
}

static void tes__futex_wait(_Atomic uint32_t *word, uint32_t expected,
                            const struct timespec *relative)
{
#ifdef __linux__
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, expected, relative,
            NULL, 0);
#else
    (void)word;
    (void)expected;
    struct timespec nap = {0, 200000};
    if (relative && (relative->tv_sec == 0 && relative->tv_nsec < 200000))
        nap = *relative;
    nanosleep(&nap, NULL);
#endif
}

/* ------------------------------------------------------------------------
 * This process's pid, without a system call on every read.  glibc no
 * longer caches getpid(), and a read checks it to notice that it runs in a
 * forked child; the fork handler below refreshes the copy in the child.
 */

static pthread_once_t tes__pid_once = PTHREAD_ONCE_INIT;
static _Atomic int32_t tes__pid;

static void tes__pid_refresh(void)
{
    atomic_store_explicit(&tes__pid, (int32_t)getpid(), memory_order_relaxed);
}

static void tes__pid_init(void)
{
    tes__pid_refresh();
    pthread_atfork(NULL, NULL, tes__pid_refresh);
}

static inline int32_t tes__self(void)
{
    pthread_once(&tes__pid_once, tes__pid_init);
    return atomic_load_explicit(&tes__pid, memory_order_relaxed);
}

/* ------------------------------------------------------------------------
 * Reader slots.
 */

/* Claims a reader slot for owner (see tes__reader): a free one, or one whose
 * process is dead.  Fills it with the pins of copy_from (NULL: none).
 * Returns its index, or UINT32_MAX when every slot is held by a live
 * process.  The claim is one CAS of the owner word, so no reclaimer ever
 * sees the slot without a live owner while it is being filled; until then
 * the pins and announcement left in it only keep more memory. */
static uint32_t tes__claim_reader(tes_store *s, uint64_t owner,
                                  const tes__reader *copy_from)
{
    for (int pass = 0; pass < 2; pass++) {
        for (uint32_t i = 0; i < s->reader_count; i++) {
            tes__reader *r = &s->readers[i];
            uint64_t held = atomic_load_explicit(&r->owner,
                                                 memory_order_relaxed);
            if (pass == 0 && held != 0)
                continue;
            if (pass == 1 &&
                (held == 0 || tes__owner_pid(held) <= 0 || held == owner ||
                 tes__owner_alive(held)))
                continue;
            if (!atomic_compare_exchange_strong_explicit(
                    &r->owner, &held, owner, memory_order_acq_rel,
                    memory_order_relaxed))
                continue;

            /* The slot is ours: clear what a dead owner left, then copy
             * the pins asked for. */
            atomic_store_explicit(&r->active, 0, memory_order_relaxed);
            for (int p = 0; p < TES_PIN_SLOTS; p++) {
                uint64_t off = 0;
                uint64_t count = 0;
                if (copy_from) {
                    off = atomic_load_explicit(
                        &copy_from->pins[p].block_offset,
                        memory_order_relaxed);
                    count = copy_from->pins[p].count;
                }
                r->pins[p].count = count;
                atomic_store_explicit(&r->pins[p].block_offset, off,
                                      memory_order_relaxed);
            }
            atomic_thread_fence(memory_order_release);
            return i;
        }
    }
    return UINT32_MAX;
}

/* Gives a reader slot back: its pins no longer hold anything. */
static void tes__free_reader(tes__reader *r)
{
    for (int p = 0; p < TES_PIN_SLOTS; p++) {
        r->pins[p].count = 0;
        atomic_store_explicit(&r->pins[p].block_offset, 0,
                              memory_order_relaxed);
    }
    atomic_store_explicit(&r->active, 0, memory_order_relaxed);

    /* release; pairs with the acquire CAS of the next claimer */
    atomic_store_explicit(&r->owner, 0, memory_order_release);
}

/* Releases hand-over slots that no child took within
 * TES__HANDOFF_PATIENCE_NS (the child died first), and forgets those that
 * were taken.  A slot being released is marked TES__OWNER_RELEASING so that
 * neither the child nor a claimer can take it half cleared. */
static void tes__sweep_handoffs(tes_store *s)
{
    uint64_t now = tes__now_ns();
    uint64_t me = s->reader_owner;
    uint32_t kept = 0;
    for (uint32_t i = 0; i < s->pending_count; i++) {
        tes__reader *r = &s->readers[s->pending[i].index];
        uint64_t expected = me;
        if (atomic_load_explicit(&r->owner, memory_order_relaxed) != me)
            continue;
        if (now - s->pending[i].since_ns > TES__HANDOFF_PATIENCE_NS &&
            atomic_compare_exchange_strong_explicit(
                &r->owner, &expected, TES__OWNER_RELEASING,
                memory_order_acq_rel, memory_order_relaxed)) {
            tes__free_reader(r);
            continue;
        }
        if (expected == me)
            s->pending[kept++] = s->pending[i];
    }
    s->pending_count = kept;
}

/* Makes sure this process owns a reader slot.  After fork, a child that
 * was not handed a slot claims its own and copies the pins it inherited
 * with its parent's memory.  Returns TES_OK or TES_EREADERS. */
static int tes__ensure_reader(tes_store *s, tes_error *err)
{
    int32_t me = tes__self();
    const tes__reader *inherited = NULL;

    if (s->reader_index != UINT32_MAX) {
        if (s->reader_pid == me) {
            if (s->pending_count)
                tes__sweep_handoffs(s);
            return TES_OK;
        }
        inherited = &s->readers[s->reader_index];
    }

    s->pending_count = 0; /* the parent's, not ours */
    uint64_t owner = tes__owner_of(me, tes__process_start(me));
    uint32_t i = tes__claim_reader(s, owner, inherited);
    if (i == UINT32_MAX)
        return tes__fail(err, TES_EREADERS, 0,
                         "all %u reader slots of the store are held by live "
                         "processes; create the store with more readers",
                         s->reader_count);
    s->reader_index = i;
    s->reader_pid = me;
    s->reader_owner = owner;
    s->read_depth = 0;
    return TES_OK;
}

static void tes__release_reader(tes_store *s)
{
    if (s->reader_index == UINT32_MAX || s->reader_pid != tes__self())
        return;
    tes__free_reader(&s->readers[s->reader_index]);
    s->reader_index = UINT32_MAX;
}

/* ------------------------------------------------------------------------
 * Segment creation and attachment.
 */

int tes_store_check_name(const char *name, tes_error *err)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > TES_NAME_MAX_CHARS)
        return tes__fail(err, TES_EINVAL, 0,
                         "store name must be 1 to %d characters, got %zu",
                         TES_NAME_MAX_CHARS, n);
    if (name[0] == '.')
        return tes__fail(err, TES_EINVAL, 0,
                         "store name must not start with '.'");
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                 (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
        if (!ok)
            return tes__fail(err, TES_EINVAL, 0,
                             "store name may hold only letters, digits, "
                             "'.', '_' and '-'; got %s", name);
    }
    return TES_OK;
}

/* Sizes a new segment and allocates its pages.  Returns 0 or an errno. */
static int tes__reserve(int fd, uint64_t size_bytes)
{
#ifdef __linux__
    return posix_fallocate(fd, 0, (off_t)size_bytes);
#else
    /* TODO(macos): shared memory there cannot be fallocated; pages come on
     * first touch, so a full system faults later instead of failing here. */
    return ftruncate(fd, (off_t)size_bytes) == 0 ? 0 : errno;
#endif
}

static void tes__shm_path(const char *name, char *out, size_t n)
{
    snprintf(out, n, "/%s", name);
}

/* Computes where the tables and the heap go for a segment of size_bytes. */
static int tes__plan(uint64_t size_bytes, uint32_t slot_count,
                     uint32_t reader_count, tes__header *h, tes_error *err)
{
    uint64_t readers_offset = TES__HEADER_BYTES;
    uint64_t slots_offset = tes__round_up(
        readers_offset + (uint64_t)reader_count * sizeof(tes__reader), 4096);
    uint64_t heap_offset = tes__round_up(
        slots_offset + (uint64_t)slot_count * sizeof(tes__slot), 4096);

    if (heap_offset + TES__MIN_HEAP_BYTES > size_bytes)
        return tes__fail(err, TES_EINVAL, 0,
                         "a store of %u keys and %u readers needs at least "
                         "%llu bytes, got %llu",
                         slot_count, reader_count,
                         (unsigned long long)(heap_offset +
                                              TES__MIN_HEAP_BYTES),
                         (unsigned long long)size_bytes);
    h->size_bytes = size_bytes;
    h->slot_count = slot_count;
    h->reader_count = reader_count;
    h->readers_offset = readers_offset;
    h->slots_offset = slots_offset;
    h->heap_offset = heap_offset;
    h->heap_bytes = (size_bytes - heap_offset) / TES_RECORD_ALIGN_BYTES *
                    TES_RECORD_ALIGN_BYTES;
    return TES_OK;
}

static void tes__bind(tes_store *s, uint8_t *base, uint64_t size_bytes)
{
    s->base = base;
    s->size_bytes = size_bytes;
    s->header = (tes__header *)base;
    s->readers = (tes__reader *)(base + s->header->readers_offset);
    s->slots = (tes__slot *)(base + s->header->slots_offset);
    s->heap = base + s->header->heap_offset;
    s->heap_bytes = s->header->heap_bytes;
    s->slot_count = s->header->slot_count;
    s->reader_count = s->header->reader_count;
    s->max_keys = s->header->max_keys;
    s->handoff_index = UINT32_MAX;
    s->fork_pinned = 1;
    s->pending_count = 0;
    s->reader_index = UINT32_MAX;
    s->reader_pid = 0;
    s->reader_owner = 0;
}

static int tes__init_mutex(pthread_mutex_t *m)
{
    pthread_mutexattr_t attr;
    int rc = pthread_mutexattr_init(&attr);
    if (rc == 0)
        rc = pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
#if TES__HAVE_ROBUST_MUTEX
    if (rc == 0)
        rc = pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
#endif
    if (rc == 0)
        rc = pthread_mutex_init(m, &attr);
    pthread_mutexattr_destroy(&attr);
    return rc;
}

int tes_store_create(const char *name, const tes_create_options *o,
                     tes_store **out, tes_error *err)
{
    char path[TES_NAME_MAX_CHARS + 2];
    tes__header plan;
    uint32_t slot_count = 16;
    int rc;

    *out = NULL;
    if ((rc = tes_store_check_name(name, err)) != TES_OK)
        return rc;
    if (o->max_keys == 0 || o->max_keys > (1u << 24))
        return tes__fail(err, TES_EINVAL, 0,
                         "max_keys must be 1 to %u, got %u", 1u << 24,
                         o->max_keys);
    if (o->max_readers == 0 || o->max_readers > 65536)
        return tes__fail(err, TES_EINVAL, 0,
                         "max_readers must be 1 to 65536, got %u",
                         o->max_readers);

    /* Twice the keys asked for, so probe chains stay short when full. */
    while (slot_count < o->max_keys * 2u)
        slot_count <<= 1;
    memset(&plan, 0, sizeof plan);
    if ((rc = tes__plan(o->size_bytes, slot_count, o->max_readers, &plan,
                        err)) != TES_OK)
        return rc;

    tes__shm_path(name, path, sizeof path);
    int fd = shm_open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        if (e == EEXIST)
            return tes__fail(err, TES_EEXIST, e,
                             "a shared-memory segment named %s exists "
                             "already", name);
        return tes__fail(err, TES_ESYS, e, "cannot create segment %s: %s",
                         name, strerror(e));
    }

    /* Allocate every page now: a tmpfs that runs out later would kill
     * readers with SIGBUS instead of failing here. */
    if (fchmod(fd, o->mode & 0777) != 0 ||
        (rc = tes__reserve(fd, o->size_bytes)) != 0) {
        int e = rc ? rc : errno;
        struct statvfs vfs;
        unsigned long long free_bytes = 0;
        if (fstatvfs(fd, &vfs) == 0)
            free_bytes = (unsigned long long)vfs.f_bavail * vfs.f_frsize;
        close(fd);
        shm_unlink(path);
        if (e == ENOSPC)
            return tes__fail(err, TES_ENOSPC, e,
                             "cannot create a store of %llu bytes: the "
                             "shared-memory file system has %llu bytes "
                             "free",
                             (unsigned long long)o->size_bytes, free_bytes);
        return tes__fail(err, TES_ESYS, e, "cannot size segment %s: %s",
                         name, strerror(e));
    }

    uint8_t *base = mmap(NULL, o->size_bytes, PROT_READ | PROT_WRITE,
                         MAP_SHARED, fd, 0);
    int map_errno = errno;
    close(fd);
    if (base == MAP_FAILED) {
        shm_unlink(path);
        return tes__fail(err, TES_ESYS, map_errno, "cannot map %s: %s",
                         name, strerror(map_errno));
    }

    tes_store *s = calloc(1, sizeof *s);
    if (!s) {
        munmap(base, o->size_bytes);
        shm_unlink(path);
        return tes__fail(err, TES_ESYS, ENOMEM, "out of memory");
    }

    /* Fill the header; the magic goes last, so an early attacher sees no
     * store rather than half of one. */
    tes__header *h = (tes__header *)base;
    memcpy(h, &plan, sizeof plan);
    h->magic = 0;
    h->layout = TES__LAYOUT;
    h->flags = o->flags;
    h->max_keys = o->max_keys;
    h->creator_pid = tes__self();
    h->creator_uid = (uint32_t)geteuid();
    h->creator_start = tes__process_start(h->creator_pid);
    h->created_ns = tes__now_ns();
    atomic_store_explicit(&h->generation, 0, memory_order_relaxed);
    if ((rc = tes__init_mutex(&h->writer.mutex)) != 0) {
        munmap(base, o->size_bytes);
        shm_unlink(path);
        free(s);
        return tes__fail(err, TES_ESYS, rc, "cannot initialise the writer "
                         "mutex: %s", strerror(rc));
    }
    tes__bind(s, base, o->size_bytes);

    tes__block *first = tes__block_at(s, 0);
    atomic_store_explicit(&first->size_bytes, h->heap_bytes,
                          memory_order_relaxed);
    atomic_store_explicit(&first->state, TES__BLOCK_FREE,
                          memory_order_relaxed);

    /* release; pairs with the acquire load of the magic in attach */
    atomic_store_explicit((_Atomic uint64_t *)&h->magic, TES__MAGIC,
                          memory_order_release);

    if ((rc = tes__ensure_reader(s, err)) != TES_OK) {
        tes_store_close(s);
        shm_unlink(path);
        return rc;
    }
    *out = s;
    return TES_OK;
}

/* Validates a mapped header against the segment's real size.  Returns
 * TES_OK, TES_ENOTSTORE, TES_ELAYOUT, TES_ETRUNC or TES_ECORRUPT. */
static int tes__validate_header(const char *name, const uint8_t *base,
                                uint64_t real_bytes, tes_error *err)
{
    const tes__header *h = (const tes__header *)base;
    tes__header plan;

    if (real_bytes < TES__HEADER_BYTES ||
        atomic_load_explicit((_Atomic uint64_t *)&h->magic,
                             memory_order_acquire) != TES__MAGIC)
        return tes__fail(err, TES_ENOTSTORE, 0,
                         "segment %s is not a tesenv store", name);
    if (h->layout != TES__LAYOUT)
        return tes__fail(err, TES_ELAYOUT, 0,
                         "segment %s has store layout %#x; this build reads "
                         "layout %#x", name, h->layout, TES__LAYOUT);
    if (h->size_bytes != real_bytes)
        return tes__fail(err, TES_ETRUNC, 0,
                         "segment %s is %llu bytes but its header says "
                         "%llu: truncated or damaged",
                         name, (unsigned long long)real_bytes,
                         (unsigned long long)h->size_bytes);

    /* Recompute the layout from the counts rather than trust offsets. */
    memset(&plan, 0, sizeof plan);
    if (h->slot_count == 0 || (h->slot_count & (h->slot_count - 1)) ||
        h->slot_count > (1u << 25) || h->reader_count == 0 ||
        h->reader_count > 65536 || h->max_keys == 0 ||
        h->max_keys > h->slot_count / 2 ||
        tes__plan(h->size_bytes, h->slot_count, h->reader_count, &plan,
                  NULL) != TES_OK ||
        plan.readers_offset != h->readers_offset ||
        plan.slots_offset != h->slots_offset ||
        plan.heap_offset != h->heap_offset ||
        plan.heap_bytes != h->heap_bytes)
        return tes__fail(err, TES_ECORRUPT, 0,
                         "segment %s has an inconsistent header", name);
    return TES_OK;
}

int tes_store_attach(const char *name, tes_store **out, tes_error *err)
{
    char path[TES_NAME_MAX_CHARS + 2];
    struct stat st;
    int rc;

    *out = NULL;
    if ((rc = tes_store_check_name(name, err)) != TES_OK)
        return rc;
    tes__shm_path(name, path, sizeof path);

    int fd = shm_open(path, O_RDWR | O_CLOEXEC, 0);
    if (fd < 0) {
        int e = errno;
        if (e == ENOENT)
            return tes__fail(err, TES_ENOENT, e, "no store named %s", name);
        return tes__fail(err, TES_ESYS, e, "cannot open store %s: %s", name,
                         strerror(e));
    }
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return tes__fail(err, TES_ESYS, e, "cannot stat %s: %s", name,
                         strerror(e));
    }

    /* A segment under our name that another user made is a squatter: its
     * owner could rewrite what we read. */
    if (st.st_uid != geteuid()) {
        close(fd);
        return tes__fail(err, TES_EOWNER, 0,
                         "segment %s belongs to uid %u, not to this user "
                         "(uid %u); refusing to use it",
                         name, (unsigned)st.st_uid, (unsigned)geteuid());
    }
    if ((uint64_t)st.st_size < TES__HEADER_BYTES) {
        close(fd);
        return tes__fail(err, TES_ENOTSTORE, 0,
                         "segment %s is %llu bytes, too small to be a "
                         "tesenv store",
                         name, (unsigned long long)st.st_size);
    }

    uint64_t size_bytes = (uint64_t)st.st_size;
    uint8_t *base = mmap(NULL, size_bytes, PROT_READ | PROT_WRITE,
                         MAP_SHARED, fd, 0);
    int map_errno = errno;
    close(fd);
    if (base == MAP_FAILED)
        return tes__fail(err, TES_ESYS, map_errno, "cannot map %s: %s",
                         name, strerror(map_errno));

    if ((rc = tes__validate_header(name, base, size_bytes, err)) != TES_OK) {
        munmap(base, size_bytes);
        return rc;
    }

    tes_store *s = calloc(1, sizeof *s);
    if (!s) {
        munmap(base, size_bytes);
        return tes__fail(err, TES_ESYS, ENOMEM, "out of memory");
    }
    tes__bind(s, base, size_bytes);
    if ((rc = tes__ensure_reader(s, err)) != TES_OK) {
        tes_store_close(s);
        return rc;
    }
    *out = s;
    return TES_OK;
}

void tes_store_close(tes_store *s)
{
    if (!s)
        return;
    tes__release_reader(s);
    munmap(s->base, s->size_bytes);
    free(s);
}

int tes_store_unlink(const char *name, tes_error *err)
{
    char path[TES_NAME_MAX_CHARS + 2];
    int rc;

    if ((rc = tes_store_check_name(name, err)) != TES_OK)
        return rc;
    tes__shm_path(name, path, sizeof path);
    if (shm_unlink(path) != 0) {
        int e = errno;
        if (e == ENOENT)
            return tes__fail(err, TES_ENOENT, e, "no store named %s", name);
        return tes__fail(err, TES_ESYS, e, "cannot remove %s: %s", name,
                         strerror(e));
    }
    return TES_OK;
}

int tes_store_probe(const char *name, tes_probe *out, tes_error *err)
{
    char path[TES_NAME_MAX_CHARS + 2];
    struct stat st;
    tes__header h;
    int rc;

    memset(out, 0, sizeof *out);
    if ((rc = tes_store_check_name(name, err)) != TES_OK)
        return rc;
    tes__shm_path(name, path, sizeof path);
    int fd = shm_open(path, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0) {
        int e = errno;
        return tes__fail(err, e == ENOENT ? TES_ENOENT : TES_ESYS, e,
                         "cannot open %s: %s", name, strerror(e));
    }
    if (fstat(fd, &st) != 0 || (uint64_t)st.st_size < sizeof h ||
        pread(fd, &h, sizeof h, 0) != (ssize_t)sizeof h) {
        close(fd);
        return TES_OK;
    }
    close(fd);
    out->size_bytes = (uint64_t)st.st_size;
    out->is_store = h.magic == TES__MAGIC && h.layout == TES__LAYOUT;
    if (out->is_store) {
        out->creator_pid = h.creator_pid;
        out->creator_alive = tes__process_alive(h.creator_pid,
                                                h.creator_start);
    }
    return TES_OK;
}

const uint8_t *tes_store_base(const tes_store *s) { return s->base; }
uint64_t tes_store_size(const tes_store *s) { return s->size_bytes; }
uint32_t tes_store_flags(const tes_store *s) { return s->header->flags; }

int32_t tes_store_creator_pid(const tes_store *s)
{
    return s->header->creator_pid;
}

/* ------------------------------------------------------------------------
 * Key slots.
 */

static int tes__check_key(size_t key_bytes, tes_error *err)
{
    if (key_bytes == 0)
        return tes__fail(err, TES_EKEY, 0, "key must not be empty");
    if (key_bytes > TES_KEY_MAX_BYTES)
        return tes__fail(err, TES_EKEY, 0,
                         "key is %zu bytes in UTF-8; the limit is %d",
                         key_bytes, TES_KEY_MAX_BYTES);
    return TES_OK;
}

/* Linear probing from the key's hash.  Lock-free for readers: a slot's key
 * is written before its state is published (release), and never changes
 * after.  Returns the slot index, or the negated index + 1 of the first
 * empty slot where the key would go, or INT64_MIN if the table is full. */
static int64_t tes__probe(const tes_store *s, uint32_t want_state,
                          const char *key, size_t key_bytes)
{
    uint64_t hash = tes__key_hash(key, key_bytes);
    uint32_t mask = s->slot_count - 1;

    for (uint32_t i = 0; i <= mask; i++) {
        uint32_t idx = (uint32_t)(hash + i) & mask;
        tes__slot *slot = &s->slots[idx];

        /* acquire; pairs with the release store of state in
         * tes__claim_slot */
        uint32_t state = atomic_load_explicit(&slot->state,
                                              memory_order_acquire);
        if (state == TES__SLOT_EMPTY)
            return -(int64_t)idx - 1;
        if (state == want_state && slot->hash == hash &&
            slot->key_bytes == key_bytes &&
            memcmp(slot->key, key, key_bytes) == 0)
            return idx;
    }
    return INT64_MIN;
}

int tes_store_lookup(const tes_store *s, const char *key, size_t key_bytes,
                     uint32_t *slot, tes_error *err)
{
    int rc = tes__check_key(key_bytes, err);
    if (rc != TES_OK)
        return rc;
    int64_t idx = tes__probe(s, TES__SLOT_KEY, key, key_bytes);
    if (idx < 0)
        return tes__fail(err, TES_ENOKEY, 0, "no such key");
    *slot = (uint32_t)idx;
    return TES_OK;
}

const tes_version_word *tes_store_version_word(const tes_store *s,
                                               uint32_t slot)
{
    return &s->slots[slot].version;
}

/* Finds or creates the slot for key; writer mutex held. */
static int tes__claim_slot(tes_store *s, uint32_t state, const char *key,
                           size_t key_bytes, uint32_t *out, tes_error *err)
{
    int64_t idx = tes__probe(s, state, key, key_bytes);
    if (idx >= 0) {
        *out = (uint32_t)idx;
        return TES_OK;
    }

    /* The table has at least twice max_keys slots, so probes stay short.
     * TODO(key-reuse): a deleted key keeps its slot (readers may still be
     * probing through it); a store that churns through unique keys runs
     * out.  Reusing tombstones needs a per-slot key generation. */
    if (idx == INT64_MIN || s->header->keys_used >= s->max_keys)
        return tes__fail(err, TES_EKEYS, 0,
                         "the store's key table is full: %u keys, deleted "
                         "ones included, and max_keys is %u; create a store "
                         "with a larger max_keys",
                         (unsigned)s->header->keys_used, s->max_keys);

    tes__slot *slot = &s->slots[-idx - 1];
    memset(slot->key, 0, sizeof slot->key);
    memcpy(slot->key, key, key_bytes);
    slot->key_bytes = (uint32_t)key_bytes;
    slot->hash = tes__key_hash(key, key_bytes);
    atomic_store_explicit(&slot->block, 0, memory_order_relaxed);
    atomic_store_explicit(&slot->version, 0, memory_order_relaxed);

    /* release; pairs with the acquire load in tes__probe */
    atomic_store_explicit(&slot->state, state, memory_order_release);
    s->header->keys_used++;
    *out = (uint32_t)(-idx - 1);
    return TES_OK;
}

/* ------------------------------------------------------------------------
 * Heap: boundary-tagged blocks walked in address order.  Every change is a
 * single aligned store that leaves the heap walkable, so a writer that dies
 * between any two of them leaves nothing the next writer cannot repair.
 */

static int tes__block_ok(const tes_store *s, uint64_t off)
{
    uint64_t heap = s->heap_bytes;
    if (off % TES_RECORD_ALIGN_BYTES || off >= heap)
        return 0;
    uint64_t size = tes__block_size(tes__block_at(s, off));
    return size >= TES__BLOCK_HEADER_BYTES &&
           size % TES_RECORD_ALIGN_BYTES == 0 && size <= heap - off;
}

/* Merges free blocks that follow the free block at off.  Mutex held. */
static void tes__coalesce(tes_store *s, uint64_t off)
{
    tes__block *b = tes__block_at(s, off);
    uint64_t size = tes__block_size(b);

    while (off + size < s->heap_bytes && tes__block_ok(s, off + size)) {
        tes__block *next = tes__block_at(s, off + size);
        if (tes__block_state(next) != TES__BLOCK_FREE)
            break;
        size += tes__block_size(next);
        atomic_store_explicit(&b->size_bytes, size, memory_order_relaxed);
    }
}

/* Next-fit search for a free block of at least need bytes.  Marks it
 * WRITING and returns its offset, or UINT64_MAX.  Mutex held. */
static uint64_t tes__alloc(tes_store *s, uint64_t need)
{
    uint64_t heap = s->heap_bytes;
    uint64_t start = s->header->rover < heap ? s->header->rover : 0;
    uint64_t off = start;
    int wrapped = 0;

    /* A rover left on a block boundary that a repair moved is reset. */
    if (!tes__block_ok(s, off))
        off = start = 0;

    for (;;) {
        if (off >= heap) {
            off = 0;
            wrapped = 1;
        }
        if (wrapped && off >= start) {
            /* Merging may have swallowed the old position: start over. */
            s->header->rover = 0;
            return UINT64_MAX;
        }
        if (!tes__block_ok(s, off)) {
            s->header->rover = 0;
            return TES__HEAP_DAMAGED;
        }

        tes__block *b = tes__block_at(s, off);
        if (tes__block_state(b) == TES__BLOCK_FREE) {
            tes__coalesce(s, off);
            uint64_t size = tes__block_size(b);
            if (size >= need && need <= heap - off) {
                /* Split: the remainder's header is written before the
                 * size shrinks, so either size describes a valid walk. */
                if (size - need >= TES__MIN_SPLIT_BYTES) {
                    tes__block *rest = tes__block_at(s, off + need);
                    atomic_store_explicit(&rest->state, TES__BLOCK_FREE,
                                          memory_order_relaxed);
                    atomic_store_explicit(&rest->size_bytes, size - need,
                                          memory_order_relaxed);
                    atomic_store_explicit(&b->size_bytes, need,
                                          memory_order_relaxed);
                }
                atomic_store_explicit(&b->state, TES__BLOCK_WRITING,
                                      memory_order_relaxed);
                s->header->rover = off + tes__block_size(b);
                return off;
            }
            /* A merged block may have run past the start point. */
            if (wrapped && off + size > start) {
                s->header->rover = 0;
                return UINT64_MAX;
            }
        }
        off += tes__block_size(b);
    }
}

static int tes__compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* Frees every retired block no reader can still see.  Mutex held.
 * Returns the bytes freed.  If in_flight is not NULL it gets the bytes of
 * retired blocks kept only because a live reader was in the middle of a
 * read, which it finishes without our help. */
static uint64_t tes__reclaim_locked(tes_store *s, uint64_t *in_flight)
{
    enum { PIN_CAP = 4096 };
    uint64_t pinned_stack[PIN_CAP];
    uint64_t *pinned = pinned_stack;
    size_t pinned_count = 0, pinned_cap = PIN_CAP;
    uint64_t min_active = UINT64_MAX;
    uint64_t freed = 0;

    /* seq_cst; pairs with the fence in tes_store_read_begin, so a reader
     * either shows us its announcement or sees the newest block. */
    atomic_thread_fence(memory_order_seq_cst);

    for (uint32_t i = 0; i < s->reader_count; i++) {
        tes__reader *r = &s->readers[i];
        uint64_t owner = atomic_load_explicit(&r->owner,
                                              memory_order_acquire);
        if (tes__owner_pid(owner) <= 0)
            continue;

        /* acquire; pairs with the release clear in tes_store_read_end, so
         * the pins made during that read are visible. */
        uint64_t active = atomic_load_explicit(&r->active,
                                               memory_order_acquire);
        if (!tes__owner_alive(owner))
            continue;
        if (active != 0 && active < min_active)
            min_active = active;
        for (int p = 0; p < TES_PIN_SLOTS; p++) {
            uint64_t off = atomic_load_explicit(&r->pins[p].block_offset,
                                                memory_order_relaxed);
            if (off == 0)
                continue;
            if (pinned_count == pinned_cap) {
                size_t cap = pinned_cap * 2;
                uint64_t *grown = malloc(cap * sizeof *grown);
                if (!grown)
                    return 0; /* keep everything; try again later */
                memcpy(grown, pinned, pinned_count * sizeof *grown);
                if (pinned != pinned_stack)
                    free(pinned);
                pinned = grown;
                pinned_cap = cap;
            }
            pinned[pinned_count++] = off;
        }
    }

    qsort(pinned, pinned_count, sizeof *pinned, tes__compare_u64);

    uint64_t off = 0, heap = s->heap_bytes;
    while (off < heap && tes__block_ok(s, off)) {
        tes__block *b = tes__block_at(s, off);
        uint64_t size = tes__block_size(b);
        uint64_t ref = off + 1;
        if (tes__block_state(b) == TES__BLOCK_RETIRED &&
            !bsearch(&ref, pinned, pinned_count, sizeof *pinned,
                     tes__compare_u64)) {
            if (b->retired_generation <= min_active) {
                atomic_store_explicit(&b->state, TES__BLOCK_FREE,
                                      memory_order_relaxed);
                freed += size;
            } else if (in_flight) {
                *in_flight += size;
            }
        }
        off += size;
    }

    if (pinned != pinned_stack)
        free(pinned);
    s->header->reclaim_count++;
    return freed;
}

/* Brings the heap and slots back to a consistent state after a writer died
 * holding the mutex.  Mutex held. */
static void tes__repair_locked(tes_store *s)
{
    uint64_t generation = atomic_load_explicit(&s->header->generation,
                                               memory_order_relaxed);
    uint64_t heap = s->heap_bytes;
    uint64_t off = 0;

    /* 1. The newest version any slot or block shows is the generation. */
    for (uint32_t i = 0; i < s->slot_count; i++) {
        uint64_t v = atomic_load_explicit(&s->slots[i].version,
                                          memory_order_relaxed);
        if (v > generation)
            generation = v;
    }

    /* 2. Walk the heap: unfinished blocks are freed, orphaned LIVE blocks
     *    retired, and slots that point at a block take its version. */
    while (off < heap && tes__block_ok(s, off)) {
        tes__block *b = tes__block_at(s, off);
        uint32_t state = tes__block_state(b);
        if (state == TES__BLOCK_WRITING) {
            atomic_store_explicit(&b->state, TES__BLOCK_FREE,
                                  memory_order_relaxed);
        } else if (state == TES__BLOCK_LIVE) {
            int owned = b->slot < s->slot_count &&
                        atomic_load_explicit(&s->slots[b->slot].block,
                                             memory_order_relaxed) == off + 1;
            if (!owned) {
                b->retired_generation = generation;
                atomic_store_explicit(&b->state, TES__BLOCK_RETIRED,
                                      memory_order_release);
            } else {
                if (b->version > generation)
                    generation = b->version;
                if (atomic_load_explicit(&s->slots[b->slot].version,
                                         memory_order_relaxed) < b->version)
                    atomic_store_explicit(&s->slots[b->slot].version,
                                          b->version, memory_order_release);
            }
        }
        off += tes__block_size(b);
    }

    /* 3. A heap that no longer walks to its end cannot be trusted: start
     *    over with everything past the damage free. */
    if (off < heap) {
        tes__block *b = tes__block_at(s, off);
        atomic_store_explicit(&b->state, TES__BLOCK_FREE, memory_order_relaxed);
        atomic_store_explicit(&b->size_bytes, heap - off,
                              memory_order_relaxed);
    }

    atomic_store_explicit(&s->header->generation, generation,
                          memory_order_release);
    s->header->rover = 0;
    s->header->repair_count++;
}

/* Takes the writer mutex, repairing after a writer that died holding it.
 * A publish holds it for the time of one copy, so a lock that stays taken
 * for TES__LOCK_PATIENCE_S means a stopped writer or damaged bytes.
 * Returns TES_OK, TES_ECORRUPT or TES_ESYS. */
static int tes__lock(tes_store *s, tes_error *err)
{
    pthread_mutex_t *m = &s->header->writer.mutex;
#if TES__HAVE_ROBUST_MUTEX
    struct timespec deadline;
    clock_gettime(CLOCK_REALTIME, &deadline);
    deadline.tv_sec += TES__LOCK_PATIENCE_S;
    int rc = pthread_mutex_timedlock(m, &deadline);
    if (rc == EOWNERDEAD) {
        tes__repair_locked(s);
        rc = pthread_mutex_consistent(m);
    }
#else
    int rc = pthread_mutex_lock(m);
#endif
    if (rc == ETIMEDOUT)
        return tes__fail(err, TES_ECORRUPT, rc,
                         "the store's writer lock has been held for %d s: a "
                         "writer is stopped or the segment is damaged",
                         TES__LOCK_PATIENCE_S);
    if (rc == EINVAL || rc == ENOTRECOVERABLE)
        return tes__fail(err, TES_ECORRUPT, rc,
                         "the store's writer lock is damaged: %s",
                         strerror(rc));
    if (rc != 0)
        return tes__fail(err, TES_ESYS, rc, "cannot lock the store for "
                         "writing: %s", strerror(rc));
    return TES_OK;
}

static void tes__unlock(tes_store *s)
{
    pthread_mutex_unlock(&s->header->writer.mutex);
}

/* Fills *out with what the heap holds; mutex held. */
static void tes__heap_usage(const tes_store *s, tes_stats *out)
{
    uint64_t off = 0, heap = s->heap_bytes, free_run = 0;
    while (off < heap && tes__block_ok(s, off)) {
        tes__block *b = tes__block_at(s, off);
        uint64_t size = tes__block_size(b);
        uint32_t state = tes__block_state(b);
        if (state == TES__BLOCK_FREE) {
            out->free_bytes += size;
            free_run += size;
            if (free_run > out->largest_free_bytes)
                out->largest_free_bytes = free_run;
        } else {
            free_run = 0;
            if (state == TES__BLOCK_RETIRED)
                out->retired_bytes += size;
            else
                out->live_bytes += size;
        }
        off += size;
    }
}

/* Allocates need bytes, reclaiming when the heap is exhausted.  Mutex
 * held.  Returns TES_OK with *off set, or TES_EFULL (with *in_flight set as
 * by tes__reclaim_locked) or TES_ECORRUPT, with *err filled. */
static int tes__alloc_or_reclaim(tes_store *s, uint64_t need, uint64_t *off,
                                 uint64_t *in_flight, tes_error *err)
{
    *in_flight = 0;
    if (s->header->publish_count % TES__RECLAIM_EVERY_PUBLISHES == 0)
        tes__reclaim_locked(s, NULL);
    *off = tes__alloc(s, need);
    if (*off == UINT64_MAX) {
        tes__reclaim_locked(s, in_flight);
        s->header->rover = 0;
        *off = tes__alloc(s, need);
    }
    if (*off == TES__HEAP_DAMAGED)
        return tes__fail(err, TES_ECORRUPT, 0,
                         "the store's heap is damaged: published values can "
                         "still be read, but nothing more can be written; "
                         "recreate the store");
    if (*off == UINT64_MAX) {
        tes_stats usage;
        memset(&usage, 0, sizeof usage);
        tes__heap_usage(s, &usage);
        return tes__fail(err, TES_EFULL, 0,
                         "the store has no room for a record of %llu bytes: "
                         "its heap is %llu bytes, %llu in use by current "
                         "values, %llu held by readers of older ones, %llu "
                         "free (largest free run %llu); create a larger "
                         "store",
                         (unsigned long long)need,
                         (unsigned long long)s->heap_bytes,
                         (unsigned long long)usage.live_bytes,
                         (unsigned long long)usage.retired_bytes,
                         (unsigned long long)usage.free_bytes,
                         (unsigned long long)usage.largest_free_bytes);
    }
    return TES_OK;
}

/* ------------------------------------------------------------------------
 * Publishing.
 */

/* Steps 3 to 7 of the protocol in store.h.  Mutex held. */
static uint64_t tes__install(tes_store *s, uint32_t slot_index,
                             uint64_t block_ref)
{
    tes__header *h = s->header;
    tes__slot *slot = &s->slots[slot_index];
    uint64_t generation = atomic_load_explicit(&h->generation,
                                               memory_order_relaxed) + 1;
    uint64_t old_ref = atomic_load_explicit(&slot->block,
                                            memory_order_relaxed);

    if (block_ref)
        tes__block_at(s, block_ref - 1)->version = generation;

    /* release; pairs with the acquire load in tes_store_read_begin */
    atomic_store_explicit(&slot->block, block_ref, memory_order_release);

    /* release; pairs with tes_version_load */
    atomic_store_explicit(&slot->version, generation, memory_order_release);

    /* release; pairs with the acquire load announced by readers */
    atomic_store_explicit(&h->generation, generation, memory_order_release);

    /* A slot that names no LIVE block of its own was damaged: leave the
     * heap alone rather than write where it points. */
    if (old_ref && tes__block_ok(s, old_ref - 1)) {
        tes__block *old = tes__block_at(s, old_ref - 1);
        if (old->slot == slot_index &&
            tes__block_state(old) == TES__BLOCK_LIVE) {
            old->retired_generation = generation;
            atomic_store_explicit(&old->state, TES__BLOCK_RETIRED,
                                  memory_order_release);
        }
    }
    h->publish_count++;

    /* seq_cst; pairs with the seq_cst increment of waiter_count in
     * tes_store_wait: either we see the waiter or it sees the new wake. */
    atomic_fetch_add_explicit(&slot->wake, 1, memory_order_seq_cst);
    if (atomic_load_explicit(&h->waiter_count, memory_order_seq_cst) != 0)
        tes__futex_wake_all(&slot->wake);
    return generation;
}

int tes_store_publish(tes_store *s, const char *key, size_t key_bytes,
                      const void *payload, size_t payload_bytes,
                      uint64_t *version, tes_error *err)
{
    uint32_t slot_index;
    int rc;

    if ((rc = tes__check_key(key_bytes, err)) != TES_OK)
        return rc;
    uint64_t need = TES__BLOCK_HEADER_BYTES + tes__key_area_bytes(key_bytes)
                    + tes__round_up(payload_bytes, TES_RECORD_ALIGN_BYTES);
    if (payload_bytes > s->heap_bytes || need > s->heap_bytes)
        return tes__fail(err, TES_EFULL, 0,
                         "a value of %zu bytes cannot fit a store whose "
                         "heap is %llu bytes; create a larger store",
                         payload_bytes,
                         (unsigned long long)s->heap_bytes);

    /* A reader descheduled in the middle of a read holds back everything
     * retired since it began.  It needs no lock to finish, so when only
     * such readers stand in the way, step aside and try again for a while
     * before calling the store full. */
    uint64_t off, in_flight;
    int64_t waited_ns = 0, nap_ns = TES__FULL_FIRST_NAP_NS;
    for (;;) {
        if ((rc = tes__lock(s, err)) != TES_OK)
            return rc;
        if ((rc = tes__claim_slot(s, TES__SLOT_KEY, key, key_bytes,
                                  &slot_index, err)) != TES_OK) {
            tes__unlock(s);
            return rc;
        }
        rc = tes__alloc_or_reclaim(s, need, &off, &in_flight, err);
        if (rc == TES_OK)
            break;
        tes__unlock(s);
        if (rc != TES_EFULL || in_flight < need ||
            waited_ns >= TES__FULL_PATIENCE_NS)
            return rc;
        struct timespec nap = {0, nap_ns};
        nanosleep(&nap, NULL);
        waited_ns += nap_ns;
        if (nap_ns < TES__FULL_PATIENCE_NS / 64)
            nap_ns *= 2;
    }

    /* 1. Fill the block while it is WRITING: no reader can reach it. */
    tes__block *b = tes__block_at(s, off);
    uint8_t *key_area = (uint8_t *)b + TES__BLOCK_HEADER_BYTES;
    uint8_t *payload_area = key_area + tes__key_area_bytes(key_bytes);
    uint64_t version_next = atomic_load_explicit(&s->header->generation,
                                                 memory_order_relaxed) + 1;
    b->slot = slot_index;
    b->key_bytes = (uint32_t)key_bytes;
    b->payload_bytes = payload_bytes;
    b->retired_generation = 0;
    b->pad0 = 0;
    b->pad1 = 0;
    memset(key_area, 0, tes__key_area_bytes(key_bytes));
    memcpy(key_area, key, key_bytes);
    memcpy(payload_area, payload, payload_bytes);
    b->checksum = tes__record_checksum(b, version_next);

    /* 2. LIVE before the slot points at it, so a repair never frees it. */
    atomic_store_explicit(&b->state, TES__BLOCK_LIVE, memory_order_release);

    *version = tes__install(s, slot_index, off + 1);
    tes__unlock(s);
    return TES_OK;
}

int tes_store_delete(tes_store *s, const char *key, size_t key_bytes,
                     uint64_t *version, tes_error *err)
{
    int rc;

    if ((rc = tes__check_key(key_bytes, err)) != TES_OK)
        return rc;
    if ((rc = tes__lock(s, err)) != TES_OK)
        return rc;
    int64_t idx = tes__probe(s, TES__SLOT_KEY, key, key_bytes);
    if (idx < 0 || atomic_load_explicit(&s->slots[idx].block,
                                        memory_order_relaxed) == 0) {
        tes__unlock(s);
        return tes__fail(err, TES_ENOKEY, 0, "no such key");
    }
    *version = tes__install(s, (uint32_t)idx, 0);
    tes__unlock(s);
    return TES_OK;
}

/* Validates the region block a slot names (ref: offset + 1), reading each
 * field once.  Returns TES_OK with the data's offset from the segment base
 * and its size, or TES_ECORRUPT. */
static int tes__region_at(const tes_store *s, uint64_t ref,
                          size_t name_bytes, uint64_t *offset,
                          uint64_t *region_bytes, tes_error *err)
{
    uint64_t off = ref - 1;
    uint64_t data_at = TES__BLOCK_HEADER_BYTES +
                       tes__key_area_bytes((uint32_t)name_bytes);
    tes__block *b = tes__block_at(s, off);
    uint64_t size = off % TES_RECORD_ALIGN_BYTES || off >= s->heap_bytes
                        ? 0 : tes__block_size(b);
    uint64_t bytes = size ? b->payload_bytes : 0;
    if (size == 0 || size > s->heap_bytes - off ||
        tes__block_state(b) != TES__BLOCK_REGION || data_at > size ||
        bytes > size - data_at)
        return tes__fail(err, TES_ECORRUPT, 0, "region is damaged");
    *offset = s->header->heap_offset + off + data_at;
    *region_bytes = bytes;
    return TES_OK;
}

int tes_store_region(tes_store *s, const char *name, size_t name_bytes,
                     uint64_t region_bytes, uint64_t *offset, int *created,
                     tes_error *err)
{
    uint32_t slot_index;
    int rc;

    if ((rc = tes__check_key(name_bytes, err)) != TES_OK)
        return rc;
    if (region_bytes == 0 || region_bytes > s->heap_bytes)
        return tes__fail(err, TES_EFULL, 0,
                         "a region of %llu bytes cannot fit a store whose "
                         "heap is %llu bytes",
                         (unsigned long long)region_bytes,
                         (unsigned long long)s->heap_bytes);
    if ((rc = tes__lock(s, err)) != TES_OK)
        return rc;
    if ((rc = tes__claim_slot(s, TES__SLOT_REGION, name, name_bytes,
                              &slot_index, err)) != TES_OK) {
        tes__unlock(s);
        return rc;
    }

    tes__slot *slot = &s->slots[slot_index];
    uint64_t ref = atomic_load_explicit(&slot->block, memory_order_relaxed);
    uint64_t data_at = TES__BLOCK_HEADER_BYTES +
                       tes__key_area_bytes((uint32_t)name_bytes);
    if (ref) {
        uint64_t found_bytes;
        tes__unlock(s);
        if ((rc = tes__region_at(s, ref, name_bytes, offset, &found_bytes,
                                 err)) != TES_OK)
            return rc;
        if (found_bytes < region_bytes)
            return tes__fail(err, TES_EINVAL, 0,
                             "region exists with %llu bytes, fewer than the "
                             "%llu asked for",
                             (unsigned long long)found_bytes,
                             (unsigned long long)region_bytes);
        *created = 0;
        return TES_OK;
    }

    uint64_t need = data_at + tes__round_up(region_bytes,
                                            TES_RECORD_ALIGN_BYTES);
    uint64_t in_flight, off;
    rc = need <= s->heap_bytes
             ? tes__alloc_or_reclaim(s, need, &off, &in_flight, err)
             : tes__fail(err, TES_EFULL, 0, "no room for a region of %llu "
                         "bytes; create a larger store",
                         (unsigned long long)region_bytes);
    if (rc != TES_OK) {
        tes__unlock(s);
        return rc;
    }
    tes__block *b = tes__block_at(s, off);
    uint8_t *area = (uint8_t *)b + TES__BLOCK_HEADER_BYTES;
    b->slot = slot_index;
    b->key_bytes = (uint32_t)name_bytes;
    b->payload_bytes = region_bytes;
    b->version = 0;
    b->retired_generation = 0;
    b->checksum = 0;
    memset(area, 0, need - TES__BLOCK_HEADER_BYTES);
    memcpy(area, name, name_bytes);
    atomic_store_explicit(&b->state, TES__BLOCK_REGION, memory_order_release);

    /* release; pairs with the acquire load in the next region lookup */
    atomic_store_explicit(&slot->block, off + 1, memory_order_release);
    tes__unlock(s);
    *offset = s->header->heap_offset + off + data_at;
    *created = 1;
    return TES_OK;
}

int tes_store_find_region(const tes_store *s, const char *name,
                          size_t name_bytes, uint64_t *offset,
                          uint64_t *region_bytes, tes_error *err)
{
    int rc = tes__check_key(name_bytes, err);
    if (rc != TES_OK)
        return rc;
    int64_t idx = tes__probe(s, TES__SLOT_REGION, name, name_bytes);

    /* acquire; pairs with the release store of the block in
     * tes_store_region */
    uint64_t ref = idx < 0 ? 0 : atomic_load_explicit(&s->slots[idx].block,
                                                      memory_order_acquire);
    if (ref == 0)
        return tes__fail(err, TES_ENOKEY, 0, "no such region");
    return tes__region_at(s, ref, name_bytes, offset, region_bytes, err);
}

/* ------------------------------------------------------------------------
 * Reading.
 */

int tes_store_read_begin(tes_store *s, uint32_t slot_index, tes_record *out,
                         tes_error *err)
{
    tes__header *h = s->header;
    int rc;

    memset(out, 0, sizeof *out);
    if (slot_index >= s->slot_count) {
        s->read_depth++; /* read_end still follows */
        return tes__fail(err, TES_EINVAL, 0, "slot %u out of range",
                         slot_index);
    }
    if ((rc = tes__ensure_reader(s, err)) != TES_OK) {
        s->read_depth++; /* read_end still follows */
        return rc;
    }
    tes__reader *r = &s->readers[s->reader_index];
    tes__slot *slot = &s->slots[slot_index];

    /* 1. Announce: acquire pairs with the release store of the generation
     *    in tes__install.  A read nested in another (a finaliser run by the
     *    outer decode) keeps the outer, older announcement. */
    if (s->read_depth++ == 0) {
        uint64_t announced = atomic_load_explicit(&h->generation,
                                                  memory_order_acquire);
        atomic_store_explicit(&r->active, announced ? announced : 1,
                              memory_order_relaxed);

        /* seq_cst; pairs with the fence in tes__reclaim_locked. */
        atomic_thread_fence(memory_order_seq_cst);
    }

    /* 2. acquire; pairs with the release store of the block in
     *    tes__install. */
    uint64_t version = tes_version_load(&slot->version);
    uint64_t ref = atomic_load_explicit(&slot->block, memory_order_acquire);
    if (ref == 0) {
        out->version = version;
        return tes__fail(err, TES_ENOKEY, 0, "the key has been deleted");
    }

    /* Validate everything before trusting any of it: each field is read
     * once into a local, so a concurrent scribbler cannot change it
     * between the check and the use. */
    uint64_t off = ref - 1;
    if (off % TES_RECORD_ALIGN_BYTES || off >= s->heap_bytes)
        return tes__fail(err, TES_ECORRUPT, 0,
                         "key slot %u points outside the heap", slot_index);
    tes__block *b = tes__block_at(s, off);
    uint32_t state = tes__block_state(b);
    uint64_t size = tes__block_size(b);
    uint32_t key_bytes = b->key_bytes;
    if (size < TES__BLOCK_HEADER_BYTES || size > s->heap_bytes - off)
        return tes__fail(err, TES_ECORRUPT, 0,
                         "record of key slot %u has a bad size", slot_index);
    uint64_t payload_bytes = b->payload_bytes;
    uint64_t block_version = b->version;
    uint64_t checksum = b->checksum;

    if ((state != TES__BLOCK_LIVE && state != TES__BLOCK_RETIRED) ||
        b->slot != slot_index || key_bytes > TES_KEY_MAX_BYTES ||
        payload_bytes > size ||
        TES__BLOCK_HEADER_BYTES + tes__key_area_bytes(key_bytes) >
            size - payload_bytes)
        return tes__fail(err, TES_ECORRUPT, 0,
                         "record of key slot %u is damaged", slot_index);

    const uint8_t *key_area = (const uint8_t *)b + TES__BLOCK_HEADER_BYTES;
    const uint8_t *payload = key_area + tes__key_area_bytes(key_bytes);
    uint64_t sum = tes__checksum(key_area, key_bytes, block_version);
    sum = tes__checksum(payload, payload_bytes, sum);
    if (sum != checksum)
        return tes__fail(err, TES_ECORRUPT, 0,
                         "record of key slot %u fails its checksum",
                         slot_index);

    out->payload = payload;
    out->payload_bytes = payload_bytes;
    out->version = block_version;
    out->block_offset = ref;
    return TES_OK;
}

void tes_store_read_end(tes_store *s)
{
    if (s->read_depth > 0 && --s->read_depth > 0)
        return;
    if (s->reader_index == UINT32_MAX || s->reader_pid != tes__self())
        return;

    /* release; pairs with the acquire load of active in the reclaimer, so
     * pins taken during the read are seen with the clear. */
    atomic_store_explicit(&s->readers[s->reader_index].active, 0,
                          memory_order_release);
}

int tes_store_fork_prepare(tes_store *s)
{
    s->handoff_index = UINT32_MAX;
    s->fork_pinned = 1;
    if (tes__ensure_reader(s, NULL) != TES_OK)
        return TES_EREADERS;

    /* Nothing pinned, nothing to hand over: the child claims a slot only
     * when it first reads. */
    const tes__reader *mine = &s->readers[s->reader_index];
    int pinned = 0;
    for (int p = 0; p < TES_PIN_SLOTS && !pinned; p++)
        pinned = atomic_load_explicit(&mine->pins[p].block_offset,
                                      memory_order_relaxed) != 0;
    s->fork_pinned = pinned;
    if (!pinned)
        return TES_OK;

    /* Children that die before they start leave their slot to us for a
     * while; past a few, later children copy their pins instead. */
    if (s->pending_count >= TES__MAX_PENDING_HANDOFFS)
        return TES_EREADERS;
    s->handoff_index = tes__claim_reader(s, s->reader_owner,
                                         &s->readers[s->reader_index]);
    return s->handoff_index == UINT32_MAX ? TES_EREADERS : TES_OK;
}

void tes_store_fork_parent(tes_store *s)
{
    if (s->handoff_index == UINT32_MAX)
        return;
    s->pending[s->pending_count].index = s->handoff_index;
    s->pending[s->pending_count].since_ns = tes__now_ns();
    s->pending_count++;
    s->handoff_index = UINT32_MAX;
}

int tes_store_fork_child(tes_store *s, tes_error *err)
{
    int32_t me = tes__self();
    uint32_t h = s->handoff_index;

    s->handoff_index = UINT32_MAX;
    s->pending_count = 0;
    if (h != UINT32_MAX) {
        /* One CAS moves the slot, pins and all, from parent to child. */
        tes__reader *r = &s->readers[h];
        uint64_t parent = s->reader_owner;
        uint64_t owner = tes__owner_of(me, tes__process_start(me));
        if (atomic_compare_exchange_strong_explicit(
                &r->owner, &parent, owner, memory_order_acq_rel,
                memory_order_relaxed)) {
            s->reader_index = h;
            s->reader_pid = me;
            s->reader_owner = owner;
            s->read_depth = 0;
            return TES_OK;
        }
        return tes__ensure_reader(s, err);
    }

    if (s->fork_pinned)
        return tes__ensure_reader(s, err);

    /* The parent pinned nothing when it forked, so the child holds no view
     * of this store: it will claim a clean slot when it first reads. */
    s->reader_index = UINT32_MAX;
    s->reader_pid = 0;
    s->reader_owner = 0;
    return TES_OK;
}

int tes_store_pin(tes_store *s, uint64_t block_offset)
{
    if (tes__ensure_reader(s, NULL) != TES_OK)
        return TES_EREADERS;
    tes__reader *r = &s->readers[s->reader_index];
    int empty = -1;

    for (int p = 0; p < TES_PIN_SLOTS; p++) {
        uint64_t off = atomic_load_explicit(&r->pins[p].block_offset,
                                            memory_order_relaxed);
        if (off == block_offset) {
            r->pins[p].count++;
            return TES_OK;
        }
        if (off == 0 && empty < 0)
            empty = p;
    }
    if (empty < 0)
        return TES_EPINS;
    r->pins[empty].count = 1;

    /* Made visible to the reclaimer by the release in read_end. */
    atomic_store_explicit(&r->pins[empty].block_offset, block_offset,
                          memory_order_relaxed);
    return TES_OK;
}

void tes_store_unpin(tes_store *s, uint64_t block_offset)
{
    if (tes__ensure_reader(s, NULL) != TES_OK)
        return;
    tes__reader *r = &s->readers[s->reader_index];
    for (int p = 0; p < TES_PIN_SLOTS; p++) {
        tes__pin *pin = &r->pins[p];
        if (atomic_load_explicit(&pin->block_offset, memory_order_relaxed) !=
            block_offset)
            continue;
        if (--pin->count == 0)
            /* release: the views were dropped before the pin */
            atomic_store_explicit(&pin->block_offset, 0,
                                  memory_order_release);
        return;
    }
}

int tes_store_wait(tes_store *s, uint32_t slot_index, uint64_t after,
                   int64_t timeout_ns, uint64_t *version)
{
    tes__header *h = s->header;
    tes__slot *slot = &s->slots[slot_index];
    struct timespec now, deadline;
    int rc = TES_OK;

    clock_gettime(CLOCK_MONOTONIC, &now);
    if (timeout_ns >= 0) {
        uint64_t ns = (uint64_t)now.tv_nsec + (uint64_t)timeout_ns;
        deadline.tv_sec = now.tv_sec + (time_t)(ns / 1000000000u);
        deadline.tv_nsec = (long)(ns % 1000000000u);
    }

    /* seq_cst; pairs with the seq_cst wake increment in tes__install */
    atomic_fetch_add_explicit(&h->waiter_count, 1, memory_order_seq_cst);
    for (;;) {
        uint32_t seen = atomic_load_explicit(&slot->wake,
                                             memory_order_seq_cst);
        uint64_t v = tes_version_load(&slot->version);
        if (v > after) {
            *version = v;
            break;
        }

        struct timespec left, *wait_for = NULL;
        if (timeout_ns >= 0) {
            clock_gettime(CLOCK_MONOTONIC, &now);
            int64_t ns = (int64_t)(deadline.tv_sec - now.tv_sec) *
                             1000000000 + (deadline.tv_nsec - now.tv_nsec);
            if (ns <= 0) {
                *version = v;
                rc = TES_ETIMEOUT;
                break;
            }
            left.tv_sec = (time_t)(ns / 1000000000);
            left.tv_nsec = (long)(ns % 1000000000);
            wait_for = &left;
        }
        tes__futex_wait(&slot->wake, seen, wait_for);
    }
    atomic_fetch_sub_explicit(&h->waiter_count, 1, memory_order_relaxed);
    return rc;
}

/* ------------------------------------------------------------------------
 * Listing and statistics.
 */

uint32_t tes_store_slot_count(const tes_store *s)
{
    return s->slot_count;
}

int tes_store_slot_key(const tes_store *s, uint32_t i, char *key_out,
                       size_t *key_bytes, uint64_t *version)
{
    if (i >= s->slot_count)
        return 0;
    tes__slot *slot = &s->slots[i];
    if (atomic_load_explicit(&slot->state, memory_order_acquire) !=
            TES__SLOT_KEY ||
        atomic_load_explicit(&slot->block, memory_order_acquire) == 0)
        return 0;
    uint32_t n = slot->key_bytes;
    if (n == 0 || n > TES_KEY_MAX_BYTES)
        return 0;
    memcpy(key_out, slot->key, n);
    key_out[n] = '\0';
    *key_bytes = n;
    *version = tes_version_load(&slot->version);
    return 1;
}

int tes_store_stats(tes_store *s, tes_stats *out, tes_error *err)
{
    tes__header *h = s->header;
    int rc;

    memset(out, 0, sizeof *out);
    if ((rc = tes__lock(s, err)) != TES_OK)
        return rc;
    tes__heap_usage(s, out);
    out->publish_count = h->publish_count;
    out->reclaim_count = h->reclaim_count;
    out->repair_count = h->repair_count;
    tes__unlock(s);

    out->size_bytes = h->size_bytes;
    out->heap_bytes = s->heap_bytes;
    out->generation = atomic_load_explicit(&h->generation,
                                           memory_order_acquire);
    out->max_keys = s->max_keys;
    out->max_readers = s->reader_count;
    out->creator_pid = h->creator_pid;
    out->flags = h->flags;
    for (uint32_t i = 0; i < s->slot_count; i++)
        out->key_count +=
            atomic_load_explicit(&s->slots[i].state, memory_order_relaxed) ==
                TES__SLOT_KEY &&
            atomic_load_explicit(&s->slots[i].block, memory_order_relaxed);
    for (uint32_t i = 0; i < s->reader_count; i++) {
        uint64_t owner = atomic_load_explicit(&s->readers[i].owner,
                                              memory_order_relaxed);
        if (tes__owner_pid(owner) > 0 && tes__owner_alive(owner))
            out->reader_count++;
    }
    return TES_OK;
}

uint64_t tes_store_reclaim(tes_store *s)
{
    if (tes__lock(s, NULL) != TES_OK)
        return 0;
    uint64_t freed = tes__reclaim_locked(s, NULL);
    tes__unlock(s);
    return freed;
}
