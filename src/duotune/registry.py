"""A tiny name -> object registry, used for every algorithm choice (like verl's core registries).

Each algorithm family (advantages, policy losses, aggregations, KL controllers, rewards,
benchmarks, methods, models) owns one `Registry`; configs validate names against it at load time.
Imports only `duotune.errors`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from duotune.errors import UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects of one kind; unknown names raise `UnknownNameError` with choices."""

    _all: dict[str, Registry[Any]] = {}

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}
        self._help: dict[str, str] = {}
        Registry._all[kind] = self

    def register(self, name: str, obj: T | None = None, *, help: str = "") -> Any:
        """Register `obj` under `name`; usable as `reg.register("x", f)` or `@reg.register("x")`."""
        def add(o: T) -> T:
            if name in self._items and self._items[name] is not o:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = o
            doc = help or inspect.getdoc(o) or ""
            self._help[name] = doc.strip().splitlines()[0] if doc.strip() else ""
            return o
        return add(obj) if obj is not None else add

    def unregister(self, name: str) -> None:
        """Remove `name` (plugins and tests that register temporary entries clean up with this)."""
        self.get(name)
        del self._items[name], self._help[name]

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            raise UnknownNameError(self.kind, name, self._items) from None

    def validate(self, name: str) -> str:
        """Return `name` unchanged when registered, else raise `UnknownNameError`."""
        self.get(name)
        return name

    def describe(self, name: str) -> str:
        """One line of help for `name` (its docstring's first line unless given)."""
        self.get(name)
        return self._help[name]

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)

    @classmethod
    def all(cls) -> dict[str, Registry[Any]]:
        """Every registry created so far, by kind (for `duotune list`)."""
        return dict(cls._all)


def signature_params(fn: Callable[..., Any]) -> str:
    """Keyword parameters of a factory as 'a=1, b=None' (for `duotune list` help)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return ""
    parts = [f"{p.name}={p.default!r}" for p in sig.parameters.values()
             if p.default is not inspect.Parameter.empty]
    return ", ".join(parts)
