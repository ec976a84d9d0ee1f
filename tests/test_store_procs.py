"""The store across processes: discovery, lifecycle, crashes, races, reclaim.

Every test starts its processes itself and ends them in a finally block;
every wait has a timeout so that a hang fails instead of stalling the run.
"""

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
import uuid
import zlib

import numpy as np
import pytest

import tesenv
from tesenv import CorruptStoreError, Store

SHM = "/dev/shm"
SMALL = dict(size=1 << 20, max_keys=64, max_readers=16)
FORK = mp.get_context("fork")
JOIN_SECONDS = 30

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="process tests use Linux /dev/shm")


def unique_name(tag="p"):
    return f"tp-{tag}-{uuid.uuid4().hex[:10]}"


def shm_path(name):
    return os.path.join(SHM, name)


def stop(*procs):
    """Kills what is still running and reaps everything."""
    for p in procs:
        if p.is_alive():
            p.kill()
    for p in procs:
        p.join(JOIN_SECONDS)


def checked_value(rng, seq, max_bytes):
    payload = rng.bytes(int(rng.integers(1, max_bytes)))
    return {"seq": seq, "payload": payload, "crc": zlib.crc32(payload)}


def value_ok(v):
    return zlib.crc32(v["payload"]) == v["crc"]


def child_env():
    """The environment for a child interpreter, without an inherited default
    store (conftest makes it import the tesenv this process imported)."""
    return {k: v for k, v in os.environ.items() if k != "TESENV_STORE"}


def run_driver(tmp_path, source, *args, segment=None, timeout=120):
    """Runs a driver script in a fresh interpreter and returns the
    CompletedProcess; removes the segment it names even if it crashed."""
    script = tmp_path / "driver.py"
    script.write_text(source)
    try:
        return subprocess.run([sys.executable, str(script), *args],
                              capture_output=True, text=True,
                              timeout=timeout, env=child_env(), cwd=tmp_path)
    finally:
        if segment and os.path.exists(shm_path(segment)):
            os.unlink(shm_path(segment))


def run_python(code, timeout=120):
    return subprocess.run([sys.executable, "-c", code], capture_output=True,
                          text=True, timeout=timeout, env=child_env())


# ---------------------------------------------------------------- discovery

DISCOVERY_DRIVER = r"""
import json, multiprocessing as mp, os, subprocess, sys
import tesenv

def child(q):
    import tesenv
    q.put(tesenv.get_environment_data("cfg"))
    name = mp.current_process().name
    tesenv.set_environment_data("from-" + name, os.getpid())

def noop():
    pass

def run(method, name):
    ctx = mp.get_context(method)
    q = ctx.Queue()
    p = ctx.Process(target=child, args=(q,), name=name)
    p.start()
    got = q.get(timeout=60)
    p.join(60)
    return {"read": got,
            "published": tesenv.get_environment_data("from-" + name) == p.pid}

if __name__ == "__main__":
    # A forkserver started before the store exists has no TESENV_STORE in
    # its environment: its children must find the store by ancestry.
    early = mp.get_context("forkserver").Process(target=noop)
    early.start(); early.join(60)
    assert tesenv.default_store() is None
    tesenv.set_environment_data("cfg", {"jobs": 8})
    out = {m: run(m, m) for m in ("spawn", "forkserver", "fork")}
    code = ("import tesenv, json; "
            "print(json.dumps(tesenv.get_environment_data('cfg')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True,
                       text=True, timeout=60)
    out["subprocess"] = json.loads(r.stdout)
    env = dict(os.environ)
    del env["TESENV_STORE"]
    nested = ("import subprocess, sys; sys.exit(subprocess.call("
              "[sys.executable, '-c', %r]))" % code)
    r = subprocess.run([sys.executable, "-c", nested], env=env,
                       capture_output=True, text=True, timeout=60)
    out["grandchild_without_env"] = json.loads(r.stdout)
    out["name"] = tesenv.default_store().name
    print(json.dumps(out))
"""


def test_children_find_the_default_store_however_started(tmp_path):
    r = run_driver(tmp_path, DISCOVERY_DRIVER, timeout=240)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    for method in ("spawn", "forkserver", "fork"):
        assert out[method] == {"read": {"jobs": 8}, "published": True}
    assert out["subprocess"] == {"jobs": 8}
    assert out["grandchild_without_env"] == {"jobs": 8}
    assert out["name"].startswith("tesenv-")
    assert not os.path.exists(shm_path(out["name"]))


