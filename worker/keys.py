"""The one place where Redis key names are built. Everything of Backprop lives under `bp:`."""

from __future__ import annotations

import json

PREFIX = "bp:"


# --- datasets ------------------------------------------------------------------------------------
def dataset(dataset_id: str) -> str:
    """JSON metadata of one dataset (string)."""
    return f"{PREFIX}dataset:{dataset_id}"


def datasets() -> str:
    """All dataset ids, scored by creation time (sorted set)."""
    return f"{PREFIX}datasets"


def datasets_of(owner: str) -> str:
    """Dataset ids of one owner, scored by creation time (sorted set)."""
    return f"{PREFIX}datasets:owner:{owner}"


def usage() -> str:
    """What each owner stores: `bytes_of:`, `datasets_of:` and `models_of:` + the JSON-encoded owner (blob bytes
    of datasets and models, and their numbers), and `built` (the version of these counters, set when they were
    recounted from the records) (hash)."""
    return f"{PREFIX}usage"


def usage_field(kind: str, owner: str | None) -> str:
    """The field of `usage()` counting `kind` (`bytes`, `datasets` or `models`) of `owner`."""
    return f"{kind}_of:" + json.dumps(owner)


# --- jobs ----------------------------------------------------------------------------------------
def job(job_id: str) -> str:
    """One job record (hash; every field a JSON value)."""
    return f"{PREFIX}job:{job_id}"


def jobs() -> str:
    """All job ids, scored by creation time (sorted set)."""
    return f"{PREFIX}jobs"


def jobs_of(owner: str) -> str:
    """Job ids of one owner, scored by creation time (sorted set)."""
    return f"{PREFIX}jobs:owner:{owner}"


def job_history(job_id: str) -> str:
    """Per-epoch metrics of a job, one JSON entry per epoch (list)."""
    return f"{PREFIX}job:{job_id}:history"


def job_fence(job_id: str) -> str:
    """Fencing token of a job: incremented by every attempt; only the current attempt may write."""
    return f"{PREFIX}job:{job_id}:fence"


def job_stop(job_id: str) -> str:
    """Stop flag of a running job, seen by the worker at each epoch boundary (also the channel on which cancel
    announces it)."""
    return f"{PREFIX}job:{job_id}:stop"


def job_checkpoint(job_id: str) -> str:
    """Pointer to a job's last checkpoint blob: path, sha256, epoch (hash)."""
    return f"{PREFIX}job:{job_id}:checkpoint"


def checkpoint_failures() -> str:
    """Checkpoints the workers could not write (counter)."""
    return f"{PREFIX}checkpoint-failures"


def job_attempt_log(job_id: str) -> str:
    """How each attempt of a job started: attempt number, worker, epoch resumed from (list of JSON)."""
    return f"{PREFIX}job:{job_id}:attempt-log"


def jobs_with_status(status: str, owner: str | None = None) -> str:
    """Job ids in one status (of one owner, or everyone's), scored by creation time (sorted set)."""
    if owner is None:
        return f"{PREFIX}jobs:status:{status}"
    return f"{PREFIX}jobs:owner:{owner}:status:{status}"


def job_counts() -> str:
    """Jobs per status (fields: JSON-encoded statuses), queued jobs per owner (fields: `queued_of:` + the
    JSON-encoded owner), `epochs` (history entries of all jobs) and `built` (the version of these indexes,
    set when they were recounted from the job records) (hash)."""
    return f"{PREFIX}job-counts"


def jobs_running() -> str:
    """Ids of the jobs whose status is `running` (set)."""
    return f"{PREFIX}jobs:running"


def jobs_active() -> str:
    """Ids of the jobs whose status is `queued`, `running` or `stalled`: what the reaper looks at (set)."""
    return f"{PREFIX}jobs:active"


def queued_of(owner: str | None) -> str:
    """The field of `job_counts()` counting `owner`'s queued jobs (owner JSON-encoded, as in job records)."""
    return "queued_of:" + json.dumps(owner)


def running_of(owner: str | None) -> str:
    """The field of `job_counts()` counting `owner`'s running jobs (owner JSON-encoded, as in job records)."""
    return "running_of:" + json.dumps(owner)


