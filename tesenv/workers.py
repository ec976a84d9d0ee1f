"""Start, watch, restart and stop workers whose configuration lives in a store.

A ``WorkerManager`` publishes each worker's configuration under the key
``tes-worker-config/<workerId>`` (one key per worker, so changing one
worker's configuration leaves the others' versions alone) as a dict with at
least ``workerId``, ``registry`` (the registry region's name in the store)
and ``port`` (``base_port + index``, or None).  A worker is started with
only the store's name and its id; it reads everything else from the store,
registers itself in the registry (``tesenv.registry``) and calls
``target(ctx, *args)`` with a ``WorkerContext``.  Jobs and results still
travel through whatever queues or pipes the caller passes in ``args``.

Workers are processes (``mode`` "spawn", "fork" or "forkserver") or threads
("thread").  Under spawn and forkserver, target and args must pickle.

Pools made elsewhere attach with ``pool_initializer``::

    ProcessPoolExecutor(initializer=pool_initializer,
                        initargs=initializer_args(store))
"""

import collections
import ctypes
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.util
import os
import signal
import sys
import threading
import time

from tesenv._store import Store, use_store
from tesenv.registry import ID_BYTES, REGION_NAME, Registry, pid_alive

__all__ = [
    "WorkerManager", "WorkerContext", "WorkerExit", "current",
    "config_key", "pool_initializer", "initializer_args", "CONFIG_PREFIX",
]

log = logging.getLogger(__name__)

CONFIG_PREFIX = "tes-worker-config/"
STOP_PREFIX = "tes-worker-stop/"
MODES = ("spawn", "fork", "forkserver", "thread")
# Configuration fields the manager sets itself; config= may not override them.
RESERVED_FIELDS = ("workerId", "registry", "port")
# How often a worker process stamps its heartbeat and checks that its
# manager still lives; also the fallback bound on orphaned lifetime.
WATCHDOG_SECONDS = 0.25
PR_SET_PDEATHSIG = 1

WorkerExit = collections.namedtuple(
    "WorkerExit", "worker_id pid exitcode signal expected restarting")
WorkerExit.__doc__ = """How a worker ended: exitcode is the process's exit
code (1 for a thread whose target raised), signal the name of the signal
that killed it or None, expected is True when the manager was stopping it,
restarting is True when the manager is about to start it again."""


def config_key(worker_id):
    """The store key of a worker's own configuration."""
    return CONFIG_PREFIX + worker_id


# --------------------------------------------------------------------------
# The worker side.

_local = threading.local()
_process_context = None


def current():
    """The WorkerContext of the calling worker thread or process, or None
    outside a worker."""
    return getattr(_local, "context", None) or _process_context


class WorkerContext:
    """What a worker gets: its id, store, telemetry and configuration.

    ``config`` is the worker's ``tes-worker-config`` dict as published now
    (read-only); reading it records its version in the registry.
    ``should_stop()`` turns true when the manager asks workers to finish.
    """

    def __init__(self, store, worker_id, kind, stop_key=None):
        self.store = store
        self.worker_id = worker_id
        self.kind = kind
        self.registry = Registry(store)
        self.telemetry = self.registry.register(worker_id, kind=kind)
        self._config = store.handle(config_key(worker_id))
        self._stop = store.handle(stop_key) if stop_key else None

    @property
    def config(self):
        """This worker's configuration; KeyError if none is published."""
        value = self._config.value
        self.telemetry.saw_config(self._config.version)
        return value

    @property
    def config_version(self):
        """The current version of this worker's configuration key."""
        return self._config.version

    def wait_config(self, after_version, timeout):
        """Sleeps until the configuration's version exceeds after_version or
        timeout seconds pass; returns the version then."""
        return self._config.wait(after_version, timeout)

    def get(self, key, default=None):
        """A value from the worker's store."""
        return self.store.get(key, default)

    def should_stop(self):
        """True once the manager has asked its workers to stop.  Costs one
        atomic load while nothing changed."""
        return self._stop is not None and self._stop.get(False) is True

    def wait_stop(self, timeout):
        """Sleeps until a stop is asked for or timeout seconds pass;
        returns should_stop()."""
        if self._stop is None:
            time.sleep(timeout)
            return False
        deadline = time.monotonic() + timeout
        while not self.should_stop():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._stop.wait(self._stop.version, left)
        return self.should_stop()

    def job_type(self, name):
        """This worker's counters for jobs called name (a JobType)."""
        return self.telemetry.job_type(name)

    def _leave(self, state):
        try:
            self.telemetry.set_state(state)
            self.telemetry.close()
        except ValueError:
            pass

    def __repr__(self):
        return f"<WorkerContext {self.worker_id!r} ({self.kind})>"


