"""tesenv: live, versioned, zero-copy configuration for Python workers.

A process publishes keyed configuration with ``set_environment_data``; every
worker process or thread reads it with ``get_environment_data`` at about the
cost of a dict lookup, sees each update as soon as it is published, and gets
numpy arrays as read-only views of shared memory.
"""

import sys as _sys

if _sys.platform == "win32":
    raise ImportError("tesenv needs POSIX shared memory (Linux or macOS); "
                      "Windows is not supported")

from tesenv._store import (  # noqa: E402
    CorruptStoreError,
    Handle,
    Store,
    StoreError,
    StoreFullError,
    StoreNotFoundError,
    default_store,
    delete_environment_data,
    get_environment_data,
    list_stores,
    remove_orphaned_stores,
    set_environment_data,
    use_store,
)
from tesenv._spline import Spline  # noqa: E402
from tesenv.frozen import FrozenDict, FrozenList  # noqa: E402

__version__ = "0.1.0"

__all__ = [
    "CorruptStoreError", "FrozenDict", "FrozenList", "Handle", "Spline",
    "Store", "StoreError", "StoreFullError", "StoreNotFoundError",
    "WorkerManager", "default_store", "delete_environment_data",
    "get_environment_data", "initializer_args", "list_stores",
    "pool_initializer", "read_workers", "remove_orphaned_stores", "serve",
    "set_environment_data", "use_store",
]

# The worker, registry and server layers load on first use, so that a
# process that only reads configuration imports nothing more.
_LAZY = {
    "WorkerManager": "tesenv.workers",
    "pool_initializer": "tesenv.workers",
    "initializer_args": "tesenv.workers",
    "read_workers": "tesenv.registry",
    "serve": "tesenv.server",
}


def __getattr__(name):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'tesenv' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
