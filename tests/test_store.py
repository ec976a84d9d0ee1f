"""Single-process behaviour of the store: values, errors, versions, lifecycle."""

import mmap
import os
import struct
import threading
import time
import uuid

import numpy as np
import pytest

import tesenv
from tesenv import (
    CorruptStoreError,
    FrozenDict,
    FrozenList,
    Store,
    StoreFullError,
    StoreNotFoundError,
)

SHM = "/dev/shm"
SMALL = dict(size=1 << 20, max_keys=64, max_readers=8)

pytestmark = pytest.mark.skipif(not os.path.isdir(SHM),
                                reason="needs /dev/shm")


def unique_name(tag="t"):
    return f"tt-{tag}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def store():
    s = Store.create(unique_name())
    try:
        yield s
    finally:
        s.close()
        assert not os.path.exists(os.path.join(SHM, s.name))


@pytest.fixture
def raw_segment():
    """Writes arbitrary bytes under a fresh segment name; removes it after."""
    made = []

    def make(data, name=None):
        name = name or unique_name("raw")
        path = os.path.join(SHM, name)
        with open(path, "wb") as f:
            f.write(data)
        os.chmod(path, 0o600)
        made.append(path)
        return name

    yield make
    for path in made:
        if os.path.exists(path):
            os.unlink(path)


def segment_bytes(store):
    with open(os.path.join(SHM, store.name), "rb") as f:
        return bytearray(f.read())


# ---------------------------------------------------------------- values

SCALARS = [
    None, True, False, 0, -1, 2**63 - 1, -(2**63), 2**63, -(2**200) + 7,
    0.0, -2.5, float("inf"), "", "héllo wörld ✓", "\U0001f600", b"",
    b"\x00\xff" * 10,
]


@pytest.mark.parametrize("value", SCALARS, ids=repr)
def test_scalars_round_trip(store, value):
    store.set("k", value)
    got = store["k"]
    assert got == value and type(got) is type(value)


def test_nan_round_trips(store):
    store.set("k", float("nan"))
    assert np.isnan(store["k"])


def test_nested_containers_round_trip(store):
    value = {"jobs": 8, "grid": [0.5, 1, 2], "pair": (1, "a"),
             "deep": {"x": [{"y": (None, b"z")}]}, 3: "int key",
             None: 1.5, b"raw": False}
    store.set("cfg", value)
    got = store["cfg"]
    assert got == value
    assert isinstance(got, FrozenDict) and isinstance(got["grid"], FrozenList)
    assert isinstance(got["pair"], tuple)


@pytest.mark.parametrize("dtype", ["f8", "f4", "i8", "i4", "i2", "u1", "u8",
                                   "?", "c16", ">f8", "<i4"])
def test_arrays_round_trip_every_numeric_dtype(store, dtype):
    arr = (np.arange(24) % 5).astype(dtype).reshape(2, 3, 4)
    store.set("a", arr)
    got = store["a"]
    np.testing.assert_array_equal(got, arr)
    assert got.shape == (2, 3, 4) and got.dtype == arr.dtype.newbyteorder("=")


@pytest.mark.parametrize("arr", [np.zeros(0), np.float64(3.5) * np.ones(()),
                                 np.arange(12.0).reshape(3, 4).T,
                                 np.arange(20)[::3]],
                         ids=["empty", "zero-d", "transposed", "strided"])
def test_array_shapes(store, arr):
    store.set("a", arr)
    np.testing.assert_array_equal(store["a"], arr)


def test_numpy_scalars_become_python_scalars(store):
    store.set("k", [np.float32(1.5), np.int16(-3), np.bool_(True)])
    assert list(store["k"]) == [1.5, -3, True]
    assert [type(v) for v in store["k"]] == [float, int, bool]


def test_arrays_are_readonly_views_of_the_segment(store):
    store.set("a", np.arange(100_000, dtype=np.float64))
    arr = store["a"]
    assert not arr.flags.writeable
    assert np.shares_memory(arr, store._segment_array())
    with pytest.raises(ValueError):
        arr[0] = 1.0
    assert arr.ctypes.data % 64 == 0


