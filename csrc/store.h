/*
 * store.h - a keyed, versioned record store in one POSIX shared-memory
 * segment, read lock-free by any number of processes.
 *
 * THE PROTOCOL
 *
 * A segment holds a header, a table of reader slots (one per attached
 * process), a hash table of key slots and a heap of records.  Each key slot
 * points at the record holding the key's current value.  Records are
 * immutable once published: a new value is a new record, and the old one is
 * retired, then freed once no reader can still be looking at it.
 *
 * Writers serialise on one process-shared robust mutex in the header.  Under
 * it, a publish of generation g (the global generation counter plus one):
 *
 *   1. allocates a block in the heap (state WRITING) and fills it;
 *   2. marks it LIVE;
 *   3. stores the block offset in the key slot            (release)
 *   4. stores g as the key slot's version                  (release)
 *   5. stores g as the global generation                   (release)
 *   6. marks the superseded block RETIRED at generation g;
 *   7. bumps the slot's wake word and wakes waiters if any are registered.
 *
 * Versions are generations, so every publish gets a distinct version and the
 * version of a key only ever grows, even across a delete.
 *
 * A reader never takes the mutex and never waits.  The cheap check is one
 * acquire load of the slot's version, compared with what the reader cached.
 * To fetch a record it:
 *
 *   1. stores the global generation in its reader slot's active word,
 *      followed by a sequentially consistent fence;
 *   2. loads the key slot's block offset (acquire; pairs with step 3 above)
 *      and validates the block: bounds, state, owner slot and checksum;
 *   3. copies what it needs, or pins the block in its reader slot's pin
 *      table for zero-copy views;
 *   4. clears the active word (release).
 *
 * A retired block of generation g may be freed when every reader slot whose
 * process is alive either is inactive or announced a generation >= g, and no
 * live reader slot pins it.  A reader that announced a >= g loaded the slot
 * after step 5 of the publish that retired the block, so it cannot have seen
 * it.  A reader whose announcement the reclaimer did not see ordered its
 * fence after the reclaimer's fence, so it too sees the newer block.  Reader
 * slots of dead processes are ignored and later reused, which releases the
 * pins of a reader that was killed while holding views.  A reader slot's
 * owner (pid and process start time) is one word changed by one CAS, so a
 * slot being claimed, or handed from a forking parent to its child, never
 * looks dead to a reclaimer in between.
 *
 * If a writer dies holding the mutex, the next writer to lock it is told so
 * by the kernel (robust mutex) and repairs the heap before going on: blocks
 * still WRITING are freed, LIVE blocks no slot points at are retired, and
 * the slot versions and global generation are made consistent.  Every step
 * of a publish leaves the heap walkable, so no dead writer loses a value
 * that was fully published and no state stays stuck.
 *
 * A publisher that finds no room because readers are in the middle of a
 * read waits for them (up to half a second), since they finish without
 * help; a reader stopped mid-read can therefore make writers fail, never
 * other readers.
 *
 * A tes_store handle is for one thread at a time: it owns one reader slot.
 * (The Python layer calls it under the GIL from any thread.)
 */
#ifndef TES_STORE_H
#define TES_STORE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Limits that users meet.  Segment names are short enough for macOS. */
#define TES_NAME_MAX_CHARS 30
#define TES_KEY_MAX_BYTES 216
#define TES_PIN_SLOTS 256
#define TES_RECORD_ALIGN_BYTES 64

/* Flags stored in the segment header at creation. */
#define TES_FLAG_ALLOW_PICKLE 0x1u

/* Result codes.  Zero is success; every failure also fills a tes_error. */
enum tes_code {
    TES_OK = 0,
    TES_ENOENT,     /* no segment of that name */
    TES_EEXIST,     /* a segment of that name exists already */
    TES_ENOTSTORE,  /* the segment is not a tesenv store */
    TES_ELAYOUT,    /* a tesenv store of another layout version */
    TES_ETRUNC,     /* the segment is shorter than its header says */
    TES_EOWNER,     /* the segment belongs to another user */
    TES_ENOSPC,     /* not enough free space in the shm file system */
    TES_EFULL,      /* the heap has no room for the record */
    TES_EKEYS,      /* every key slot is taken */
    TES_EREADERS,   /* every reader slot is taken */
    TES_EPINS,      /* this process's pin table is full */
    TES_ENOKEY,     /* the key has no value */
    TES_EKEY,       /* the key is empty or too long */
    TES_EINVAL,     /* a bad argument */
    TES_ECORRUPT,   /* the segment's contents fail validation */
    TES_ETIMEOUT,   /* a wait ran out of time */
    TES_ESYS        /* a system call failed; see tes_error.sys_errno */
};

