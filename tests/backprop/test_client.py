"""`from backprop import Client` against uvicorn, real Redis and real RQ workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import redis

from backprop import (
    Client,
    Conflict,
    Dataset,
    Event,
    Forbidden,
    InvalidRequest,
    JobCanceled,
    JobFailed,
    NotFound,
    RateLimited,
    Unauthorized,
    Unavailable,
)
from backprop.embedded_redis import free_port
from service.settings import Settings
from tests.live import ApiServer, Processes, api_server, blobs, slow_options, wait_until, worker_command
from worker import Store

BACKPROP = Path(sys.executable).with_name("backprop")  # the console script of `make install`


@pytest.fixture()
def settings(redis_url: str, data_dir: Path) -> Settings:
    return Settings(redis_url=redis_url, data_dir=data_dir, reaper_interval=3600, queue_name="client-training")


@pytest.fixture()
def server(settings: Settings, processes: Processes) -> Iterator[ApiServer]:
    """The API in this process and one worker subprocess on its queue."""
    with api_server(settings) as running:
        processes.start(worker_command(settings, name="client-worker"), name="worker")
        yield running


def test_client_import_loads_no_server_package() -> None:
    code = (
        "import sys, backprop; from backprop import Client; "
        "print(','.join(sorted(m for m in ('fastapi', 'uvicorn', 'rq', 'engine', 'starlette', 'service', "
        "'worker') if m in sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_client_upload_train_wait_predict_equals_the_api(server: ApiServer, tmp_path: Path) -> None:
    X, y = blobs(n=150)
    labels = np.array(["red", "green", "blue"])[y]
    with Client(server.url) as client:
        dataset = client.upload_dataset((X, labels), name="colors")
        assert isinstance(dataset, Dataset)
        assert (dataset.n_samples, dataset.n_features, dataset.name) == (150, 4, "colors")
        assert dataset.classes == {"blue": 50, "green": 50, "red": 50}
        job = client.train(dataset, hidden_layers=(8,), epochs=5, batch_size=16)
        model = job.wait(progress=False)
        assert job.status == "succeeded" and model.id == job.model_id
        assert model.classes == ["blue", "green", "red"] and model.name == "colors"
        predictions = model.predict(X[:10])
        probabilities = model.predict_proba(X[:10])
    answer = httpx.post(f"{server.url}/v1/models/{model.id}/predict", json={"instances": X[:10].tolist()}).json()
    assert predictions.tolist() == answer["predictions"]
    np.testing.assert_array_equal(probabilities, np.asarray(answer["probabilities"]))
    assert probabilities.shape == (10, 3)
    assert predictions.tolist() == [model.classes[i] for i in probabilities.argmax(axis=1)]


def test_client_train_uploads_a_path_and_lists_what_it_made(server: ApiServer, tmp_path: Path) -> None:
    X, y = blobs(n=60)
    path = tmp_path / "blobs.csv"
    lines = (",".join(f"{v:.5f}" for v in row) + f",{label}" for row, label in zip(X, y, strict=True))
    rows = ["a,b,c,d,label", *lines]
    path.write_text("\n".join(rows) + "\n")
    with Client(server.url) as client:
        job = client.train(path, epochs=3, name="from-csv")
        model = job.wait(progress=False)
        assert [d.id for d in client.datasets()] == [job.data["dataset_id"]]
        assert [j.id for j in client.jobs(status="succeeded")] == [job.id]
        assert client.jobs(status="queued") == []
        assert [m.id for m in client.models(name="from-csv")] == [model.id]
        assert client.model("from-csv").id == model.id
        assert client.job(job.id).refresh().history == job.refresh().history
        assert len(job.history) == 3


def test_client_job_failed_carries_the_servers_reason(server: ApiServer) -> None:
    X, y = blobs(n=60)
    diverging = {"optimizer": "sgd", "learning_rate": 10, "standardize": False, "l2": 0.0, "epochs": 5}
    with Client(server.url) as client:
        job = client.train(client.upload_dataset((X * 1e6, y)), **diverging)
        with pytest.raises(JobFailed) as info:
            job.wait(progress=False)
        assert info.value.message == job.refresh().error
    assert "diverged at epoch" in info.value.message
    assert info.value.job["status"] == "failed"


def test_client_events_stream_then_end(server: ApiServer) -> None:
    X, y = blobs(n=60)
    with Client(server.url) as client:
        job = client.train(client.upload_dataset((X, y)), epochs=6, batch_size=16)
        events = list(job.events())
        resumed = list(job.events(after=4))
    assert [e.id for e in events if e.event == "progress"] == [1, 2, 3, 4, 5, 6]
    assert events[-1] == Event("end", job.data)
    assert job.status == "succeeded"
    assert [e.id for e in resumed if e.event == "progress"] == [5, 6]


def test_client_errors_map_to_exceptions(settings: Settings, tmp_path: Path) -> None:
    keyed = settings.model_copy(
        update={"api_keys": "alice:user,root:admin", "metrics_public": False, "max_queued_jobs_per_key": 1}
    )
    X, y = blobs(n=30)
    with api_server(keyed) as server, Client(server.url, api_key="alice") as client:
        with pytest.raises(NotFound) as not_found:
            client.job("no-such-job")
        assert (not_found.value.status, not_found.value.code) == (404, "not_found")
        assert "no-such-job" in not_found.value.message
        with pytest.raises(Unauthorized), Client(server.url, api_key="wrong") as stranger:
            stranger.datasets()
        with pytest.raises(Forbidden):
            client.request("GET", "/metrics")
        dataset = client.upload_dataset((X, y))
        with pytest.raises(InvalidRequest) as invalid:
            client.train(dataset, epochs=0)
        assert invalid.value.status == 422
        assert [detail["field"] for detail in invalid.value.details] == ["epochs"]
        job = client.train(dataset, epochs=2)  # no worker: it stays queued
        with pytest.raises(RateLimited) as limited:
            client.train(dataset, epochs=2)
        assert limited.value.status == 429 and "max_queued_jobs_per_key" in limited.value.message
        with pytest.raises(TimeoutError):
            job.wait(progress=False, timeout=1.0)
        job.cancel()
        assert job.status == "canceled"
        with pytest.raises(Conflict):
            job.cancel()
        with pytest.raises(JobCanceled):
            job.wait(progress=False)
    with pytest.raises(Unavailable), Client(f"http://127.0.0.1:{free_port()}", retries=1) as nobody:
        nobody.datasets()


def _api_process(processes: Processes, settings: Settings, port: int) -> subprocess.Popen[bytes]:
    env = {
        "BACKPROP_REDIS_URL": settings.redis_url,
        "BACKPROP_DATA_DIR": str(settings.data_dir),
        "BACKPROP_QUEUE_NAME": settings.queue_name,
        "BACKPROP_REAPER_INTERVAL": "3600",
    }
    process = processes.start([str(BACKPROP), "api", "--port", str(port)], name=f"api-{port}", env=env)

    def ready() -> bool:
        assert process.poll() is None, processes.log(f"api-{port}")
        try:
            return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(ready, timeout=60, what="backprop api")
    return process


@pytest.mark.slow
def test_client_wait_resumes_after_the_api_process_restarts(settings: Settings, processes: Processes) -> None:
    port = free_port()
    api = _api_process(processes, settings, port)
    env = {
        "BACKPROP_REDIS_URL": settings.redis_url,
        "BACKPROP_DATA_DIR": str(settings.data_dir),
        "BACKPROP_QUEUE_NAME": settings.queue_name,
        "BACKPROP_PROGRESS_MIN_INTERVAL": "0",
    }
    processes.start([str(BACKPROP), "worker"], name="worker", env=env)
    store = Store(redis.Redis.from_url(settings.redis_url), settings.blobs)
    X, y = blobs(n=600)
    client = Client(f"http://127.0.0.1:{port}")
    job = client.train(client.upload_dataset((X, y)), **slow_options(10_000))
    outcome: dict[str, Any] = {}
    seen: list[Event] = []

    def wait() -> None:
        try:
            job.wait(progress=False)
        except Exception as exc:  # the assertion below shows what it was
            outcome["error"] = exc

    waiting = threading.Thread(target=wait, daemon=True)
    waiting.start()
    thread = threading.Thread(target=lambda: seen.extend(client.job(job.id).events()), daemon=True)
    thread.start()
    wait_until(lambda: len(seen) >= 4, timeout=120, what="the first epochs at the client")
    os.kill(api.pid, signal.SIGKILL)
    api.wait(timeout=10)
    before = len(seen)
    _api_process(processes, settings, port)
    wait_until(lambda: len(seen) >= before + 3, timeout=120, what="epochs after the restart")
    record = store.get_job(job.id, with_history=False)
    assert record is not None and record.status == "running"
    assert waiting.is_alive()
    client.job(job.id).cancel()
    thread.join(timeout=120)
    waiting.join(timeout=120)
    assert isinstance(outcome.get("error"), JobCanceled), outcome
    epochs = [event.id for event in seen if event.event == "progress"]
    assert epochs == list(range(1, len(epochs) + 1))
    assert seen[-1].event == "end" and seen[-1].data["status"] == "canceled"
    client.close()


class _Flaky:
    """An HTTP answerer for the client's retry policy: 503 (or a dropped connection) `failures` times, then
    200; it counts what reached it."""

    def __init__(self, failures: int, *, drop: type[httpx.TransportError] | None = None) -> None:
        self.failures = failures
        self.drop = drop
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request.method)
        if len(self.calls) <= self.failures:
            if self.drop is not None:
                raise self.drop("dropped", request=request)
            body = {"error": {"code": "service_unavailable", "message": "redis is down", "details": []}}
            return httpx.Response(503, json=body, headers={"Retry-After": "0"})
        return httpx.Response(200, json={"id": "j1", "status": "queued"})


def _offline(answerer: _Flaky, *, retries: int) -> Client:
    return Client("http://backprop.test", retries=retries, transport=httpx.MockTransport(answerer))


def test_client_retries_idempotent_requests_on_503_and_connection_errors() -> None:
    flaky = _Flaky(2)
    with _offline(flaky, retries=3) as client:
        assert client.job("j1").status == "queued"
    assert flaky.calls == ["GET", "GET", "GET"]
    dropped = _Flaky(2, drop=httpx.ReadError)
    with _offline(dropped, retries=3) as client:
        assert client.job("j1").id == "j1"
    assert len(dropped.calls) == 3


def test_client_retries_are_bounded() -> None:
    flaky = _Flaky(10)
    with _offline(flaky, retries=2) as client, pytest.raises(Unavailable) as info:
        client.job("j1")
    assert len(flaky.calls) == 3
    assert (info.value.status, info.value.message) == (503, "redis is down")


def test_client_never_retries_a_post_that_may_have_reached_the_server() -> None:
    flaky = _Flaky(1)
    with _offline(flaky, retries=3) as client, pytest.raises(Unavailable):
        client.train("some-dataset-id", epochs=2)
    assert flaky.calls == ["POST"]
    dropped = _Flaky(1, drop=httpx.ReadError)
    with _offline(dropped, retries=3) as client, pytest.raises(Unavailable):
        client.train("some-dataset-id", epochs=2)
    assert dropped.calls == ["POST"]
    refused = _Flaky(1, drop=httpx.ConnectError)  # never connected: nothing was sent, so it is retried
    with _offline(refused, retries=3) as client:
        assert client.train("some-dataset-id", epochs=2).id == "j1"
    assert refused.calls == ["POST", "POST"]


def _in_terminal(code: str) -> str:
    """Run Python `code` with a pseudo-terminal as stdout; everything it wrote there."""
    import pty

    controller, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-c", code], stdout=terminal, stderr=subprocess.PIPE, cwd=Path.cwd())
    os.close(terminal)
    chunks: list[bytes] = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr.decode(errors="replace")
    return b"".join(chunks).decode(errors="replace")


def test_client_wait_shows_a_progress_bar_on_a_terminal(server: ApiServer) -> None:
    X, y = blobs(n=60)
    with Client(server.url) as client:
        job = client.train(client.upload_dataset((X, y)), epochs=6, batch_size=16)
        job.wait(progress=False)
    screen = _in_terminal(
        f"from backprop import Client; model = Client({server.url!r}).job({job.id!r}).wait(); print('MODEL', model.id)"
    )
    assert "epoch 6/6" in screen and "100%" in screen
    assert "status: succeeded" in screen
    assert f"MODEL {job.model_id}" in screen
    piped = subprocess.run(
        [sys.executable, "-c", f"from backprop import Client; Client({server.url!r}).job({job.id!r}).wait()"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert piped.stdout == ""  # no bar when stdout is not a terminal


def test_client_batch_prediction_equals_predict(server: ApiServer, tmp_path: Path) -> None:
    X, y = blobs(n=90)
    labels = np.array(["red", "green", "blue"])[y]
    with Client(server.url) as client:
        dataset = client.upload_dataset((X, labels), name="colors")
        model = client.train(dataset, hidden_layers=(8,), epochs=3, batch_size=16).wait(progress=False)
        expected = model.predict(X)
        batch = model.predictions(X).wait(timeout=120, interval=0.05)
        assert batch.status == "succeeded" and batch.progress == {**batch.progress, "rows_done": 90}
        arrays = batch.result(include_input=True)
        assert arrays["predictions"].tolist() == expected.tolist()
        assert arrays["classes"].tolist() == ["blue", "green", "red"]
        np.testing.assert_array_equal(arrays["X"], X)
        path = model.predictions(dataset).wait(timeout=120, interval=0.05).download(tmp_path / "out.csv")
    lines = path.read_text().splitlines()
    assert lines[0] == "prediction,p_blue,p_green,p_red"
    assert [line.split(",")[0] for line in lines[1:]] == expected.tolist()


def test_client_promote_evaluate_verify(server: ApiServer) -> None:
    X, y = blobs(n=90)
    with Client(server.url) as client:
        dataset = client.upload_dataset((X, y), name="lifecycle")
        first = client.train(dataset, hidden_layers=(4,), epochs=2, seed=1).wait(progress=False)
        second = client.train(dataset, hidden_layers=(4,), epochs=8, seed=1).wait(progress=False)
        assert first.promote("champion")["version"] == 1
        guard = {"dataset_id": dataset.id, "metric": "log_loss", "min_delta": 1e6}
        with pytest.raises(Conflict, match="log_loss"):
            second.promote("champion", require=guard)
        assert client.model("lifecycle@champion").version == 1
        report = second.evaluate(dataset)
        assert isinstance(report, dict) and report["n_samples"] == 90
        assert [entry["id"] for entry in second.evaluations()][-1] == report["id"]
        verified = second.verify().wait(progress=False)
        assert verified.id == second.id
        assert second.verifications()[0]["match"] is True
