"""The tesenv command, run as a separate process the way users run it."""

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest

from tesenv import cli

TIMEOUT_SECONDS = 30.0


def tesenv_cmd(*args, env=None, timeout=TIMEOUT_SECONDS):
    """Runs ``python -m tesenv args``; returns the CompletedProcess."""
    full_env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    full_env.pop("TESENV_STORE", None)
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "tesenv", *args],
                          capture_output=True, text=True, env=full_env,
                          timeout=timeout)


def assert_fails(result, *words):
    """A failure: non-zero status, no output, one line on stderr naming
    what was wrong, no traceback."""
    assert result.returncode != 0
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture
def filled(store):
    store["curve"] = {"kind": "pchip", "knots": (1, 2), "jobs": 8}
    store["grid"] = np.arange(4.0)
    store["raw"] = b"\x00\x01"
    store["bad-float"] = float("nan")
    return store


def test_ls_lists_keys_with_versions_types_and_sizes(filled):
    result = tesenv_cmd("--store", filled.name, "ls")
    assert result.returncode == 0
    rows = {line.split()[0]: line.split() for line in
            result.stdout.splitlines()[1:]}
    assert rows["curve"][1:] == [str(filled.version("curve")),
                                 str(filled.describe()[0]["bytes"]), "dict"]
    assert rows["grid"][3].startswith("ndarray[float64")

    listed = json.loads(tesenv_cmd("--store", filled.name, "ls",
                                   "--json").stdout)
    assert listed == filled.describe()


def test_get_prints_json(filled):
    result = tesenv_cmd("--store", filled.name, "get", "curve")
    assert result.returncode == 0
    assert json.loads(result.stdout) == {"kind": "pchip", "knots": [1, 2],
                                         "jobs": 8}
    result = tesenv_cmd("--store", filled.name, "get", "grid")
    assert json.loads(result.stdout) == [0.0, 1.0, 2.0, 3.0]


def test_get_errors(filled):
    assert_fails(tesenv_cmd("--store", filled.name, "get", "nope"),
                 "no key 'nope'")
    assert_fails(tesenv_cmd("--store", filled.name, "get", "raw"), "bytes")
    assert_fails(tesenv_cmd("--store", filled.name, "get", "bad-float"),
                 "nan")
    assert_fails(tesenv_cmd("--store", filled.name, "get", ""), "empty")
    assert_fails(tesenv_cmd("--store", "tesenv-no-such-store", "get", "x"),
                 "no store named")
    assert_fails(tesenv_cmd("--store", "not/a/name", "ls"), "cannot open")
    assert_fails(tesenv_cmd("ls"), "no store found")


def test_the_default_store_is_found_through_the_environment(filled):
    result = tesenv_cmd("get", "curve", env={"TESENV_STORE": filled.name})
    assert result.returncode == 0 and '"pchip"' in result.stdout


def test_set_publishes_json(store):
    result = tesenv_cmd("--store", store.name, "set", "cfg",
                        '{"jobs": 8, "curveType": "pchip"}')
    assert result.returncode == 0
    assert store["cfg"] == {"jobs": 8, "curveType": "pchip"}
    assert str(store.version("cfg")) in result.stdout

    assert_fails(tesenv_cmd("--store", store.name, "set", "cfg", "{jobs"),
                 "not JSON")
    assert store["cfg"] == {"jobs": 8, "curveType": "pchip"}
    assert_fails(tesenv_cmd("--store", store.name, "set", "cfg"), "error")


