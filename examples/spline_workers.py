"""Workers that price against a shared yield curve, configured through tesenv.

The manager publishes, in one shared-memory store:

* ``tes-worker-config/<workerId>`` for each worker (workerId, registry,
  port), published by WorkerManager before the worker starts;
* ``tes-spline-config`` for all of them: ``{'jobs': 8, 'curveType':
  'pchip', ...}``;
* ``tes-curve``: a fitted ``tesenv.Spline``, which every worker gets back
  as a ready evaluator over the same shared memory, with no copy.

Workers read those, take batches of maturities from a queue, evaluate the
curve, count each job in the registry, and send results back on a queue.
Halfway through, the manager publishes a steeper curve; the workers pick it
up on their next job without any message.  An HTTP view of the store shows
it all (``tesenv --store NAME serve`` gives the same from a shell).

    python examples/spline_workers.py [--workers 4] [--hold SECONDS]
"""

import argparse
import json
import multiprocessing
import time
import urllib.request

import numpy as np

import tesenv
from tesenv.server import serve
from tesenv.workers import WorkerManager

TENORS_YEARS = np.array([0.25, 0.5, 1, 2, 3, 5, 7, 10, 20, 30])
# Par yields in percent; a NaN is a quote missing today.
YIELDS_PCT = np.array([5.2, 5.1, 4.9, 4.6, np.nan, 4.3, 4.3, 4.4, 4.7, 4.6])


def price(ctx, jobs, results):
    """A worker: evaluates the shared curve on each batch it is given."""
    own = ctx.config                          # its tes-worker-config
    spline_config = ctx.get("tes-spline-config")
    evaluate = ctx.job_type(spline_config["curveType"])
    while not ctx.should_stop():
        try:
            batch_id, maturities = jobs.get(timeout=0.1)
        except Exception:                     # queue.Empty
            continue
        start = time.perf_counter_ns()
        curve = ctx.get("tes-curve")          # the newest curve, no copy
        yields = curve(maturities)
        evaluate.done_since(start)
        results.put((batch_id, own["workerId"],
                     ctx.store.version("tes-curve"), float(yields.mean())))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--batches", type=int, default=200)
    p.add_argument("--hold", type=float, default=0.0,
                   help="keep serving this many seconds at the end")
    args = p.parse_args(argv)

    context = multiprocessing.get_context("spawn")
    jobs, results = context.Queue(), context.Queue()
    manager = WorkerManager(price, args.workers, args=(jobs, results),
                            mode="spawn", base_port=9300)
    store = manager.store
    store["tes-spline-config"] = {"jobs": 8, "curveType": "pchip",
                                  "missing": "drop", "units": "percent"}
    store["tes-curve"] = tesenv.Spline(TENORS_YEARS, YIELDS_PCT,
                                       kind="pchip", missing="drop")

    with manager, serve(store) as server:
        print(f"store {store.name}; serving on {server.url}")
        rng = np.random.default_rng(7)
        seen_versions = set()
        for batch_id in range(args.batches):
            if batch_id == args.batches // 2:
                # A new curve for everyone, mid-run: one publish.
                store["tes-curve"] = tesenv.Spline(
                    TENORS_YEARS, YIELDS_PCT + TENORS_YEARS / 30,
                    kind="pchip", missing="drop")
            jobs.put((batch_id, rng.uniform(0.25, 30, 1000)))
            _, worker_id, version, mean = results.get(timeout=30)
            seen_versions.add(version)
        print(f"{args.batches} batches; curve versions used: "
              f"{sorted(seen_versions)}")

        with urllib.request.urlopen(server.url + "/workers") as r:
            for w in json.loads(r.read()):
                jt = next(iter(w["job_types"].values()), {"count": 0})
                print(f"  {w['id']}: pid {w['pid']} {w['state']}, "
                      f"{w['jobs']} jobs, {jt['count']} {jt.get('name', '')}")
        with urllib.request.urlopen(server.url + "/config") as r:
            for d in json.loads(r.read()):
                print(f"  {d['key']}: v{d['version']} {d['type']} "
                      f"{d['bytes']} bytes")
        if args.hold:
            print(f"try: curl {server.url}/metrics  (or tesenv --store "
                  f"{store.name} ls); holding {args.hold} s")
            time.sleep(args.hold)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
