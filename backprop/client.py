"""`from backprop import Client`: a synchronous client of the Backprop API on httpx (httpx-sse for events).

Importing it needs neither the server (FastAPI, uvicorn, RQ) nor the engine; only httpx, httpx-sse and NumPy.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from httpx_sse import connect_sse

from backprop.errors import (
    BackpropError,
    Conflict,
    Forbidden,
    InvalidRequest,
    JobCanceled,
    JobFailed,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
    error_from_response,
)

__all__ = [
    "BackpropError",
    "BatchPrediction",
    "Client",
    "Conflict",
    "Dataset",
    "Event",
    "Forbidden",
    "InvalidRequest",
    "Job",
    "JobCanceled",
    "JobFailed",
    "Model",
    "NotFound",
    "RateLimited",
    "Sweep",
    "Unauthorized",
    "Unavailable",
]

DEFAULT_URL = "http://127.0.0.1:8000"
TERMINAL = ("succeeded", "failed", "canceled")
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})
_PAGE = 500
# An event stream sends a comment at least every 15 s; a longer silence means the connection is gone.
_STREAM_READ_TIMEOUT = 45.0


@dataclass(frozen=True)
class Dataset:
    """An uploaded dataset."""

    id: str
    name: str | None
    n_samples: int
    n_features: int
    classes: dict[str, int]
    created_at: str

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Dataset:
        return cls(
            id=data["id"],
            name=data.get("name"),
            n_samples=int(data["n_samples"]),
            n_features=int(data["n_features"]),
            classes=dict(data.get("classes") or {}),
            created_at=str(data.get("created_at")),
        )


@dataclass(frozen=True)
class Event:
    """One event of a job's stream: `progress` (data: the epoch's progress, `id` the epoch), `status`
    (data: status and attempt) or `end` (data: the final job record)."""

    event: str
    data: dict[str, Any]
    id: int | None = None


class Client:
    """The Backprop API. `url` defaults to `BACKPROP_URL` (else http://127.0.0.1:8000), `api_key` to
    `BACKPROP_API_KEY`; `retries` bounds the retries of idempotent requests (503, connection errors)."""

    def __init__(
        self,
        url: str | None = None,
        api_key: str | None = None,
        timeout: float = 30.0,
        *,
        retries: int = 4,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = (url or os.environ.get("BACKPROP_URL") or DEFAULT_URL).rstrip("/")
        key = api_key if api_key is not None else os.environ.get("BACKPROP_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.timeout = timeout
        self.retries = retries
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- HTTP ----------------------------------------------------------------------------------------
    def request(self, method: str, path: str, *, idempotent: bool | None = None, **kwargs: Any) -> Any:
        """One API call; its JSON body (None if empty). Idempotent calls retry 503 and connection errors
        with bounded exponential backoff; others only retry when the connection was never made."""
        retry_all = method.upper() in _IDEMPOTENT if idempotent is None else idempotent
        for attempt in range(self.retries + 1):
            last = attempt == self.retries
            try:
                response = self.http.request(method, path, **kwargs)
            except httpx.TransportError as exc:
                never_sent = isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
                if last or not (retry_all or never_sent):
                    raise Unavailable("unreachable", f"{self.url}: {type(exc).__name__}: {exc}") from exc
                _backoff(attempt, None)
                continue
            if response.status_code == 503 and retry_all and not last:
                _backoff(attempt, response.headers.get("retry-after"))
                continue
            return _answer(response)
        raise AssertionError("unreachable")  # the loop returns or raises on its last attempt

    # --- datasets ------------------------------------------------------------------------------------
    def upload_dataset(
        self,
        source: str | os.PathLike[str] | tuple[Any, Any],
        *,
        label_column: str | None = None,
        name: str | None = None,
    ) -> Dataset:
        """Upload a CSV or NPZ file, or `(X, y)` arrays (sent as NPZ)."""
        form: dict[str, str] = {}
        if label_column is not None:
            form["label_column"] = label_column
        if name is not None:
            form["name"] = name
        if isinstance(source, tuple):
            X, y = source
            files = {"file": ("arrays.npz", _npz(X, y), "application/octet-stream")}
            return Dataset.from_dict(self.request("POST", "/v1/datasets", files=files, data=form))
        path = Path(source)
        media = "application/octet-stream" if path.suffix.lower() == ".npz" else "text/csv"
        with path.open("rb") as handle:
            files = {"file": (path.name, handle, media)}  # type: ignore[dict-item]
            return Dataset.from_dict(self.request("POST", "/v1/datasets", files=files, data=form))

    def dataset(self, dataset_id: str) -> Dataset:
        return Dataset.from_dict(self.request("GET", f"/v1/datasets/{dataset_id}"))

    def datasets(self) -> list[Dataset]:
        """Your datasets, newest first."""
        return [Dataset.from_dict(item) for item in self._pages("/v1/datasets", {})]

    # --- jobs ----------------------------------------------------------------------------------------
    def train(self, dataset: Dataset | str | os.PathLike[str], **options: Any) -> Job:
        """Submit a training job; `dataset` is a Dataset, a dataset id or a file path (uploaded first);
        `options` are the job's fields (`hidden_layers`, `epochs`, `learning_rate`, `name`, ...)."""
        if isinstance(dataset, os.PathLike) or (isinstance(dataset, str) and Path(dataset).is_file()):
            dataset = self.upload_dataset(dataset)
        dataset_id = dataset.id if isinstance(dataset, Dataset) else dataset
        body = {"dataset_id": dataset_id, **{k: _jsonable(v) for k, v in options.items()}}
        return Job(self, self.request("POST", "/v1/jobs", json=body))

    def job(self, job_id: str) -> Job:
        """A handle on an existing job (to wait for, watch or cancel)."""
        return Job(self, self.request("GET", f"/v1/jobs/{job_id}"))

    def jobs(self, status: str | None = None) -> list[Job]:
        """Your jobs, newest first; `status` filters."""
        params = {} if status is None else {"status": status}
        return [Job(self, item) for item in self._pages("/v1/jobs", params)]

    # --- sweeps --------------------------------------------------------------------------------------
    def sweep(
        self,
        dataset: Dataset | str | os.PathLike[str],
        *,
        grid: dict[str, list[Any]] | None = None,
        random: dict[str, Any] | None = None,
        seeds: list[int] | tuple[int, ...] = (0,),
        metric: str = "validation_loss",
        base: dict[str, Any] | None = None,
        early_stop: dict[str, Any] | None = None,
        alias: str | None = None,
        name: str | None = None,
    ) -> Sweep:
        """Start a sweep: one job per trial of `grid` (option -> values) or `random` (`n_trials`, `seed`,
        `space`), and per seed; `base` holds the options every trial shares."""
        if isinstance(dataset, os.PathLike) or (isinstance(dataset, str) and Path(dataset).is_file()):
            dataset = self.upload_dataset(dataset)
        body: dict[str, Any] = {
            "dataset_id": dataset.id if isinstance(dataset, Dataset) else dataset,
            "base": _jsonable(base or {}),
            "seeds": list(seeds),
            "metric": metric,
        }
        optional = {"grid": grid, "random": random, "early_stop": early_stop, "alias": alias, "name": name}
        body.update({key: _jsonable(value) for key, value in optional.items() if value is not None})
        return Sweep(self, self.request("POST", "/v1/sweeps", json=body))

    def read_sweep(self, sweep_id: str) -> Sweep:
        """A handle on an existing sweep."""
        return Sweep(self, self.request("GET", f"/v1/sweeps/{sweep_id}"))

    def sweeps(self) -> list[Sweep]:
        """Your sweeps, newest first (without their trials: `refresh()` one for them)."""
        return [Sweep(self, item) for item in self._pages("/v1/sweeps", {})]

    # --- models --------------------------------------------------------------------------------------
    def model(self, name_or_id: str) -> Model:
        """A model by id, or by name (its latest version)."""
        return Model(self, self.request("GET", f"/v1/models/{name_or_id}"))

    def models(self, name: str | None = None) -> list[Model]:
        """Your models, newest first; `name` keeps the versions of one name."""
        params = {} if name is None else {"name": name}
        return [Model(self, item) for item in self._pages("/v1/models", params)]

    def _pages(self, path: str, params: dict[str, str]) -> Iterator[dict[str, Any]]:
        offset = 0
        while True:
            page = self.request("GET", path, params={**params, "offset": offset, "limit": _PAGE})
            items: list[dict[str, Any]] = page["items"]
            yield from items
            offset += len(items)
            if not items or offset >= int(page["total"]):
                return


class _Handle:
    """A server object seen through the client: its last-read JSON record (`data`) and the client to ask again."""

    def __init__(self, client: Client, data: dict[str, Any]) -> None:
        self.client = client
        self.data = data

    @property
    def id(self) -> str:
        return str(self.data["id"])


class Job(_Handle):
    """A training job; `data` is its last known record (`refresh()` reads it again)."""

    def __repr__(self) -> str:
        return f"Job(id={self.id!r}, status={self.status!r})"

    @property
    def status(self) -> str:
        return str(self.data["status"])

    @property
    def progress(self) -> dict[str, Any] | None:
        value: dict[str, Any] | None = self.data.get("progress")
        return value

    @property
    def history(self) -> list[dict[str, Any]]:
        return list(self.data.get("history") or [])

    @property
    def model_id(self) -> str | None:
        value = self.data.get("model_id")
        return None if value is None else str(value)

    @property
    def error(self) -> str | None:
        value = self.data.get("error")
        return None if value is None else str(value)

    def refresh(self) -> Job:
        """Read the job's record again."""
        self.data = self.client.request("GET", f"/v1/jobs/{self.id}")
        return self

    def cancel(self) -> Job:
        """Cancel: a queued job never runs, a running one stops at its next epoch (Conflict if finished)."""
        self.data = self.client.request("POST", f"/v1/jobs/{self.id}/cancel")
        return self

    def events(self, after: int = 0, *, timeout: float | None = None) -> Iterator[Event]:
        """The job's events until `end`, from epoch `after` on; a dropped connection is resumed with
        `Last-Event-ID`. `timeout` (seconds) bounds the whole wait: TimeoutError after it."""
        deadline = None if timeout is None else time.monotonic() + timeout
        return _follow(self, after, deadline)

    def wait(self, progress: bool = True, timeout: float | None = None) -> Model:
        """Follow the job until it ends: its Model on success; JobFailed (the server's reason) or JobCanceled
        otherwise. With `progress` and a terminal on stdout, a live progress bar."""
        if progress and sys.stdout.isatty():
            from rich.console import Console  # rich only when a bar is shown

            from backprop.progress_display import LiveProgress

            with LiveProgress(Console(), self.id) as display:
                for event in self.events(timeout=timeout):
                    display.show(event)
        else:
            for _event in self.events(timeout=timeout):
                pass
        if self.status == "succeeded" and self.model_id is not None:
            return self.client.model(self.model_id)
        if self.status == "canceled":
            raise JobCanceled(self.data)
        raise JobFailed(self.data)


class Sweep(_Handle):
    """A hyperparameter sweep; `data` is its last known record (`refresh()` reads it again)."""

    def __repr__(self) -> str:
        return f"Sweep(id={self.id!r}, status={self.status!r})"

    @property
    def status(self) -> str:
        return str(self.data["status"])

    @property
    def finished(self) -> bool:
        """Whether the sweep ended and its result is final (every child ended)."""
        return self.status in TERMINAL and self.data.get("finished_at") is not None

    @property
    def best(self) -> dict[str, Any] | None:
        """The best trial: `trial`, `overrides`, `config`, `seed`, `metric`, `model_id`."""
        value: dict[str, Any] | None = self.data.get("best")
        return value

    def leaderboard(self) -> list[dict[str, Any]]:
        """Trials best first: `index`, `overrides`, `mean`, `std` (over seeds), `rung`, `epochs`."""
        if "leaderboard" not in self.data:
            self.refresh()
        return list(self.data["leaderboard"])

    def refresh(self) -> Sweep:
        self.data = self.client.request("GET", f"/v1/sweeps/{self.id}")
        return self

    def cancel(self) -> Sweep:
        """Cancel every queued and running child (Conflict if the sweep already ended)."""
        self.data = self.client.request("POST", f"/v1/sweeps/{self.id}/cancel")
        return self

    def delete(self) -> None:
        """Delete the finished sweep's record (its jobs and models stay)."""
        self.client.request("DELETE", f"/v1/sweeps/{self.id}")

    def wait(self, progress: bool = True, timeout: float | None = None, interval: float = 1.0) -> Sweep:
        """Poll until the sweep ended; with `progress` and a terminal on stdout, a live leaderboard table."""
        deadline = None if timeout is None else time.monotonic() + timeout
        live = _LeaderboardDisplay.start() if progress and sys.stdout.isatty() else None
        try:
            while not self.refresh().finished:
                if live is not None:
                    live.show(self.data)
                if deadline is not None and time.monotonic() >= deadline:
                    raise TimeoutError(f"sweep {self.id} still {self.status} after {timeout} s")
                time.sleep(interval)
            if live is not None:
                live.show(self.data)
        finally:
            if live is not None:
                live.stop()
        return self


@dataclass
class _LeaderboardDisplay:
    """A rich live table for `Sweep.wait` (rich is imported only when one is shown)."""

    live: Any

    @classmethod
    def start(cls) -> _LeaderboardDisplay:
        from rich.live import Live

        live = Live(refresh_per_second=2)
        live.start()
        return cls(live)

    def show(self, data: dict[str, Any]) -> None:
        from rich.table import Table

        counts = ", ".join(f"{n} {status}" for status, n in data.get("counts", {}).items() if n)
        table = Table(title=f"sweep {data['id'][:8]} {data['status']} ({counts}) - {data['metric']}")
        for column in ("rank", "trial", "overrides", "mean", "std", "epochs"):
            table.add_column(column)
        for rank, row in enumerate(data.get("leaderboard", [])[:20], start=1):
            overrides = ", ".join(f"{key}={value}" for key, value in row["overrides"].items())
            table.add_row(
                str(rank), str(row["index"]), overrides, f"{row['mean']:.4f}", f"{row['std']:.4f}", str(row["epochs"])
            )
        self.live.update(table)

    def stop(self) -> None:
        self.live.stop()


def _follow(job: Job, after: int, deadline: float | None) -> Iterator[Event]:
    """Stream events, reconnecting (bounded backoff) after a dropped connection or a server restart."""
    last = after
    failures = 0
    while True:
        try:
            for event in _stream(job.client, job.id, last, deadline):
                failures = 0
                if event.event == "progress" and event.id is not None:
                    last = event.id
                if event.event == "end":
                    job.data = event.data
                yield event
                if event.event == "end":
                    return
        except (httpx.TransportError, Unavailable) as exc:
            failures += 1
            if failures > max(job.client.retries, 1) * 5:
                raise Unavailable("stream_lost", f"event stream of job {job.id!r} lost: {exc}") from exc
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"job {job.id!r} still {job.status} after the timeout")
        _backoff(min(failures, 4), None)