def test_watch_prints_each_new_version(store):
    store["rate"] = 0
    full_env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    watcher = subprocess.Popen(
        [sys.executable, "-m", "tesenv", "--store", store.name, "watch",
         "rate", "--count", "3", "--timeout", "20"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env=full_env)
    try:
        first = json.loads(watcher.stdout.readline())
        assert first == {"key": "rate", "version": store.version("rate"),
                         "value": 0}
        for value in (1, 2):
            store["rate"] = value
            line = json.loads(watcher.stdout.readline())
            assert line["value"] == value
            assert line["version"] == store.version("rate")
        assert watcher.wait(TIMEOUT_SECONDS) == 0
    finally:
        if watcher.poll() is None:
            watcher.kill()
        watcher.communicate(timeout=TIMEOUT_SECONDS)


def test_watch_times_out(store):
    store["rate"] = 0
    result = tesenv_cmd("--store", store.name, "watch", "rate", "--count",
                        "2", "--timeout", "0.3")
    assert result.returncode == 1 and len(result.stdout.splitlines()) == 1
    assert result.stderr.count("\n") == 1
    assert "timed out" in result.stderr and "1 of 2" in result.stderr
    result = tesenv_cmd("--store", store.name, "watch", "rate",
                        "--timeout", "0.2")
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 1
    assert_fails(tesenv_cmd("--store", store.name, "watch", "rate",
                            "--count", "0"), "--count")


def test_info_shows_size_use_and_readers(store):
    store["x"] = "y" * 1000
    result = tesenv_cmd("--store", store.name, "info")
    assert result.returncode == 0
    fields = {line.split()[0]: line for line in result.stdout.splitlines()}
    assert str(store.info()["size_bytes"]) in fields["size"]
    assert "readers" in fields and "attached" in fields["readers"]
    info = json.loads(tesenv_cmd("--store", store.name, "info",
                                 "--json").stdout)
    assert info["size_bytes"] == store.info()["size_bytes"]
    assert info["reader_count"] >= 2  # this process and the command


# The creator dies by SIGKILL, so nothing unlinks its segment.
ORPHAN_SCRIPT = ("import sys, os, tesenv\n"
                 "store = tesenv.Store.create(sys.argv[1])\n"
                 "os.kill(os.getpid(), 9)\n")


def test_gc_removes_segments_of_dead_creators(store_name):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    subprocess.run([sys.executable, "-c", ORPHAN_SCRIPT, store_name],
                   env=env, timeout=TIMEOUT_SECONDS, capture_output=True)
    assert os.path.exists(f"/dev/shm/{store_name}")

    # Scoped by prefix, so other runs' orphans on this machine are kept.
    result = tesenv_cmd("gc", "--prefix", store_name)
    assert result.returncode == 0
    assert f"removed {store_name}" in result.stdout
    assert not os.path.exists(f"/dev/shm/{store_name}")


def test_serve_answers_until_terminated(store):
    store["cfg"] = {"jobs": 8}
    full_env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    server = subprocess.Popen(
        [sys.executable, "-m", "tesenv", "--store", store.name, "serve",
         "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, env=full_env)
    try:
        url = server.stdout.readline().split()[-1]
        assert url.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(url + "/config/cfg",
                                    timeout=TIMEOUT_SECONDS) as response:
            assert json.loads(response.read())["value"] == {"jobs": 8}
        server.send_signal(signal.SIGTERM)
        assert server.wait(TIMEOUT_SECONDS) == 0
    finally:
        if server.poll() is None:
            server.kill()
        server.communicate(timeout=TIMEOUT_SECONDS)


def test_serve_reports_a_taken_port(store):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        assert_fails(tesenv_cmd("--store", store.name, "serve", "--port",
                                port), "cannot listen")


def test_workers_prints_the_registry(store):
    from tesenv.registry import Registry
    Registry(store).register("w-1", kind="thread").job_type("spline").done(5)
    result = tesenv_cmd("--store", store.name, "workers")
    (worker,) = json.loads(result.stdout)
    assert worker["id"] == "w-1" and worker["jobs"] == 1


def test_usage_errors_are_one_line():
    assert_fails(tesenv_cmd(), "required")
    assert_fails(tesenv_cmd("frobnicate"), "invalid choice")
    assert_fails(tesenv_cmd("--store"), "expected one argument")


def test_bench_passes_its_arguments_on(monkeypatch):
    import tesenv.bench
    seen = []
    monkeypatch.setattr(tesenv.bench, "main",
                        lambda argv: seen.append(argv) or 7)
    assert cli.main(["bench", "--workers", "2", "--jobs", "10"]) == 7
    assert seen == [["--workers", "2", "--jobs", "10"]]


def test_main_runs_in_process(store, capsys):
    # The same entry point the console script calls.
    store["k"] = [1, 2]
    assert cli.main(["--store", store.name, "get", "k"]) == 0
    assert json.loads(capsys.readouterr().out) == [1, 2]
    assert cli.main(["--store", store.name, "get", "missing"]) == 1
    assert "no key" in capsys.readouterr().err


def test_a_value_published_while_watching_from_a_thread(store):
    # watch from the in-process entry point, publisher on a thread.
    store["v"] = 0

    def publish():
        time.sleep(0.1)
        store["v"] = 1
    thread = threading.Thread(target=publish)
    thread.start()
    try:
        assert cli.main(["--store", store.name, "watch", "v", "--count", "2",
                         "--timeout", "10"]) == 0
    finally:
        thread.join(TIMEOUT_SECONDS)


def test_set_refuses_deep_nesting_in_one_line(store):
    deep = "[" * 5000 + "]" * 5000
    assert_fails(tesenv_cmd("--store", store.name, "set", "k", deep),
                 "nested too deeply")
    assert "k" not in store


@pytest.mark.parametrize("text", ["NaN", "Infinity", "[-Infinity]", "1e999",
                                  '{"a": [NaN]}'])
def test_set_refuses_non_standard_json(store, text):
    assert_fails(tesenv_cmd("--store", store.name, "set", "k", text),
                 "not JSON")
    assert "k" not in store


@pytest.mark.parametrize("args,words", [
    (("--timeout", "-1"), ("--timeout",)),
    (("--timeout", "nan"), ("--timeout",)),
    (("--count", "0"), ("--count",)),
])
def test_watch_arguments_are_checked_before_the_store(args, words):
    # No store is named or found: the usage error must come first.
    result = tesenv_cmd("watch", "k", *args)
    assert_fails(result, *words)
    assert result.returncode == 2


def test_bench_usage_errors_are_one_line():
    result = tesenv_cmd("bench", "--workers", "zero")
    assert_fails(result, "--workers")
    assert result.returncode == 2
