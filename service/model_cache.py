"""In-memory LRU of loaded models keyed by (model id, checksum), so a prediction does not read disk."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Generic, TypeVar

import engine
from worker import ModelRecord, Store

CacheKey = tuple[str, str]
Model = TypeVar("Model")


def model_nbytes(model: engine.Model) -> int:
    """Bytes a loaded model holds: its weights and biases and its standardisation vectors."""
    arrays = [array for layer in model.params for array in layer]
    return sum(int(array.nbytes) for array in (*arrays, model.mean, model.scale))


class ModelCache(Generic[Model]):
    """A thread-safe LRU of loaded models (`engine.Model`), bounded in count and in bytes (`weigh(model)`);
    `hits`/`misses` count lookups. A model heavier than `max_bytes` is served but never kept."""

    def __init__(self, maxsize: int, max_bytes: int, weigh: Callable[[Model], int]) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be >= 1, got {maxsize}")
        if max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.maxsize = maxsize
        self.max_bytes = max_bytes
        self.hits = 0
        self.misses = 0
        self._weigh = weigh
        self._models: OrderedDict[CacheKey, tuple[Model, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._models)

    @property
    def nbytes(self) -> int:
        """Bytes of the models held."""
        return self._bytes

    def get(self, key: CacheKey, load: Callable[[], Model]) -> tuple[Model, bool]:
        """The model for `key` and whether it was cached; `load()` runs outside the lock on a miss."""
        with self._lock:
            entry = self._models.get(key)
            if entry is not None:
                self._models.move_to_end(key)
                self.hits += 1
                return entry[0], True
            self.misses += 1
        model = load()
        size = self._weigh(model)
        if size <= self.max_bytes:
            with self._lock:
                self._drop(key)
                self._models[key] = (model, size)
                self._bytes += size
                while len(self._models) > self.maxsize or self._bytes > self.max_bytes:
                    self._drop(next(iter(self._models)))
        return model, False

    def _drop(self, key: CacheKey) -> None:
        """Forget `key` if held (the lock is held by the caller)."""
        entry = self._models.pop(key, None)
        if entry is not None:
            self._bytes -= entry[1]

    def peek(self, key: CacheKey) -> Model | None:
        """The cached model for `key` (counted as a hit), or None without loading (nor counting a miss)."""
        with self._lock:
            entry = self._models.get(key)
            if entry is None:
                return None
            self._models.move_to_end(key)
            self.hits += 1
            return entry[0]

    def invalidate(self, model_id: str) -> None:
        """Forget every cached version of `model_id` (after a delete)."""
        with self._lock:
            for key in [key for key in self._models if key[0] == model_id]:
                self._drop(key)


class ModelRecords:
    """Parsed model metadata, kept in memory without training histories (their size is the client's choice):
    a model's record never changes once written (only deleted), so a lookup costs one small Redis call (does
    it still exist? / which is this name's latest id?) instead of fetching and parsing the whole record.

    `fresh(model_id)` skips even that call when the model's existence was confirmed in Redis less than
    `recheck_seconds` ago: the prediction route's fast path. Its staleness bound: a model deleted by another
    API process can still serve predictions here for at most `recheck_seconds` (a delete in this process,
    and every `resolve`, forget or re-check it at once).
    """

    def __init__(
        self,
        store: Store,
        maxsize: int = 4096,
        *,
        recheck_seconds: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.maxsize = maxsize
        self.recheck_seconds = recheck_seconds
        self.clock = clock
        self._records: OrderedDict[str, tuple[ModelRecord, float]] = OrderedDict()  # id -> (record, confirmed)
        self._lock = threading.Lock()

    def _cached(self, model_id: str, confirmed: float) -> ModelRecord | None:
        with self._lock:
            entry = self._records.get(model_id)
            if entry is None:
                return None
            self._records[model_id] = (entry[0], confirmed)
            self._records.move_to_end(model_id)
            return entry[0]

    def _load(self, model_id: str, confirmed: float) -> ModelRecord | None:
        record = self.store.get_model(model_id)
        if record is not None:
            record = dataclasses.replace(record, history=[])  # kept small: read the store for the history
            with self._lock:
                self._records[model_id] = (record, confirmed)
                while len(self._records) > self.maxsize:
                    self._records.popitem(last=False)
        return record

    def fresh(self, model_id: str) -> ModelRecord | None:
        """The record of model *id* `model_id` when it is cached and its existence was confirmed less than
        `recheck_seconds` ago, without a Redis call; None: ask `resolve`. Names and `name@alias` references
        always go there (never cached here), so moving an alias applies to the next prediction; the
        `recheck_seconds` bound only concerns a model id deleted by another API process."""
        with self._lock:
            entry = self._records.get(model_id)
        if entry is None or self.clock() - entry[1] >= self.recheck_seconds:
            return None
        return entry[0]

    def resolve(self, id_or_name: str, *, owner: str | None) -> ModelRecord | None:
        """A model by id, or by name: `owner`'s latest version (None: everyone's, see
        `Store.resolve_model_id`; may raise AmbiguousModelNameError)."""
        confirmed = self.clock()
        model_id = self.store.resolve_model_id(id_or_name, owner=owner)
        if model_id is None:
            self.invalidate(id_or_name)  # in case it was an id, deleted meanwhile
            return None
        return self._cached(model_id, confirmed) or self._load(model_id, confirmed)

    def invalidate(self, model_id: str) -> None:
        with self._lock:
            self._records.pop(model_id, None)
