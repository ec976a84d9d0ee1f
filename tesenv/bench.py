"""The worker benchmark: four ways of giving worker processes their
configuration, compared on one workload in one run.

Worker processes scan daily yield curves in jobs of a few days each: every job
reads the shared configuration, fits the configured curve type through each
day's available maturities, evaluates it and its slope on a dense grid and
keeps summary figures.  While they run, the parent changes the configuration
(the curve type flips, e.g. pchip -> not-a-knot).  The four methods:

  env      environment variables set at spawn; a change means a restart
  message  a Pipe per worker, polled between jobs (as postMessage)
  manager  a multiprocessing.Manager().dict(), read on every job
  tesenv   the shared-memory store, read on every job

Clocks: every timestamp is time.monotonic_ns(), which on Linux and macOS is one
clock for all processes of the machine, so times taken in workers and in the
parent compare directly.

Run ``python -m tesenv.bench --help`` (or ``tesenv bench --help``).
"""

import argparse
import json
import logging
import math
import os
import platform
import queue
import signal
import sys
import textwrap
import threading
import time
from dataclasses import dataclass, field

import numpy as np

from tesenv.curves import CurveFileError, load_curves, synthetic_curves

__all__ = ["main", "run", "parse_args", "fit_block", "BenchError", "METHODS"]

log = logging.getLogger(__name__)

METHODS = ("env", "message", "manager", "tesenv")
CURVE_KINDS = ("linear", "not-a-knot", "natural", "clamped", "pchip", "akima",
               "makima", "steffen", "catmull-rom", "bspline")
SPLINE_KEY = "tes-spline-config"
WORKER_KEY = "tes-worker-config"
REGISTRY = "tcp://127.0.0.1:7400"
FIRST_PORT = 7401
STORE_PREFIX = "tesenv-bench-"

# A day needs this many published maturities to be fitted by every kind.
MIN_POINTS_PER_DAY = 4
# Parent's wait between looks at the workers' progress counters: short enough
# to change the configuration on time, long enough to leave the CPUs to them.
# TODO(pacing): on a loaded machine the parent may get the CPU late and make a
# change after the jobs it was meant for; pacing the jobs from the parent
# would fix that at the price of a message per job.
POLL_SECONDS = 0.002
# Workers check that the parent still lives every this many jobs.
PARENT_CHECK_JOBS = 128
# Tight-loop read timing in each worker: batches of reads until this long.
READ_TIMING_SECONDS = 0.05
# A worker that does not report within this long has failed.
WORKER_TIMEOUT_SECONDS = 60.0


class BenchError(RuntimeError):
    """The benchmark could not run to the end; the message says why."""


# ---------------------------------------------------------------------------
# The workload: one job is one block of days.

def fit_block(maturities, yields, kind, grid):
    """Fits kind through each day (row) of yields on its finite maturities and
    evaluates level and slope on grid.

    Returns (summary, checksum): summary is float64 of shape (days, 4) with
    each day's mean level, minimum, maximum and largest absolute slope on the
    grid; checksum is the sum of every evaluated level and slope.  Raises
    ValueError if a day has too few points for kind.
    """
    from tesenv import Spline

    options = {"bc": (0.0, 0.0)} if kind == "clamped" else {}
    spline = Spline(maturities, yields.T, kind, missing="drop", **options)
    level = spline(grid)            # (grid points, days)
    slope = spline(grid, nu=1)
    summary = np.empty((yields.shape[0], 4))
    summary[:, 0] = level.mean(axis=0)
    summary[:, 1] = level.min(axis=0)
    summary[:, 2] = level.max(axis=0)
    summary[:, 3] = np.abs(slope).max(axis=0)
    return summary, float(level.sum() + slope.sum())


def make_grid(spec):
    """The evaluation grid in years for a config grid mapping."""
    return np.linspace(spec["first"], spec["last"], int(spec["points"]))


def parse_grid(text):
    """A grid mapping for --grid: 'N' or 'Nm' is every N months from N months
    to 30 years; 'Np' is N points evenly from 1 month to 30 years.  Raises
    argparse.ArgumentTypeError."""
    value = text.strip().lower()
    try:
        if value.endswith("p"):
            points = int(value[:-1])
            if points < 2:
                raise ValueError
            return {"first": 1 / 12, "last": 30.0, "points": points,
                    "label": f"{points} points, 1 month .. 30 years"}
        step = float(value[:-1] if value.endswith("m") else value)
        if not 0 < step <= 180:
            raise ValueError
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"grid {text!r}: give a step in months ('1', '3m') or a number of "
            f"points ('500p')") from None
    points = int(math.floor(360 / step + 1e-9))
    return {"first": step / 12, "last": points * step / 12, "points": points,
            "label": f"{points} points, every {step:g} month(s)"}


def spline_config(version, curve_type, jobs, grid):
    """The shared configuration every method hands its workers."""
    return {"configVersion": version, "curveType": curve_type, "jobs": jobs,
            "grid": {"first": grid["first"], "last": grid["last"],
                     "points": grid["points"]}}


def worker_config(index):
    """The configuration of one worker."""
    return {"workerId": index, "registry": REGISTRY,
            "port": FIRST_PORT + index}