def test_array_view_survives_update_and_close():
    s = Store.create(unique_name(), **SMALL)
    s.set("a", np.arange(1000, dtype=np.int64))
    held = s["a"]
    for i in range(2000):
        s.set("a", np.full(1000, i, dtype=np.int64))
    s.reclaim()
    assert held.sum() == np.arange(1000).sum()
    s.close()
    assert held[999] == 999 and held.sum() == np.arange(1000).sum()


def test_read_values_cannot_be_changed_for_other_callers(store):
    store.set("cfg", {"jobs": [1, 2], "name": "x"})
    first = store["cfg"]
    for mutate in (lambda v: v.__setitem__("name", "y"),
                   lambda v: v.update(a=1), lambda v: v.pop("name"),
                   lambda v: v["jobs"].append(3),
                   lambda v: v["jobs"].__setitem__(0, 9)):
        with pytest.raises(TypeError, match="read-only"):
            mutate(first)
    assert store["cfg"] == {"jobs": [1, 2], "name": "x"}
    private = dict(first)
    private["name"] = "y"
    assert store["cfg"]["name"] == "x"


def test_frozen_values_serialise_like_plain_ones(store):
    import json
    import pickle
    store.set("cfg", {"a": [1, 2], "b": {"c": None}})
    got = store["cfg"]
    assert json.loads(json.dumps(got)) == {"a": [1, 2], "b": {"c": None}}
    again = pickle.loads(pickle.dumps(got))
    assert type(again) is dict and type(again["a"]) is list


# ---------------------------------------------------------------- bad values

def test_unsupported_value_names_its_place(store):
    store.set("cfg", "kept")
    with pytest.raises(TypeError, match=r"^value\['jobs'\]\[2\]: set is not"):
        store.set("cfg", {"jobs": [1, 2, {3}]})
    assert store["cfg"] == "kept"


def test_unsupported_dict_key_and_dtype(store):
    with pytest.raises(TypeError, match=r"value\['a'\]: dict key of type "
                                        r"tuple"):
        store.set("k", {"a": {(1, 2): 3}})
    with pytest.raises(TypeError, match="dtype object"):
        store.set("k", [np.array([object()])])
    with pytest.raises(TypeError, match="dtype <U"):
        store.set("k", np.array(["a", "b"]))


def test_self_containing_value_is_refused(store):
    loop = []
    loop.append(loop)
    with pytest.raises(ValueError, match="nests deeper"):
        store.set("k", loop)


def test_pickle_needs_opt_in(store):
    with pytest.raises(TypeError, match="frozenset is not supported"):
        store.set("k", frozenset({1}))
    with Store.create(unique_name(), allow_pickle=True, **SMALL) as s:
        s.set("k", {"s": frozenset({1, 2})})
        assert s["k"]["s"] == frozenset({1, 2})
        assert s.allow_pickle


def test_pickled_record_refused_by_store_without_opt_in():
    s = Store.create(unique_name(), allow_pickle=True, **SMALL)
    try:
        s.set("k", frozenset({1}))
        path = os.path.join(SHM, s.name)
        with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
            flags = struct.unpack_from("<I", m, 12)[0]
            struct.pack_into("<I", m, 12, flags & ~1)
        reader = Store.attach(s.name)
        with pytest.raises(CorruptStoreError, match="allow_pickle"):
            reader["k"]
        reader.close()
    finally:
        s.close()


# ---------------------------------------------------------------- keys

def test_missing_key(store):
    with pytest.raises(KeyError):
        store["nope"]
    assert store.get("nope", 7) == 7 and "nope" not in store


