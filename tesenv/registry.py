"""Who is working, and how it is going: worker slots in a store region.

Every worker claims one slot of the region ``tes-registry`` of its store and
keeps its counters there (see ``tesenv._telemetry`` for the protocol).  Any
process attached to the store reads them with ``read_workers(store)``,
without a lock and without disturbing the writers.

A slot whose worker exited, or whose process is gone, is reused by the next
worker that registers, first by a worker of the same id (a restart), so the
registry holds at most ``SLOT_COUNT`` workers at a time.
"""

import logging
import os

from tesenv import _telemetry
from tesenv._store import StoreFullError, process_alive as pid_alive
from tesenv._telemetry import (
    BUCKETS, ID_BYTES, JOB_TYPES, KIND_CODES, REGION_BYTES, SLOT_COUNT,
    STATE_CODES, STATES, JobType, Telemetry,
)

__all__ = [
    "REGION_NAME", "Registry", "Telemetry", "JobType", "read_workers",
    "bucket_bounds_ns", "SLOT_COUNT", "JOB_TYPES", "BUCKETS", "STATES",
]

log = logging.getLogger(__name__)

REGION_NAME = "tes-registry"
_LIVE_STATES = frozenset(("starting", "running", "stopping"))


def bucket_bounds_ns():
    """The exclusive upper bound of each latency bucket, in nanoseconds:
    bucket i holds latencies below 2**(i+1) ns (and at least 2**i ns for
    i > 0); the last bucket is unbounded (None)."""
    return [2 ** (i + 1) for i in range(BUCKETS - 1)] + [None]


class Registry:
    """The worker registry of one store.

    Raises StoreFullError if the store has no room for the region and
    ValueError if the region holds something else.
    """

    def __init__(self, store, create=True):
        self.store = store
        self.region = store.region(REGION_NAME, REGION_BYTES, create=create)
        _telemetry.init_region(self.region)

    def register(self, worker_id, *, kind="process", pid=None):
        """Claims a slot for worker_id and returns its Telemetry, with the
        state "starting" and every counter zero.

        Raises ValueError for an id longer than ID_BYTES in UTF-8 or an
        unknown kind, StoreFullError when every slot holds a live worker.
        """
        encoded = worker_id.encode("utf-8")
        if not encoded or len(encoded) > ID_BYTES:
            raise ValueError(f"a worker id is 1 to {ID_BYTES} bytes of UTF-8, "
                             f"got {worker_id!r}")
        if kind not in KIND_CODES:
            raise ValueError(f"no worker kind {kind!r}; one of "
                             f"{tuple(KIND_CODES)}")
        pid = os.getpid() if pid is None else pid

        # Claims race only through the owner word's compare-and-swap, so a
        # lost race just moves on to the next candidate.
        for _ in range(3):
            for slot, owner in self._candidates(worker_id):
                token = int.from_bytes(os.urandom(8), "little") | 1
                if _telemetry.claim_slot(self.region, slot, owner, token,
                                         encoded, pid, KIND_CODES[kind]):
                    log.debug("worker %s registered in slot %d", worker_id,
                              slot)
                    return Telemetry(self.region, slot, worker_id)
        raise StoreFullError(f"the worker registry is full: {SLOT_COUNT} "
                             f"live workers")

    def _candidates(self, worker_id):
        """Slots that may be claimed, as (slot, owner token) pairs, best
        first: this id's old slot, never-used slots, then finished ones."""
        same, fresh, finished = [], [], []
        for slot in range(SLOT_COUNT):
            owner = _telemetry.slot_owner(self.region, slot)
            if owner == 0:
                fresh.append((slot, 0))
                continue
            try:
                entry = _telemetry.read_slot(self.region, slot)
            except BlockingIOError:
                continue
            if entry is None or entry["owner"] != owner or _is_live(entry):
                continue
            if entry["id"] == worker_id:
                same.append((slot, owner))
            else:
                finished.append((entry["heartbeat_ns"], slot, owner))
        finished.sort()
        return same + fresh + [(slot, owner) for _, slot, owner in finished]

    def slot_of(self, worker_id, pid=None):
        """The slot most recently claimed by worker_id (and pid, if given),
        or None."""
        best = None
        for entry in self._entries():
            if entry["id"] == worker_id and (pid is None or entry["pid"] == pid):
                if best is None or entry["start_ns"] > best["start_ns"]:
                    best = entry
        return None if best is None else best["slot"]

    def mark(self, worker_id, state, pid=None):
        """Sets the state of worker_id's slot, for a manager whose worker
        is gone (it is then the state word's only writer).  Returns True if
        a slot was found."""
        if state not in STATE_CODES:
            raise ValueError(f"no state {state!r}; one of {STATES}")
        slot = self.slot_of(worker_id, pid)
        if slot is None:
            return False
        _telemetry.set_slot_state(self.region, slot, STATE_CODES[state])
        return True

    def _entries(self):
        for slot in range(SLOT_COUNT):
            if _telemetry.slot_owner(self.region, slot) == 0:
                continue
            try:
                entry = _telemetry.read_slot(self.region, slot)
            except BlockingIOError:
                log.debug("registry slot %d kept changing; skipped", slot)
                continue
            if entry is not None:
                yield entry

    def workers(self, include_finished=True):
        """A snapshot of every registered worker, one dict each: slot, id,
        pid, kind, state, alive, start_ns, generation, jobs, errors,
        heartbeat_ns, heartbeat_age_s, config_version and job_types (index
        -> name, count, sum_ns, max_ns, buckets).

        A worker whose process is gone while its slot still says it runs
        is reported with state "dead".
        """
        now_ns = _telemetry.wall_ns()
        out = []
        for entry in self._entries():
            alive = _is_live(entry)
            if entry["state"] in _LIVE_STATES and not alive:
                entry["state"] = "dead"
            if not include_finished and not alive:
                continue
            entry["alive"] = alive
            entry["heartbeat_age_s"] = max(0, now_ns - entry["heartbeat_ns"]) / 1e9
            del entry["owner"]
            out.append(entry)
        return out


def _is_live(entry):
    return entry["state"] in _LIVE_STATES and pid_alive(entry["pid"])


def read_workers(store, include_finished=True):
    """Every worker registered in store, as ``Registry.workers`` gives them;
    [] for a store that has no registry.  Never creates one."""
    try:
        registry = Registry(store, create=False)
    except KeyError:
        return []
    return registry.workers(include_finished)