def test_get_without_any_store_returns_default():
    r = run_python("import tesenv; print(tesenv.get_environment_data('k', 5),"
                   " tesenv.default_store())")
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["5", "None"]


# ---------------------------------------------------------------- lifecycle

def _attach_read_exit(name, expected):
    s = Store.attach(name)
    ok = s["k"] == expected
    s.close()
    os._exit(0 if ok else 3)


def test_attach_and_exit_cycles_leave_no_segment():
    for i in range(200):
        s = Store.create(unique_name("cyc"), **SMALL)
        try:
            s.set("k", i)
            p = FORK.Process(target=_attach_read_exit, args=(s.name, i))
            p.start()
            p.join(JOIN_SECONDS)
            assert p.exitcode == 0
            assert os.path.exists(shm_path(s.name))
        finally:
            s.close()
        assert not os.path.exists(shm_path(s.name))
    assert not [n for n in os.listdir(SHM) if n.startswith("tp-cyc-")]


def test_interpreter_exit_of_attacher_and_creator():
    with Store.create(unique_name("exit"), **SMALL) as s:
        s.set("k", 1)
        r = run_python(f"import tesenv; s = tesenv.Store.attach({s.name!r});"
                       f" assert s['k'] == 1")
        assert r.returncode == 0, r.stderr
        assert os.path.exists(shm_path(s.name))

    name = unique_name("exit")
    r = run_python(f"import tesenv; s = tesenv.Store.create({name!r});"
                   f" s.set('k', 1)")
    assert r.returncode == 0, r.stderr
    assert not os.path.exists(shm_path(name))


