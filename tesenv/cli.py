"""The ``tesenv`` command: look into a store, change it, watch it, serve it.

A store is named with ``--store NAME``, or found the way worker processes
find the default store (the TESENV_STORE environment variable, then an
ancestor process's ``tesenv-<pid>`` store).  ``get`` and ``watch`` print
values as JSON: tuples and numpy arrays as lists; bytes, NaN, infinities
and other types JSON cannot show are an error.  Every error is one line on
stderr and a non-zero exit status.
"""

import argparse
import contextlib
import io
import json
import math
import signal
import sys
import time

__all__ = ["main"]

DEFAULT_PORT = 8790


class _Fail(Exception):
    """Ends the command with a one-line message and exit status 1."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # One line, not argparse's usage block: scripts read the last line.
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _parser():
    p = _Parser(prog="tesenv", description="Inspect and serve tesenv stores.")
    p.add_argument("--store", metavar="NAME",
                   help="the store's name (default: the store this process "
                        "would find as its default)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND",
                           parser_class=_Parser)

    ls = sub.add_parser("ls", help="list keys with versions, types and sizes")
    ls.add_argument("--json", action="store_true", help="print JSON")

    get = sub.add_parser("get", help="print a key's value as JSON")
    get.add_argument("key")

    set_ = sub.add_parser("set", help="publish a JSON value under a key")
    set_.add_argument("key")
    set_.add_argument("value", metavar="JSON")

    watch = sub.add_parser("watch", help="print each new version of a key")
    watch.add_argument("key")
    watch.add_argument("--count", type=int, metavar="N",
                       help="stop after printing N versions")
    watch.add_argument("--timeout", type=float, metavar="S",
                       help="stop after S seconds")

    info = sub.add_parser("info", help="segment size, space used, readers")
    info.add_argument("--json", action="store_true", help="print JSON")

    sub.add_parser("workers", help="print the worker registry as JSON")
    gc = sub.add_parser("gc", help="remove segments whose creator is dead")
    gc.add_argument("--prefix", default="",
                    help="only segments whose name starts with PREFIX")

    serve = sub.add_parser("serve", help="serve /workers, /config, /metrics "
                                         "and /healthz over HTTP")
    serve.add_argument("--host", default="127.0.0.1",
                       help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT,
                       help=f"port (default {DEFAULT_PORT}; 0 picks one)")

    sub.add_parser("bench", help="run the yield-curve worker benchmark "
                                 "(arguments are passed on)", add_help=False)
    return p


def _open_store(name):
    """The store named name, or the default one.  Raises _Fail."""
    import tesenv
    if name is not None:
        try:
            return tesenv.Store.attach(name)
        except tesenv.StoreNotFoundError:
            raise _Fail(f"no store named {name!r}") from None
        except (tesenv.StoreError, PermissionError, ValueError) as e:
            raise _Fail(f"cannot open store {name!r}: {e}") from None
    store = tesenv.default_store()
    if store is None:
        raise _Fail("no store found: pass --store NAME or set TESENV_STORE")
    return store


def _print_json(obj):
    print(json.dumps(obj, allow_nan=False, ensure_ascii=False))


def _show(key, value):
    from tesenv.server import NotJSONError, jsonable
    try:
        return jsonable(value, key)
    except NotJSONError as e:
        raise _Fail(str(e)) from None


def _cmd_ls(store, args):
    rows = store.describe()
    if args.json:
        _print_json(rows)
        return 0
    width = max([len(r["key"]) for r in rows] + [3])
    print(f"{'KEY':<{width}}  {'VERSION':>7}  {'BYTES':>10}  TYPE")
    for r in rows:
        print(f"{r['key']:<{width}}  {r['version']:>7}  {r['bytes']:>10}  "
              f"{r['type']}")
    return 0


def _cmd_get(store, args):
    try:
        value = store[args.key]
    except KeyError:
        raise _Fail(f"no key {args.key!r} in store {store.name!r}") from None
    _print_json(_show(args.key, value))
    return 0


def _refuse_constant(name):
    raise ValueError(f"{name} is not standard JSON")


def _finite_float(text):
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} does not fit a float")
    return value


def _parse_value(text):
    """The JSON value text holds, standard JSON only.  Raises _Fail."""
    try:
        return json.loads(text, parse_constant=_refuse_constant,
                          parse_float=_finite_float)
    except json.JSONDecodeError as e:
        raise _Fail(f"the value is not JSON: {e}") from None
    except ValueError as e:
        raise _Fail(f"the value is not JSON: {e}") from None
    except RecursionError:
        raise _Fail("the value is nested too deeply") from None


def _cmd_set(store, args):
    value = _parse_value(args.value)
    version = store.set(args.key, value)
    print(f"{args.key} = version {version}")
    return 0


def _check_watch(args):
    """A usage error message for watch's arguments, or None."""
    if args.count is not None and args.count < 1:
        return f"--count must be at least 1, got {args.count}"
    if args.timeout is not None and not args.timeout >= 0:
        return f"--timeout must be a number of seconds >= 0, got {args.timeout}"
    return None