@pytest.mark.parametrize("key,error,match", [
    (1, TypeError, "key must be a str"),
    (b"k", TypeError, "key must be a str"),
    ("", ValueError, "empty"),
    ("x" * 217, ValueError, "limit is 216"),
    ("é" * 109, ValueError, "limit is 216"),
    ("k\udcff", ValueError, "lone surrogate"),
])
def test_bad_keys(store, key, error, match):
    with pytest.raises(error, match=match):
        store.set(key, 1)
    with pytest.raises(error, match=match):
        store.get(key)
    with pytest.raises(error, match=match):
        tesenv.get_environment_data(key)


def test_longest_key_is_accepted(store):
    store.set("k" * 216, 1)
    assert store["k" * 216] == 1


def test_mapping_api(store):
    for i in range(5):
        store[f"k{i}"] = i
    del store["k3"]
    assert sorted(store.keys()) == ["k0", "k1", "k2", "k4"]
    assert len(store) == 4 and "k3" not in store and "k4" in store
    assert dict(store.items()) == {"k0": 0, "k1": 1, "k2": 2, "k4": 4}
    with pytest.raises(KeyError):
        del store["k3"]
    kinds = {d["key"]: d["type"] for d in store.describe()}
    assert kinds["k0"] == "int"


def test_key_table_full_names_the_limit():
    with Store.create(unique_name(), **SMALL) as s:
        n = 0
        with pytest.raises(StoreFullError, match="max_keys"):
            while n < 10_000:
                s.set(f"key{n}", n)
                n += 1
        assert n >= 64
        assert all(s[f"key{i}"] == i for i in range(n))


# ---------------------------------------------------------------- versions

def test_versions_grow_with_every_publish_and_delete(store):
    assert store.version("k") == 0
    seen = [store.set("k", i) for i in range(10)]
    assert seen == sorted(set(seen)) and seen[0] >= 1
    assert store.version("k") == seen[-1]
    deleted = store.delete("k")
    assert deleted > seen[-1] and store.version("k") == deleted
    assert store.set("k", 1) > deleted


def test_wait_returns_new_version_from_another_thread(store):
    v0 = store.set("k", 0)
    timer = threading.Timer(0.05, store.set, ("k", 1))
    timer.start()
    start = time.monotonic()
    v1 = store.wait("k", v0, timeout=5)
    timer.join()
    assert v1 > v0 and time.monotonic() - start < 4
    assert store["k"] == 1


def test_wait_times_out_with_the_old_version(store):
    v0 = store.set("k", 0)
    start = time.monotonic()
    assert store.wait("k", v0, timeout=0.1) == v0
    assert 0.09 <= time.monotonic() - start < 2


def test_wait_for_a_key_not_yet_published(store):
    threading.Timer(0.05, store.set, ("late", 1)).start()
    assert store.wait("late", 0, timeout=5) >= 1


def test_wait_rejects_bad_arguments(store):
    with pytest.raises(ValueError, match="after_version"):
        store.wait("k", -1, timeout=0)
    with pytest.raises(ValueError, match="timeout"):
        store.wait("k", 0, timeout=-1)


def test_handle(store):
    h = store.handle("k")
    with pytest.raises(KeyError):
        h.value
    assert h.get("d") == "d"
    v = store.set("k", [1])
    assert h.value == [1] and h.version == v
    store.set("k", [2])
    assert h.value == [2]
    store.delete("k")
    with pytest.raises(KeyError):
        h.value
    store.close()
    with pytest.raises(ValueError, match="closed"):
        h.value


# ---------------------------------------------------------------- space

def test_value_larger_than_the_store(store):
    store.set("k", "kept")
    with pytest.raises(StoreFullError, match="create a larger store") as e:
        store.set("k", np.zeros(5_000_000))
    assert "40000" in str(e.value) or "bytes" in str(e.value)
    assert store["k"] == "kept"


def test_store_full_of_live_data_loses_nothing():
    with Store.create(unique_name(), **SMALL) as s:
        blob = bytes(100_000)
        stored = []
        with pytest.raises(StoreFullError, match="in use by current values"):
            for i in range(100):
                s.set(f"k{i}", blob)
                stored.append(i)
        assert 5 <= len(stored) < 12
        assert all(s[f"k{i}"] == blob for i in stored)
        del s["k0"]
        s.set("k_new", blob)


