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
    "default_store", "delete_environment_data", "get_environment_data",
    "list_stores", "remove_orphaned_stores", "set_environment_data",
    "use_store",
]