def _bench(argv):
    """Runs the benchmark with argv.  Its own parser prints a usage block
    before an error; the arguments are checked first so that an error is
    the one line the other commands give."""
    from tesenv import bench
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured):
            bench.parse_args(argv)
    except SystemExit as e:
        if not e.code:
            return 0  # --help, already printed to stdout
        lines = captured.getvalue().strip().splitlines()
        print(lines[-1] if lines else "tesenv bench: bad arguments",
              file=sys.stderr)
        return e.code
    return bench.main(argv)


def _cmd_watch(store, args):
    deadline = None if args.timeout is None else \
        time.monotonic() + args.timeout
    printed = 0
    seen = 0
    # Versions published faster than they are printed are coalesced: each
    # line shows the newest value at the time it is printed.
    while args.count is None or printed < args.count:
        left = None if deadline is None else deadline - time.monotonic()
        if left is not None and left <= 0:
            break
        version = store.wait(args.key, seen, timeout=left)
        if version <= seen:
            break
        seen = version
        value = store.get(args.key, _DELETED)
        line = {"key": args.key, "version": version}
        if value is _DELETED:
            line["deleted"] = True
        else:
            line["value"] = _show(args.key, value)
        _print_json(line)
        sys.stdout.flush()
        printed += 1
    if args.count is not None and printed < args.count:
        raise _Fail(f"timed out after {args.timeout} s with {printed} of "
                    f"{args.count} versions")
    return 0


_DELETED = object()


def _cmd_info(store, args):
    info = store.info()
    if args.json:
        _print_json(info)
        return 0
    used = info["live_bytes"] + info["retired_bytes"]
    print(f"store      {info['name']}")
    print(f"size       {info['size_bytes']} bytes (heap {info['heap_bytes']})")
    print(f"in use     {used} bytes ({info['live_bytes']} live, "
          f"{info['retired_bytes']} awaiting reclaim)")
    print(f"free       {info['free_bytes']} bytes")
    print(f"keys       {info['key_count']} of {info['max_keys']}")
    print(f"readers    {info['reader_count']} of {info['max_readers']} "
          f"attached processes")
    print(f"creator    pid {info['creator_pid']}")
    return 0


def _cmd_workers(store, args):
    from tesenv.registry import read_workers
    _print_json(read_workers(store))
    return 0


def _cmd_gc(args):
    import tesenv
    if not args.prefix:
        removed = tesenv.remove_orphaned_stores()
    else:
        removed = []
        for entry in tesenv.list_stores():
            if entry["name"].startswith(args.prefix) and \
                    not entry["creator_alive"]:
                try:
                    with tesenv.Store.attach(entry["name"]) as orphan:
                        orphan.unlink()
                except tesenv.StoreNotFoundError:
                    continue  # removed meanwhile
                removed.append(entry["name"])
    for name in removed:
        print(f"removed {name}")
    print(f"{len(removed)} orphaned segment(s) removed")
    return 0


def _cmd_serve(store, args):
    from tesenv.server import serve
    try:
        server = serve(store, args.host, args.port, background=False)
    except OSError as e:
        raise _Fail(f"cannot listen on {args.host}:{args.port}: "
                    f"{e.strerror or e}") from None

    # SIGTERM ends the server like Ctrl-C does.
    def _stop(signum, frame):
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, _stop)
    print(f"serving store {store.name!r} on {server.url}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.shutdown()
    return 0


_COMMANDS = {
    "ls": _cmd_ls, "get": _cmd_get, "set": _cmd_set, "watch": _cmd_watch,
    "info": _cmd_info, "workers": _cmd_workers, "serve": _cmd_serve,
}


def main(argv=None):
    """Runs the tesenv command with argv (default sys.argv[1:]); returns the
    exit status."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args, rest = _parser().parse_known_args(argv)
    if args.command == "bench":
        return _bench(rest)
    if rest:
        _parser().error(f"unrecognized arguments: {' '.join(rest)}")
    if args.command == "watch" and _check_watch(args):
        _parser().error(_check_watch(args))

    import tesenv
    try:
        if args.command == "gc":
            return _cmd_gc(args)
        store = _open_store(args.store)
        try:
            return _COMMANDS[args.command](store, args)
        finally:
            store.close()
    except _Fail as e:
        print(f"tesenv: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    except (tesenv.StoreError, OSError, TypeError, ValueError) as e:
        print(f"tesenv: error: {e}", file=sys.stderr)
        return 1