def test_superseded_records_are_reclaimed():
    with Store.create(unique_name(), **SMALL) as s:
        sizes = [10, 1000, 30_000, 200, 70_000]
        for i in range(20_000):
            s.set(f"k{i % 5}", bytes(sizes[(i * 7) % 5]))
        info = s.info()
        assert info["size_bytes"] == 1 << 20
        assert info["live_bytes"] < 250_000


def test_creating_beyond_free_shm_fails_cleanly():
    vfs = os.statvfs(SHM)
    too_big = vfs.f_bavail * vfs.f_frsize + (1 << 30)
    name = unique_name("big")
    with pytest.raises(StoreFullError, match="free"):
        Store.create(name, size=too_big)
    assert not os.path.exists(os.path.join(SHM, name))


def test_too_small_a_store_names_the_minimum():
    with pytest.raises(ValueError, match="needs at least"):
        Store.create(unique_name(), size=4096)


# ---------------------------------------------------------------- lifecycle

def test_create_twice_and_names(store):
    with pytest.raises(FileExistsError):
        Store.create(store.name)
    with pytest.raises(ValueError, match="1 to 30 characters"):
        Store.create("x" * 31)
    with pytest.raises(ValueError, match="letters, digits"):
        Store.create("bad/name")
    with pytest.raises(TypeError):
        Store()


def test_mode(store):
    assert os.stat(os.path.join(SHM, store.name)).st_mode & 0o777 == 0o600
    with Store.create(unique_name(), mode=0o640, **SMALL) as s:
        assert os.stat(os.path.join(SHM, s.name)).st_mode & 0o777 == 0o640


def test_attach_sees_what_the_creator_publishes(store):
    store.set("k", {"a": 1})
    other = Store.attach(store.name)
    assert other["k"] == {"a": 1}
    store.set("k", 2)
    assert other["k"] == 2
    other.set("k", 3)
    assert store["k"] == 3
    other.close()
    assert os.path.exists(os.path.join(SHM, store.name))


def test_closed_store_refuses_use(store):
    store.set("k", 1)
    store.close()
    store.close()
    with pytest.raises(ValueError, match="closed"):
        store.get("k")
    with pytest.raises(ValueError, match="closed"):
        store.set("k", 2)


def test_dropping_the_creator_object_removes_the_segment():
    s = Store.create(unique_name(), **SMALL)
    path = os.path.join(SHM, s.name)
    assert os.path.exists(path)
    del s
    assert not os.path.exists(path)


# ---------------------------------------------------------------- hostile segments

def test_attach_missing():
    with pytest.raises(StoreNotFoundError, match="no store named"):
        Store.attach(unique_name("missing"))


def test_attach_foreign_segment(raw_segment):
    name = raw_segment(os.urandom(1 << 16))
    with pytest.raises(CorruptStoreError, match="not a tesenv store"):
        Store.attach(name)
    tiny = raw_segment(b"x" * 10)
    with pytest.raises(CorruptStoreError, match="too small"):
        Store.attach(tiny)


def test_attach_other_layout_version(store, raw_segment):
    data = segment_bytes(store)
    struct.pack_into("<I", data, 8, struct.unpack_from("<I", data, 8)[0] ^ 1)
    with pytest.raises(CorruptStoreError, match="layout"):
        Store.attach(raw_segment(bytes(data)))