# --- models --------------------------------------------------------------------------------------
def model(model_id: str) -> str:
    """One model: `meta` (JSON) and `version` (hash)."""
    return f"{PREFIX}model:{model_id}"


def models() -> str:
    """All model ids, scored by creation time (sorted set)."""
    return f"{PREFIX}models"


def models_of(owner: str) -> str:
    """Model ids of one owner, scored by creation time (sorted set)."""
    return f"{PREFIX}models:owner:{owner}"


def _lineage(owner: str | None) -> str:
    # owners are sha256 hex digests (service.auth.owner_id) or None (no authentication): "-" cannot clash
    return "-" if owner is None else owner


def model_versions(owner: str | None, name: str) -> str:
    """Model ids of one lineage (owner, name), scored by version (sorted set)."""
    return f"{PREFIX}model-lineage:{_lineage(owner)}:{name}:versions"


def model_version_counter(owner: str | None, name: str) -> str:
    """Last version handed out in a lineage (owner, name) (integer; versions are never reused)."""
    return f"{PREFIX}model-lineage:{_lineage(owner)}:{name}:counter"


def models_named(name: str) -> str:
    """Model ids of one name across all owners, scored by creation time (sorted set; admins' view)."""
    return f"{PREFIX}model-name:{name}"


# --- sweeps --------------------------------------------------------------------------------------
def sweep(sweep_id: str) -> str:
    """One sweep (hash; every field a JSON value)."""
    return f"{PREFIX}sweep:{sweep_id}"


def sweeps() -> str:
    """All sweep ids, scored by creation time (sorted set)."""
    return f"{PREFIX}sweeps"


def sweeps_of(owner: str) -> str:
    """Sweep ids of one owner, scored by creation time (sorted set)."""
    return f"{PREFIX}sweeps:owner:{owner}"


def sweeps_active() -> str:
    """Ids of the sweeps that have not finished: what the reaper advances (set)."""
    return f"{PREFIX}sweeps:active"


def sweep_lock(sweep_id: str) -> str:
    """Lock held while a sweep's next step is decided (string with a timeout)."""
    return f"{PREFIX}sweep:{sweep_id}:lock"


def model_aliases(owner: str | None, name: str) -> str:
    """Aliases of one lineage (owner, name): alias -> JSON {alias, version, model_id, updated_at, updated_by}
    (hash)."""
    return f"{PREFIX}model-lineage:{_lineage(owner)}:{name}:aliases"


def model_alias_history(owner: str | None, name: str) -> str:
    """Every move of the lineage's aliases, oldest first: JSON {alias, from, to, at, by} (list)."""
    return f"{PREFIX}model-lineage:{_lineage(owner)}:{name}:alias-history"


def model_evaluations(model_id: str) -> str:
    """Evaluation reports of one model, oldest first, one JSON entry each (list)."""
    return f"{PREFIX}model:{model_id}:evaluations"


def model_verifications(model_id: str) -> str:
    """Verification results of one model, oldest first, one JSON entry each (list)."""
    return f"{PREFIX}model:{model_id}:verifications"


def job_events(job_id: str) -> str:
    """Pub/sub channel of one job's live events: status changes and reported epochs (JSON messages)."""
    return f"{PREFIX}job:{job_id}:events"


# --- batch predictions ---------------------------------------------------------------------------
def prediction(prediction_id: str) -> str:
    """One batch-prediction record (hash; every field a JSON value)."""
    return f"{PREFIX}prediction:{prediction_id}"


def prediction_stop(prediction_id: str) -> str:
    """Stop flag of a running batch prediction, checked by the worker between row chunks."""
    return f"{PREFIX}prediction:{prediction_id}:stop"


# --- the blob store ------------------------------------------------------------------------------
def store_marker() -> str:
    """The id of the blob store this Redis belongs to, also kept as a blob (`worker.orphans.MARKER_BLOB`): the
    orphan sweep deletes nothing unless both agree (string)."""
    return f"{PREFIX}store-marker"


def orphan_sweep_lock() -> str:
    """Held by the one process sweeping orphan blobs (string with a timeout)."""
    return f"{PREFIX}orphan-sweep:lock"


def orphans_deleted() -> str:
    """Orphan blobs and temp files the sweep deleted, by kind (hash of counters)."""
    return f"{PREFIX}orphans-deleted"
