# cython: freethreading_compatible = False
"""Lock-free worker counters in a shared store region.

The registry is one region of a store (``Store.region``): a header of
TT_HEADER_WORDS words, then TT_SLOT_COUNT slots of TT_SLOT_WORDS words.
Every field is an aligned 64-bit word, so no reader ever sees half of one.

Who writes what:

* A slot is claimed by a compare-and-swap of its owner word, from 0 or from
  the token of an owner that is gone, to a fresh random token.  Only the
  winner writes the slot's identity (pid, kind, start time, worker id) and
  zeroes its counters, between two increments of the sequence word: odd
  means the identity is being rewritten.

* After that each counter word has exactly one writer: the worker thread
  bound to the slot writes jobs, errors, the config version, the job type
  names and statistics; its heartbeat thread writes the heartbeat; the
  worker, or the manager once the worker is dead, writes the state.  With
  one writer a counter needs no read-modify-write instruction: the writer
  loads its own last value and stores the next one, and a reader sees the
  previous or the next value, never a mix.  Counters are relaxed: a reader
  may see jobs already counted but their latency not yet, by a few
  nanoseconds.  (The writer also holds the GIL throughout, so two Python
  threads that share one Telemetry by mistake still count correctly.)

* A reader loads the sequence word (acquire), copies the slot word by word
  (relaxed), then loads the sequence again after an acquire fence; if the
  two differ or the first was odd, the slot was being claimed and it reads
  again.  Counters may move during the copy; that is a slightly stale
  reading, not a torn one.
"""

from libc.stdint cimport uint8_t, uint64_t
from libc.string cimport memcpy, memset

__all__ = [
    "Telemetry", "JobType", "REGION_BYTES", "SLOT_COUNT", "JOB_TYPES",
    "BUCKETS", "STATES", "KINDS", "init_region", "claim_slot", "slot_owner",
    "slot_state", "set_slot_state", "read_slot", "wall_ns",
]

MAGIC = 0x3130474552534554        # "TESREG01", little-endian
# The layout word changes whenever the geometry does.
LAYOUT_WORD = sum(int(v) << shift for v, shift in (
    (TT_SLOT_COUNT, 48), (TT_SLOT_WORDS, 32), (TT_JOB_TYPES, 24),
    (TT_BUCKETS, 16), (TT_STAT_WORDS, 8), (TT_HEADER_WORDS, 0)))
SLOT_COUNT = TT_SLOT_COUNT
JOB_TYPES = TT_JOB_TYPES
BUCKETS = TT_BUCKETS
ID_BYTES = TT_ID_WORDS * 8
NAME_BYTES = TT_NAME_WORDS * 8
REGION_BYTES = (TT_HEADER_WORDS + TT_SLOT_COUNT * TT_SLOT_WORDS) * 8

STATES = ("free", "starting", "running", "stopping", "exited", "dead")
STATE_CODES = {name: code for code, name in enumerate(STATES)}
KINDS = ("unknown", "process", "thread", "pool")
KIND_CODES = {name: code for code, name in enumerate(KINDS)}

# A claim is rare and short; a reader that keeps losing the race to one is
# looking at a slot being hammered by claims and reports it as unreadable.
cdef int READ_ATTEMPTS = 1000


def wall_ns():
    """Wall-clock nanoseconds, the clock of start and heartbeat times."""
    return tt_wall_ns()


cdef uint64_t *_region_words(object region) except NULL:
    """The region's first word.  Raises ValueError if region is not a
    writable, aligned uint8 array of at least REGION_BYTES bytes."""
    cdef uint8_t[::1] view
    if getattr(region, "nbytes", 0) < REGION_BYTES:
        raise ValueError(f"a registry region needs {REGION_BYTES} bytes")
    view = region
    if (<size_t>&view[0]) % 64:
        raise ValueError("a registry region must be 64-byte aligned")
    return <uint64_t *>&view[0]


cdef uint64_t *_slot_words(object region, int slot) except NULL:
    cdef uint64_t *words = _region_words(region)
    if slot < 0 or slot >= TT_SLOT_COUNT:
        raise IndexError(f"slot {slot} out of range 0..{TT_SLOT_COUNT - 1}")
    return words + TT_HEADER_WORDS + <size_t>slot * TT_SLOT_WORDS


