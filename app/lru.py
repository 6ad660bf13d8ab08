"""A mapping that keeps at most ``size`` entries, dropping the one used least recently.

Every per-process cache whose keys come from requests (a counter's period and variable values, a
series name, an API key) is one of these, so a process's memory stays bounded however many
distinct keys its clients send: a cache only saves work, and a dropped entry is read again when
it is needed. Reading an entry with ``get`` or writing it makes it the most recently used; past
``size`` entries the least recently used one is removed and handed to ``on_evict``, if given,
which must not block (it may schedule work of its own).
"""

from collections import OrderedDict
from collections.abc import Callable, Hashable, ItemsView
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    def __init__(self, size: int, on_evict: Callable[[K, V], None] | None = None) -> None:
        if size < 1:
            raise ValueError(f"an LRU cache holds at least one entry, not {size}")
        self.size = size
        self._on_evict = on_evict
        self._entries: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._entries.get(key)
        if value is not None:
            self._entries.move_to_end(key)
        return value

    def __setitem__(self, key: K, value: V) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        while len(self._entries) > self.size:
            evicted = self._entries.popitem(last=False)
            if self._on_evict is not None:
                self._on_evict(*evicted)

    def pop(self, key: K, default: V | None = None) -> V | None:
        """Remove an entry, if there is one, without handing it to ``on_evict``."""
        return self._entries.pop(key, default)

    def __delitem__(self, key: K) -> None:
        del self._entries[key]

    def items(self) -> ItemsView[K, V]:
        return self._entries.items()

    def clear(self) -> None:
        """Remove every entry without handing any to ``on_evict``."""
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