def _stream(client: Client, job_id: str, after: int, deadline: float | None) -> Iterator[Event]:
    """One connection to the job's event stream; ends when the server closes it."""
    headers = {"Accept": "text/event-stream"}
    if after > 0:
        headers["Last-Event-ID"] = str(after)
    read = _STREAM_READ_TIMEOUT
    if deadline is not None:
        read = max(min(read, deadline - time.monotonic()), 0.001)
    timeout = httpx.Timeout(client.timeout, read=read)
    path = f"/v1/jobs/{job_id}/events"
    try:
        with connect_sse(client.http, "GET", path, headers=headers, timeout=timeout) as source:
            if source.response.status_code >= 400:
                source.response.read()
                _answer(source.response)
            for sse in source.iter_sse():
                if not sse.event or not sse.data:
                    continue
                event_id = int(sse.id) if sse.id and sse.id.isdigit() else None
                yield Event(sse.event, json.loads(sse.data), event_id if sse.event == "progress" else None)
    except httpx.ReadTimeout:
        if deadline is not None and time.monotonic() >= deadline:
            raise TimeoutError(f"job {job_id!r} did not end within the timeout") from None
        raise


class Model(_Handle):
    """A trained model; predictions are computed by the server."""

    def __repr__(self) -> str:
        return f"Model(id={self.id!r}, name={self.name!r}, version={self.version})"

    @property
    def name(self) -> str:
        return str(self.data["name"])

    @property
    def version(self) -> int:
        return int(self.data["version"])

    @property
    def classes(self) -> list[int | str]:
        return list(self.data["classes"])

    @property
    def n_features(self) -> int:
        return int(self.data["n_features"])

    @property
    def metrics(self) -> dict[str, Any]:
        return dict(self.data.get("metrics") or {})

    def prediction(self, X: Any) -> dict[str, Any]:
        """The server's whole answer for the rows of `X`: `predictions`, `probabilities`, `classes`, `version`."""
        instances = np.asarray(X, dtype=np.float64)
        if instances.ndim == 1:
            instances = instances.reshape(1, -1)
        body = {"instances": instances.tolist()}
        answer: dict[str, Any] = self.client.request(
            "POST", f"/v1/models/{self.id}/predict", json=body, idempotent=True
        )
        return answer

    def predict(self, X: Any) -> np.ndarray:
        """The predicted label of each row of `X` (n_samples, n_features)."""
        return np.asarray(self.prediction(X)["predictions"])

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities (n_samples, n_classes), columns in the order of `classes`."""
        return np.asarray(self.prediction(X)["probabilities"], dtype=np.float64)

    # --- after training ------------------------------------------------------------------------------
    def promote(self, alias: str, *, require: dict[str, Any] | None = None) -> dict[str, Any]:
        """Point `name@alias` at this version; with `require` ({dataset_id, metric, min_delta}) only when it
        is at least as good as the alias' holder (Conflict with both figures otherwise)."""
        body: dict[str, Any] = {"version": self.version}
        if require is not None:
            body["require"] = require
        answer: dict[str, Any] = self.client.request("PUT", f"/v1/models/{self.name}/aliases/{alias}", json=body)
        return answer

    def evaluate(self, dataset: Dataset | str) -> dict[str, Any] | Job:
        """The evaluation report on a dataset, or the evaluation Job when the dataset is too large to
        evaluate in the request (its report then appears in `evaluations()`)."""
        dataset_id = dataset.id if isinstance(dataset, Dataset) else dataset
        answer: dict[str, Any] = self.client.request(
            "POST", f"/v1/models/{self.id}/evaluate", json={"dataset_id": dataset_id}
        )
        return Job(self.client, answer) if answer.get("kind") == "evaluate" else answer

    def verify(self) -> Job:
        """Queue a verification (retrain from the receipt, compare the weights); see `verifications()`."""
        return Job(self.client, self.client.request("POST", f"/v1/models/{self.id}/verify"))

    def evaluations(self) -> list[dict[str, Any]]:
        """The stored evaluation reports, oldest first."""
        return list(self.client._pages(f"/v1/models/{self.id}/evaluations", {}))

    def verifications(self) -> list[dict[str, Any]]:
        """The stored verification results, oldest first."""
        return list(self.client._pages(f"/v1/models/{self.id}/verifications", {}))

    def predictions(
        self, source: Dataset | str | os.PathLike[str] | Any, *, label_column: str | None = None
    ) -> BatchPrediction:
        """Submit a batch prediction on the workers: `source` is a Dataset or dataset id, a CSV/NPZ file path
        (uploaded; a label column is ignored), or an array of feature rows (sent as NPZ)."""
        path = f"/v1/models/{self.id}/predictions"
        form = {} if label_column is None else {"label_column": label_column}
        if isinstance(source, Dataset) or (isinstance(source, str) and not Path(source).is_file()):
            dataset_id = source.id if isinstance(source, Dataset) else source
            return BatchPrediction(self.client, self.client.request("POST", path, json={"dataset_id": dataset_id}))
        if isinstance(source, str | os.PathLike):
            file = Path(source)
            media = "application/octet-stream" if file.suffix.lower() == ".npz" else "text/csv"
            with file.open("rb") as handle:
                files = {"file": (file.name, handle, media)}  # type: ignore[dict-item]
                return BatchPrediction(self.client, self.client.request("POST", path, files=files, data=form))
        buffer = io.BytesIO()
        np.savez(buffer, X=np.asarray(source, dtype=np.float64))
        arrays = {"file": ("features.npz", buffer.getvalue(), "application/octet-stream")}
        return BatchPrediction(self.client, self.client.request("POST", path, files=arrays))


