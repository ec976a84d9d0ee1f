"""Read-only containers for values read from a store.

A decoded value is cached once per version and handed to every caller in the
process, so a caller that changed it would change it for all the others.  Dicts
and lists therefore come back as these subclasses: they compare, iterate,
serialise (json, pickle) and unpack like the originals, and every method that
would change them raises TypeError.  ``dict(value)`` or ``list(value)`` gives a
private, mutable copy.
"""

__all__ = ["FrozenDict", "FrozenList"]


def _read_only(self, *args, **kwargs):
    raise TypeError(
        f"a {type(self).__name__} read from a tesenv store is read-only; "
        f"copy it with {type(self).__mro__[1].__name__}(value) to change it"
    )


class FrozenDict(dict):
    """A dict that refuses to change."""

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def copy(self):
        return dict(self)

    def __reduce__(self):
        return (dict, (dict(self),))

    def __repr__(self):
        return f"FrozenDict({dict.__repr__(self)})"


class FrozenList(list):
    """A list that refuses to change."""

    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only
    append = clear = extend = insert = pop = remove = _read_only
    reverse = sort = _read_only

    def copy(self):
        return list(self)

    def __reduce__(self):
        return (list, (list(self),))

    def __repr__(self):
        return f"FrozenList({list.__repr__(self)})"
