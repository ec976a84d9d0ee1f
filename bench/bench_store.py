"""What reading configuration costs: the store against the usual ways.

Every figure is a median over repeats, and every comparison is a ratio to a
baseline measured in the same run, because this machine is shared and noisy.

    python bench/bench_store.py [--quick] [--json FILE]
"""

import argparse
import json
import multiprocessing as mp
import os
import statistics
import sys
import time
import timeit

import numpy as np

import tesenv
from tesenv import Store
from tesenv.bench import machine_info

REPEATS = 7


def per_call_ns(stmt, namespace, number):
    """Median over REPEATS of the cost of one execution of stmt, in ns."""
    runs = timeit.repeat(stmt, globals=namespace, number=number,
                         repeat=REPEATS)
    return statistics.median(runs) / number * 1e9


# ---------------------------------------------------------------- read cost

def read_costs(store, number):
    d = {"cfg": 1}

    def f(k):
        return d[k]

    store.set("cfg", {"jobs": 8, "curveType": "pchip"})
    os.environ["TESENV_BENCH_CFG"] = "pchip"
    ns = {"f": f, "get": tesenv.get_environment_data,
          "h": store.handle("cfg"), "env": os.environ}
    out = {
        "dict_function_ns": per_call_ns("f('cfg')", ns, number),
        "get_environment_data_ns": per_call_ns("get('cfg')", ns, number),
        "handle_value_ns": per_call_ns("h.value", ns, number),
        "os_environ_ns": per_call_ns("env['TESENV_BENCH_CFG']", ns,
                                     number // 10),
    }
    with mp.get_context("spawn").Manager() as manager:
        md = manager.dict(cfg={"jobs": 8, "curveType": "pchip"})
        ns["md"] = md
        out["manager_dict_ns"] = per_call_ns("md['cfg']", ns, 2000)
    return out


def flatness(number):
    """Read cost of one key as the store holds more keys and larger
    values."""
    out = {}
    for keys in (10, 10_000):
        with Store.create(size=256 << 20, max_keys=16384) as s:
            for i in range(keys):
                s.set(f"key{i}", i)
            k = f"key{keys // 2}"
            s.get(k)
            out[f"keys_{keys}_ns"] = per_call_ns("g(k)", {"g": s.get, "k": k},
                                                 number)
    for size in (100, 1 << 20):
        with Store.create(size=64 << 20) as s:
            s.set("v", bytes(size))
            s.get("v")
            out[f"value_{size}_bytes_ns"] = per_call_ns(
                "g('v')", {"g": s.get}, number)
    return out


def array_read(store, number):
    arr = np.arange(100_000, dtype=np.float64)
    store.set("curve", arr)
    got = tesenv.get_environment_data("curve")
    shares = bool(np.shares_memory(got, store._segment_array()))
    return {
        "array_100k_read_ns": per_call_ns(
            "get('curve')", {"get": tesenv.get_environment_data}, number),
        "array_100k_zero_copy": shares and not got.flags.writeable,
    }


# ---------------------------------------------------------------- propagation

# Each reader reports the version it saw through `acked`, and the publisher
# waits for that before the next round, so no two publishes ever merge.

def _reader(name, ready, acked, out, rounds, blocking):
    """Sees each publish of "t" by spinning on version() or by wait()."""
    s = Store.attach(name)
    last = s.version("t")
    ready.set()
    lags = []
    for _ in range(rounds):
        if blocking:
            last = s.wait("t", last, timeout=10)
        else:
            while s.version("t") == last:
                pass
            last = s.version("t")
        seen = time.perf_counter_ns()
        lags.append(seen - s["t"])
        acked.value = last
    out.put(lags)


def _await_ack(acked, version, timeout=10.0):
    # Spins, like the reader: a publisher that slept would wake cold.
    deadline = time.monotonic() + timeout
    while acked.value < version:
        if time.monotonic() > deadline:
            raise RuntimeError("the reader stopped acknowledging publishes")


def _pipe_reader(conn, ready, out, rounds):
    ready.set()
    lags = []
    for _ in range(rounds):
        sent = conn.recv()
        lags.append(time.perf_counter_ns() - sent)
    out.put(lags)


def _pause(seconds):
    """Waits without sleeping.  A publisher that slept wakes on a cold CPU
    and spends several microseconds getting going (seen on this VM), which
    would be measured as propagation."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def propagation(rounds):
    """Median time from the start of a publish to a reader in another
    process seeing it, the publish itself included.

    perf_counter_ns reads CLOCK_MONOTONIC, one clock for every process.
    """
    ctx = mp.get_context("fork")
    out = {}
    with Store.create(size=8 << 20, max_keys=64) as s:
        for label, blocking in (("spin_version", False), ("wait", True)):
            s.set("t", time.perf_counter_ns())
            ready, q = ctx.Event(), ctx.Queue()
            acked = ctx.Value("Q", 0, lock=False)
            p = ctx.Process(target=_reader,
                            args=(s.name, ready, acked, q, rounds, blocking))
            p.start()
            try:
                ready.wait(30)
                for _ in range(rounds):
                    _pause(0.0005)
                    _await_ack(acked, s.set("t", time.perf_counter_ns()))
                lags = q.get(timeout=60)
            finally:
                p.join(30)
                if p.is_alive():
                    p.kill()
            out[f"{label}_median_ns"] = statistics.median(lags)
            out[f"{label}_p99_ns"] = float(np.percentile(lags, 99))

    parent, child = ctx.Pipe()
    ready, q = ctx.Event(), ctx.Queue()
    p = ctx.Process(target=_pipe_reader, args=(child, ready, q, rounds))
    p.start()
    try:
        ready.wait(30)
        for _ in range(rounds):
            _pause(0.0005)
            parent.send(time.perf_counter_ns())
        lags = q.get(timeout=60)
    finally:
        p.join(30)
        if p.is_alive():
            p.kill()
    out["pipe_median_ns"] = statistics.median(lags)
    out["pipe_p99_ns"] = float(np.percentile(lags, 99))
    return out


# ---------------------------------------------------------------- report

def report(r):
    b = r["dict_function_ns"]
    rows = [
        ("def f(k): return d[k]", b, 1.0, "baseline"),
        ("get_environment_data(k)", r["get_environment_data_ns"],
         r["get_environment_data_ns"] / b, "<= 1.5x baseline"),
        ("handle.value", r["handle_value_ns"], r["handle_value_ns"] / b,
         "<= 1.2x baseline"),
        ("os.environ[k]", r["os_environ_ns"], r["os_environ_ns"] / b,
         f"get is {r['os_environ_ns'] / r['get_environment_data_ns']:.1f}x "
         f"faster (>= 5x)"),
        ("Manager().dict()[k]", r["manager_dict_ns"], r["manager_dict_ns"] / b,
         f"get is {r['manager_dict_ns'] / r['get_environment_data_ns']:.0f}x "
         f"faster (>= 200x)"),
        ("get, 10 keys in store", r["keys_10_ns"], r["keys_10_ns"] / b, ""),
        ("get, 10,000 keys in store", r["keys_10000_ns"],
         r["keys_10000_ns"] / b, ""),
        ("get, 100-byte value", r["value_100_bytes_ns"],
         r["value_100_bytes_ns"] / b, ""),
        ("get, 1 MB value", r["value_1048576_bytes_ns"],
         r["value_1048576_bytes_ns"] / b, ""),
        ("get, 100,000 float64 array", r["array_100k_read_ns"],
         r["array_100k_read_ns"] / b,
         "zero-copy" if r["array_100k_zero_copy"] else "COPIED"),
    ]
    m = r["machine"]
    print(f"machine: {m['cpu']}, {m['cores']} cores, {m['platform']}, "
          f"Python {m['python']}")
    print(f"{'read':34} {'median ns':>10} {'x base':>8}  note")
    for name, ns, ratio, note in rows:
        print(f"{name:34} {ns:10.1f} {ratio:8.2f}  {note}")
    print()
    print(f"{'publish -> other process sees it':34} {'median us':>10} "
          f"{'p99 us':>8}")
    for label, key in (("spinning on version(k)", "spin_version"),
                       ("blocked in wait()", "wait"),
                       ("multiprocessing Pipe message", "pipe")):
        print(f"{label:34} {r[key + '_median_ns'] / 1e3:10.2f} "
              f"{r[key + '_p99_ns'] / 1e3:8.2f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="fewer iterations, for a smoke run")
    parser.add_argument("--json", metavar="FILE", help="write figures here")
    args = parser.parse_args(argv)
    number = 20_000 if args.quick else 500_000
    rounds = 50 if args.quick else 1000

    results = {"machine": machine_info()}
    store = Store.create(size=64 << 20)
    try:
        tesenv.use_store(store)
        results.update(read_costs(store, number))
        results.update(array_read(store, number))
    finally:
        tesenv.use_store(None)
        store.close()
    results.update(flatness(number))
    results.update(propagation(rounds))
    report(results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