def job_count(jobs, workers, index):
    """How many of jobs (numbered 0..jobs-1, dealt round robin) fall to
    worker index."""
    return max(0, (jobs - index + workers - 1) // workers)


# ---------------------------------------------------------------------------
# Worker side: how each method reads its configuration.

class _EnvReader:
    """Environment variables, parsed on every read: they never change."""

    def __init__(self, link):
        pass

    def describe(self):
        return "environment"

    def worker_config(self):
        env = os.environ
        return {"workerId": int(env["TES_WORKER_ID"]),
                "registry": env["TES_REGISTRY"], "port": int(env["TES_PORT"])}

    def read(self):
        env = os.environ
        first, last, points = env["TES_GRID"].split(":")
        return {"configVersion": int(env["TES_CONFIG_VERSION"]),
                "curveType": env["TES_CURVE_TYPE"],
                "jobs": int(env["TES_JOBS"]),
                "grid": {"first": float(first), "last": float(last),
                         "points": int(points)}}


class _MessageReader:
    """A Pipe from the parent: the latest message wins, checked per read."""

    def __init__(self, link):
        self.conn = link
        self.config = None
        self.worker = None
        while self.config is None or self.worker is None:
            self._take(self.conn.recv())

    def _take(self, message):
        kind, value = message
        if kind == WORKER_KEY:
            self.worker = value
        else:
            self.config = value

    def describe(self):
        return "pipe"

    def worker_config(self):
        return self.worker

    def read(self):
        while self.conn.poll():
            self._take(self.conn.recv())
        return self.config


class _ManagerReader:
    """A Manager dict: every read is a round trip to the server process."""

    def __init__(self, link):
        self.shared, self.index = link

    def describe(self):
        return "manager dict"

    def worker_config(self):
        return self.shared.get(f"{WORKER_KEY}/{self.index}")

    def read(self):
        return self.shared[SPLINE_KEY]


class _TesenvReader:
    """The default store, found through TESENV_STORE."""

    def __init__(self, link):
        import tesenv

        self.index = link
        self.get = tesenv.get_environment_data
        if tesenv.default_store() is None:
            # Discovery hides why it found nothing; attaching says why.
            name = os.environ.get("TESENV_STORE")
            if not name:
                raise BenchError("TESENV_STORE is not set in the worker")
            tesenv.Store.attach(name).close()
            raise BenchError(f"store {name} exists but was not found")

    def describe(self):
        import tesenv

        store = tesenv.default_store()
        return (f"store {store.name if store else None}, TESENV_STORE="
                f"{os.environ.get('TESENV_STORE')}")

    def worker_config(self):
        return self.get(f"{WORKER_KEY}/{self.index}")

    def read(self):
        return self.get(SPLINE_KEY)

    def alternatives(self):
        """Other ways to read the same key, timed for the report."""
        import tesenv

        handle = tesenv.default_store().handle(SPLINE_KEY)
        return {"handle.value": lambda: handle.value}


_READERS = {"env": _EnvReader, "message": _MessageReader,
            "manager": _ManagerReader, "tesenv": _TesenvReader}

_stop_requested = False


def _request_stop(signum, frame):
    global _stop_requested
    _stop_requested = True


def _time_reads(read):
    """Nanoseconds per call of read in a tight loop, the best of a few
    batches sized to take about READ_TIMING_SECONDS in all."""
    batch = 1
    while True:
        start = time.perf_counter_ns()
        for _ in range(batch):
            read()
        elapsed = time.perf_counter_ns() - start
        if elapsed > 2_000_000 or batch >= 1 << 20:
            break
        batch *= 4
    rounds = max(3, int(READ_TIMING_SECONDS * 1e9 / max(elapsed, 1)))
    best = elapsed / batch
    for _ in range(min(rounds, 20)):
        start = time.perf_counter_ns()
        for _ in range(batch):
            read()
        best = min(best, (time.perf_counter_ns() - start) / batch)
    return best


def _worker_main(method, index, generation, link, data, progress, started,
                 results):
    """Entry point of a worker process: runs its share of the jobs and puts
    one result message on results, or an ('error', text) message."""
    # Ctrl-C reaches the whole process group; the parent alone cleans up.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGUSR1, _request_stop)
    # From here on a stop request is honoured; the parent waits for this.
    started[index] = generation + 1
    entered_ns = time.monotonic_ns()
    try:
        reader = _READERS[method](link)
        me = reader.worker_config()
        if me is None:
            raise BenchError(f"no {WORKER_KEY} for worker {index} "
                             f"({reader.describe()})")
        if me["workerId"] != index:
            raise BenchError(f"worker {index} was given the configuration of "
                             f"worker {me['workerId']}")
        # The forkserver, not the benchmark, may be the parent; either way a
        # change of parent means it died.
        _run_jobs(method, index, generation, reader, data, progress, results,
                  os.getppid(), entered_ns)
    except BaseException as exc:  # reported to the parent, which raises it
        results.put(("error", method, index, generation,
                     f"{type(exc).__name__}: {exc}"))


def _run_jobs(method, index, generation, reader, data, progress, results,
              parent_pid, entered_ns):
    """The hot loop: one config read per job, then the job."""
    maturities, yields, block_days, workers = data
    nblocks = -(-len(yields) // block_days)
    version = None
    records = []        # job, version, start_ns, read_ns, end_ns, checksum
    summaries = {}      # (curve type, block) -> summary of the latest job
    done = progress[index]
    share = None

    while True:
        start_ns = time.monotonic_ns()
        config = reader.read()
        read_ns = time.monotonic_ns()
        if share is None:
            share = job_count(config["jobs"], workers, index)
        if done >= share or _stop_requested:
            break
        if config["configVersion"] != version:
            version = config["configVersion"]
            kind = config["curveType"]
            grid = make_grid(config["grid"])

        job = index + done * workers
        block = job % nblocks
        rows = slice(block * block_days, (block + 1) * block_days)
        summary, checksum = fit_block(maturities, yields[rows], kind, grid)
        summaries[(kind, block)] = summary
        records.append((job, version, start_ns, read_ns, time.monotonic_ns(),
                        checksum))
        done += 1
        progress[index] = done
        if done % PARENT_CHECK_JOBS == 0 and os.getppid() != parent_pid:
            return      # reparented: our parent died, nobody wants results

    results.put(("done", method, index, generation, {
        "pid": os.getpid(), "entered_ns": entered_ns,
        "records": np.array(records, dtype=float).reshape(-1, 6),
        "summaries": summaries, "read_ns": _time_reads(reader.read),
        "read_alternatives_ns": {
            name: _time_reads(read) for name, read in
            getattr(reader, "alternatives", dict)().items()}}))


# ---------------------------------------------------------------------------
# Parent side: how each method publishes.

class _EnvMethod:
    """Environment variables at spawn.  A change cannot reach a running
    worker: the parent restarts every worker with the new environment."""

    live = False

    def __init__(self, ctx, workers):
        self.saved = {}

    def _setenv(self, name, value):
        if name not in self.saved:
            self.saved[name] = os.environ.get(name)
        os.environ[name] = str(value)

    def link(self, index):
        me = worker_config(index)
        self._setenv("TES_WORKER_ID", me["workerId"])
        self._setenv("TES_REGISTRY", me["registry"])
        self._setenv("TES_PORT", me["port"])
        return None

    def publish(self, config):
        grid = config["grid"]
        self._setenv("TES_CONFIG_VERSION", config["configVersion"])
        self._setenv("TES_CURVE_TYPE", config["curveType"])
        self._setenv("TES_JOBS", config["jobs"])
        self._setenv("TES_GRID",
                     f"{grid['first']!r}:{grid['last']!r}:{grid['points']}")

    def close(self):
        for name, value in self.saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


class _MessageMethod:
    """One Pipe per worker; a change is one message to each."""

    live = True

    def __init__(self, ctx, workers):
        self.pipes = [ctx.Pipe() for _ in range(workers)]
        self.config = None

    def link(self, index):
        parent_end, child_end = self.pipes[index]
        parent_end.send((WORKER_KEY, worker_config(index)))
        parent_end.send((SPLINE_KEY, self.config))
        return child_end

    def publish(self, config):
        if self.config is not None:
            for parent_end, _ in self.pipes:
                parent_end.send((SPLINE_KEY, config))
        self.config = config

    def close(self):
        for ends in self.pipes:
            for end in ends:
                end.close()


def _ignore_sigint():
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _SigintHeld:
    """Holds Ctrl-C back while processes are being started.

    SIGINT is blocked in this thread, so that the processes started meanwhile
    inherit the block through fork and exec and never print a
    KeyboardInterrupt traceback from their imports: Ctrl-C goes to the whole
    process group, and the parent alone handles it by ending them.  Other
    threads (numpy's) may still take the signal, so the Python handler is
    swapped too, and an interrupt that came meanwhile is raised on exit, once
    the started process is known to the cleanup."""

    def __enter__(self):
        self.caught = False
        # Signal handlers can only be changed from the main thread.
        self.active = threading.current_thread() is threading.main_thread()
        if not self.active:
            return
        self.previous = signal.signal(signal.SIGINT, self._catch)
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})

    def _catch(self, signum, frame):
        self.caught = True

    def __exit__(self, *exc):
        if not self.active:
            return
        signal.signal(signal.SIGINT, self.previous)
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        if self.caught and exc[0] is None:
            raise KeyboardInterrupt


