"""A bounded, thread-safe LRU of results; an evicted entry's files are deleted with it."""

from __future__ import annotations

import shutil
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Hashable


class ResultCache:
    """`get_or_make(key, make)`: the cached value for `key`, else `make()` stored under it.

    At most `size` entries. Values with a `folder` attribute own that folder: evicting the value
    removes it. Concurrent calls for the same key compute it once (the others wait for it)."""

    def __init__(self, size: int):
        self.size = max(1, int(size))
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self._key_locks: dict[Hashable, threading.Lock] = {}
        self.hits = self.misses = 0

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def get_or_make(self, key: Hashable, make: Callable[[], Any]) -> Any:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            key_lock = self._key_locks.setdefault(key, threading.Lock())
        with key_lock:
            value = self.get(key)
            if value is not None:
                with self._lock:
                    self.hits += 1
                return value
            value = make()
            with self._lock:
                self.misses += 1
                self._items[key] = value
                evicted = []
                while len(self._items) > self.size:
                    evicted.append(self._items.popitem(last=False)[1])
                self._key_locks.pop(key, None)
        for old in evicted:
            folder = getattr(old, "folder", None)
            if folder is not None:
                shutil.rmtree(Path(folder), ignore_errors=True)
        return value

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
