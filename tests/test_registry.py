"""The registry: slots, counters, histograms, readers in other processes."""

import multiprocessing
import os
import subprocess
import sys
import time

import numpy as np
import pytest

import tesenv
from tesenv import _telemetry
from tesenv.registry import (
    BUCKETS, JOB_TYPES, SLOT_COUNT, Registry, bucket_bounds_ns, pid_alive,
    read_workers,
)

TIMEOUT_SECONDS = 10.0
# Latencies and the log2 bucket each must land in.
BUCKET_CASES = [(0, 0), (1, 0), (2, 1), (3, 1), (4, 2), (1023, 9),
                (1024, 10), (10 ** 6, 19), (2 ** 43, 43), (2 ** 60, 43)]


def _dead_pid():
    process = multiprocessing.get_context("fork").Process(target=os._exit,
                                                          args=(0,))
    process.start()
    process.join(TIMEOUT_SECONDS)
    return process.pid


def test_a_new_worker_starts_with_zero_counters(store):
    t = Registry(store).register("w", kind="thread")
    (entry,) = read_workers(store)
    assert entry["id"] == "w" and entry["pid"] == os.getpid()
    assert (entry["kind"], entry["state"], entry["alive"]) == \
        ("thread", "starting", True)
    assert entry["jobs"] == entry["errors"] == entry["config_version"] == 0
    assert entry["job_types"] == {}
    assert entry["heartbeat_age_s"] < 5
    t.set_state("running")
    assert read_workers(store)[0]["state"] == "running"


def test_counters_add_up(store):
    t = Registry(store).register("w")
    spline = t.job_type("spline")
    assert t.job_type("spline") is spline
    fit = t.job_type("fit")
    for _ in range(5):
        spline.done(100)
    fit.done(3000)
    t.job_done(fit.index, 5000)
    t.error()
    t.saw_config(42)
    (entry,) = read_workers(store)
    assert (entry["jobs"], entry["errors"], entry["config_version"]) == \
        (7, 1, 42)
    types = {jt["name"]: jt for jt in entry["job_types"].values()}
    assert types["spline"]["count"] == 5 and types["spline"]["sum_ns"] == 500
    assert types["fit"]["count"] == 2 and types["fit"]["max_ns"] == 5000
    assert t.jobs == 7 and t.errors == 1


def test_latencies_fall_in_log2_buckets(store):
    t = Registry(store).register("w")
    jt = t.job_type("x")
    for latency, _ in BUCKET_CASES:
        jt.done(latency)
    buckets = read_workers(store)[0]["job_types"][0]["buckets"]
    expected = np.zeros(BUCKETS, dtype=np.int64)
    for _, bucket in BUCKET_CASES:
        expected[bucket] += 1
    assert buckets == expected.tolist()

    # Each case lies below its bucket's bound and at or above the last one.
    bounds = bucket_bounds_ns()
    for latency, bucket in BUCKET_CASES:
        assert bounds[bucket] is None or latency < bounds[bucket]
        assert bucket == 0 or latency >= bounds[bucket - 1]


def test_done_since_measures_from_the_monotonic_clock(store):
    import time
    jt = Registry(store).register("w").job_type("sleep")
    start = time.perf_counter_ns()
    time.sleep(0.01)
    jt.done_since(start)
    entry = read_workers(store)[0]["job_types"][0]
    assert 10 ** 7 <= entry["sum_ns"] < 10 ** 9


def test_bad_uses_are_refused(store):
    t = Registry(store).register("w")
    with pytest.raises(IndexError):
        t.job_done(JOB_TYPES, 1)
    with pytest.raises(OverflowError):
        t.job_done(0, -1)
    with pytest.raises(ValueError):
        t.job_type("")
    with pytest.raises(ValueError):
        t.job_type("x" * 33)
    for i in range(JOB_TYPES):
        t.job_type(f"type-{i}")
    with pytest.raises(ValueError, match="at most"):
        t.job_type("one-too-many")
    with pytest.raises(ValueError):
        t.set_state("sleepy")
    with pytest.raises(ValueError):
        Registry(store).register("x" * 65)
    t.close()
    with pytest.raises(ValueError, match="closed"):
        t.error()