class _ManagerMethod:
    """A Manager dict shared by all workers."""

    live = True

    def __init__(self, ctx, workers):
        from multiprocessing.managers import SyncManager

        started = time.monotonic_ns()
        self.manager = SyncManager(ctx=ctx)
        with _SigintHeld():
            self.manager.start(_ignore_sigint)
        self.start_ms = (time.monotonic_ns() - started) / 1e6
        self.shared = self.manager.dict()

    def link(self, index):
        self.shared[f"{WORKER_KEY}/{index}"] = worker_config(index)
        return (self.shared, index)

    def publish(self, config):
        self.shared[SPLINE_KEY] = config

    def close(self):
        self.manager.shutdown()
        self.manager.join(5)


class _TesenvMethod:
    """A store of its own, made the default for the workers."""

    live = True

    def __init__(self, ctx, workers):
        import tesenv

        self.tesenv = tesenv
        self.previous = os.environ.get("TESENV_STORE")
        # Named after this process, so that a leftover is easy to attribute.
        self.store = tesenv.Store.create(
            f"{STORE_PREFIX}{os.getpid()}-{os.urandom(3).hex()}",
            size=4 * 1024 * 1024, max_keys=256)
        tesenv.use_store(self.store)

    def link(self, index):
        self.store.set(f"{WORKER_KEY}/{index}", worker_config(index))
        return index

    def publish(self, config):
        self.store.set(SPLINE_KEY, config)

    def close(self):
        self.tesenv.use_store(None)
        if self.previous is not None:
            os.environ["TESENV_STORE"] = self.previous
        self.store.close()


_PUBLISHERS = {"env": _EnvMethod, "message": _MessageMethod,
               "manager": _ManagerMethod, "tesenv": _TesenvMethod}


# ---------------------------------------------------------------------------
# Running one method.

class _Progress:
    """A one-line progress bar on stderr; silent when disabled."""

    WIDTH = 30
    REDRAW_SECONDS = 0.1

    def __init__(self, enabled):
        self.enabled = enabled
        self.shown = False
        self.label = None
        self.drawn_at = 0.0

    def update(self, label, fraction):
        if not self.enabled:
            return
        now = time.monotonic()
        if label == self.label and now - self.drawn_at < self.REDRAW_SECONDS:
            return
        self.label = label
        self.drawn_at = now
        fraction = min(max(fraction, 0.0), 1.0)
        filled = int(round(fraction * self.WIDTH))
        bar = "#" * filled + "." * (self.WIDTH - filled)
        sys.stderr.write(f"\r  {label:<28} [{bar}] {fraction:4.0%}")
        sys.stderr.flush()
        self.shown = True

    def close(self):
        if self.shown:
            sys.stderr.write("\r" + " " * (self.WIDTH + 42) + "\r")
            sys.stderr.flush()
            self.shown = False


@dataclass
class _Published:
    version: int
    curve_type: str
    before_ns: int      # just before the publishing call
    after_ns: int       # when it returned


@dataclass
class _MethodRun:
    """What the parent gathers while one method runs."""

    method: str
    workers: int
    spawn_ns: dict = field(default_factory=dict)      # (index, gen) -> ns
    results: dict = field(default_factory=dict)       # (index, gen) -> payload
    published: list = field(default_factory=list)
    restarts: int = 0
    restart_ms: list = field(default_factory=list)
    setup_ms: float = 0.0


def _curve_type_of(version, first, second):
    """Curve type of a config version: the first one, then alternating."""
    return first if version % 2 == 1 else second


