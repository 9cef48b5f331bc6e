"""Hyperparameter sweeps: a sweep record in Redis, its children (normal jobs with `sweep_id`), and the one
place where a sweep moves on.

A sweep's children are created all or none (`Store.create_jobs`, checked against the owner's queue limit in
the same script). `advance_sweep` decides what comes next under a per-sweep Redis lock, and only from the
children's stored records, never from which child finished last: while a rung has an unfinished child
nothing happens; once all of its children ended, a halving sweep starts the next rung (the best trials
continue from their own final training states to more epochs, each as a new job with `continues` naming
the job it continues), and otherwise the sweep's result is computed in trial order and frozen. Every
worker calls it after a child ended, and the API's reaper loop calls it for every unfinished sweep, so a
missed call (a worker that died) only delays the sweep.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from redis import Redis
from redis.lock import Lock

from worker import keys
from worker.jobstate import ACTIVE_STATUSES, TERMINAL_STATUSES, JobStatus
from worker.queue import cancel_job, enqueue_training, estimated_seconds, job_timeout
from worker.records import JobRecord, utc_now
from worker.store import JobDraft, NotFoundError, Store, is_id, new_id, state_blob
from worker.sweep_results import (
    Child,
    best_seed,
    halving_epochs,
    keep_for_next_rung,
    rank,
    trial_result,
)

logger = logging.getLogger(__name__)

_LOCK_SECONDS = 60
_LOCK_WAIT_SECONDS = 30
_LOCK_POLL_SECONDS = 0.01


class SweepNotFinishedError(RuntimeError):
    """Only finished sweeps can be deleted."""

    def __init__(self, sweep_id: str, status: str) -> None:
        super().__init__(f"sweep {sweep_id} is {status}; only finished sweeps can be deleted")
        self.sweep_id = sweep_id
        self.status = status


@dataclass(frozen=True)
class Launch:
    """What a worker needs to queue a sweep's next rung the way the API queued the first."""

    queue_name: str
    retries: int
    timeout_min: int
    timeout_max: int
    n_samples: int
    n_parameters: list[int]  # per trial


@dataclass(frozen=True)
class SweepRecord:
    """A sweep as stored. `rungs`: [{"epochs": int | None, "trials": [{"index", "jobs": [job id per seed]}]}];
    `result`: the frozen summary once every child ended (None before)."""

    id: str
    name: str
    owner: str | None
    dataset_id: str
    status: str
    created_at: str
    metric: str
    seeds: list[int]
    trials: list[dict[str, Any]]  # each trial's overrides of `base`
    configs: list[dict[str, Any]]  # each trial's whole TrainConfig dict (the seed is the child's)
    launch: dict[str, Any]
    rungs: list[dict[str, Any]]
    early_stop: dict[str, Any] | None = None
    alias: str | None = None
    finished_at: str | None = None
    result: dict[str, Any] | None = None
    alias_status: str | None = None
    spec: dict[str, Any] = field(default_factory=dict)  # the request as given (base, grid or random, ...)

    def to_fields(self) -> dict[str, str]:
        """Hash fields, every value JSON."""
        return {name: json.dumps(value) for name, value in asdict(self).items()}

    @classmethod
    def from_hash(cls, raw: dict[bytes, bytes]) -> SweepRecord:
        data = {key.decode(): json.loads(value) for key, value in raw.items()}
        return cls(**{f.name: data[f.name] for f in fields(cls) if f.name in data})

    def job_ids(self) -> list[str]:
        """Every child's id, rung by rung, trial by trial, seed by seed."""
        return [job_id for rung in self.rungs for trial in rung["trials"] for job_id in trial["jobs"] if job_id]


def get_sweep(redis: Redis, sweep_id: str) -> SweepRecord | None:
    """The sweep, or None."""
    if not is_id(sweep_id):
        return None
    raw = redis.hgetall(keys.sweep(sweep_id))
    return SweepRecord.from_hash(raw) if raw else None  # type: ignore[arg-type]


def list_sweeps(redis: Redis, *, owner: str | None, offset: int = 0, limit: int = 50) -> tuple[list[SweepRecord], int]:
    """Sweeps newest first (owner None: everyone's) and the total."""
    index = keys.sweeps() if owner is None else keys.sweeps_of(owner)
    total = int(redis.zcard(index))  # type: ignore[arg-type]
    ids = [raw.decode() for raw in redis.zrevrange(index, offset, offset + limit - 1)]  # type: ignore[union-attr]
    records = [get_sweep(redis, sweep_id) for sweep_id in ids]
    return [record for record in records if record is not None], total


def _child_spec(record: SweepRecord, index: int, seed: int, epochs: int | None) -> dict[str, Any]:
    spec = {**record.configs[index], "seed": seed}
    if epochs is not None:
        spec["epochs"] = epochs
    return spec


