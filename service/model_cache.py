"""In-memory LRU of loaded models keyed by (model id, checksum), so a prediction does not read disk."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

CacheKey = tuple[str, str]
Model = TypeVar("Model")


class ModelCache(Generic[Model]):
    """A thread-safe LRU of loaded models (`engine.Model`); `hits`/`misses` count lookups."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._models: OrderedDict[CacheKey, Model] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._models)

    def get(self, key: CacheKey, load: Callable[[], Model]) -> tuple[Model, bool]:
        """The model for `key` and whether it was cached; `load()` runs outside the lock on a miss."""
        with self._lock:
            model = self._models.get(key)
            if model is not None:
                self._models.move_to_end(key)
                self.hits += 1
                return model, True
            self.misses += 1
        model = load()
        with self._lock:
            self._models[key] = model
            self._models.move_to_end(key)
            while len(self._models) > self.maxsize:
                self._models.popitem(last=False)
        return model, False

    def invalidate(self, model_id: str) -> None:
        """Forget every cached version of `model_id` (after a delete)."""
        with self._lock:
            for key in [key for key in self._models if key[0] == model_id]:
                del self._models[key]