typedef struct tes_error {
    int code;
    int sys_errno;
    char message[256];
} tes_error;

typedef struct tes_store tes_store;

/* One version word per key slot, read by the hot path. */
typedef _Atomic uint64_t tes_version_word;

typedef struct tes_create_options {
    uint64_t size_bytes;   /* whole segment, header and tables included */
    uint32_t max_keys;     /* rounded up to a power of two */
    uint32_t max_readers;  /* processes attached at once */
    uint32_t mode;         /* permission bits, e.g. 0600 */
    uint32_t flags;        /* TES_FLAG_* */
} tes_create_options;

/* A validated record, valid between tes_store_read_begin and _end. */
typedef struct tes_record {
    const uint8_t *payload;
    uint64_t payload_bytes;
    uint64_t version;
    uint64_t block_offset;  /* identity of the record, for pinning */
} tes_record;

typedef struct tes_stats {
    uint64_t size_bytes;
    uint64_t heap_bytes;
    uint64_t live_bytes;      /* current records and regions */
    uint64_t retired_bytes;   /* superseded, not yet reclaimed */
    uint64_t free_bytes;
    uint64_t largest_free_bytes;
    uint64_t generation;
    uint64_t publish_count;
    uint64_t reclaim_count;
    uint64_t repair_count;    /* times a dead writer's work was repaired */
    uint32_t key_count;       /* keys with a value */
    uint32_t max_keys;
    uint32_t reader_count;    /* reader slots held by live processes */
    uint32_t max_readers;
    int32_t creator_pid;
    uint32_t flags;
} tes_stats;

/* What tes_store_probe learns of a segment without attaching to it. */
typedef struct tes_probe {
    int is_store;           /* magic and layout match */
    int creator_alive;
    int32_t creator_pid;
    uint64_t size_bytes;
} tes_probe;

/*
 * Creates a segment and attaches to it.  Returns TES_OK and sets *out, or a
 * code (TES_EEXIST, TES_ENOSPC, TES_EINVAL, TES_ESYS) with *err filled and
 * nothing left behind.  The caller owns *out and ends it with
 * tes_store_close; the segment stays until tes_store_unlink.
 */
int tes_store_create(const char *name, const tes_create_options *options,
                     tes_store **out, tes_error *err);

/*
 * Attaches to an existing segment after validating its header, owner and
 * size.  Returns TES_OK and sets *out, or TES_ENOENT, TES_ENOTSTORE,
 * TES_ELAYOUT, TES_ETRUNC, TES_EOWNER, TES_EREADERS, TES_ESYS.
 */
int tes_store_attach(const char *name, tes_store **out, tes_error *err);

/* Unmaps and frees the handle and releases its reader slot.  NULL is
 * accepted.  Never removes the segment. */
void tes_store_close(tes_store *store);

/* Removes the segment name; attached processes keep their mappings. */
int tes_store_unlink(const char *name, tes_error *err);

/* Reads a segment's header read-only.  Returns TES_OK or TES_ENOENT,
 * TES_ESYS; a foreign segment is TES_OK with is_store 0. */
int tes_store_probe(const char *name, tes_probe *out, tes_error *err);

/* Checks that name is 1..TES_NAME_MAX_CHARS of [A-Za-z0-9._-], not starting
 * with a dot.  Returns TES_OK or TES_EINVAL. */
int tes_store_check_name(const char *name, tes_error *err);

/* Returns 1 if a process with this pid exists and is not a zombie. */
int tes_process_alive(int32_t pid);

/* The segment's base address and size, and its header flags. */
const uint8_t *tes_store_base(const tes_store *store);
uint64_t tes_store_size(const tes_store *store);
uint32_t tes_store_flags(const tes_store *store);
int32_t tes_store_creator_pid(const tes_store *store);

/*
 * Finds the key slot of key without locking.  Returns TES_OK and sets *slot,
 * TES_ENOKEY if the key was never published, or TES_EKEY.
 */
int tes_store_lookup(const tes_store *store, const char *key, size_t key_bytes,
                     uint32_t *slot, tes_error *err);

/* The version word of a slot found by tes_store_lookup. */
const tes_version_word *tes_store_version_word(const tes_store *store,
                                               uint32_t slot);

/* The acquire load a reader compares with its cache; pairs with the
 * release store of step 4 of a publish. */
static inline uint64_t tes_version_load(const tes_version_word *word)
{
    return atomic_load_explicit(word, memory_order_acquire);
}