def _drafts(record: SweepRecord, rung: int, chosen: list[tuple[int, list[str | None]]]) -> list[JobDraft]:
    """Drafts of one rung's children: `chosen` = (trial index, job each seed continues, or None)."""
    epochs = _rung_epochs(record, rung)
    keep_state = epochs is not None and epochs < int(record.configs[0]["epochs"])
    drafts = []
    for index, previous in chosen:
        for seed, continues in zip(record.seeds, previous, strict=True):
            extra = {"sweep_id": record.id, "keep_state": keep_state, "continues": continues}
            name = f"{record.name}-t{index}-s{seed}"
            drafts.append(JobDraft(_child_spec(record, index, seed, epochs), name, extra))
    return drafts


def _rung_epochs(record: SweepRecord, rung: int) -> int | None:
    if record.early_stop is None:
        return None
    epochs = int(record.configs[0]["epochs"])
    return halving_epochs(int(record.early_stop["min_epochs"]), int(record.early_stop["eta"]), epochs)[rung]


def _enqueue(store: Store, record: SweepRecord, jobs: list[JobRecord]) -> None:
    """Queue the children longest first (by the cost model; ties in trial order): the workers then end
    together instead of one finishing a long job alone (results never depend on this order)."""
    launch = Launch(**record.launch)
    trial_of = {job.id: trial["index"] for rung in record.rungs for trial in rung["trials"] for job in jobs
                if job.id in trial["jobs"]}

    def cost(job: JobRecord) -> float:
        n_parameters, epochs = launch.n_parameters[trial_of[job.id]], int(job.spec["epochs"])
        return estimated_seconds(launch.n_samples, n_parameters, epochs, batch_size=job.spec.get("batch_size"))

    for job in sorted(jobs, key=cost, reverse=True):
        timeout = job_timeout(
            launch.n_samples,
            launch.n_parameters[trial_of[job.id]],
            int(job.spec["epochs"]),
            minimum=launch.timeout_min,
            maximum=launch.timeout_max,
        )
        enqueue_training(store.redis, job, queue_name=launch.queue_name, timeout=timeout, retries=launch.retries)


def _rung_of(jobs: list[JobRecord], record: SweepRecord, indices: list[int]) -> dict[str, Any]:
    per_seed = len(record.seeds)
    return {
        "epochs": _rung_epochs(record, len(record.rungs)),
        "trials": [
            {"index": index, "jobs": [job.id for job in jobs[position * per_seed:(position + 1) * per_seed]]}
            for position, index in enumerate(indices)
        ],
    }


def create_sweep(store: Store, record: SweepRecord, *, max_queued: int) -> SweepRecord:
    """Store a new sweep (`record` without rungs) and queue its first rung: every trial x every seed, created
    all or none against the owner's `max_queued` (QueueLimitError, and nothing is created)."""
    indices = list(range(len(record.trials)))
    drafts = _drafts(record, 0, [(index, [None] * len(record.seeds)) for index in indices])
    jobs = store.create_jobs(drafts, owner=record.owner, dataset_id=record.dataset_id, max_queued=max_queued)
    record = SweepRecord(**{**asdict(record), "rungs": [_rung_of(jobs, record, indices)]})
    score = store.redis.zscore(keys.jobs(), jobs[0].id) or 0.0
    with store.redis.pipeline() as pipe:
        pipe.hset(keys.sweep(record.id), mapping=record.to_fields())  # type: ignore[arg-type]
        pipe.zadd(keys.sweeps(), {record.id: score})
        if record.owner is not None:
            pipe.zadd(keys.sweeps_of(record.owner), {record.id: score})
        pipe.sadd(keys.sweeps_active(), record.id)
        pipe.execute()
    _enqueue(store, record, jobs)
    return record


def new_sweep_id() -> str:
    """A new sweep id (the shape of every id of the store)."""
    return new_id()


def _children(store: Store, record: SweepRecord) -> dict[str, Child]:
    job_ids = record.job_ids()
    rows = dict(zip(job_ids, store.job_fields(job_ids, ("model_id", "error")), strict=True))
    finished = {
        job_id: row["model_id"]
        for job_id, row in rows.items()
        if row is not None and row["status"] == JobStatus.SUCCEEDED and row["model_id"]
    }
    metrics = dict(zip(finished.values(), store.model_metrics(list(finished.values())), strict=True))
    children: dict[str, Child] = {}
    for job_id, row in rows.items():
        if row is None:
            children[job_id] = Child(job_id, JobStatus.FAILED.value, error="the job record was deleted")
            continue
        metric = None
        if job_id in finished:
            value = (metrics[finished[job_id]] or {}).get(record.metric)
            metric = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
        children[job_id] = Child(job_id, JobStatus(row["status"]).value, metric, row["model_id"], row["error"])
    return children