def test_attach_truncated_segment(store, raw_segment):
    data = segment_bytes(store)
    with pytest.raises(CorruptStoreError, match="truncated"):
        Store.attach(raw_segment(bytes(data[: len(data) // 2])))


def test_attach_inconsistent_header(store, raw_segment):
    data = segment_bytes(store)
    struct.pack_into("<I", data, 24, 3)  # slot count not a power of two
    with pytest.raises(CorruptStoreError, match="inconsistent"):
        Store.attach(raw_segment(bytes(data)))


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to chown")
def test_segment_of_another_user_is_refused(store, raw_segment):
    name = raw_segment(bytes(segment_bytes(store)))
    os.chown(os.path.join(SHM, name), 12345, -1)
    with pytest.raises(PermissionError, match="belongs to uid 12345"):
        Store.attach(name)


def test_orphans_are_listed_but_live_stores_are_kept(store, raw_segment):
    data = segment_bytes(store)
    struct.pack_into("<i", data, 64, 2**31 - 2)  # a creator pid that is dead
    orphan = raw_segment(bytes(data))
    listed = {s["name"]: s for s in tesenv.list_stores()}
    assert listed[orphan]["creator_alive"] is False
    assert listed[store.name]["creator_alive"] is True
    removed = tesenv.remove_orphaned_stores()
    assert orphan in removed and store.name not in removed
    assert not os.path.exists(os.path.join(SHM, orphan))
    assert os.path.exists(os.path.join(SHM, store.name))


# ---------------------------------------------------------------- splines

def test_spline_comes_back_ready_and_zero_copy(store):
    x = np.array([0.25, 0.5, 1, 2, 5, 10, 30.0])
    y = np.column_stack([np.log1p(x), np.sqrt(x)])
    fitted = tesenv.Spline(x, y, kind="pchip")
    store.set("tes-spline-config",
              {"jobs": 8, "curveType": "pchip", "curve": fitted})
    got = store["tes-spline-config"]["curve"]
    assert isinstance(got, tesenv.Spline) and got.kind == "pchip"
    q = np.linspace(0, 31, 101)
    np.testing.assert_array_equal(got(q), fitted(q))
    np.testing.assert_array_equal(got(q, nu=1), fitted(q, nu=1))
    assert np.shares_memory(got.c, store._segment_array())
    assert not got.c.flags.writeable


# ---------------------------------------------------------------- misuse

def test_close_from_another_thread_during_wait(store):
    store.set("k", 1)
    outcome = []

    def waiter():
        try:
            store.wait("k", 10**6, timeout=5)
            outcome.append("returned")
        except ValueError as e:
            outcome.append(str(e))

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.2)
    store.close()
    t.join(10)
    assert not t.is_alive() and outcome and "closed" in outcome[0]


def test_wait_rejects_nan_and_non_numbers(store):
    store.set("k", 1)
    with pytest.raises(ValueError, match="timeout"):
        store.wait("k", 5, timeout=float("nan"))
    with pytest.raises(TypeError, match="timeout"):
        store.wait("k", 5, timeout="1")
    with pytest.raises(ValueError, match="after_version"):
        store.wait("k", 2**64, timeout=0)


def test_container_whose_len_lies_publishes_what_it_iterates(store):
    class Liar(list):
        def __len__(self):
            return 5

    class LiarDict(dict):
        def items(self):
            return []

    store.set("k", Liar([1]))
    assert store["k"] == [1]
    store.set("d", LiarDict(a=1))
    assert store["d"] == {"a": 1}


def test_zero_d_array_keeps_its_shape(store):
    store.set("z", np.array(3.5))
    assert store["z"].shape == () and store["z"] == 3.5


def test_masked_arrays_are_refused_not_unmasked(store):
    with pytest.raises(TypeError, match="masked arrays"):
        store.set("m", np.ma.array([1.0, 2.0], mask=[0, 1]))


def test_create_options_are_checked():
    with pytest.raises(ValueError, match="NUL"):
        Store.create("x\x00y")
    with pytest.raises(TypeError, match="allow_pickle"):
        Store.create(unique_name(), allow_pickle="no")
    with pytest.raises(TypeError, match="size"):
        Store.create(unique_name(), size=True)
    with pytest.raises(ValueError, match="max_keys must be at most"):
        Store.create(unique_name(), max_keys=2**32)


def test_max_keys_is_exact():
    with Store.create(unique_name(), size=1 << 20, max_keys=8,
                      max_readers=4) as s:
        for i in range(8):
            s.set(f"k{i}", i)
        with pytest.raises(StoreFullError, match="max_keys is 8"):
            s.set("k8", 8)
        assert s.info()["max_keys"] == 8


def test_huge_region_is_refused(store):
    with pytest.raises(ValueError, match="region size"):
        store.region("r", 2**64 - 1)
    with pytest.raises(StoreFullError, match="cannot fit"):
        store.region("r", 2**40)


def test_regions_are_found_without_creating(store):
    with pytest.raises(KeyError):
        store.region("r", create=False)
    r = store.region("r", 100)
    r[:3] = [1, 2, 3]
    again = store.region("r", create=False)
    assert len(again) == 100 and list(again[:3]) == [1, 2, 3]
    with pytest.raises(ValueError, match="fewer than"):
        store.region("r", 200, create=False)


def test_close_after_unlink_spares_a_new_store_of_that_name():
    name = unique_name("reuse")
    first = Store.create(name, **SMALL)
    first.unlink()
    second = Store.create(name, **SMALL)
    try:
        second.set("x", "B")
        first.close()
        assert Store.attach(name)["x"] == "B"
    finally:
        second.close()


def test_damaged_slot_pointer_is_not_followed_by_writers(store):
    store.set("mykey", 1)
    path = os.path.join(SHM, store.name)
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
        slot = m.find(b"mykey\x00") - 40
        m[slot + 8:slot + 16] = ((1 << 40) + 1).to_bytes(8, "little")
    with pytest.raises(CorruptStoreError, match="outside the heap"):
        store.get("mykey")
    assert store.set("mykey", 2) and store["mykey"] == 2


def test_damaged_heap_is_reported_not_called_full(store):
    store.set("k", b"good")
    path = os.path.join(SHM, store.name)
    with open(path, "r+b") as f, mmap.mmap(f.fileno(), 0) as m:
        heap_offset = struct.unpack_from("<Q", m, 48)[0]
        struct.pack_into("<Q", m, heap_offset + 8, 7)
    with pytest.raises(CorruptStoreError, match="heap is damaged"):
        for i in range(100_000):
            store.set("k", bytes(i % 300))


def test_view_inherited_through_fork_stays_unchanged():
    s = Store.create(unique_name("fork"), size=4 << 20, max_keys=16)
    try:
        s.set("k", np.full(100_000, 7.0))
        held = s["k"]
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(r)
                time.sleep(0.5)
                os.write(w, b"1" if (held == 7.0).all() else b"0")
            finally:
                os._exit(0)
        os.close(w)
        try:
            del held
            for i in range(100):
                s.set("k", np.full(100_000, float(i)))
                s.get("k")
            s.reclaim()
            for i in range(100):
                s.set("k", np.full(100_000, float(i)))
                s.get("k")
            assert os.read(r, 1) == b"1"
        finally:
            os.close(r)
            os.waitpid(pid, 0)
    finally:
        s.close()


def test_a_zombie_creator_counts_as_dead():
    name = unique_name("zombie")
    pid = os.fork()
    if pid == 0:
        # os._exit skips every cleanup: the segment stays, as after a crash.
        try:
            s = Store.create(name, **SMALL)
            s.set("k", 1)
        finally:
            os._exit(0)
    try:
        deadline = time.monotonic() + 10
        while not os.path.exists(os.path.join(SHM, name)):
            assert time.monotonic() < deadline
            time.sleep(0.01)
        time.sleep(0.1)
        listed = {e["name"]: e for e in tesenv.list_stores()}
        assert listed[name]["creator_alive"] is False  # not yet reaped
    finally:
        os.waitpid(pid, 0)
        if os.path.exists(os.path.join(SHM, name)):
            os.unlink(os.path.join(SHM, name))


def test_a_forked_child_that_holds_no_view_takes_no_reader_slot(store):
    store.set("k", 1)
    store["k"]
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(w)
            os.read(r, 1)
        finally:
            os._exit(0)
    try:
        os.close(r)
        assert store.info()["reader_count"] == 1
    finally:
        os.write(w, b"x")
        os.close(w)
        os.waitpid(pid, 0)
