"""Workers: configuration through the store, modes, pools, death, restart,
shutdown and orphaned workers."""

import concurrent.futures
import multiprocessing
import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import tesenv
from tesenv import workers
from tesenv.registry import read_workers
from tesenv.workers import WorkerManager, config_key

MODES = ["spawn", "fork", "forkserver", "thread"]
PROCESS_MODES = ["spawn", "fork", "forkserver"]
DETECT_SECONDS = 1.0
JOIN_SECONDS = 10.0


def _queue(mode):
    if mode == "thread":
        return queue.Queue()
    return multiprocessing.get_context(mode).Queue()


def _wait_for(predicate, timeout, interval=0.01):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def _gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # A zombie of ours still answers; it is gone once it is reaped.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ")[1].startswith("Z")
    except OSError:
        return True


# Targets live at module level so that spawn and forkserver can find them.

def report_config(ctx, results):
    results.put((ctx.worker_id, dict(ctx.config), ctx.get("shared"),
                 os.getpid()))
    ctx.wait_stop(JOIN_SECONDS)


def follow_config(ctx, results):
    seen = 0
    while not ctx.should_stop():
        version = ctx.config_version
        if version != seen:
            seen = version
            results.put((ctx.config["step"], version))
        ctx.wait_config(seen, 0.05)


def idle(ctx):
    ctx.wait_stop(60)


def exit_on_request(ctx, code):
    while not ctx.should_stop():
        if ctx.get("exit-now"):
            os._exit(code)
        time.sleep(0.005)


def ignore_stop(ctx):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(60)


def raise_error(ctx):
    raise RuntimeError("boom")


def pool_task(key):
    ctx = workers.current()
    return ctx.worker_id, os.getpid(), tesenv.get_environment_data(key)


# --------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_each_worker_reads_its_own_config_from_the_store(store, mode):
    results = _queue(mode)
    store["shared"] = {"jobs": 8, "curveType": "pchip"}
    manager = WorkerManager(report_config, 2, args=(results,), store=store,
                            mode=mode, base_port=9100,
                            config=lambda wid, i: {"weight": i * 10})
    with manager:
        got = sorted(results.get(timeout=JOIN_SECONDS) for _ in range(2))
        for index, (worker_id, config, shared, pid) in enumerate(got):
            assert worker_id == f"worker-{index}"
            assert config == {"workerId": worker_id,
                              "registry": "tes-registry",
                              "port": 9100 + index, "weight": index * 10}
            assert config == store[config_key(worker_id)]
            assert shared == {"jobs": 8, "curveType": "pchip"}
            if mode == "thread":
                assert pid == os.getpid()
            else:
                assert pid != os.getpid()
    assert config_key("worker-0") not in store


def test_worker_sees_a_config_change_while_running(store):
    results = _queue("fork")
    manager = WorkerManager(follow_config, 1, args=(results,), store=store,
                            mode="fork", config={"step": 0})
    with manager:
        assert results.get(timeout=JOIN_SECONDS)[0] == 0
        version = manager.set_config("worker-0", step=1)
        step, seen = results.get(timeout=JOIN_SECONDS)
        assert (step, seen) == (1, version)
        entry = next(w for w in read_workers(store) if w["id"] == "worker-0")
        assert _wait_for(lambda: next(
            w for w in read_workers(store)
            if w["id"] == "worker-0")["config_version"] == version, 2.0)
        assert entry["kind"] == "process"


@pytest.mark.parametrize("mode", PROCESS_MODES)
def test_death_by_signal_is_reported_within_a_second(store, mode):
    events = []
    manager = WorkerManager(idle, 2, store=store, mode=mode,
                            on_exit=events.append)
    with manager:
        victim = manager.workers()[1]["pid"]
        os.kill(victim, signal.SIGKILL)
        killed_at = time.monotonic()
        assert _wait_for(lambda: events, DETECT_SECONDS)
        assert time.monotonic() - killed_at < DETECT_SECONDS
        event = events[0]
        assert (event.worker_id, event.pid) == ("worker-1", victim)
        assert (event.exitcode, event.signal) == (-signal.SIGKILL, "SIGKILL")
        assert not event.expected and not event.restarting
        state = {w["id"]: w["state"] for w in read_workers(store)}
        assert state == {"worker-0": "running", "worker-1": "dead"}