def _rung_ended(store: Store, record: SweepRecord) -> bool:
    """Whether every child of the sweep's current rung ended (a deleted child counts as ended)."""
    current = [job_id for trial in record.rungs[-1]["trials"] for job_id in trial["jobs"] if job_id]
    rows = store.job_fields(current, ())
    return not any(row is not None and JobStatus(row["status"]) in ACTIVE_STATUSES for row in rows)


def summarize(record: SweepRecord, children: dict[str, Child]) -> dict[str, Any]:
    """Trials (each at the last rung it reached), leaderboard, best and counts, in trial order."""
    latest: dict[int, tuple[int, dict[str, Any], int | None]] = {}
    for number, rung in enumerate(record.rungs):
        for trial in rung["trials"]:
            latest[trial["index"]] = (number, trial, rung["epochs"])
    trials = []
    for index, overrides in enumerate(record.trials):
        number, trial, epochs = latest[index]
        seeds = [None if job_id is None else children.get(job_id) for job_id in trial["jobs"]]
        reached = epochs if epochs is not None else int(record.configs[index]["epochs"])
        trials.append(trial_result(index, overrides, record.seeds, number, reached, seeds))
    leaderboard = rank(trials, record.metric)
    best = None
    if leaderboard:
        top = leaderboard[0]
        seed = best_seed(top, record.metric)
        best = {
            "trial": top["index"],
            "overrides": top["overrides"],
            "config": {**record.configs[top["index"]], "epochs": top["epochs"], "seed": seed["seed"]},
            "seed": seed["seed"],
            "metric": seed["metric"],
            "model_id": seed["model_id"],
            "job_id": seed["job_id"],
        }
    counts = Counter(child.status for child in children.values())
    return {
        "trials": trials,
        "leaderboard": [
            {key: trial[key] for key in ("index", "overrides", "mean", "std", "rung", "epochs")}
            for trial in leaderboard
        ],
        "best": best,
        "counts": {status.value: counts.get(status.value, 0) for status in JobStatus},
    }


def sweep_view(store: Store, record: SweepRecord) -> tuple[str, dict[str, Any]]:
    """The sweep's status and summary: frozen once every child ended, else computed from the children now."""
    if record.result is not None:
        return record.status, record.result
    children = _children(store, record)
    summary = summarize(record, children)
    if record.status in TERMINAL_STATUSES:
        return record.status, summary
    started = any(child.status != JobStatus.QUEUED for child in children.values())
    return (JobStatus.RUNNING.value if started else JobStatus.QUEUED.value), summary


def set_sweep_alias(store: Store, record: SweepRecord, model_id: str) -> str:
    """Point the sweep's alias at the best model (in that model's lineage: `NAME-tTRIAL-sSEED@ALIAS`); what
    happened, as the sweep shows it in `alias_status`."""
    model = store.get_model(model_id)
    if model is None or record.alias is None:
        return f"not set: the best model {model_id} no longer exists"
    store.aliases.set(
        record.owner, model.name, record.alias, version=model.version, model_id=model.id, by=record.owner
    )
    return f"set: {model.name}@{record.alias} is version {model.version} ({model.id})"


def _write(store: Store, sweep_id: str, **values: Any) -> None:
    store.redis.hset(keys.sweep(sweep_id), mapping={name: json.dumps(value) for name, value in values.items()})


def _next_rung(store: Store, record: SweepRecord, children: dict[str, Child]) -> bool:
    """Start the next halving rung if there is one and a trial to promote; whether it started."""
    if record.early_stop is None:
        return False
    epochs = int(record.configs[0]["epochs"])
    schedule = halving_epochs(int(record.early_stop["min_epochs"]), int(record.early_stop["eta"]), epochs)
    if len(record.rungs) >= len(schedule):
        return False
    last = record.rungs[-1]
    ran = [
        trial_result(trial["index"], record.trials[trial["index"]], record.seeds, len(record.rungs) - 1,
                     int(last["epochs"]), [children.get(job_id) for job_id in trial["jobs"]])
        for trial in last["trials"]
    ]
    chosen = []
    for index in keep_for_next_rung(ran, record.metric, int(record.early_stop["eta"])):
        trial = next(trial for trial in last["trials"] if trial["index"] == index)
        ok = [job_id if job_id and children[job_id].status == JobStatus.SUCCEEDED else None
              for job_id in trial["jobs"]]
        chosen.append((index, ok))
    drafts = [draft for draft in _drafts(record, len(record.rungs), chosen) if draft.extra["continues"]]
    if not drafts:
        return False
    # the sweep was accepted whole: later rungs (never larger than the first) are not held to the queue limit
    jobs = store.create_jobs(drafts, owner=record.owner, dataset_id=record.dataset_id)
    by_trial: dict[int, list[str | None]] = {}
    position = 0
    for index, previous in chosen:
        ids: list[str | None] = []
        for continues in previous:
            ids.append(jobs[position].id if continues else None)
            position += int(continues is not None)
        by_trial[index] = ids
    rung = {"epochs": _rung_epochs(record, len(record.rungs)),
            "trials": [{"index": index, "jobs": ids} for index, ids in by_trial.items()]}
    record = SweepRecord(**{**asdict(record), "rungs": [*record.rungs, rung]})
    _write(store, record.id, rungs=record.rungs)
    _enqueue(store, record, jobs)
    logger.info("sweep %s: rung %d started with trials %s", record.id, len(record.rungs) - 1, sorted(by_trial))
    return True