def test_a_worker_of_a_dead_process_reads_as_dead_and_its_slot_is_reused(
        store):
    registry = Registry(store)
    ghost = registry.register("w", pid=_dead_pid())
    ghost.set_state("running")
    (entry,) = read_workers(store)
    assert (entry["state"], entry["alive"]) == ("dead", False)
    assert read_workers(store, include_finished=False) == []

    again = registry.register("w")
    assert again.slot == ghost.slot
    (entry,) = read_workers(store)
    assert (entry["generation"], entry["pid"]) == (2, os.getpid())


def test_a_full_registry_refuses_and_a_finished_slot_is_reused(store):
    registry = Registry(store)
    live = [registry.register(f"w{i}") for i in range(SLOT_COUNT)]
    assert len({t.slot for t in live}) == SLOT_COUNT
    with pytest.raises(tesenv.StoreFullError):
        registry.register("extra")
    live[7].set_state("exited")
    assert registry.register("extra").slot == live[7].slot


def test_a_foreign_region_is_refused(store):
    region = store.region("tes-registry", _telemetry.REGION_BYTES)
    region[:8] = np.frombuffer(b"NOTOURS!", np.uint8)
    with pytest.raises(ValueError, match="something else"):
        Registry(store)


def _register_many(name, count, results):
    store = tesenv.Store.attach(name)
    registry = Registry(store)
    slots = [registry.register(f"{os.getpid()}-{i}").slot
             for i in range(count)]
    results.put(slots)
    store.close()


def test_claims_from_racing_processes_get_distinct_slots(store):
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    procs = [context.Process(target=_register_many,
                             args=(store.name, 20, results))
             for _ in range(4)]
    for p in procs:
        p.start()
    slots = [s for _ in procs for s in results.get(timeout=TIMEOUT_SECONDS)]
    for p in procs:
        p.join(TIMEOUT_SECONDS)
    assert len(slots) == len(set(slots)) == 80


def _count_jobs(name, jobs, ready, go):
    store = tesenv.Store.attach(name)
    t = Registry(store).register("counter")
    t.set_state("running")
    jt = t.job_type("tick")
    ready.set()
    go.wait(TIMEOUT_SECONDS)
    for i in range(jobs):
        jt.done(i & 1023)
    t.saw_config(jobs)
    t.set_state("exited")
    store.close()


def test_counters_written_in_one_process_are_read_in_another(store):
    jobs = 200_000
    context = multiprocessing.get_context("fork")
    ready, go = context.Event(), context.Event()
    p = context.Process(target=_count_jobs, args=(store.name, jobs, ready, go))
    p.start()
    try:
        assert ready.wait(TIMEOUT_SECONDS)
        go.set()
        # Readings taken while the writer runs only ever grow.
        last = 0
        while p.is_alive():
            entry = read_workers(store)[0]
            assert entry["jobs"] >= last
            last = entry["jobs"]
        p.join(TIMEOUT_SECONDS)
    finally:
        if p.is_alive():
            p.kill()
            p.join(TIMEOUT_SECONDS)
    entry = read_workers(store)[0]
    assert p.exitcode == 0
    assert (entry["jobs"], entry["config_version"], entry["state"]) == \
        (jobs, jobs, "exited")
    tick = entry["job_types"][0]
    assert tick["count"] == sum(tick["buckets"]) == jobs
    assert tick["sum_ns"] == sum(i & 1023 for i in range(jobs))
    assert tick["max_ns"] == 1023


def test_a_zombie_is_not_alive():
    if not os.path.exists("/proc/self/stat"):
        pytest.skip("needs /proc")
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        deadline = time.monotonic() + 10.0
        while time.monotonic() < deadline:
            with open(f"/proc/{child.pid}/stat", "rb") as f:
                stat = f.read()
            if stat[stat.rindex(b")") + 2:].startswith(b"Z"):
                break
            time.sleep(0.01)
        else:
            pytest.fail("the child did not end")
        assert not pid_alive(child.pid)
        assert pid_alive(os.getpid())
    finally:
        child.wait(timeout=10.0)
    assert not pid_alive(child.pid)