/*
 * Publishes payload as the new value of key.  Returns TES_OK and sets
 * *version, or TES_EKEY, TES_EKEYS, TES_EFULL, TES_ECORRUPT, TES_ESYS.  On
 * failure nothing already published changes.  payload is copied.  When the
 * only space left is held back by readers in the middle of a read, waits
 * up to half a second for them before returning TES_EFULL.
 */
int tes_store_publish(tes_store *store, const char *key, size_t key_bytes,
                      const void *payload, size_t payload_bytes,
                      uint64_t *version, tes_error *err);

/* Removes key's value; its version still grows.  TES_ENOKEY if it had
 * none. */
int tes_store_delete(tes_store *store, const char *key, size_t key_bytes,
                     uint64_t *version, tes_error *err);

/*
 * Starts a read of slot: validates the current record and fills *out.
 * Returns TES_OK, TES_ENOKEY (deleted; *out has the version, no payload),
 * TES_ECORRUPT, TES_EREADERS.  Whatever the result, end with
 * tes_store_read_end before the next read_begin on this handle.
 */
int tes_store_read_begin(tes_store *store, uint32_t slot, tes_record *out,
                         tes_error *err);
void tes_store_read_end(tes_store *store);

/*
 * Fork support, so that zero-copy views a child inherits stay valid even if
 * the parent drops them at once.  Before fork, tes_store_fork_prepare fills
 * a spare reader slot with this process's pins; after it, the child takes
 * that slot over with tes_store_fork_child and the parent calls
 * tes_store_fork_parent, which keeps the slot until the child has it (or,
 * if the child dies first, for two seconds).  When this process pins
 * nothing, nothing is handed over and the child takes a slot only when it
 * first reads.  A child forked without prepare, or while eight earlier
 * children are still starting, or that starts more than two seconds after
 * the fork, copies its pins on first use instead: if the parent dropped
 * and republished those records meanwhile, the child's views may change.
 * prepare returns TES_OK or TES_EREADERS (then no hand-over is made);
 * fork_child returns TES_OK or TES_EREADERS.
 */
int tes_store_fork_prepare(tes_store *store);
void tes_store_fork_parent(tes_store *store);
int tes_store_fork_child(tes_store *store, tes_error *err);

/*
 * Pins a record returned by the current read so its block is not reclaimed
 * until the matching tes_store_unpin.  Returns TES_OK or TES_EPINS when this
 * process already pins TES_PIN_SLOTS records; the caller then copies.
 */
int tes_store_pin(tes_store *store, uint64_t block_offset);
void tes_store_unpin(tes_store *store, uint64_t block_offset);

/*
 * Waits without spinning until slot's version exceeds after_version or
 * timeout_ns passes (negative: no limit).  Returns TES_OK with *version set
 * to the newer version, or TES_ETIMEOUT with *version set to the current
 * one.  Call without holding locks the publisher may need.
 */
int tes_store_wait(tes_store *store, uint32_t slot, uint64_t after_version,
                   int64_t timeout_ns, uint64_t *version);

/*
 * Reserves, or finds, a named mutable region of region_bytes in the heap.
 * Regions are never reclaimed and are shared by all attached processes;
 * what is written in them is the caller's protocol.  Returns TES_OK with
 * *offset (from the segment base) and *created set, or TES_EINVAL when an
 * existing region is smaller, TES_EFULL, TES_EKEYS, TES_EKEY.
 */
int tes_store_region(tes_store *store, const char *name, size_t name_bytes,
                     uint64_t region_bytes, uint64_t *offset, int *created,
                     tes_error *err);

/*
 * Finds a region made by tes_store_region without creating one.  Returns
 * TES_OK with *offset and *region_bytes set, TES_ENOKEY if there is none,
 * TES_EKEY or TES_ECORRUPT.  Lock-free.
 */
int tes_store_find_region(const tes_store *store, const char *name,
                          size_t name_bytes, uint64_t *offset,
                          uint64_t *region_bytes, tes_error *err);

/*
 * Key slot enumeration for listings: returns 1 and fills key/version for
 * slot index i if it holds a key with a value, 0 otherwise.  The key is
 * copied into key_out (TES_KEY_MAX_BYTES + 1 bytes, NUL-terminated).
 */
int tes_store_slot_key(const tes_store *store, uint32_t i, char *key_out,
                       size_t *key_bytes, uint64_t *version);
uint32_t tes_store_slot_count(const tes_store *store);

/* Fills *out; takes the writer mutex to walk the heap. */
int tes_store_stats(tes_store *store, tes_stats *out, tes_error *err);

/* Runs a reclamation pass now.  Returns the number of bytes freed. */
uint64_t tes_store_reclaim(tes_store *store);

#ifdef __cplusplus
}
#endif

#endif /* TES_STORE_H */