def _finish(store: Store, record: SweepRecord, children: dict[str, Child]) -> None:
    summary = summarize(record, children)
    status = record.status
    if status not in TERMINAL_STATUSES:
        succeeded = any(child.status == JobStatus.SUCCEEDED for child in children.values())
        status = JobStatus.SUCCEEDED.value if succeeded else JobStatus.FAILED.value
    alias_status = None
    if status == JobStatus.SUCCEEDED and record.alias and summary["best"]:
        alias_status = set_sweep_alias(store, record, summary["best"]["model_id"])
    _write(
        store,
        record.id,
        status=status,
        result=summary,
        finished_at=record.finished_at or utc_now(),
        alias_status=alias_status,
    )
    store.redis.srem(keys.sweeps_active(), record.id)
    for job_id in record.job_ids():
        store.blobs.delete(state_blob(job_id))
    logger.info("sweep %s %s", record.id, status)


def _sweep_lock(store: Store, sweep_id: str) -> Lock:
    """The sweep's lock (a waiter polls it every `_LOCK_POLL_SECONDS`: a worker waits on another's short
    decision, not on redis-py's default tenth of a second)."""
    return Lock(
        store.redis,
        keys.sweep_lock(sweep_id),
        timeout=_LOCK_SECONDS,
        sleep=_LOCK_POLL_SECONDS,
        blocking_timeout=_LOCK_WAIT_SECONDS,
    )


def advance_sweep(store: Store, sweep_id: str) -> None:
    """Move the sweep on if all children of its current rung ended: the next rung, or the final result.

    A first look without the lock returns at once while a child of the rung is active: the child that ends
    last sees every other child's end, so only the rung's last calls take the lock and read every child.
    """
    record = get_sweep(store.redis, sweep_id)
    if record is None or record.result is not None or not _rung_ended(store, record):
        return
    with _sweep_lock(store, sweep_id):
        record = get_sweep(store.redis, sweep_id)
        if record is None or record.result is not None or not _rung_ended(store, record):
            return
        children = _children(store, record)
        if record.status in TERMINAL_STATUSES or not _next_rung(store, record, children):
            _finish(store, record, children)


def advance_sweeps(store: Store) -> int:
    """`advance_sweep` for every unfinished sweep (the reaper's safety net); returns how many it looked at."""
    ids = sorted(raw.decode() for raw in store.redis.smembers(keys.sweeps_active()))  # type: ignore[union-attr]
    for sweep_id in ids:
        try:
            advance_sweep(store, sweep_id)
        except Exception:
            logger.exception("sweep %s: could not advance", sweep_id)
    return len(ids)


def cancel_sweep(store: Store, sweep_id: str, *, queue_name: str) -> None:
    """Mark the sweep canceled (no new rung starts) and cancel its queued and running children."""
    with _sweep_lock(store, sweep_id):
        record = get_sweep(store.redis, sweep_id)
        if record is None:
            raise NotFoundError(f"sweep {sweep_id} not found")
        if record.status in TERMINAL_STATUSES:
            return
        _write(store, sweep_id, status=JobStatus.CANCELED.value, finished_at=utc_now())
        for job_id in record.job_ids():
            job = store.get_job(job_id, with_history=False)
            if job is not None and JobStatus(job.status) in ACTIVE_STATUSES:
                try:
                    cancel_job(store.redis, store, job_id, queue_name=queue_name)
                except NotFoundError:
                    continue
    advance_sweep(store, sweep_id)


def delete_sweep(store: Store, sweep_id: str) -> bool:
    """Remove a finished sweep's record (its children stay, and their models); False when there was none."""
    record = get_sweep(store.redis, sweep_id)
    if record is None:
        return False
    if record.result is None:
        raise SweepNotFinishedError(sweep_id, record.status if record.status in TERMINAL_STATUSES else "running")
    with store.redis.pipeline() as pipe:
        pipe.delete(keys.sweep(sweep_id))
        pipe.zrem(keys.sweeps(), sweep_id)
        if record.owner is not None:
            pipe.zrem(keys.sweeps_of(record.owner), sweep_id)
        pipe.srem(keys.sweeps_active(), sweep_id)
        pipe.execute()
    return True