class BatchPrediction(_Handle):
    """A batch prediction running on the workers; its result is streamed from the server."""

    def __repr__(self) -> str:
        return f"BatchPrediction(id={self.id!r}, status={self.status!r})"

    @property
    def status(self) -> str:
        return str(self.data["status"])

    @property
    def progress(self) -> dict[str, Any] | None:
        return self.data.get("progress")

    def refresh(self) -> BatchPrediction:
        self.data = self.client.request("GET", f"/v1/predictions/{self.id}")
        return self

    def cancel(self) -> BatchPrediction:
        self.data = self.client.request("POST", f"/v1/predictions/{self.id}/cancel")
        return self

    def wait(self, timeout: float | None = None, interval: float = 0.5) -> BatchPrediction:
        """Poll until it ends; JobFailed / JobCanceled when it did not succeed, TimeoutError after `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.refresh().status not in TERMINAL:
            if deadline is not None and time.monotonic() > deadline:
                raise TimeoutError(f"batch prediction {self.id} still {self.status} after {timeout} s")
            time.sleep(interval)
        if self.status == "failed":
            raise JobFailed(self.data)
        if self.status == "canceled":
            raise JobCanceled(self.data)
        return self

    def download(self, target: str | os.PathLike[str], *, format: str = "csv", include_input: bool = False) -> Path:
        """Stream the result (`csv` or `npz`) into the file `target`, never holding it whole."""
        params = {"format": format, "include_input": str(include_input).lower()}
        path = Path(target)
        with self.client.http.stream("GET", f"/v1/predictions/{self.id}/result", params=params) as response:
            if response.status_code >= 400:
                response.read()
                _answer(response)
            with path.open("wb") as handle:
                for piece in response.iter_bytes():
                    handle.write(piece)
        return path

    def result(self, *, include_input: bool = False) -> dict[str, np.ndarray]:
        """The result as arrays: `classes`, `predictions`, `probabilities` (and `X` with the input)."""
        params = {"format": "npz", "include_input": str(include_input).lower()}
        response = self.client.http.get(f"/v1/predictions/{self.id}/result", params=params)
        if response.status_code >= 400:
            _answer(response)
        with np.load(io.BytesIO(response.content), allow_pickle=False) as arrays:
            return {name: arrays[name] for name in arrays.files}


def _answer(response: httpx.Response) -> Any:
    """The JSON body of a success; the mapped exception of an error."""
    if response.status_code >= 400:
        try:
            body = response.json()
        except ValueError:
            body = None
        raise error_from_response(response.status_code, body, dict(response.headers))
    if not response.content:
        return None
    return response.json()


def _backoff(attempt: int, retry_after: str | None) -> None:
    """Sleep before retry `attempt` (0-based): exponential with jitter, capped, or the server's Retry-After
    (capped too)."""
    delay = min(0.2 * 2**attempt, 5.0) * (0.5 + random.random() / 2)
    if retry_after is not None:
        with contextlib.suppress(ValueError):
            delay = min(max(float(retry_after), 0.0), 10.0)
    time.sleep(delay)


def _npz(X: Any, y: Any) -> bytes:
    """`(X, y)` as NPZ bytes the server accepts (no object arrays: labels become text or numbers)."""
    features = np.asarray(X, dtype=np.float64)
    labels = np.asarray(y)
    if labels.dtype == object:
        labels = labels.astype(str)
    buffer = io.BytesIO()
    np.savez(buffer, X=features, y=labels)
    return buffer.getvalue()


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_jsonable(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