def test_death_by_exit_code_is_reported_and_logged(store, caplog):
    events = []
    manager = WorkerManager(exit_on_request, 1, args=(3,), store=store,
                            mode="fork", on_exit=events.append)
    with manager, caplog.at_level("WARNING", logger="tesenv.workers"):
        store["exit-now"] = True
        assert _wait_for(lambda: events, DETECT_SECONDS + 1.0)
        assert events[0].exitcode == 3 and events[0].signal is None
        assert "worker-0" in caplog.text and "exit code 3" in caplog.text


def test_dead_worker_is_restarted(store):
    events = []
    manager = WorkerManager(idle, 1, store=store, mode="fork", restart=True,
                            max_restarts=1, on_exit=events.append)
    with manager:
        first = manager.workers()[0]["pid"]
        os.kill(first, signal.SIGKILL)
        assert _wait_for(lambda: manager.workers()[0]["pid"] != first and
                         manager.workers()[0]["alive"], DETECT_SECONDS + 1.0)
        assert events[0].restarting
        assert manager.workers()[0]["restarts"] == 1
        second = manager.workers()[0]["pid"]
        assert _wait_for(lambda: any(
            w["pid"] == second and w["state"] == "running"
            for w in read_workers(store)), 5.0)

        # max_restarts reached: the next death is final.
        os.kill(second, signal.SIGKILL)
        assert _wait_for(lambda: len(events) == 2, DETECT_SECONDS + 1.0)
        assert not events[1].restarting
        assert not manager.workers()[0]["alive"]


def test_restart_on_request_starts_a_new_process(store):
    manager = WorkerManager(idle, 2, store=store, mode="fork")
    with manager:
        old = manager.workers()[0]["pid"]
        new = manager.restart("worker-0", timeout=2.0)
        assert new != old and _gone(old)
        assert manager.workers()[0]["alive"]
        assert manager.workers()[1]["restarts"] == 0


def test_thread_worker_that_raises_is_reported(store):
    events = []
    manager = WorkerManager(raise_error, 1, store=store, mode="thread",
                            on_exit=events.append)
    with manager:
        assert _wait_for(lambda: events, DETECT_SECONDS)
        assert events[0].exitcode == 1
        assert read_workers(store)[0]["state"] == "dead"


@pytest.mark.parametrize("mode", ["spawn", "thread"])
def test_graceful_stop_leaves_no_process_and_no_segment(mode):
    manager = WorkerManager(idle, 3, mode=mode)
    name = manager.store.name
    manager.start()
    pids = [w["pid"] for w in manager.workers()]
    started = time.monotonic()
    assert manager.stop(timeout=5.0) is True
    assert time.monotonic() - started < 2.0
    if mode != "thread":
        assert all(_gone(pid) for pid in pids)
        assert multiprocessing.active_children() == []
    assert not os.path.exists(f"/dev/shm/{name}")
    assert name not in {s["name"] for s in tesenv.list_stores()}


def test_stop_ends_a_worker_that_ignores_it(store):
    manager = WorkerManager(ignore_stop, 1, store=store, mode="fork")
    manager.start()
    pid = manager.workers()[0]["pid"]
    assert manager.stop(timeout=0.3) is False
    assert _gone(pid)


PARENT_SCRIPT = textwrap.dedent("""
    import sys, time
    import tesenv
    from tesenv.workers import WorkerManager

    def idle(ctx):
        time.sleep(60)

    if __name__ == "__main__":
        store = tesenv.Store.create(sys.argv[1])
        manager = WorkerManager(idle, 2, store=store, mode=sys.argv[2])
        manager.start()
        print(" ".join(str(w["pid"]) for w in manager.workers()), flush=True)
        time.sleep(60)
""")