cdef int _put_text(uint64_t *dest, int word_count, bytes text) except -1:
    """Stores text NUL-padded into word_count words, one relaxed store per
    word so that a concurrent reader copies whole words."""
    cdef uint64_t w
    cdef int i
    cdef bytes padded = text[:word_count * 8].ljust(word_count * 8, b"\0")
    cdef const char *src = padded
    for i in range(word_count):
        memcpy(&w, src + 8 * i, 8)
        tt_store_relaxed(&dest[i], w)
    return 0


cdef bytes _get_text(const uint64_t *src, int word_count):
    cdef uint64_t buf[TT_ID_WORDS]
    cdef int i
    for i in range(word_count):
        buf[i] = tt_load_relaxed(&src[i])
    return (<char *>buf)[:word_count * 8].rstrip(b"\0")


def init_region(region):
    """Stamps a fresh (zeroed) region with the registry's magic and layout,
    or checks an existing one.  Any number of processes may race here.

    Raises ValueError if region already holds something else.
    """
    cdef uint64_t *words = _region_words(region)

    # Both stamps are fixed values, so whichever process gets there first,
    # every process converges on the same header.
    tt_cas_acq_rel(&words[1], 0, LAYOUT_WORD)
    tt_cas_acq_rel(&words[0], 0, MAGIC)
    if tt_load_acquire(&words[0]) != MAGIC:
        raise ValueError("the registry region holds something else")
    if tt_load_acquire(&words[1]) != LAYOUT_WORD:
        raise ValueError("the registry region was made by a tesenv with a "
                         "different layout")


def slot_owner(region, int slot):
    """The slot's claim token: 0 if it was never claimed."""
    return tt_load_acquire(&_slot_words(region, slot)[TT_OWNER])


def slot_state(region, int slot):
    """The slot's state code (an index into STATES)."""
    return tt_load_acquire(&_slot_words(region, slot)[TT_STATE])


def set_slot_state(region, int slot, int state):
    """Sets the slot's state; the caller must be its one writer: the
    worker, or the manager after the worker died."""
    if state < 0 or state >= len(STATES):
        raise ValueError(f"no state {state}")
    # release; pairs with the acquire load in read_slot
    tt_store_release(&_slot_words(region, slot)[TT_STATE], state)


def claim_slot(region, int slot, uint64_t expected_owner, uint64_t token,
               bytes worker_id, uint64_t pid, int kind):
    """Takes the slot if its owner word still holds expected_owner, and
    writes a fresh identity with zeroed counters and state "starting".

    Returns True if this call claimed it, False if another process did.
    """
    cdef uint64_t *s = _slot_words(region, slot)
    cdef uint64_t seq
    cdef int i
    if token == 0:
        raise ValueError("a claim token must not be 0")
    if not tt_cas_acq_rel(&s[TT_OWNER], expected_owner, token):
        return False

    # Open the identity for rewriting: odd sequence first, then the data.
    seq = tt_load_relaxed(&s[TT_SEQ])
    tt_store_relaxed(&s[TT_SEQ], seq + 1)
    # release fence: keeps the odd sequence ahead of the stores below;
    # pairs with the acquire fence in read_slot
    tt_fence_release()

    tt_store_relaxed(&s[TT_PID], pid)
    tt_store_relaxed(&s[TT_KIND], kind)
    tt_store_relaxed(&s[TT_START_NS], tt_wall_ns())
    tt_store_relaxed(&s[TT_GENERATION], tt_load_relaxed(&s[TT_GENERATION]) + 1)
    tt_store_relaxed(&s[TT_STATE], STATE_CODES["starting"])
    _put_text(&s[TT_ID], TT_ID_WORDS, worker_id)
    for i in range(TT_JOBS, TT_ID):
        tt_store_relaxed(&s[i], 0)
    for i in range(TT_NAMES, TT_SLOT_WORDS):
        tt_store_relaxed(&s[i], 0)
    tt_store_relaxed(&s[TT_HEARTBEAT_NS], tt_wall_ns())

    # Close it: release; pairs with the acquire load of TT_SEQ in read_slot.
    tt_store_release(&s[TT_SEQ], seq + 2)
    return True