def _run_method(method, ctx, options, curves, progress_bar):
    """Runs the workload with one method.  Returns a _MethodRun; raises
    BenchError if a worker fails.  Every process it starts is ended and every
    resource it makes is released, whatever happens."""
    workers = options.workers
    run = _MethodRun(method, workers)
    data = (curves.maturities, curves.yields, options.block, workers)
    progress = ctx.RawArray("q", workers)
    started = ctx.RawArray("q", workers)
    results = ctx.Queue()
    procs = {}
    publisher = None
    generation = 0

    def publish(version):
        kind = _curve_type_of(version, options.curve_type, options.change_to)
        config = spline_config(version, kind, options.jobs, options.grid)
        before = time.monotonic_ns()
        publisher.publish(config)
        run.published.append(_Published(version, kind, before,
                                         time.monotonic_ns()))

    def start(index):
        link = publisher.link(index)
        proc = ctx.Process(
            target=_worker_main, name=f"tesenv-bench-{method}-{index}",
            args=(method, index, generation, link, data, progress, started,
                  results),
            daemon=True)
        # Listed before it starts, so that the cleanup below always sees it.
        procs[(index, generation)] = proc
        with _SigintHeld():
            run.spawn_ns[(index, generation)] = time.monotonic_ns()
            proc.start()

    def collect(block_seconds=0.0):
        # Takes every message waiting; raises on a worker's error.
        timeout = block_seconds
        while True:
            try:
                message = results.get(timeout=timeout) if timeout else \
                    results.get_nowait()
            except queue.Empty:
                return
            status, _, index, gen, payload = message
            if status == "error":
                raise BenchError(f"{method} worker {index} failed: {payload}")
            run.results[(index, gen)] = payload
            timeout = 0.0

    def wait_for(keys, what):
        deadline = time.monotonic() + WORKER_TIMEOUT_SECONDS
        while any(key not in run.results for key in keys):
            collect(POLL_SECONDS * 10)
            for key in keys:
                if key not in run.results and not procs[key].is_alive():
                    collect(0.5)
                    if key not in run.results:
                        raise BenchError(
                            f"{method} worker {key[0]} exited with code "
                            f"{procs[key].exitcode} before {what}")
            if time.monotonic() > deadline:
                raise BenchError(f"{method} workers did not {what} within "
                                 f"{WORKER_TIMEOUT_SECONDS:.0f} s")

    def restart():
        # The only way a new environment reaches a worker.
        nonlocal generation
        began = time.monotonic_ns()
        current = [(i, generation) for i in range(workers)]
        for key in current:
            deadline = time.monotonic() + WORKER_TIMEOUT_SECONDS
            while started[key[0]] != generation + 1 and procs[key].is_alive():
                if time.monotonic() > deadline:
                    raise BenchError(f"{method} worker {key[0]} did not start")
                time.sleep(POLL_SECONDS)
            if procs[key].is_alive():
                os.kill(procs[key].pid, signal.SIGUSR1)
        wait_for(current, "stopping for a restart")
        for key in current:
            procs[key].join(5)
        generation += 1
        for index in range(workers):
            start(index)
        run.restarts += 1
        run.restart_ms.append((time.monotonic_ns() - began) / 1e6)

    try:
        began = time.monotonic_ns()
        publisher = _PUBLISHERS[method](ctx, workers)
        run.setup_ms = (time.monotonic_ns() - began) / 1e6
        version = 1
        publish(version)
        for index in range(workers):
            start(index)

        changes = [options.jobs * k // (options.changes + 1)
                   for k in range(1, options.changes + 1)]
        shares = [job_count(options.jobs, workers, i) for i in range(workers)]
        deadline = time.monotonic() + options.timeout
        while True:
            collect()
            done = sum(progress)
            busy = all(progress[i] > 0 or shares[i] == 0
                       for i in range(workers))
            if changes and done >= changes[0] and busy:
                changes.pop(0)
                version += 1
                publish(version)
                if not publisher.live:
                    restart()
                continue
            current = [(i, generation) for i in range(workers)]
            if all(key in run.results for key in current):
                break
            for key in current:
                if key not in run.results and not procs[key].is_alive():
                    wait_for([key], "reporting")
            if time.monotonic() > deadline:
                raise BenchError(f"{method} did not finish within "
                                 f"{options.timeout:.0f} s; try fewer --jobs")
            progress_bar.update(f"{method} ({version - 1} changes)",
                                done / max(options.jobs, 1))
            time.sleep(POLL_SECONDS)
        for proc in procs.values():
            proc.join(5)
        if method == "manager":
            run.setup_ms = publisher.start_ms
        return run
    finally:
        procs = [proc for proc in procs.values() if proc.pid is not None]
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
        for proc in procs:
            proc.join(2)
            if proc.is_alive():
                proc.kill()
                proc.join(2)
        if publisher is not None:
            publisher.close()
        results.close()
        results.join_thread()


# ---------------------------------------------------------------------------
# Figures from what the workers recorded.

def _percentile(values, q):
    """The q-th percentile of values, or None when there are none."""
    return float(np.percentile(values, q)) if len(values) else None


def _reference(curves, options):
    """Per (curve type, block): the summary and checksum computed here, in
    one process, by the same code the workers run."""
    grid = make_grid(options.grid)
    cache = {}

    def get(kind, block):
        if (kind, block) not in cache:
            rows = slice(block * options.block, (block + 1) * options.block)
            cache[(kind, block)] = fit_block(curves.maturities,
                                             curves.yields[rows], kind, grid)
        return cache[(kind, block)]

    return get