def _die_with_parent(manager_pid):
    """Makes this process end when the thread that forked it does.

    Only for workers a WorkerManager starts: Linux delivers PR_SET_PDEATHSIG
    when the forking *thread* ends, and the manager forks from its monitor
    thread, which outlives every worker.  Pools made by other code fork from
    threads we do not control (a Pool's handler thread, whichever thread
    first submits to a ProcessPoolExecutor), so pool workers rely on the
    watchdog alone.

    SIGKILL rather than SIGTERM: an orphaned worker has no one to report to
    and holds nothing that needs cleaning (attachers never unlink a store,
    and readers see its registry slot as dead), while SIGTERM can be caught
    and ignored by user code.
    """
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
                log.debug("prctl(PR_SET_PDEATHSIG) failed: errno %d",
                          ctypes.get_errno())
        except (OSError, AttributeError) as e:
            log.debug("prctl unavailable: %s", e)
    _exit_if_orphaned(manager_pid)


def _exit_if_orphaned(manager_pid):
    # The parent may have died before this process got this far.
    if not pid_alive(manager_pid):
        os._exit(1)


def _watchdog(context, manager_pid):
    """Stamps the heartbeat and exits the process once the manager is gone
    (the fallback where PR_SET_PDEATHSIG does not exist or did not fire,
    e.g. macOS, or a forkserver child whose parent is the forkserver)."""
    parent = os.getppid()
    while True:
        context.telemetry.heartbeat()
        if os.getppid() != parent or not pid_alive(manager_pid):
            os._exit(1)
        time.sleep(WATCHDOG_SECONDS)


def _start_watchdog(context, manager_pid):
    threading.Thread(target=_watchdog, args=(context, manager_pid),
                     name="tesenv-watchdog", daemon=True).start()


def _process_main(store, worker_id, stop_key, manager_pid, target, args):
    """The body of a worker process: attach, register, run target.

    store is the manager's Store object under fork (the child inherits its
    mapping, and attaching again would take a second reader slot), its name
    otherwise.
    """
    global _process_context
    _die_with_parent(manager_pid)
    if not isinstance(store, Store):
        store = Store.attach(store)
    use_store(store)
    context = WorkerContext(store, worker_id, "process", stop_key)
    _process_context = context
    _start_watchdog(context, manager_pid)
    context.telemetry.set_state("running")
    try:
        target(context, *args)
    except BaseException:
        context._leave("dead")
        raise
    context._leave("exited")


def initializer_args(store):
    """The initargs for pool_initializer that attach to store."""
    return (store.name,)


def pool_initializer(store_name, id_prefix="pool"):
    """Initializer for ProcessPoolExecutor and multiprocessing.Pool: attaches
    the pool's worker to the store (making it this process's default store),
    registers it as ``<id_prefix>-<pid>`` and starts its heartbeat.  Tasks
    find their context with ``tesenv.workers.current()``.

    The worker exits within WATCHDOG_SECONDS once the pool's process is
    gone; it does not use PR_SET_PDEATHSIG (see _die_with_parent).

    Raises StoreNotFoundError if the store is gone.
    """
    global _process_context
    manager_pid = os.getppid()
    _exit_if_orphaned(manager_pid)
    store = Store.attach(store_name)
    use_store(store)
    context = WorkerContext(store, f"{id_prefix}-{os.getpid()}", "pool")
    _process_context = context
    _start_watchdog(context, manager_pid)
    context.telemetry.set_state("running")
    # Pool processes leave through multiprocessing's exit path, which runs
    # its finalizers but not atexit.
    multiprocessing.util.Finalize(context, context._leave, args=("exited",),
                                  exitpriority=10)


# --------------------------------------------------------------------------
# The manager side.