def read_slot(region, int slot):
    """A consistent copy of one slot as a dict, or None if it was never
    claimed.  Raises BlockingIOError if claims kept rewriting it."""
    cdef uint64_t *s = _slot_words(region, slot)
    cdef uint64_t copy[TT_SLOT_WORDS]
    cdef uint64_t seq0, seq1
    cdef int attempt, i, t, b
    cdef uint64_t *stats

    for attempt in range(READ_ATTEMPTS):
        seq0 = tt_load_acquire(&s[TT_SEQ])
        if seq0 & 1:
            continue
        for i in range(TT_SLOT_WORDS):
            copy[i] = tt_load_relaxed(&s[i])
        # acquire fence: the copy above is done before the sequence is
        # checked again; pairs with the release fence in claim_slot
        tt_fence_acquire()
        seq1 = tt_load_relaxed(&s[TT_SEQ])
        if seq0 == seq1:
            break
    else:
        raise BlockingIOError(f"registry slot {slot} is being rewritten")
    if copy[TT_OWNER] == 0:
        return None

    job_types = {}
    for t in range(TT_JOB_TYPES):
        stats = &copy[TT_STATS + t * TT_STAT_WORDS]
        name = _get_text(&copy[TT_NAMES + t * TT_NAME_WORDS], TT_NAME_WORDS)
        if not name and stats[TT_STAT_COUNT] == 0:
            continue
        job_types[t] = {
            "name": name.decode("utf-8", "replace") or f"type{t}",
            "count": stats[TT_STAT_COUNT],
            "sum_ns": stats[TT_STAT_SUM_NS],
            "max_ns": stats[TT_STAT_MAX_NS],
            "buckets": [stats[TT_STAT_BUCKETS + b] for b in range(TT_BUCKETS)],
        }
    state = int(copy[TT_STATE])
    kind = int(copy[TT_KIND])
    return {
        "slot": slot,
        "id": _get_text(&copy[TT_ID], TT_ID_WORDS).decode("utf-8", "replace"),
        "pid": copy[TT_PID],
        "kind": KINDS[kind] if kind < len(KINDS) else "unknown",
        "state": STATES[state] if state < len(STATES) else "unknown",
        "start_ns": copy[TT_START_NS],
        "generation": copy[TT_GENERATION],
        "owner": copy[TT_OWNER],
        "jobs": copy[TT_JOBS],
        "errors": copy[TT_ERRORS],
        "heartbeat_ns": copy[TT_HEARTBEAT_NS],
        "config_version": copy[TT_CONFIG_VERSION],
        "job_types": job_types,
    }