def test_segment_of_a_killed_creator_is_found_and_removed():
    name = unique_name("orphan")
    proc = subprocess.Popen(
        [sys.executable, "-c",
         f"import tesenv, time; s = tesenv.Store.create({name!r}); s.set('k', 1); "
         f"print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env=child_env())
    try:
        assert proc.stdout.readline().strip() == "ready"
        proc.kill()
        proc.wait(JOIN_SECONDS)
        listed = {e["name"]: e for e in tesenv.list_stores()}
        assert listed[name]["creator_alive"] is False
        assert name in tesenv.remove_orphaned_stores()
        assert not os.path.exists(shm_path(name))
    finally:
        proc.kill()
        proc.wait(JOIN_SECONDS)
        if os.path.exists(shm_path(name)):
            os.unlink(shm_path(name))


FIRST_PUBLISHER_DRIVER = r"""
import multiprocessing as mp, os, sys
import tesenv

def child(q):
    tesenv.set_environment_data("cfg", 1)
    q.put(tesenv.default_store().name)

if __name__ == "__main__":
    ctx = mp.get_context(sys.argv[1])
    q = ctx.Queue()
    p = ctx.Process(target=child, args=(q,))
    p.start()
    name = q.get(timeout=60)
    p.join(60)
    print(name, p.exitcode, os.path.exists("/dev/shm/" + name))
"""


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_store_made_by_a_multiprocessing_child_goes_with_it(tmp_path,
                                                            method):
    r = run_driver(tmp_path, FIRST_PUBLISHER_DRIVER, method)
    assert r.returncode == 0, r.stderr
    name, exitcode, exists = r.stdout.split()
    assert exitcode == "0" and exists == "False", name


def test_default_store_replaces_one_left_under_its_name_by_the_dead():
    # A process killed while holding a store named after our pid: what a
    # reused pid leaves behind.
    code = (
        "import os, signal, subprocess, sys, tesenv\n"
        "me = os.getpid()\n"
        "squat = ('import os, tesenv; s = tesenv.Store.create('\n"
        "         f'\"tesenv-{me}\", size=1 << 20, max_keys=8, '\n"
        "         'max_readers=4); s.set(\"old\", 1); '\n"
        "         'os.kill(os.getpid(), 9)')\n"
        "subprocess.run([sys.executable, '-c', squat], timeout=60)\n"
        "assert os.path.exists(f'/dev/shm/tesenv-{me}')\n"
        "tesenv.set_environment_data('cfg', 2)\n"
        "print(tesenv.default_store().name == f'tesenv-{me}',"
        " tesenv.get_environment_data('old'),"
        " tesenv.get_environment_data('cfg'))\n")
    r = run_python(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "None", "2"]


def _hold_writer_lock(name, ready):
    s = Store.attach(name)
    big = np.random.default_rng(0).random(4_000_000)
    ready.set()
    while True:
        s.set("big", big)


def test_discovery_never_takes_the_writer_lock():
    s = Store.create(tesenv._store.default_name(), size=128 << 20)
    ready = FORK.Event()
    writer = FORK.Process(target=_hold_writer_lock, args=(s.name, ready))
    try:
        s.set("cfg", {"jobs": 8})
        writer.start()
        assert ready.wait(JOIN_SECONDS)
        time.sleep(0.2)
        # Stop the writer while it holds the writer mutex (its lock word,
        # at offset 128 of the header, is then non-zero): readers and
        # discovery must not care.
        lock_word = s._segment_array()[128:132].view(np.uint32)
        for _ in range(200):
            os.kill(writer.pid, signal.SIGSTOP)
            time.sleep(0.005)
            if lock_word[0] != 0:
                break
            os.kill(writer.pid, signal.SIGCONT)
            time.sleep(0.003)
        assert lock_word[0] != 0, "never caught the writer holding the lock"
        env = child_env()
        env.pop("TESENV_STORE", None)
        r = subprocess.run(
            [sys.executable, "-c",
             "import tesenv; print(tesenv.get_environment_data('cfg'))"],
            capture_output=True, text=True, timeout=20, env=env)
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() == "FrozenDict({'jobs': 8})"
    finally:
        if writer.is_alive():
            os.kill(writer.pid, signal.SIGCONT)
        stop(writer)
        s.close()


# ---------------------------------------------------------------- crashes

def _publish_forever(name, key, seed, max_bytes):
    s = Store.attach(name)
    rng = np.random.default_rng(seed)
    seq = 0
    while True:
        s.set(key, checked_value(rng, seq, max_bytes))
        seq += 1


def _verify_forever(name, key, stop_at, out):
    s = Store.attach(name)
    checked = bad = 0
    while time.monotonic() < stop_at:
        try:
            v = s[key]
        except CorruptStoreError:
            bad += 1
            continue
        checked += 1
        bad += not value_ok(v)
    out.put((checked, bad))


def test_writers_killed_midway_lose_nothing_and_block_no_one():
    rng = np.random.default_rng(1)
    s = Store.create(unique_name("kill"), size=8 << 20, max_keys=64,
                     max_readers=16)
    out = FORK.Queue()
    reader = FORK.Process(target=_verify_forever,
                          args=(s.name, "k", time.monotonic() + 600, out))
    writers = []
    try:
        s.set("k", checked_value(rng, -1, 100))
        for round_ in range(300):
            w = FORK.Process(target=_publish_forever,
                             args=(s.name, "k", round_, 60_000))
            writers.append(w)
            w.start()
            if round_ == 0:
                reader.start()
            time.sleep(float(rng.uniform(0.0005, 0.01)))
            os.kill(w.pid, signal.SIGKILL)
            w.join(JOIN_SECONDS)
            assert w.exitcode == -signal.SIGKILL

            assert value_ok(s["k"])
            before = s.version("k")
            start = time.monotonic()
            after = s.set("k", checked_value(rng, -2, 100))
            assert time.monotonic() - start < 1.0
            assert after > before
        info = s.info()
        assert (info["live_bytes"] + info["retired_bytes"] + info["free_bytes"]
                == info["heap_bytes"])
        # Some of the kills must have struck inside a publish, or this test
        # proved nothing about repair.
        assert info["repair_count"] >= 5
    finally:
        stop(*writers)
        reader.kill()
        reader.join(JOIN_SECONDS)
        s.close()


CHURN_DRIVER = r"""
import os, random, signal, sys, time
import numpy as np
import tesenv

# Writers and checking readers are forked and SIGKILLed over and over: a
# reader slot claimed or handed over must never look dead to the reclaimer
# while its new owner reads, or a live reader would see freed memory.
store = tesenv.Store.create(sys.argv[1], size=1 << 20, max_keys=16,
                            max_readers=16)
for k in range(4):
    store[f"k{k}"] = {"a": np.zeros(2000), "n": 0}
random.seed(1)
failures = 0
for _ in range(int(sys.argv[2])):
    pids = []
    for role in range(4):
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                i = 0
                held = []
                while True:
                    i += 1
                    key = f"k{i % 4}"
                    if role % 2 == 0:
                        store[key] = {"a": np.full(2000, float(i)), "n": i}
                    else:
                        d = store[key]
                        if not (d["a"] == d["n"]).all():
                            code = 3
                            break
                        held = (held + [d])[-3:]
            except BaseException:
                code = 4
            finally:
                os._exit(code)
        pids.append(pid)
    time.sleep(random.random() * 0.01)
    for pid in pids:
        os.kill(pid, signal.SIGKILL)
    for pid in pids:
        failures += not os.WIFSIGNALED(os.waitpid(pid, 0)[1])
store.close()
print(failures)
"""


def test_readers_forked_and_killed_in_a_churn_never_see_freed_memory(
        tmp_path):
    name = unique_name("churn")
    r = run_driver(tmp_path, CHURN_DRIVER, name, "250", segment=name)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "0", r.stderr


# ---------------------------------------------------------------- races

def _publish_n(name, key, n, out):
    s = Store.attach(name)
    out.put([s.set(key, i) for i in range(n)])


def _watch_versions(name, key, stop_at, out):
    s = Store.attach(name)
    last = backwards = reads = 0
    while time.monotonic() < stop_at:
        v = s.version(key)
        backwards += v < last
        last = v
        s.get(key)
        reads += 1
    out.put((reads, backwards))


def test_concurrent_writers_get_distinct_growing_versions():
    s = Store.create(unique_name("ver"), **SMALL)
    out, watch_out = FORK.Queue(), FORK.Queue()
    writers = [FORK.Process(target=_publish_n, args=(s.name, "k", 3000, out))
               for _ in range(3)]
    watcher = FORK.Process(target=_watch_versions,
                           args=(s.name, "k", time.monotonic() + 3, watch_out))
    try:
        watcher.start()
        for w in writers:
            w.start()
        runs = [out.get(timeout=JOIN_SECONDS) for _ in writers]
        reads, backwards = watch_out.get(timeout=JOIN_SECONDS)
    finally:
        stop(watcher, *writers)
        s.close()
    for versions in runs:
        assert all(a < b for a, b in zip(versions, versions[1:]))
    every = [v for run in runs for v in run]
    assert len(set(every)) == 9000
    assert reads > 0 and backwards == 0


def _publish_checked(name, seed, stop_at):
    s = Store.attach(name)
    rng = np.random.default_rng(seed)
    seq = 0
    while time.monotonic() < stop_at:
        s.set("blob", checked_value(rng, seq, 3000))
        data = rng.random(int(rng.integers(1, 500)))
        s.set("array", np.append(data, data.sum()))
        seq += 1


def _read_checked(name, stop_at, out):
    s = Store.attach(name)
    checked = bad = fresh = 0
    last_blob = last_array = None
    while time.monotonic() < stop_at:
        for _ in range(1000):
            blob = s["blob"]
            arr = s["array"]
            checked += 2
            if blob is not last_blob:
                fresh += 1
                bad += not value_ok(blob)
                last_blob = blob
            if arr is not last_array:
                fresh += 1
                bad += arr[-1] != arr[:-1].sum()
                last_array = arr
    out.put((checked, fresh, bad))


def test_no_torn_reads_under_concurrent_writers():
    s = Store.create(unique_name("torn"), size=4 << 20, max_keys=64,
                     max_readers=16)
    s.set("blob", {"seq": 0, "payload": b"x", "crc": zlib.crc32(b"x")})
    s.set("array", np.array([1.0, 1.0]))
    out = FORK.Queue()
    stop_at = time.monotonic() + 4
    procs = [FORK.Process(target=_publish_checked, args=(s.name, i, stop_at))
             for i in range(2)]
    procs += [FORK.Process(target=_read_checked, args=(s.name, stop_at, out))
              for _ in range(2)]
    try:
        for p in procs:
            p.start()
        results = [out.get(timeout=JOIN_SECONDS) for _ in range(2)]
    finally:
        stop(*procs)
        s.close()
    checked = sum(r[0] for r in results)
    fresh = sum(r[1] for r in results)
    bad = sum(r[2] for r in results)
    assert checked >= 1_000_000
    assert fresh >= 1000
    assert bad == 0


# ---------------------------------------------------------------- reclaim

def _hold_views(name, ready):
    s = Store.attach(name)
    held = [s["array"] for _ in range(3)]
    ready.set()
    time.sleep(600)
    return held


PUBLISHES = int(os.environ.get("TESENV_STRESS_PUBLISHES", 10_000_000))


def test_ten_million_publishes_neither_fill_nor_grow_the_store():
    s = Store.create(unique_name("recl"), size=1 << 20, max_keys=64,
                     max_readers=8)
    values = [bytes(n) for n in (8, 100, 900, 4000, 16_000, 50)]
    values += [np.arange(n, dtype=np.float64) for n in (10, 700, 2000)]
    keys = ["a", "b", "c", "d"]
    ready = FORK.Event()
    holder = FORK.Process(target=_hold_views, args=(s.name, ready))
    try:
        s.set("array", np.arange(5000, dtype=np.float64))
        holder.start()
        assert ready.wait(JOIN_SECONDS)
        kill_at = PUBLISHES // 3
        for i in range(PUBLISHES):
            if i == kill_at:
                # The holder pins the first array; kill it while it does.
                s.set("array", np.arange(10.0))
                holder.kill()
                holder.join(JOIN_SECONDS)
            s.set(keys[i & 3], values[i % 9])
        s.reclaim()
        info = s.info()
    finally:
        stop(holder)
        s.close()
    assert info["size_bytes"] == 1 << 20
    assert info["publish_count"] >= PUBLISHES
    assert info["retired_bytes"] == 0
    assert info["live_bytes"] < 100_000


# ---------------------------------------------------------------- hostile bytes

SCRIBBLE_DRIVER = r"""
import mmap, os, sys, time, multiprocessing as mp
import numpy as np
import tesenv
from tesenv import CorruptStoreError

GOOD = [{"i": i, "data": list(range(i * 10))} for i in range(8)]

def read_forever(name, stop_at, out):
    s = tesenv.Store.attach(name)
    ok = raised = wrong = 0
    while time.monotonic() < stop_at:
        for i in range(8):
            try:
                v = s.get(f"k{i}")
            except (CorruptStoreError, KeyError, ValueError):
                raised += 1
                continue
            if v is None or v == GOOD[i]:
                ok += 1
            else:
                wrong += 1
    out.put((ok, raised, wrong))

if __name__ == "__main__":
    name = sys.argv[1]
    s = tesenv.Store.create(name, size=1 << 20, max_keys=64, max_readers=8)
    for i, v in enumerate(GOOD):
        s.set(f"k{i}", v)
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    stop_at = time.monotonic() + 3
    readers = [ctx.Process(target=read_forever, args=(name, stop_at, out))
               for _ in range(2)]
    for r in readers:
        r.start()
    rng = np.random.default_rng(7)
    with open("/dev/shm/" + name, "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
        # Scribble over the key table and the heap, never the header
        # (writers trust it) or the reader table.
        start = 4096 + 8 * 4160
        while time.monotonic() < stop_at:
            at = int(rng.integers(start, min(len(m), 200_000)))
            m[at] = int(rng.integers(0, 256))
    results = [out.get(timeout=30) for _ in readers]
    for r in readers:
        r.join(30)
    codes = [r.exitcode for r in readers]
    s.close()
    print(sum(r[0] for r in results), sum(r[1] for r in results),
          sum(r[2] for r in results), codes)
"""


def test_scribbled_records_raise_or_read_good_never_crash(tmp_path):
    name = unique_name("scrib")
    r = run_driver(tmp_path, SCRIBBLE_DRIVER, name, segment=name)
    assert r.returncode == 0, r.stderr
    ok, raised, wrong, codes = r.stdout.split(maxsplit=3)
    assert codes.strip() == "[0, 0]"
    assert int(wrong) == 0
    assert int(ok) > 0 and int(raised) > 0
