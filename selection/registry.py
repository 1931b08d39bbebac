"""One registry helper for every kind of named strategy.

Slice strategies, model families, devices and ranking policies are each a
:class:`Registry`: a name -> thing table that knows what kind of thing it holds,
so a lookup of an unknown name fails the same way everywhere, with a
:class:`~selection.errors.ConfigError` that names the value, lists the known
names and says the fix::

    [model]: unknown model family 'gbm'; known: cnn, mlp. Pick one of those names.

Built-ins are registered explicitly, in one place per registry (the package's
``__init__`` or the registry's definition site), never as a side effect of
importing a module for it. ``register`` also works as a class decorator, for
code that adds its own strategy.

It lives in ``selection`` because ``selection`` may not import ``shadow``, and
both use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar, overload

from selection.errors import ConfigError

T = TypeVar("T")
C = TypeVar("C", bound=Any)


def _name_of(item: Any) -> str:
    name = getattr(item, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(f"{item!r} has no string 'name' to register it under; pass name=...")
    return name


class Registry(Generic[T]):
    """Named things of one kind, in registration order.

    Reads like a read-only mapping (``reg[name]``, ``name in reg``, ``len``,
    iteration over names, ``items()``), plus :meth:`get`, which raises a
    ConfigError for an unknown name instead of returning None. Registering a
    name twice is an error: a second strategy silently replacing the first is
    exactly the kind of surprise a registry exists to prevent.
    """

    def __init__(self, kind: str, fix: str = "Pick one of those names.") -> None:
        #: What the entries are, in words ("slice strategy"): the message's noun.
        self.kind = kind
        #: The last sentence of an unknown-name error.
        self.fix = fix
        self._items: dict[str, T] = {}

    @overload
    def register(self, item: C, *, name: str | None = None) -> C: ...

    @overload
    def register(self, item: None = None, *, name: str | None = None) -> Callable[[C], C]: ...

    def register(self, item: Any = None, *, name: str | None = None) -> Any:
        """Add ``item`` under ``name`` (default: ``item.name``) and return it unchanged.

        Usable as ``reg.register(thing)``, ``@reg.register`` or
        ``@reg.register(name="other")``.
        """
        if item is None:
            return lambda later: self.register(later, name=name)
        key = name if name is not None else _name_of(item)
        if key in self._items:
            raise ConfigError(
                f"a {self.kind} named {key!r} is already registered ({self._items[key]!r}); "
                "give the new one another name."
            )
        self._items[key] = item
        return item

    def get(self, name: Any, where: str = "") -> T:
        """The entry ``name``; a ConfigError naming it, the known names and the fix otherwise."""
        if isinstance(name, str) and name in self._items:
            return self._items[name]
        prefix = f"{where}: " if where else ""
        raise ConfigError(
            f"{prefix}unknown {self.kind} {name!r}; known: {', '.join(self._items) or 'none'}. "
            f"{self.fix}"
        )

    def names(self) -> list[str]:
        """Registered names, in registration order."""
        return list(self._items)

    def items(self) -> list[tuple[str, T]]:
        """``(name, entry)`` pairs, in registration order."""
        return list(self._items.items())

    def values(self) -> list[T]:
        """Entries, in registration order."""
        return list(self._items.values())

    def __getitem__(self, name: str) -> T:
        return self._items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._items)})"
