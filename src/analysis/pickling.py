"""Pickling of the analysis dataclasses by their constructor (backtests send them between processes).

A compiled (mypyc) frozen dataclass, or one with ``Final`` fields, cannot be unpickled the default way: that
sets each field on an empty instance, which such a class refuses. :func:`register_frozen` makes pickle rebuild
the object as ``cls(*init_fields)`` instead, in both builds; fields with ``init=False`` are derived in
``__post_init__`` (or the explicit ``__init__``) and are rebuilt there.
"""

from __future__ import annotations

import copyreg
from dataclasses import fields
from typing import Any


def _by_constructor(obj: Any) -> tuple[type, tuple[Any, ...]]:
    return type(obj), tuple(getattr(obj, f.name) for f in fields(obj) if f.init)


def register_frozen(*classes: type) -> None:
    """Pickle instances of ``classes`` (frozen or ``Final``-field dataclasses) by calling their constructor on unpickling."""
    for cls in classes:
        copyreg.pickle(cls, _by_constructor)