cdef class Telemetry:
    """The writer of one registry slot, for the worker that claimed it.

    Every method is a few plain stores to shared memory: no lock, no system
    call, and no allocation.  Use it from the worker's own thread (the
    heartbeat may come from one other thread); see the module docstring for
    why one writer per word needs no atomic read-modify-write.
    """

    def __init__(self, region, int slot, str worker_id=""):
        self.slot_words = _slot_words(region, slot)
        self.region = region
        self.slot = slot
        self.worker_id = worker_id
        self._job_types = [None] * TT_JOB_TYPES

    cdef int _check(self) except -1:
        if self.slot_words == NULL:
            raise ValueError("this Telemetry was closed")
        return 0

    def job_done(self, unsigned int job_type, uint64_t latency_ns):
        """Counts one finished job of job_type (0..JOB_TYPES-1) that took
        latency_ns nanoseconds."""
        cdef uint64_t *s = self.slot_words
        cdef uint64_t *st
        if job_type >= TT_JOB_TYPES:
            raise IndexError(f"job type {job_type} out of range "
                             f"0..{TT_JOB_TYPES - 1}")
        if s == NULL:
            self._check()
        st = s + TT_STATS + job_type * TT_STAT_WORDS
        _record(s, st, latency_ns)

    def error(self):
        """Counts one failed job."""
        cdef uint64_t *s = self.slot_words
        if s == NULL:
            self._check()
        tt_store_relaxed(&s[TT_ERRORS], tt_load_relaxed(&s[TT_ERRORS]) + 1)

    def heartbeat(self):
        """Stamps the slot with the wall-clock time now."""
        self._check()
        tt_store_relaxed(&self.slot_words[TT_HEARTBEAT_NS], tt_wall_ns())

    def saw_config(self, uint64_t version):
        """Records the configuration version the worker last acted on."""
        self._check()
        tt_store_relaxed(&self.slot_words[TT_CONFIG_VERSION], version)

    def set_state(self, str state):
        """Sets the slot's state by name (see STATES)."""
        self._check()
        code = STATE_CODES.get(state)
        if code is None:
            raise ValueError(f"no state {state!r}; one of {STATES}")
        # release; pairs with the acquire load in read_slot and slot_state
        tt_store_release(&self.slot_words[TT_STATE], code)

    @property
    def jobs(self):
        self._check()
        return tt_load_relaxed(&self.slot_words[TT_JOBS])

    @property
    def errors(self):
        self._check()
        return tt_load_relaxed(&self.slot_words[TT_ERRORS])

    def job_type(self, str name):
        """The counters of the job type called name, declared in this slot
        on first use.  Returns a JobType whose ``done(latency_ns)`` is the
        cheapest way to count a job.  Raises ValueError once JOB_TYPES
        names are taken."""
        cdef int i, count
        self._check()
        encoded = name.encode("utf-8")
        if not encoded or len(encoded) > NAME_BYTES:
            raise ValueError(f"a job type name is 1 to {NAME_BYTES} bytes "
                             f"of UTF-8, got {name!r}")
        count = <int>tt_load_relaxed(&self.slot_words[TT_JOB_TYPE_COUNT])
        for i in range(count):
            if _get_text(&self.slot_words[TT_NAMES + i * TT_NAME_WORDS],
                         TT_NAME_WORDS) == encoded:
                return self._bound(i, name)
        if count >= TT_JOB_TYPES:
            raise ValueError(f"a worker has at most {TT_JOB_TYPES} job types")
        _put_text(&self.slot_words[TT_NAMES + count * TT_NAME_WORDS],
                  TT_NAME_WORDS, encoded)
        # release; the name is whole before a reader counts it
        tt_store_release(&self.slot_words[TT_JOB_TYPE_COUNT], count + 1)
        return self._bound(count, name)

    def _bound(self, int index, str name):
        cdef JobType jt = self._job_types[index]
        if jt is None or jt.name != name:
            jt = JobType.__new__(JobType)
            jt.telemetry = self
            jt.slot_words = self.slot_words
            jt.stats = self.slot_words + TT_STATS + index * TT_STAT_WORDS
            jt.index = index
            jt.name = name
            self._job_types[index] = jt
        return jt

    def close(self):
        """Stops writing; the slot keeps its last values for readers."""
        for jt in self._job_types:
            if jt is not None:
                (<JobType>jt).slot_words = NULL
                (<JobType>jt).stats = NULL
        self.slot_words = NULL

    def __repr__(self):
        return f"<tesenv Telemetry {self.worker_id!r} slot {self.slot}>"


cdef inline void _record(uint64_t *s, uint64_t *st,
                         uint64_t latency_ns) noexcept nogil:
    """Counts one job into the slot s and its job type's statistics st."""
    cdef uint64_t *bucket = &st[TT_STAT_BUCKETS + tt_bucket(latency_ns,
                                                            TT_BUCKETS)]
    tt_store_relaxed(&st[TT_STAT_SUM_NS],
                     tt_load_relaxed(&st[TT_STAT_SUM_NS]) + latency_ns)
    if latency_ns > tt_load_relaxed(&st[TT_STAT_MAX_NS]):
        tt_store_relaxed(&st[TT_STAT_MAX_NS], latency_ns)
    tt_store_relaxed(bucket, tt_load_relaxed(bucket) + 1)
    tt_store_relaxed(&st[TT_STAT_COUNT],
                     tt_load_relaxed(&st[TT_STAT_COUNT]) + 1)
    tt_store_relaxed(&s[TT_JOBS], tt_load_relaxed(&s[TT_JOBS]) + 1)


cdef class JobType:
    """The counters of one job type of one worker."""

    def __init__(self):
        raise TypeError("use Telemetry.job_type(name)")

    def done(self, uint64_t latency_ns):
        """Counts one finished job that took latency_ns nanoseconds."""
        if self.stats == NULL:
            raise ValueError("this Telemetry was closed")
        _record(self.slot_words, self.stats, latency_ns)

    def done_since(self, uint64_t start_ns):
        """Counts one finished job that started at start_ns on the
        monotonic clock (``time.perf_counter_ns()`` on Linux)."""
        cdef uint64_t now = tt_mono_ns()
        if self.stats == NULL:
            raise ValueError("this Telemetry was closed")
        _record(self.slot_words, self.stats,
                now - start_ns if now > start_ns else 0)

    def __repr__(self):
        return f"<tesenv JobType {self.name!r} #{self.index}>"
