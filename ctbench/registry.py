"""A name-based registry: one per axis (datasets, models, methods, bound methods, certify stages).

Example::

    MODELS = Registry("model")

    @MODELS.register("cnn7")
    def cnn7(...): ...

    MODELS.get("cnn7")  # -> the function; unknown names raise CTBenchError listing the known ones
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from ctbench.errors import CTBenchError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; rejects duplicates and reports unknown names with the known ones."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items))
            raise CTBenchError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._items.items())
