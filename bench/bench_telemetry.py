"""What worker telemetry and managed configuration cost.

1. A counter update from Python (``JobType.done``, ``Telemetry.job_done``,
   ``Telemetry.error``) against ``o.n += 1`` on a plain object, each timed
   in a loop with its objects in locals, as the median of repeats, all in
   one run.  Ratios are given both raw and with the empty loop's cost taken
   out of both sides.

2. How soon a change is seen: a plain process attached to the store and a
   worker started by WorkerManager each follow a configuration key while
   the parent publishes a new value carrying its publish time; each reports
   publish-to-seen latency.  Both poll the key's version (spin) and, in a
   second round, sleep in ``wait``.  The managed worker reads through
   ``ctx.config``, so any cost of the manager's bookkeeping would show.

    python bench/bench_telemetry.py [--rounds N] [--repeats N] [--json]
"""

import argparse
import json
import multiprocessing
import statistics
import sys
import time
import timeit

import tesenv
from tesenv.registry import Registry
from tesenv.workers import WorkerManager, config_key

LOOP = 1_000_000
SETTLE_SECONDS = 0.002


class Plain:
    def __init__(self):
        self.n = 0


def time_counters(repeats):
    """Median ns per operation of each counter update and the baseline."""
    store = tesenv.Store.create()
    try:
        telemetry = Registry(store).register("bench", kind="thread")
        jobs = telemetry.job_type("spline")
        names = {"_o": Plain(), "_t": telemetry, "_jt": jobs}
        setup = "o = _o; t = _t; jt = _jt"
        statements = {
            "empty loop": "pass",
            "o.n += 1": "o.n += 1",
            "jt.done(1500)": "jt.done(1500)",
            "t.job_done(0, 1500)": "t.job_done(0, 1500)",
            "t.error()": "t.error()",
        }
        samples = {k: [] for k in statements}
        # Interleave the statements so drift in the machine hits them all.
        for _ in range(repeats):
            for label, stmt in statements.items():
                timer = timeit.Timer(stmt, setup, globals=names)
                samples[label].append(timer.timeit(LOOP) / LOOP * 1e9)
        return {k: statistics.median(v) for k, v in samples.items()}
    finally:
        store.close()


def _follow_plain(name, key, rounds, wait, out):
    store = tesenv.Store.attach(name)
    handle = store.handle(key)
    out.put(_follow(lambda: handle.version, lambda: handle.value,
                    lambda v: handle.wait(v, 5.0), rounds, wait))
    store.close()


def _follow_managed(ctx, key, rounds, wait, out):
    out.put(_follow(lambda: ctx.config_version, lambda: ctx.config,
                    lambda v: ctx.wait_config(v, 5.0), rounds, wait))
    ctx.wait_stop(30)


def _follow(version_of, value_of, wait_for, rounds, wait):
    """Latencies in ns from each publish to the moment it was seen, up to
    the last round's.  A publish overtaken by the next one before the
    follower looked is not counted: the follower only sees the newest."""
    seen = version_of()
    latencies = []
    while True:
        if wait:
            wait_for(seen)
        version = version_of()
        if version == seen:
            continue
        value = value_of()
        latencies.append(time.perf_counter_ns() - value["t"])
        seen = version
        if value["step"] >= rounds - 1:
            return latencies


def _publish(set_value, rounds):
    # The same value shape on both sides, published the same way, so that
    # only the readers differ.
    for i in range(rounds):
        time.sleep(SETTLE_SECONDS)
        set_value({"workerId": "worker-0", "registry": "tes-registry",
                   "port": None, "step": i, "t": time.perf_counter_ns()})


def _plain_latencies(rounds, wait):
    context = multiprocessing.get_context("fork")
    store = tesenv.Store.create()
    try:
        store["cfg"] = {"step": -1, "t": 0}
        results = context.Queue()
        follower = context.Process(target=_follow_plain,
                                   args=(store.name, "cfg", rounds, wait,
                                         results))
        follower.start()
        time.sleep(0.2)
        _publish(lambda v: store.set("cfg", v), rounds)
        latencies = results.get(timeout=60)
        follower.join(10)
        return latencies
    finally:
        store.close()


def _managed_latencies(rounds, wait):
    results = multiprocessing.get_context("fork").Queue()
    manager = WorkerManager(_follow_managed, 1, mode="fork",
                            args=("cfg", rounds, wait, results),
                            config={"step": -1, "t": 0})
    with manager:
        time.sleep(0.2)
        key = config_key("worker-0")
        _publish(lambda v: manager.publish(key, v), rounds)
        return results.get(timeout=60)


def time_propagation(rounds, wait, blocks=4):
    """Median and 90th percentile publish-to-seen latency in µs, for a plain
    attached process and a managed worker.  The two alternate in blocks
    (ABBA order) so that load from elsewhere on the machine falls on both.
    """
    out = {"plain process": [], "managed worker": []}
    per_block = max(1, rounds // blocks)
    for block in range(blocks):
        order = [_plain_latencies, _managed_latencies]
        if block % 2:
            order.reverse()
        for measure in order:
            label = "plain process" if measure is _plain_latencies \
                else "managed worker"
            out[label].extend(measure(per_block, wait))
    return {k: {"median_us": statistics.median(v) / 1e3,
                "p90_us": statistics.quantiles(v, n=10)[-1] / 1e3}
            for k, v in out.items()}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=300,
                   help="publications per propagation test")
    p.add_argument("--repeats", type=int, default=7,
                   help="repeats of each counter timing")
    p.add_argument("--json", action="store_true", help="print JSON only")
    args = p.parse_args(argv)

    counters = time_counters(args.repeats)
    base, empty = counters["o.n += 1"], counters["empty loop"]
    ratios = {k: {"ns": v, "ratio": v / base,
                  "ratio_net": (v - empty) / (base - empty)}
              for k, v in counters.items() if k != "empty loop"}
    propagation = {"spin": time_propagation(args.rounds, wait=False),
                   "wait": time_propagation(args.rounds, wait=True)}
    report = {"python": sys.version.split()[0], "loop": LOOP,
              "repeats": args.repeats, "empty_loop_ns": empty,
              "counters": ratios, "propagation": propagation}
    if args.json:
        print(json.dumps(report, indent=2))
        return 0

    print(f"counter updates (median of {args.repeats} x {LOOP} calls; "
          f"empty loop {empty:.1f} ns)")
    for label, r in ratios.items():
        print(f"  {label:22s} {r['ns']:6.1f} ns  x{r['ratio']:.2f} of o.n += 1"
              f"  (x{r['ratio_net']:.2f} without the loop)")
    print(f"config change seen after (publish to read, {args.rounds} rounds)")
    for how, rows in propagation.items():
        for who, r in rows.items():
            print(f"  {how:5s} {who:15s} median {r['median_us']:7.1f} us  "
                  f"p90 {r['p90_us']:7.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())
