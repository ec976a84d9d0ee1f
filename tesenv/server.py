"""A small HTTP view of one store: its keys, its workers and their metrics.

``serve(store)`` answers on 127.0.0.1 (any other host must be asked for):

    /workers   the registry (``tesenv.registry.read_workers``) as JSON
    /config    every key's version, type and size as JSON
    /config/K  the value of key K as JSON (see ``jsonable``)
    /metrics   store and worker figures in the Prometheus text format 0.0.4
    /healthz   {"status": "ok"} while the store can be read

Only GET and HEAD are served; anything else gets a 4xx.  The metrics are
written here rather than with prometheus_client: they are a snapshot read
from shared memory on each scrape, which the format's few rules cover in a
page of code, and ``tesenv serve`` then needs nothing beyond numpy.
"""

import http.server
import json
import logging
import math
import sys
import threading
import urllib.parse

import numpy as np

from tesenv import registry as _registry

__all__ = ["serve", "Server", "jsonable", "NotJSONError", "metrics_text"]

log = logging.getLogger(__name__)

# A client that opens a connection and sends nothing must not hold a
# handler thread for long.
REQUEST_TIMEOUT_SECONDS = 10.0
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class NotJSONError(ValueError):
    """A value holds something JSON cannot show."""


def jsonable(value, path="value"):
    """value as plain JSON types: dicts with str keys, lists, str, int,
    finite floats, bools and None.  Tuples and numpy arrays become lists.

    Raises NotJSONError naming the offending part for bytes (JSON has no
    byte strings, and base64 would pass silently for text), non-finite
    floats, non-str dict keys and other types (e.g. a Spline).
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise NotJSONError(f"{path} is {value!r}, which JSON cannot show")
        return value
    if isinstance(value, np.generic):
        return jsonable(value.item(), path)
    if isinstance(value, np.ndarray):
        if value.dtype.kind == "c":
            raise NotJSONError(f"{path} holds complex numbers, which JSON "
                               f"cannot show")
        if value.dtype.kind == "f" and not np.isfinite(value).all():
            raise NotJSONError(f"{path} holds NaN or infinity, which JSON "
                               f"cannot show")
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return [jsonable(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise NotJSONError(f"{path} has the key {k!r}; JSON keys are "
                                   f"strings")
            out[k] = jsonable(v, f"{path}[{k!r}]")
        return out
    if isinstance(value, (bytes, bytearray)):
        raise NotJSONError(f"{path} is {len(value)} bytes, which JSON cannot "
                           f"show")
    raise NotJSONError(f"{path} is a {type(value).__name__}, which JSON "
                       f"cannot show")


# --------------------------------------------------------------------------
# The Prometheus text format.

def _label_value(text):
    # A key may hold a lone surrogate, which UTF-8 cannot carry: it is shown
    # as a backslash escape so that one odd key cannot break the page.
    text = str(text).encode("utf-8", "backslashreplace").decode("utf-8")
    return (text.replace("\\", "\\\\").replace('"', '\\"')
            .replace("\n", "\\n"))


def _labels(**labels):
    inner = ",".join(f'{k}="{_label_value(v)}"' for k, v in labels.items())
    return "{" + inner + "}" if inner else ""


def _number(x):
    if isinstance(x, float):
        if math.isinf(x):
            return "+Inf" if x > 0 else "-Inf"
        return repr(x)
    return str(x)


class _Metrics:
    """Collects samples grouped by metric family, each with one HELP and
    TYPE line as the format requires."""

    def __init__(self):
        self.families = {}

    def add(self, name, metric_type, help_text, value, suffix="", /, **labels):
        family = self.families.setdefault(name, (metric_type, help_text, []))
        family[2].append(f"{name}{suffix}{_labels(**labels)} {_number(value)}")

    def text(self):
        lines = []
        for name, (kind, help_text, samples) in self.families.items():
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            lines.extend(samples)
        return "\n".join(lines) + "\n"


def _latest_per_id(workers):
    # A restarted worker may have left an older slot; one series per id.
    latest = {}
    for w in workers:
        if w["id"] not in latest or w["start_ns"] > latest[w["id"]]["start_ns"]:
            latest[w["id"]] = w
    return [latest[k] for k in sorted(latest)]


def metrics_text(store, workers=None):
    """The store's figures and its workers' counters in the Prometheus text
    format (version 0.0.4)."""
    m = _Metrics()
    info = store.info()
    for field, help_text in (
            ("size_bytes", "Size of the shared-memory segment."),
            ("live_bytes", "Bytes held by current values and regions."),
            ("free_bytes", "Bytes free in the heap."),
            ("key_count", "Keys with a value."),
            ("reader_count", "Live processes attached to the store.")):
        m.add(f"tesenv_store_{field}", "gauge", help_text, info[field],
              store=store.name)
    for d in store.describe():
        m.add("tesenv_key_version", "gauge", "Current version of each key.",
              d["version"], key=d["key"])

    workers = _registry.read_workers(store) if workers is None else workers
    bounds = _registry.bucket_bounds_ns()
    for w in _latest_per_id(workers):
        who = {"worker": w["id"], "kind": w["kind"]}
        m.add("tesenv_worker_up", "gauge", "1 while the worker's process "
              "runs and its slot says it is working.", int(w["alive"]), **who)
        m.add("tesenv_worker_jobs_total", "counter", "Jobs finished.",
              w["jobs"], **who)
        m.add("tesenv_worker_errors_total", "counter", "Jobs failed.",
              w["errors"], **who)
        m.add("tesenv_worker_heartbeat_age_seconds", "gauge",
              "Seconds since the worker's last heartbeat.",
              w["heartbeat_age_s"], **who)
        m.add("tesenv_worker_config_version", "gauge", "Version of its "
              "configuration the worker last read.", w["config_version"], **who)
        for jt in w["job_types"].values():
            name = "tesenv_worker_job_latency_seconds"
            help_text = "Job latency by job type."
            cumulative = 0
            for bound, count in zip(bounds, jt["buckets"]):
                cumulative += count
                le = "+Inf" if bound is None else repr(bound / 1e9)
                m.add(name, "histogram", help_text, cumulative, "_bucket",
                      job_type=jt["name"], le=le, **who)
            m.add(name, "histogram", help_text, jt["sum_ns"] / 1e9, "_sum",
                  job_type=jt["name"], **who)
            m.add(name, "histogram", help_text, cumulative, "_count",
                  job_type=jt["name"], **who)
    return m.text()


# --------------------------------------------------------------------------
# Serving.

class _Handler(http.server.BaseHTTPRequestHandler):
    server_version = "tesenv"
    timeout = REQUEST_TIMEOUT_SECONDS
    # An unparsable request line would otherwise be answered HTTP/0.9
    # style, with no status line for the client to read the 400 from.
    default_request_version = "HTTP/1.0"

    def __getattr__(self, name):
        # Any method but GET and HEAD: 405 instead of the base class's 501,
        # since the request, not the server, is at fault.
        if name.startswith("do_"):
            return self._not_allowed
        raise AttributeError(name)

    def _not_allowed(self):
        self.send_error(405, "only GET and HEAD are served")

    def send_error(self, code, message=None, explain=None):
        # The base class answers an unknown HTTP version with 505; it is the
        # client's mistake, so say 400.
        if code == 505:
            code = 400
        super().send_error(code, message, explain)

    def log_message(self, format, *args):
        log.debug("%s %s", self.address_string(), format % args)

    def do_HEAD(self):
        self._respond(head=True)

    def do_GET(self):
        self._respond(head=False)

    def _respond(self, head):
        path = urllib.parse.urlsplit(self.path).path
        # A key may end in "/", so a key's path keeps its trailing slashes.
        if not path.startswith("/config/") or path == "/config/":
            path = path.rstrip("/") or "/"
        try:
            status, content_type, body = self.server.view.answer(path)
        except Exception as e:  # one bad answer must not stop the server
            log.exception("error answering %s", path)
            status, content_type, body = _json(500, {"error": str(e)})
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if not head:
            self.wfile.write(body)


def _json(status, obj):
    return status, "application/json", \
        (json.dumps(obj, allow_nan=False) + "\n").encode()


class _View:
    """Turns paths into answers.  A tesenv Store handle is for one thread at
    a time, so answers are made one at a time; each takes microseconds."""

    def __init__(self, store):
        self.store = store
        self.lock = threading.Lock()

    def answer(self, path):
        with self.lock:
            if path == "/healthz":
                if self.store.closed:
                    return _json(503, {"status": "closed"})
                return _json(200, {"status": "ok", "store": self.store.name,
                                   "keys": self.store.info()["key_count"]})
            if path == "/workers":
                return _json(200, _registry.read_workers(self.store))
            if path == "/config":
                return _json(200, self.store.describe())
            if path.startswith("/config/"):
                return self._value(urllib.parse.unquote(path[8:]))
            if path == "/metrics":
                return 200, METRICS_CONTENT_TYPE, \
                    metrics_text(self.store).encode()
            return _json(404, {"error": f"no such page: {path}"})

    def _value(self, key):
        try:
            value = self.store[key]
        except KeyError:
            return _json(404, {"error": f"no such key: {key}"})
        except (TypeError, ValueError) as e:
            return _json(400, {"error": str(e)})
        try:
            shown = jsonable(value, key)
        except NotJSONError as e:
            return _json(422, {"error": str(e)})
        return _json(200, {"key": key, "version": self.store.version(key),
                           "value": shown})


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def handle_error(self, request, client_address):
        # Called inside the except block.  A client that leaves early is
        # routine; anything else is one log line, not a traceback on stderr.
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):
            log.debug("client %s left: %s", client_address[0], error)
        else:
            log.error("error serving %s: %s: %s", client_address[0],
                      type(error).__name__, error)


class Server:
    """An HTTP server over one store.  ``start()`` runs it in a daemon
    thread; ``shutdown()`` stops it and closes its socket."""

    def __init__(self, store, host="127.0.0.1", port=0):
        self.store = store
        self._httpd = _HTTPServer((host, port), _Handler)
        self._httpd.view = _View(store)
        self._thread = None

    @property
    def host(self):
        return self._httpd.server_address[0]

    @property
    def port(self):
        return self._httpd.server_address[1]

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    def start(self):
        """Serves from a daemon thread; returns self."""
        if self._thread is None:
            self._thread = threading.Thread(target=self.serve_forever,
                                            name="tesenv-server", daemon=True)
            self._thread.start()
        return self

    def serve_forever(self):
        """Serves on the calling thread until shutdown() is called."""
        self._httpd.serve_forever(poll_interval=0.1)

    def shutdown(self):
        """Stops serving and closes the socket.  Safe to call twice."""
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=5.0)
            self._thread = None
        self._httpd.server_close()

    close = shutdown

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()

    def __repr__(self):
        return f"<tesenv Server {self.url} for {self.store.name!r}>"


def serve(store, host="127.0.0.1", port=0, *, background=True):
    """Serves store over HTTP on host:port (port 0 picks a free one; read
    ``server.port``).  Returns the Server, already running in a background
    thread unless background is false, in which case call
    ``serve_forever()``.  Raises OSError if the address is taken."""
    server = Server(store, host, port)
    return server.start() if background else server