@pytest.mark.parametrize("mode", ["spawn", "forkserver"])
def test_workers_exit_when_the_parent_is_killed(tmp_path, store_name, mode):
    script = tmp_path / "parent.py"
    script.write_text(PARENT_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    parent = subprocess.Popen([sys.executable, str(script), store_name, mode],
                              stdout=subprocess.PIPE, text=True, env=env)
    try:
        line = parent.stdout.readline()
        pids = [int(p) for p in line.split()]
        assert len(pids) == 2 and all(not _gone(p) for p in pids)
        parent.kill()
        parent.wait(timeout=JOIN_SECONDS)
        assert _wait_for(lambda: all(_gone(p) for p in pids), 3.0)
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait(timeout=JOIN_SECONDS)
        parent.stdout.close()


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_process_pool_executor_workers_attach_with_the_initializer(
        store, method):
    store["rates"] = [0.01, 0.02]
    context = multiprocessing.get_context(method)
    with concurrent.futures.ProcessPoolExecutor(
            2, mp_context=context, initializer=workers.pool_initializer,
            initargs=workers.initializer_args(store)) as pool:
        results = list(pool.map(pool_task, ["rates"] * 8))
        for worker_id, pid, value in results:
            assert worker_id == f"pool-{pid}"
            assert value == [0.01, 0.02]
        pids = {pid for _, pid, _ in results}
        live = {w["pid"]: w for w in read_workers(store)
                if w["state"] == "running"}
        assert pids <= set(live)
        assert all(live[p]["kind"] == "pool" for p in pids)
    assert _wait_for(lambda: all(
        w["state"] == "exited" for w in read_workers(store)), 5.0)


def test_multiprocessing_pool_workers_attach_with_the_initializer(store):
    store["curve"] = {"kind": "pchip"}
    context = multiprocessing.get_context("spawn")
    with context.Pool(2, initializer=workers.pool_initializer,
                      initargs=workers.initializer_args(store)) as pool:
        results = pool.map(pool_task, ["curve"] * 4)
        pool.close()
        pool.join()
    assert {value["kind"] for _, _, value in results} == {"pchip"}
    assert all(worker_id.startswith("pool-") for worker_id, _, _ in results)


def test_bad_arguments_are_refused(store):
    with pytest.raises(ValueError, match="mode"):
        WorkerManager(idle, 1, store=store, mode="vfork")
    with pytest.raises(ValueError, match="count"):
        WorkerManager(idle, 0, store=store)
    manager = WorkerManager(idle, 1, store=store, mode="thread").start()
    try:
        with pytest.raises(RuntimeError, match="started"):
            manager.start()
        with pytest.raises(KeyError):
            manager.restart("nobody")
    finally:
        manager.stop()


def test_the_spline_workers_example_runs(tmp_path):
    example = os.path.join(os.path.dirname(__file__), os.pardir, "examples",
                           "spline_workers.py")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    result = subprocess.run([sys.executable, example, "--workers", "2",
                             "--batches", "20"], capture_output=True,
                            text=True, env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "20 batches; curve versions used" in result.stdout
    assert "tes-spline-config" in result.stdout
    assert "worker-1: pid" in result.stdout


POOL_TERMINATE_SCRIPT = textwrap.dedent("""
    import ctypes, multiprocessing, sys, time
    import tesenv
    from tesenv import workers

    def square(x):
        time.sleep(0.001)
        return x * x

    def parent_death_signal(_):
        libc = ctypes.CDLL(None)
        signo = ctypes.c_int(-1)
        libc.prctl(2, ctypes.byref(signo), 0, 0, 0)  # PR_GET_PDEATHSIG
        return signo.value

    if __name__ == "__main__":
        store = tesenv.Store.attach(sys.argv[1])
        context = multiprocessing.get_context("fork")
        with context.Pool(2, initializer=workers.pool_initializer,
                          initargs=workers.initializer_args(store),
                          maxtasksperchild=1) as pool:
            assert pool.map(square, range(50)) == [x * x for x in range(50)]
            assert set(pool.map(parent_death_signal, range(4))) == {0}
            pending = pool.map_async(square, range(10000))
            time.sleep(0.2)
        print("left the pool", flush=True)
""")


def test_pool_with_maxtasksperchild_terminates(tmp_path, store):
    # Replacement workers are forked by the Pool's handler thread, which
    # terminate() ends; a worker killed with it would leave the pool's
    # queue lock held and terminate() waiting forever.
    script = tmp_path / "pool.py"
    script.write_text(POOL_TERMINATE_SCRIPT)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    try:
        result = subprocess.run([sys.executable, str(script), store.name],
                                capture_output=True, text=True, env=env,
                                timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail("leaving the pool hung")
    assert result.returncode == 0, result.stderr
    assert "left the pool" in result.stdout


def test_executor_survives_the_thread_that_first_submitted(store):
    context = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(
            2, mp_context=context, initializer=workers.pool_initializer,
            initargs=workers.initializer_args(store)) as pool:
        first = []
        submitter = threading.Thread(
            target=lambda: first.append(pool.submit(os.getpid)))
        submitter.start()
        submitter.join(JOIN_SECONDS)
        first[0].result(timeout=JOIN_SECONDS)
        time.sleep(0.3)  # time for a parent-death signal to arrive
        pids = [pool.submit(os.getpid).result(timeout=JOIN_SECONDS)
                for _ in range(4)]
        assert all(not _gone(pid) for pid in pids)


def report_store_identity(ctx, results):
    results.put(id(ctx.store))
    ctx.wait_stop(JOIN_SECONDS)


@pytest.mark.parametrize("mode", ["spawn", "fork"])
def test_each_worker_process_takes_one_reader_slot(store, mode):
    results = _queue(mode)
    manager = WorkerManager(report_store_identity, 3, args=(results,),
                            store=store, mode=mode)
    with manager:
        ids = [results.get(timeout=JOIN_SECONDS) for _ in range(3)]
        assert store.info()["reader_count"] == 3 + 1
        if mode == "fork":
            # The inherited Store is reused, not attached a second time.
            assert ids == [id(store)] * 3


def test_an_id_prefix_too_long_is_refused_at_once(store):
    with pytest.raises(ValueError, match="at most 64 bytes"):
        WorkerManager(idle, 1, store=store, id_prefix="x" * 70)


@pytest.mark.parametrize("mode", ["fork", "thread"])
def test_start_fails_when_workers_die_before_registering(
        store, mode, monkeypatch):
    class Unregistrable:
        def __init__(self, *args):
            raise OSError("no room for this worker")

    # A forked worker inherits the patched module.
    monkeypatch.setattr(workers, "WorkerContext", Unregistrable)
    manager = WorkerManager(idle, 2, store=store, mode=mode)
    with pytest.raises(RuntimeError, match="before registering") as info:
        manager.start(timeout=JOIN_SECONDS)
    assert "worker-0" in str(info.value) and "worker-1" in str(info.value)
    if mode == "thread":
        assert "no room for this worker" in str(info.value)
    assert all(not w["alive"] for w in manager.workers())


def test_a_second_manager_with_the_same_ids_is_refused(store):
    first = WorkerManager(idle, 2, store=store, mode="fork").start()
    try:
        second = WorkerManager(idle, 1, store=store, mode="fork")
        with pytest.raises(ValueError, match="'worker-0' is held"):
            second.start()
        assert store["tes-worker-stop/worker"] is False
        assert all(w["alive"] for w in first.workers())
        other = WorkerManager(idle, 1, store=store, mode="fork",
                              id_prefix="other").start()
        assert other.stop(timeout=JOIN_SECONDS)
        assert all(w["alive"] for w in first.workers())
    finally:
        first.stop()


def test_config_may_not_set_reserved_fields(store):
    for field in ("workerId", "registry", "port"):
        with pytest.raises(ValueError, match=repr(field)):
            WorkerManager(idle, 1, store=store, config={field: 1})
    manager = WorkerManager(idle, 1, store=store, mode="thread",
                            config=lambda wid, i: {"port": 1})
    with pytest.raises(ValueError, match="'port'"):
        manager.start()
    assert config_key("worker-0") not in store


def exit_with(ctx, code):
    sys.exit(code)


@pytest.mark.parametrize("code,status", [(0, 0), (3, 3), (None, 0)])
def test_thread_worker_sys_exit_reports_its_code(store, caplog, code, status):
    events = []
    manager = WorkerManager(exit_with, 1, args=(code,), store=store,
                            mode="thread", on_exit=events.append)
    with manager, caplog.at_level("INFO", logger="tesenv.workers"):
        assert _wait_for(lambda: events, DETECT_SECONDS)
        assert events[0].exitcode == status
    assert "Traceback" not in caplog.text
    assert ("died" in caplog.text) == (status != 0)


def test_stop_leaves_the_store_to_thread_workers_still_running():
    release = threading.Event()
    results, events = [], []

    def late(ctx):
        release.wait(JOIN_SECONDS)
        results.append(ctx.get("answer"))

    manager = WorkerManager(late, 1, mode="thread", on_exit=events.append)
    name = manager.store.name
    manager.start()
    manager.publish("answer", 42)
    try:
        assert manager.stop(timeout=0.2) is False
        assert os.path.exists(f"/dev/shm/{name}")
    finally:
        release.set()
    assert _wait_for(lambda: events, JOIN_SECONDS)
    assert results == [42]
    assert events[0].exitcode == 0 and events[0].expected
    assert _wait_for(lambda: not os.path.exists(f"/dev/shm/{name}"),
                     JOIN_SECONDS)


def test_restart_returns_once_the_new_worker_has_registered(store):
    manager = WorkerManager(idle, 1, store=store, mode="spawn")
    with manager:
        new = manager.restart("worker-0", timeout=JOIN_SECONDS)
        assert any(w["pid"] == new and w["state"] == "running"
                   for w in read_workers(store))