class _Worker:
    """The manager's record of one worker."""

    def __init__(self, worker_id, index):
        self.worker_id = worker_id
        self.index = index
        self.handle = None      # a Process or a Thread; None once reaped
        self.context = None     # a thread worker's WorkerContext
        self.pid = None
        self.exitcode = None
        self.restarts = 0
        self.stopping = False   # an exit now is expected
        self.relaunch = False   # restart() asked for a new start
        self.start_error = None  # why a thread worker could not register

    def alive(self):
        return self.handle is not None and self.handle.is_alive()


def _check_reserved(extra):
    for field in RESERVED_FIELDS:
        if field in extra:
            raise ValueError(f"config may not set {field!r}: the manager "
                             f"sets it for each worker")


def _exit_code(code):
    """The exit status a process would have after SystemExit(code)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    return 1


class WorkerManager:
    """Starts count workers running target(ctx, *args) and looks after them.

    store: the Store to publish in; None makes a private one that stop()
    removes.  mode: "spawn", "fork", "forkserver" or "thread".  config: a
    dict merged into every worker's configuration, or a function
    (worker_id, index) -> dict.  base_port: worker i gets port base_port + i.
    restart: start again a worker that died (non-zero exit or signal), at
    most max_restarts times each.  on_exit: called with a WorkerExit from
    the manager's monitor thread whenever a worker ends.

    A worker that dies is noticed at once (its process sentinel wakes the
    monitor thread), logged as a warning and reported to on_exit.

    Every worker is started from the monitor thread, which lives until the
    last worker is gone: Linux delivers PR_SET_PDEATHSIG when the thread
    that forked a child ends, not only its process.
    """

    def __init__(self, target, count=1, *, args=(), store=None, mode="spawn",
                 config=None, base_port=None, restart=False, max_restarts=3,
                 on_exit=None, id_prefix="worker"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"count must be a positive int, got {count!r}")
        longest = f"{id_prefix}-{count - 1}".encode("utf-8")
        if len(longest) > ID_BYTES:
            raise ValueError(f"worker ids are at most {ID_BYTES} bytes of "
                             f"UTF-8; id_prefix {id_prefix!r} makes "
                             f"{len(longest)}")
        if not callable(config):
            _check_reserved(config or {})
        self.target = target
        self.args = tuple(args)
        self.mode = mode
        self.restart_on_failure = restart
        self.max_restarts = max_restarts
        self.on_exit = on_exit
        self._config = config
        self._base_port = base_port
        self._owns_store = store is None
        self.store = Store.create() if store is None else store
        self.registry = Registry(self.store)
        self._stop_key = STOP_PREFIX + id_prefix
        self._workers = [_Worker(f"{id_prefix}-{i}", i) for i in range(count)]
        self._by_id = {w.worker_id: w for w in self._workers}
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._wake_r, self._wake_w = os.pipe()
        self._monitor = None
        self._launch_error = None
        self._stopping = False
        self._quit = False
        self._linger = False     # stop() left cleaning up to the monitor
        self._mp = None if mode == "thread" else multiprocessing.get_context(mode)

    # ---- configuration ---------------------------------------------------

    def worker_config(self, worker_id):
        """The configuration dict to publish for worker_id."""
        worker = self._by_id[worker_id]
        extra = self._config(worker.worker_id, worker.index) \
            if callable(self._config) else dict(self._config or {})
        port = None if self._base_port is None else \
            self._base_port + worker.index
        _check_reserved(extra)
        config = {"workerId": worker.worker_id, "registry": REGION_NAME,
                  "port": port}
        config.update(extra)
        return config

    def set_config(self, worker_id, **changes):
        """Publishes a changed configuration for one worker; returns its
        new version.  KeyError for an unknown worker id."""
        key = config_key(self._by_id[worker_id].worker_id)
        config = dict(self.store.get(key) or {})
        config.update(changes)
        return self.store.set(key, config)

    def publish(self, key, value):
        """Publishes value under key for every worker; returns the version."""
        return self.store.set(key, value)

    @property
    def worker_ids(self):
        return [w.worker_id for w in self._workers]

    # ---- lifecycle -------------------------------------------------------

    def start(self, timeout=30.0):
        """Publishes every worker's configuration, then starts the workers
        from the monitor thread.  Returns self once every worker has
        registered (or already ended).

        Raises RuntimeError if already started, if starting failed (the
        cause is chained) or if workers ended before registering;
        ValueError if a worker id is held by a live worker of another
        manager on this store (give one of them another id_prefix);
        TimeoutError after timeout seconds.
        """
        if self._monitor is not None:
            raise RuntimeError("this WorkerManager was started already")
        configs = {w.worker_id: self.worker_config(w.worker_id)
                   for w in self._workers}

        # Two managers with the same ids would share configuration and stop
        # keys.  Checked, not locked: managers starting at the same instant
        # can still both pass.
        live = {e["id"]: e["pid"]
                for e in self.registry.workers(include_finished=False)}
        for worker_id in configs:
            if worker_id in live:
                raise ValueError(
                    f"worker id {worker_id!r} is held by a live worker (pid "
                    f"{live[worker_id]}) on store {self.store.name!r}; give "
                    f"this manager another id_prefix")

        self.store.set(self._stop_key, False)
        for worker_id, config in configs.items():
            self.store.set(config_key(worker_id), config)
        launched = threading.Event()
        self._monitor = threading.Thread(target=self._run, args=(launched,),
                                         name="tesenv-worker-monitor",
                                         daemon=True)
        self._monitor.start()
        if not launched.wait(timeout):
            raise TimeoutError(f"workers did not start within {timeout} s")
        if self._launch_error is not None:
            self.stop(timeout=1.0)
            raise RuntimeError("could not start the workers") \
                from self._launch_error
        try:
            self._wait_ready(timeout)
        except TimeoutError:
            self.stop(timeout=1.0)
            raise
        failed = self._unregistered()
        if failed:
            self.stop(timeout=1.0)
            raise RuntimeError("workers ended before registering: " +
                               "; ".join(failed))
        return self

    def _unregistered(self):
        """'<id> (<why>)' for each worker that ended without registering."""
        registered = {(e["id"], e["pid"]) for e in self.registry.workers()}
        failed = []
        with self._lock:
            for w in self._workers:
                if w.alive():
                    continue
                if self.mode == "thread":
                    if w.start_error is None:
                        continue
                    why = f"{type(w.start_error).__name__}: {w.start_error}"
                else:
                    if (w.worker_id, w.pid) in registered:
                        continue
                    code = w.exitcode if w.handle is None else \
                        w.handle.exitcode
                    why = f"exit code {code}, see its stderr"
                failed.append(f"{w.worker_id} ({why})")
        return failed

    def _wait_ready(self, timeout, workers=None):
        """Waits until every worker (or each of workers) has registered as
        running or already ended; raises TimeoutError after timeout
        seconds."""
        deadline = time.monotonic() + timeout
        workers = self._workers if workers is None else workers
        while True:
            with self._lock:
                waiting = {w.worker_id: w.pid for w in workers if w.alive()}
            for entry in self.registry.workers():
                if waiting.get(entry["id"]) == entry["pid"] and \
                        entry["state"] != "starting":
                    del waiting[entry["id"]]
            if not waiting:
                return
            if time.monotonic() >= deadline:
                raise TimeoutError(f"workers {sorted(waiting)} did not "
                                   f"start within {timeout} s")
            time.sleep(0.005)

    def _launch(self, worker):
        """Starts worker; called on the monitor thread with the lock held."""
        worker.exitcode = None
        worker.start_error = None
        worker.stopping = False
        worker.relaunch = False
        if self.mode == "thread":
            handle = threading.Thread(target=self._thread_main, args=(worker,),
                                      name=f"tesenv-{worker.worker_id}",
                                      daemon=True)
            handle.start()
            worker.pid = os.getpid()
        else:
            handle = self._mp.Process(
                target=_process_main, name=f"tesenv-{worker.worker_id}",
                args=(self.store if self.mode == "fork" else self.store.name,
                      worker.worker_id, self._stop_key,
                      os.getpid(), self.target, self.args),
                daemon=True)
            handle.start()
            worker.pid = handle.pid
        worker.handle = handle
        log.info("started worker %s (%s, pid %d)", worker.worker_id,
                 self.mode, worker.pid)

    def _thread_main(self, worker):
        try:
            context = WorkerContext(self.store, worker.worker_id, "thread",
                                    self._stop_key)
        except BaseException as e:
            worker.exitcode = 1
            worker.start_error = e
            log.exception("worker %s could not start", worker.worker_id)
            self._wake()
            return
        worker.context = context
        _local.context = context
        context.telemetry.set_state("running")
        try:
            self.target(context, *self.args)
        except SystemExit as e:
            # As a worker process would: the code is the exit status.
            worker.exitcode = _exit_code(e.code)
            context._leave("exited" if worker.exitcode == 0 else "dead")
        except BaseException:
            worker.exitcode = 1
            context._leave("dead")
            log.exception("worker %s raised", worker.worker_id)
        else:
            worker.exitcode = 0
            context._leave("exited")
        finally:
            _local.context = None
            self._wake()

    def _wake(self):
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass  # the manager has closed its pipe

    def _run(self, launched):
        """The monitor thread: starts the workers, then waits for any to end,
        reports it, restarts it when asked to, and stamps the heartbeats of
        thread workers.  Returns once stop() has no more use for it."""
        try:
            with self._lock:
                for worker in self._workers:
                    self._launch(worker)
        except BaseException as e:
            self._launch_error = e
        launched.set()

        while not self._quit:
            with self._lock:
                sentinels = [w.handle.sentinel for w in self._workers
                             if w.handle is not None and self.mode != "thread"]
            ready = multiprocessing.connection.wait(
                sentinels + [self._wake_r], timeout=WATCHDOG_SECONDS)
            if self._wake_r in ready:
                os.read(self._wake_r, 4096)
            self._reap()
            if self.mode == "thread":
                self._stamp_thread_heartbeats()
            if self._linger and all(w.handle is None for w in self._workers):
                self._quit = True
        if self._linger:
            self._finish()

    def _stamp_thread_heartbeats(self):
        # Thread workers share the process; the monitor thread is the one
        # writer of their heartbeat words.  Telemetry methods hold the GIL
        # throughout, so a worker closing its slot cannot interleave.
        for worker in self._workers:
            context = worker.context
            if context is not None and worker.alive():
                try:
                    context.telemetry.heartbeat()
                except ValueError:
                    pass  # it just left

    def _reap(self):
        events = []
        with self._lock:
            for worker in self._workers:
                if worker.handle is None or worker.alive():
                    continue
                if self.mode != "thread":
                    worker.handle.join(0)
                    worker.exitcode = worker.handle.exitcode
                    worker.handle.close()
                elif worker.exitcode is None:
                    worker.exitcode = 1  # died without passing our handler
                worker.handle = None
                worker.context = None
                events.append(self._ended(worker))
            for worker in self._workers:
                if worker.handle is None and worker.relaunch and \
                        not self._stopping:
                    worker.restarts += 1
                    self._launch(worker)
            self._changed.notify_all()
        for event in events:
            self._report(event)

    def _ended(self, worker):
        """Records that worker ended, relaunching it when asked to.  Called
        with the lock held; returns the WorkerExit to report."""
        code = worker.exitcode
        failed = code != 0
        signame = None
        if code < 0:
            try:
                signame = signal.Signals(-code).name
            except ValueError:
                signame = f"signal {-code}"
        self.registry.mark(worker.worker_id, "dead" if failed else "exited",
                           worker.pid)
        restarting = not self._stopping and (worker.relaunch or (
            failed and self.restart_on_failure and not worker.stopping and
            worker.restarts < self.max_restarts))
        event = WorkerExit(worker.worker_id, worker.pid, code, signame,
                           worker.stopping, restarting)
        if restarting:
            worker.restarts += 1
            try:
                self._launch(worker)
            except Exception:
                log.exception("could not restart worker %s", worker.worker_id)
        return event

    def _report(self, event):
        how = f"signal {event.signal}" if event.signal else \
            f"exit code {event.exitcode}"
        if event.expected or event.exitcode == 0:
            log.info("worker %s (pid %s) ended: %s", event.worker_id,
                     event.pid, how)
        else:
            log.warning("worker %s (pid %s) died: %s%s", event.worker_id,
                        event.pid, how,
                        "; restarting it" if event.restarting else "")
        if self.on_exit is not None:
            try:
                self.on_exit(event)
            except Exception:
                log.exception("on_exit callback failed for worker %s",
                              event.worker_id)

    def restart(self, worker_id, timeout=5.0):
        """Ends worker_id (SIGTERM, then SIGKILL after timeout seconds) and
        has the monitor thread start it again.  Returns the new pid once the
        new worker has registered (or already ended).

        Raises KeyError for an unknown id, RuntimeError for a running thread
        worker (threads cannot be ended from outside) or a manager that is
        not running, TimeoutError if no new worker runs after timeout + 5 s
        or it has not registered timeout + 5 s after that.
        """
        worker = self._by_id[worker_id]
        with self._lock:
            if self._stopping or self._monitor is None:
                raise RuntimeError("the manager is not running")
            if self.mode == "thread" and worker.alive():
                raise RuntimeError("a running thread worker cannot be ended "
                                   "from outside")
            old = worker.handle
            worker.relaunch = True
            worker.stopping = True
            if old is not None:
                old.terminate()
        self._wake()

        # Only the monitor reaps; while the old handle is still the worker's
        # it is unreaped, so its pid cannot have been reused.
        deadline = time.monotonic() + timeout
        killed = False
        with self._lock:
            while worker.handle is None or worker.handle is old:
                left = deadline - time.monotonic()
                if left <= 0 and worker.handle is old and not killed:
                    old.kill()
                    killed = True
                    deadline += 5.0
                elif left <= 0:
                    raise TimeoutError(f"worker {worker_id} did not restart")
                self._changed.wait(max(0.01, min(left, WATCHDOG_SECONDS)))
            pid = worker.pid
        self._wait_ready(timeout + 5.0, [worker])
        return pid

    def workers(self):
        """A snapshot of the workers: dicts of worker_id, index, pid, alive,
        exitcode, restarts."""
        with self._lock:
            return [{"worker_id": w.worker_id, "index": w.index,
                     "pid": w.pid, "alive": w.alive(),
                     "exitcode": w.exitcode, "restarts": w.restarts}
                    for w in self._workers]

    def stop(self, timeout=5.0):
        """Asks every worker to stop (``ctx.should_stop()`` turns true) and
        waits up to timeout seconds; SIGTERMs, then SIGKILLs, the processes
        still running.  Removes the workers' configuration keys, and the
        store if the manager made it.  Returns True if every worker stopped
        on its own in time.

        Thread workers cannot be ended from outside: if some still run after
        timeout, stop() returns False at once and leaves the store and keys
        to them; the monitor thread reports their ends to on_exit as they
        come and cleans up after the last one.
        """
        with self._lock:
            if self._quit or self._linger:
                return True
            self._stopping = True
            for worker in self._workers:
                worker.stopping = True
        graceful = True
        if self._monitor is not None:
            self.store.set(self._stop_key, True)
            graceful = self._wait_all(timeout)
            if not graceful:
                self._force_end()
        with self._lock:
            running = [w.worker_id for w in self._workers
                       if w.handle is not None]
        if running and self.mode == "thread" and self._monitor.is_alive():
            log.warning("thread workers %s still run; their store is left "
                        "open until they end", ", ".join(running))
            self._linger = True  # the monitor sees it within WATCHDOG_SECONDS
            return graceful
        self._quit = True
        self._wake()
        if self._monitor is not None:
            self._monitor.join(timeout=5.0)
        self._finish()
        return graceful

    def _finish(self):
        self._cleanup_store()
        for fd in (self._wake_r, self._wake_w):
            os.close(fd)

    def _wait_all(self, timeout):
        """Waits until the monitor has reaped every worker; False on
        timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while any(w.handle is not None for w in self._workers):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(min(left, WATCHDOG_SECONDS))
        return True

    def _force_end(self):
        with self._lock:
            late = [w for w in self._workers if w.handle is not None]
        for worker in late:
            if self.mode == "thread":
                log.warning("thread worker %s did not stop in time; it is "
                            "left running as a daemon thread",
                            worker.worker_id)
                continue
            log.warning("worker %s (pid %d) did not stop in time; "
                        "terminating it", worker.worker_id, worker.pid)
            with self._lock:
                if worker.handle is not None:
                    worker.handle.terminate()
        if self.mode != "thread" and not self._wait_all(1.0):
            with self._lock:
                for worker in self._workers:
                    if worker.handle is not None:
                        worker.handle.kill()
            self._wait_all(5.0)

    def _cleanup_store(self):
        if self._owns_store:
            self.store.close()
            return
        for key in [config_key(w.worker_id) for w in self._workers] + \
                [self._stop_key]:
            try:
                del self.store[key]
            except (KeyError, ValueError):
                pass  # never published, or the caller closed the store

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        return (f"<WorkerManager {len(self._workers)} x {self.mode} on "
                f"{self.store.name!r}>")