def _analyse(run, curves, options, reference):
    """The figures of one method's run as a dict (JSON-ready), plus the
    merged per-day summaries by curve type under the key '_summaries'."""
    nblocks = -(-len(curves) // options.block)
    kinds = {p.version: p.curve_type for p in run.published}
    published = {p.version: p for p in run.published}
    records = np.concatenate([r["records"] for r in run.results.values()])
    job, version, start, read, end, checksum = records.T
    job = job.astype(np.int64)
    version = version.astype(np.int64)
    start, read, end = (a.astype(np.int64) for a in (start, read, end))
    worker = np.concatenate([np.full(len(r["records"]), key[0])
                             for key, r in run.results.items()])

    # Every job exactly once, each with the right numbers.
    if len(job) != options.jobs or len(np.unique(job)) != options.jobs:
        raise BenchError(f"{run.method}: {len(np.unique(job))} distinct jobs "
                         f"of {options.jobs} were computed")
    wrong = sum(
        1 for j, v, c in zip(job, version, checksum)
        if not math.isclose(c, reference(kinds[v], j % nblocks)[1],
                            rel_tol=1e-12, abs_tol=1e-9))

    # Spawn to first job, for the first generation of workers.
    first_job_ms = []
    respawn_ms = []
    for key, payload in run.results.items():
        if len(payload["records"]):
            ms = (payload["records"][:, 2].min() - run.spawn_ns[key]) / 1e6
            (first_job_ms if key[1] == 0 else respawn_ms).append(ms)

    # Propagation: from just before the publish to the end of the first read
    # that returned it (or a newer version), per worker and change.
    latency_ms = []
    reach_all_ms = []
    for v in sorted(published)[1:]:
        per_worker = []
        for index in range(run.workers):
            mine = (worker == index) & (version >= v)
            if mine.any():
                per_worker.append((read[mine].min()
                                   - published[v].before_ns) / 1e6)
        latency_ms += per_worker
        if len(per_worker) == run.workers:
            reach_all_ms.append(max(per_worker))

    # Acknowledged: version v is acknowledged at ack[v], the earliest end of
    # a config read, in any worker, that returned v or newer.  A job is stale
    # if it started (clock read before its config read) after ack[u + 1] yet
    # ran with version u.  A job lags if it started after the publish of
    # u + 1 had returned in the parent.
    versions = sorted(published)
    ack = {v: (read[version >= v].min() if (version >= v).any() else None)
           for v in versions}
    stale = lagging = 0
    for v in versions[:-1]:
        ran = version == v
        if ack[v + 1] is not None:
            stale += int((start[ran] > ack[v + 1]).sum())
        lagging += int((start[ran] > published[v + 1].after_ns).sum())

    summaries = {}
    for payload in run.results.values():
        for (kind, block), summary in payload["summaries"].items():
            merged = summaries.setdefault(
                kind, np.full((len(curves), 4), np.nan))
            merged[block * options.block:block * options.block
                   + len(summary)] = summary

    in_loop_ns = read - start
    span_s = (end.max() - start.min()) / 1e9
    reads = [r["read_ns"] for r in run.results.values()]
    alternatives = {}
    for payload in run.results.values():
        for name, ns in payload["read_alternatives_ns"].items():
            alternatives.setdefault(name, []).append(ns)
    return {
        "method": run.method,
        "live_updates": run.method != "env",
        "spawn_to_first_job_ms": {"median": _percentile(first_job_ms, 50),
                                  "max": max(first_job_ms)},
        "setup_ms": run.setup_ms,
        "read_ns": _percentile(reads, 50),
        "read_alternatives_ns": {name: _percentile(values, 50)
                                 for name, values in alternatives.items()},
        "read_in_loop_ns": {"median": _percentile(in_loop_ns, 50),
                            "p99": _percentile(in_loop_ns, 99)},
        "propagation_ms": {"median": _percentile(latency_ms, 50),
                           "p99": _percentile(latency_ms, 99),
                           "max": max(latency_ms) if latency_ms else None,
                           "samples": len(latency_ms),
                           "all_workers_median": _percentile(reach_all_ms, 50)},
        "restarts": run.restarts,
        "restart_ms": {"median": _percentile(run.restart_ms, 50),
                       "max": max(run.restart_ms) if run.restart_ms else None},
        "respawn_to_first_job_ms": _percentile(respawn_ms, 50),
        "jobs": int(len(job)),
        "jobs_per_s": len(job) / span_s if span_s > 0 else None,
        "job_us": {"median": _percentile((end - read) / 1e3, 50)},
        "stale_jobs": stale,
        "lagging_jobs": lagging,
        "wrong_results": wrong,
        "config_versions": len(published),
        "_summaries": summaries,
    }


# ---------------------------------------------------------------------------
# The spline kernel against SciPy on the same curves.

def _scipy_fitter(kind):
    """A function (x, y) -> SciPy interpolant along axis 0 with extrapolation,
    evaluable as f(q, nu); None when SciPy has no such kind."""
    from scipy import interpolate as si

    fitters = {
        "linear": lambda x, y: si.make_interp_spline(x, y, k=1),
        "not-a-knot": lambda x, y: si.CubicSpline(x, y),
        "natural": lambda x, y: si.CubicSpline(x, y, bc_type="natural"),
        "clamped": lambda x, y: si.CubicSpline(x, y, bc_type="clamped"),
        "pchip": lambda x, y: si.PchipInterpolator(x, y),
        "akima": lambda x, y: si.Akima1DInterpolator(x, y, extrapolate=True),
        "makima": lambda x, y: si.Akima1DInterpolator(
            x, y, method="makima", extrapolate=True),
        "bspline": lambda x, y: si.make_interp_spline(x, y, k=3),
    }
    return fitters.get(kind)


def _best_seconds(fn, budget_seconds):
    """The shortest of several timed calls of fn: at least 3, more while the
    budget lasts."""
    best = math.inf
    spent = 0.0
    calls = 0
    while calls < 3 or spent < budget_seconds:
        began = time.perf_counter()
        fn()
        took = time.perf_counter() - began
        best = min(best, took)
        spent += took
        calls += 1
        if calls >= 50:
            break
    return best


def _kernel_comparison(curves, options, progress_bar):
    """Fit and evaluation throughput of tesenv.Spline and SciPy on every day,
    for each configured curve type.  Returns a JSON-ready dict."""
    from tesenv import Spline

    grid = make_grid(options.grid)
    points = len(curves) * len(grid) * 2      # level and slope
    try:
        import scipy
        scipy_version = scipy.__version__
    except ImportError:
        scipy_version = None

    # SciPy fits curves sharing x together: group the days by which
    # maturities they have.
    finite = np.isfinite(curves.yields)
    masks, group_of = np.unique(finite, axis=0, return_inverse=True)
    groups = [(mask, np.flatnonzero(group_of.ravel() == g))
              for g, mask in enumerate(masks)]

    out = {"days": len(curves), "grid_points": len(grid),
           "points_per_pass": points, "scipy": scipy_version, "kinds": {}}
    kinds = list(dict.fromkeys([options.curve_type, options.change_to]))
    for step, kind in enumerate(kinds):
        progress_bar.update(f"spline kernel ({kind})", step / len(kinds))
        extra = {"bc": (0.0, 0.0)} if kind == "clamped" else {}
        spline = Spline(curves.maturities, curves.yields.T, kind,
                        missing="drop", **extra)

        def ours():
            spline(grid)
            spline(grid, nu=1)

        fit_s = _best_seconds(
            lambda: Spline(curves.maturities, curves.yields.T, kind,
                           missing="drop", **extra), options.kernel_seconds)
        eval_s = _best_seconds(ours, options.kernel_seconds)
        figures = {"tesenv_fit_curves_per_s": len(curves) / fit_s,
                   "tesenv_points_per_s": points / eval_s,
                   "scipy_fit_curves_per_s": None, "scipy_points_per_s": None,
                   "ratio": None, "max_abs_diff": None}
        fitter = _scipy_fitter(kind) if scipy_version else None
        if fitter is not None:
            def fit_all():
                return [fitter(curves.maturities[mask],
                               curves.yields[np.ix_(days, mask)].T)
                        for mask, days in groups]

            fitted = fit_all()

            def theirs():
                for f in fitted:
                    f(grid)
                    f(grid, 1)

            scipy_fit_s = _best_seconds(fit_all, options.kernel_seconds)
            scipy_eval_s = _best_seconds(theirs, options.kernel_seconds)
            level = np.empty((len(grid), len(curves)))
            for f, (_, days) in zip(fitted, groups):
                level[:, days] = f(grid)
            figures.update(
                scipy_fit_curves_per_s=len(curves) / scipy_fit_s,
                scipy_points_per_s=points / scipy_eval_s,
                ratio=scipy_eval_s / eval_s,
                max_abs_diff=float(np.abs(level - spline(grid)).max()))
        out["kinds"][kind] = figures
    return out


# ---------------------------------------------------------------------------
# The machine, the report, the table, the plot.

def machine_info():
    """Platform, CPU model, cores and library versions, as a dict."""
    import tesenv

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    try:
        import scipy
        scipy_version = scipy.__version__
    except ImportError:
        scipy_version = None
    return {"platform": platform.platform(), "cpu": cpu,
            "cores": os.cpu_count(), "usable_cores": usable,
            "python": platform.python_version(), "numpy": np.__version__,
            "scipy": scipy_version, "tesenv": tesenv.__version__}


def _ms(value):
    return "-" if value is None else f"{value:,.1f}" if value < 100 \
        else f"{value:,.0f}"


def _count(value):
    return "-" if value is None else f"{value:,.0f}"


DEFINITIONS = """\
  spawn: Process.start() to the start of the worker's first job (imports included).
  read: one configuration read in the worker, tight loop; in loop: the same read
    inside the job loop (median, one clock read included).
  change: from just before the parent publishes a new configuration to the end of
    the first config read in that worker returning it; every change, every worker.
  stale: jobs that ran with version u although they started after version u+1 was
    acknowledged; version v is acknowledged at the earliest end of any worker's
    config read that returned v or newer (all clocks are CLOCK_MONOTONIC).
  lagging: jobs that ran with version u although they started after the parent's
    publish of u+1 had returned.
  wrong: jobs whose checksum differs from the parent's own computation."""


def format_report(report):
    """The terminal table for a report from run(), as one string."""
    options = report["options"]
    machine = report["machine"]
    lines = [
        f"tesenv bench: {options['workers']} workers ({options['start_method']}),"
        f" {options['jobs']:,} jobs of {options['block']} days per method, grid "
        f"{options['grid']['label']}",
        f"curves: {report['curves']['description']}",
        f"machine: {machine['cpu']}, {machine['usable_cores']} cores, "
        f"{machine['platform']}, Python {machine['python']}, numpy "
        f"{machine['numpy']}",
        f"config: curveType {options['curve_type']} -> {options['change_to']}"
        f" and back, {options['changes']} changes (at every "
        f"1/{options['changes'] + 1} of the jobs; the first halfway when 1)",
        "",
        f"{'method':<9}{'spawn':>8}{'read':>9}{'in loop':>9}"
        f"{'change reaches worker':>26}{'jobs/s':>9}{'stale':>7}"
        f"{'lagging':>9}{'wrong':>7}",
        f"{'':<9}{'ms':>8}{'ns':>9}{'ns':>9}"
        f"{'median ms':>15}{'p99 ms':>11}{'':>9}{'':>7}{'':>9}{'':>7}",
    ]
    for name, m in report["methods"].items():
        prop = m["propagation_ms"]
        if m["live_updates"]:
            median, p99 = _ms(prop["median"]), _ms(prop["p99"])
        else:
            median, p99 = f"restart {_ms(prop['median'])}", _ms(prop["p99"])
        lines.append(
            f"{name:<9}{_ms(m['spawn_to_first_job_ms']['median']):>8}"
            f"{_count(m['read_ns']):>9}"
            f"{_count(m['read_in_loop_ns']['median']):>9}"
            f"{median:>15}{p99:>11}{_count(m['jobs_per_s']):>9}"
            f"{m['stale_jobs']:>7}{m['lagging_jobs']:>9}"
            f"{m['wrong_results']:>7}")
    notes = []
    if "env" in report["methods"]:
        env = report["methods"]["env"]
        notes.append(
            f"env: a running worker never sees a change. Each change stopped "
            f"every worker after its job and spawned new ones ({env['restarts']}"
            f" restarts, median {_ms(env['restart_ms']['median'])} ms from stop "
            f"to all started); its jobs/s includes them.")
    for name, m in report["methods"].items():
        if m.get("note"):
            notes.append(f"{name}: {m['note']}.")
        for way, ns in m["read_alternatives_ns"].items():
            notes.append(f"{name}: a read through {way} costs {_count(ns)} ns.")
    if "manager" in report["methods"]:
        notes.append(f"manager: its server process took "
                     f"{_ms(report['methods']['manager']['setup_ms'])} ms to "
                     f"start, not counted in spawn.")
    lines += [textwrap.fill(note, 88, initial_indent="  ",
                            subsequent_indent="    ") for note in notes]
    lines += [DEFINITIONS, ""]

    kernel = report.get("kernel")
    if kernel:
        lines.append(
            f"spline kernel: {kernel['days']:,} curves x {kernel['grid_points']}"
            f" grid points, level and slope, best of repeated runs "
            f"(SciPy {kernel['scipy'] or 'not installed: column skipped'})")
        lines.append(f"{'kind':<12}{'tesenv fit':>12}{'tesenv eval':>13}"
                     f"{'scipy fit':>12}{'scipy eval':>13}{'eval ratio':>12}"
                     f"{'max |diff|':>12}")
        lines.append(f"{'':<12}{'curves/s':>12}{'Mpoints/s':>13}"
                     f"{'curves/s':>12}{'Mpoints/s':>13}{'':>12}"
                     f"{'% points':>12}")
        for kind, k in kernel["kinds"].items():
            scipy_eval = "-" if k["scipy_points_per_s"] is None \
                else f"{k['scipy_points_per_s'] / 1e6:,.1f}"
            ratio = "-" if k["ratio"] is None else f"{k['ratio']:.1f}x"
            diff = "-" if k["max_abs_diff"] is None \
                else f"{k['max_abs_diff']:.1e}"
            lines.append(
                f"{kind:<12}{_count(k['tesenv_fit_curves_per_s']):>12}"
                f"{k['tesenv_points_per_s'] / 1e6:>13,.1f}"
                f"{_count(k['scipy_fit_curves_per_s']):>12}{scipy_eval:>13}"
                f"{ratio:>12}{diff:>12}")
        lines.append("")
    lines.append(f"wall time {report['wall_s']:.1f} s")
    return "\n".join(lines)


def _require_matplotlib():
    """Imports matplotlib with a non-interactive backend, or raises
    BenchError saying how to install it."""
    try:
        import matplotlib
    except ImportError:
        raise BenchError("--plot needs matplotlib: pip install "
                         "'tesenv[plot]' (or pip install matplotlib)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def write_plot(report, path):
    """Draws the comparison into an image file at path."""
    plt = _require_matplotlib()
    methods = list(report["methods"])
    m = report["methods"]
    panels = [
        ("spawn to first job (ms)",
         [m[k]["spawn_to_first_job_ms"]["median"] for k in methods], False),
        ("config read (ns, log)", [m[k]["read_ns"] for k in methods], True),
        ("change reaches worker, median (ms, log)",
         [m[k]["propagation_ms"]["median"] or 0 for k in methods], True),
        ("change reaches worker, p99 (ms, log)",
         [m[k]["propagation_ms"]["p99"] or 0 for k in methods], True),
        ("jobs per second", [m[k]["jobs_per_s"] for k in methods], False),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(14, 7.5))
    colors = ["#8c8c8c", "#d9a33b", "#c25b56", "#3b7dd8"][-len(methods):]
    for ax, (title, values, log_scale) in zip(axes.flat, panels):
        ax.bar(methods, values, color=colors)
        ax.set_title(title, fontsize=10)
        if log_scale:
            ax.set_yscale("log")
        for x, value in enumerate(values):
            ax.annotate(f"{value:,.3g}", (x, value), ha="center",
                        va="bottom", fontsize=8)
    ax = axes.flat[5]
    kernel = report.get("kernel")
    if kernel:
        kinds = list(kernel["kinds"])
        xs = np.arange(len(kinds))
        ours = [kernel["kinds"][k]["tesenv_points_per_s"] / 1e6 for k in kinds]
        theirs = [(kernel["kinds"][k]["scipy_points_per_s"] or 0) / 1e6
                  for k in kinds]
        ax.bar(xs - 0.2, ours, 0.4, label="tesenv", color="#3b7dd8")
        ax.bar(xs + 0.2, theirs, 0.4, label="scipy", color="#8c8c8c")
        ax.set_xticks(xs, kinds)
        ax.set_title("spline evaluation (Mpoints/s)", fontsize=10)
        ax.legend(fontsize=8)
    else:
        ax.axis("off")
    machine = report["machine"]
    fig.suptitle(f"tesenv bench: {report['options']['workers']} workers, "
                 f"{machine['cpu']}, {machine['usable_cores']} cores, "
                 f"Python {machine['python']}", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------
# Command line.

def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} is not a positive integer")
    return value


def _methods(text):
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METHODS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"methods are a comma-separated subset of {','.join(METHODS)}")
    return names


def _default_workers():
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


def parse_args(argv=None):
    """Parsed options for argv (default sys.argv[1:]); exits on bad ones."""
    parser = argparse.ArgumentParser(
        prog="tesenv bench",
        description="Worker processes fit and evaluate daily yield curves "
                    "while the parent changes their configuration; compares "
                    "environment variables, messages, a Manager dict and the "
                    "tesenv store on the same workload, and the spline kernel "
                    "against SciPy.")
    parser.add_argument("--curves", metavar="FILE",
                        help="Treasury par yield curve CSV (archive or official "
                             "layout); default: generated curves")
    parser.add_argument("--days", type=_positive,
                        help="use the first N days of the file (generated: N "
                             "days, default 8000)")
    parser.add_argument("--workers", type=_positive, default=_default_workers(),
                        help="worker processes (default: usable cores, here "
                             "%(default)s)")
    parser.add_argument("--jobs", type=_positive, default=20000,
                        help="jobs per method (default %(default)s)")
    parser.add_argument("--block", type=_positive, default=32,
                        help="days per job (default %(default)s)")
    parser.add_argument("--grid", type=parse_grid, default=parse_grid("1"),
                        help="evaluation grid: a step in months ('1', '3m') or "
                             "a number of points ('500p'); default every month "
                             "from 1 month to 30 years")
    parser.add_argument("--curve-type", default="pchip", choices=CURVE_KINDS,
                        help="curve type at the start (default %(default)s)")
    parser.add_argument("--change-to", default="not-a-knot",
                        choices=CURVE_KINDS,
                        help="curve type the parent switches to (default "
                             "%(default)s)")
    parser.add_argument("--changes", type=int, default=9,
                        help="configuration changes per method, evenly spread, "
                             "alternating the two curve types; 1 is a single "
                             "change halfway (default %(default)s)")
    parser.add_argument("--methods", type=_methods, default=list(METHODS),
                        help="comma-separated subset of "
                             f"{','.join(METHODS)} (default all)")
    parser.add_argument("--start-method", default="spawn",
                        choices=("spawn", "forkserver", "fork"),
                        help="how workers are started (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the generated curves")
    parser.add_argument("--no-kernel", dest="kernel", action="store_false",
                        help="skip the spline kernel comparison")
    parser.add_argument("--kernel-seconds", type=float, default=1.0,
                        help="time budget per kernel measurement")
    parser.add_argument("--timeout", type=float, default=90.0,
                        help="seconds one method may take (default "
                             "%(default)s)")
    parser.add_argument("--json", metavar="FILE",
                        help="write every figure and the machine to FILE")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="draw the comparison (needs matplotlib)")
    progress = parser.add_mutually_exclusive_group()
    progress.add_argument("--progress", action="store_true", default=None,
                          help="progress bar on stderr even when not a TTY")
    progress.add_argument("--no-progress", dest="progress",
                          action="store_false")
    options = parser.parse_args(argv)
    if options.changes < 0:
        parser.error("--changes must be 0 or more")
    if options.jobs < options.workers:
        parser.error("--jobs must be at least --workers")
    if options.progress is None:
        options.progress = sys.stderr.isatty()
    return options


