"""Fixtures shared by every test file.

``store``: a fresh Store with a unique name, closed and unlinked after the
test even if it fails.  ``store_name``: a fresh unique name, for stores a
test makes itself (its segment is checked and removed the same way).

``_leak_guard`` runs once around the whole session.  At the end it kills
any process this session started that still runs (multiprocessing's own
resource tracker and forkserver excepted) and removes any tesenv segment the
session left in /dev/shm, then fails loudly naming them.  A segment is the
session's if this process or a live descendant made it, or its name carries
the session's prefix; segments of other test runs on the machine are left
alone.
"""

import itertools
import os
import signal
import time

import pytest

import tesenv

PREFIX = f"tesenv-t{os.getpid()}-"
_names = itertools.count()
# Long-lived service processes that multiprocessing starts once per process
# and ends at exit by itself.
_SERVICES = (b"multiprocessing.resource_tracker", b"multiprocessing.forkserver")


def new_store_name():
    """A store name no other test or test run uses."""
    return f"{PREFIX}{next(_names)}"


def _descendants():
    """pid -> cmdline of every live descendant of this process."""
    parents, cmdlines = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                cmdlines[int(entry)] = f.read().replace(b"\0", b" ")
            parents[int(entry)] = int(stat[stat.rindex(b")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
    found, frontier = {}, {os.getpid()}
    while frontier:
        frontier = {pid for pid, ppid in parents.items()
                    if ppid in frontier and pid not in found}
        found.update((pid, cmdlines.get(pid, b"")) for pid in frontier)
    return found


def _kill_leftovers():
    """Kills descendants other than multiprocessing's service processes; returns
    "pid (cmdline)" for each."""
    killed = []
    for pid, cmdline in _descendants().items():
        if any(service in cmdline for service in _SERVICES):
            continue
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            continue
        killed.append(f"{pid} ({cmdline[:80].decode(errors='replace')})")
    deadline = time.monotonic() + 5.0
    while killed and time.monotonic() < deadline:
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                time.sleep(0.01)
        except ChildProcessError:
            break
    return killed


def _ours(entry, baseline, live_pids):
    if entry["name"] in baseline:
        return False
    if entry["name"].startswith(PREFIX):
        return True
    return entry["creator_pid"] == os.getpid() or \
        entry["creator_pid"] in live_pids


@pytest.fixture(scope="session", autouse=True)
def _children_import_this_tesenv(tmp_path_factory):
    """Makes child interpreters import the tesenv these tests import.

    ``python -c`` and ``python -m`` put the working directory first on
    sys.path; run from a checkout they would find the source tree, which has
    no compiled modules, instead of the installed package.  So the session
    runs in an empty directory, with PYTHONPATH naming the package's home.
    """
    home = os.path.dirname(os.path.dirname(tesenv.__file__))
    old_cwd, old_path = os.getcwd(), os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [home, old_path]))
    os.chdir(tmp_path_factory.mktemp("cwd"))
    yield
    os.chdir(old_cwd)
    if old_path is None:
        del os.environ["PYTHONPATH"]
    else:
        os.environ["PYTHONPATH"] = old_path


@pytest.fixture(scope="session", autouse=True)
def _leak_guard():
    baseline = {s["name"] for s in tesenv.list_stores()}
    yield
    live_pids = set(_descendants())
    killed = _kill_leftovers()
    default = tesenv.default_store()
    keep = set() if default is None else {default.name}
    leaked = [s["name"] for s in tesenv.list_stores()
              if _ours(s, baseline, live_pids) and s["name"] not in keep]
    for name in leaked:
        try:
            os.unlink(os.path.join("/dev/shm", name))
        except FileNotFoundError:
            pass
    problems = []
    if killed:
        problems.append(f"processes still running (killed): {killed}")
    if leaked:
        problems.append(f"tesenv segments left in /dev/shm (removed): "
                        f"{leaked}")
    if problems:
        pytest.fail("the test session leaked " + "; ".join(problems),
                    pytrace=False)


@pytest.fixture
def store_name():
    """A unique store name; whatever segment has it is removed after."""
    name = new_store_name()
    yield name
    try:
        os.unlink(os.path.join("/dev/shm", name))
    except FileNotFoundError:
        pass


@pytest.fixture
def store(store_name):
    """A fresh Store, closed (and so unlinked) after the test."""
    s = tesenv.Store.create(store_name)
    try:
        yield s
    finally:
        s.close()
