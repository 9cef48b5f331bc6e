"""Prometheus metrics of one app: request counters kept in process, Redis state read at scrape time."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from redis import Redis

from worker import Store, checkpoint_failures, orphans_deleted, queue_depth, workers_alive

logger = logging.getLogger(__name__)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

PREDICTION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


@dataclass
class StoreSnapshot:
    """What /metrics shows about the shared state in Redis, read when Prometheus scrapes."""

    jobs_by_status: dict[str, int] = field(default_factory=dict)
    queue_depth: int = 0
    workers_alive: int = 0
    epochs_trained: int = 0
    training_samples_per_second: float = 0.0
    checkpoint_failures: int = 0
    orphans_deleted: dict[str, int] = field(default_factory=dict)


class _StoreCollector:
    """Gauges computed at scrape time; when Redis does not answer only `backprop_redis_up 0` is shown."""

    def __init__(self, snapshot: Callable[[], StoreSnapshot]) -> None:
        self._snapshot = snapshot

    def describe(self) -> list[Metric]:
        return []  # registering must not read Redis

    def collect(self) -> Iterator[Metric]:
        try:
            state = self._snapshot()
        except Exception as exc:  # a scrape must not fail because Redis is away
            logger.warning("metrics: could not read Redis state: %s", type(exc).__name__)
            yield GaugeMetricFamily("backprop_redis_up", "1 when Redis answered this scrape.", value=0)
            return
        yield GaugeMetricFamily("backprop_redis_up", "1 when Redis answered this scrape.", value=1)
        jobs = GaugeMetricFamily("backprop_jobs", "Training jobs by status.", labels=["status"])
        for status, count in sorted(state.jobs_by_status.items()):
            jobs.add_metric([status], count)
        yield jobs
        yield GaugeMetricFamily("backprop_queue_depth", "Jobs waiting in the queue.", value=state.queue_depth)
        yield GaugeMetricFamily(
            "backprop_workers_alive", "Workers with a live heartbeat.", value=state.workers_alive
        )
        yield GaugeMetricFamily(
            "backprop_epochs_trained", "Epochs recorded in all jobs' histories.", value=state.epochs_trained
        )
        yield GaugeMetricFamily(
            "backprop_training_samples_per_second",
            "Training throughput of the running jobs (sum of their last epoch's samples/s).",
            value=state.training_samples_per_second,
        )
        yield CounterMetricFamily(
            "backprop_checkpoint_failures",
            "Checkpoints the workers could not write (full disk, I/O error); their jobs trained on.",
            value=state.checkpoint_failures,
        )
        orphans = CounterMetricFamily(
            "backprop_orphan_blobs_deleted",
            "Blobs whose record was gone, and temp files of killed writes, that the orphan sweep deleted.",
            labels=["kind"],
        )
        for kind, count in sorted(state.orphans_deleted.items()):
            orphans.add_metric([kind], count)
        yield orphans


class Metrics:
    """The metrics of one app, in their own registry (several apps can live in one process)."""

    def __init__(self, snapshot: Callable[[], StoreSnapshot]) -> None:
        # no `<name>_created` series next to every counter and histogram: they doubled the output and
        # Prometheus does not need them (process-wide switch in prometheus_client; it has no per-registry one)
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = CollectorRegistry(auto_describe=False)
        self.http_responses = Counter(
            "backprop_http_responses", "HTTP responses by status code.", ["status"], registry=self.registry
        )
        # No per-model labels: /metrics may be public, and a model's name or id is its owner's business (a
        # label per model would also grow with every model ever served).
        self.prediction_requests = Counter(
            "backprop_prediction_requests", "Prediction requests answered.", registry=self.registry
        )
        self.prediction_latency = Histogram(
            "backprop_prediction_latency_seconds",
            "Time to compute a prediction request (model lookup and inference).",
            buckets=PREDICTION_BUCKETS,
            registry=self.registry,
        )
        self.model_cache_hits = Counter(
            "backprop_model_cache_hits",
            "Predictions served by a model already in memory.",
            registry=self.registry,
        )
        self.model_cache_misses = Counter(
            "backprop_model_cache_misses", "Predictions that had to load the model.", registry=self.registry
        )
        self.registry.register(_StoreCollector(snapshot))

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)


def store_snapshot(redis: Redis, store: Store, *, queue_name: str) -> StoreSnapshot:
    """Read the shared state /metrics reports through `redis` (the probe connection: short timeouts).

    Only Store methods and the queue's functions: job counts and epochs come from counters the worker keeps,
    so a scrape costs a few round trips however many jobs there are.
    """
    reader = store if store.redis is redis else Store(redis, store.blobs)
    samples_per_second = 0.0
    for progress in reader.running_progress().values():
        value = progress.get("samples_per_second")
        if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
            samples_per_second += float(value)
    return StoreSnapshot(
        jobs_by_status=reader.job_counts(),
        queue_depth=queue_depth(redis, queue_name=queue_name),
        workers_alive=workers_alive(redis, queue_name=queue_name),
        epochs_trained=reader.epochs_trained(),
        training_samples_per_second=samples_per_second,
        checkpoint_failures=checkpoint_failures(redis),
        orphans_deleted=orphans_deleted(redis),
    )