def _load(options):
    """The curves to scan, with days too sparse to fit left out."""
    if options.curves:
        curves = load_curves(options.curves)
        if options.days:
            curves = curves[:options.days]
    else:
        curves = synthetic_curves(options.days or 8000, seed=options.seed)
    sparse = curves.available() < MIN_POINTS_PER_DAY
    if sparse.any():
        log.warning("%d days with fewer than %d maturities left out",
                    int(sparse.sum()), MIN_POINTS_PER_DAY)
        curves = curves[np.flatnonzero(~sparse)]
    if not len(curves):
        raise BenchError("no day has enough maturities to fit a curve")
    return curves, int(sparse.sum())


def run(options):
    """Runs the benchmark described by options (from parse_args).

    Returns the report: a JSON-ready dict, except that each method's entry
    also holds '_summaries', per curve type a (days, 4) array of the per-day
    figures its workers computed (NaN for days no job covered).  Raises
    BenchError, CurveFileError or OSError.  Leaves no process or shared
    memory behind, also when interrupted.
    """
    import multiprocessing

    began = time.perf_counter()
    if options.plot:
        _require_matplotlib()
    curves, sparse = _load(options)
    ctx = multiprocessing.get_context(options.start_method)
    progress_bar = _Progress(options.progress)
    reference = _reference(curves, options)
    grid = dict(options.grid)
    report = {
        "machine": machine_info(),
        "options": {"workers": options.workers, "jobs": options.jobs,
                    "block": options.block, "grid": grid,
                    "curve_type": options.curve_type,
                    "change_to": options.change_to,
                    "changes": options.changes,
                    "start_method": options.start_method,
                    "methods": options.methods},
        "curves": {"source": curves.source, "generated": not options.curves,
                   "days": len(curves), "sparse_days_left_out": sparse,
                   "maturities": curves.maturities.tolist(),
                   "first": str(curves.dates[0]), "last": str(curves.dates[-1]),
                   "description": curves.describe()},
        "methods": {},
    }
    if not options.curves:
        report["curves"]["description"] += " (no --curves given)"
    try:
        for method in options.methods:
            method_ctx, note = ctx, None
            if method == "env" and options.start_method == "forkserver":
                # Forkserver children inherit the server's environment, not
                # the one set for each worker.
                method_ctx = multiprocessing.get_context("spawn")
                note = "started with spawn: forkserver children inherit " \
                       "the server's environment"
            method_run = _run_method(method, method_ctx, options, curves,
                                     progress_bar)
            figures = _analyse(method_run, curves, options, reference)
            figures["start_method"] = method_ctx.get_start_method()
            if note:
                figures["note"] = note
            report["methods"][method] = figures
        if options.kernel:
            report["kernel"] = _kernel_comparison(curves, options,
                                                  progress_bar)
    finally:
        progress_bar.close()
    report["wall_s"] = time.perf_counter() - began
    return report


def _json_ready(report):
    """The report without the per-day arrays."""
    out = dict(report)
    out["methods"] = {name: {k: v for k, v in m.items() if not k.startswith("_")}
                      for name, m in report["methods"].items()}
    return out


def main(argv=None):
    """Runs the benchmark from the command line; returns the exit code."""
    options = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="tesenv bench: %(message)s")
    try:
        report = run(options)
        print(format_report(report), flush=True)
        if options.json:
            with open(options.json, "w") as f:
                json.dump(_json_ready(report), f, indent=2)
                f.write("\n")
        if options.plot:
            write_plot(report, options.plot)
    except (CurveFileError, BenchError, OSError) as exc:
        print(f"tesenv bench: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, CurveFileError) else 1
    except KeyboardInterrupt:
        print("tesenv bench: interrupted; workers stopped", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
