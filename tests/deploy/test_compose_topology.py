"""docker-compose.yml's topology without Docker: its own commands and environment, as loopback processes.

Translated as Docker would wire it: the `redis` service is the same redis-server command on a free port;
`redis` in URLs is 127.0.0.1; the `minio` service is an S3-compatible server (`rclone serve s3`) with the
same credentials over its volume; published ports are free ports; each named volume is a directory under tmp.
The api and two workers (the compose replica count) then train a job; one worker dies by SIGKILL
mid-training (with its work-horse, as when a container is killed), and the other one finishes the job.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import httpx
import numpy as np
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from rq import Worker
from sklearn.datasets import make_classification

from backprop.embedded_redis import find_redis_server, free_port
from backprop.local_stack import clean_environment, wait_until
from backprop.supervisor import descendants
from tests.deploy.deploy_files import (
    DOCKERFILE,
    command_argv,
    load_compose,
    parse_dockerfile,
    service_environment,
)
from tests.processes import pid_alive
from tests.s3server import S3Server

pytestmark = pytest.mark.slow

# Faster failure detection than the defaults, so the test does not wait minutes (RQ still adds its 60 s).
FAST_RECOVERY = {
    "BACKPROP_JOB_MONITORING_INTERVAL": "1",
    "BACKPROP_REAPER_INTERVAL": "1",
    "BACKPROP_CHECKPOINT_SECONDS": "0",
}
EPOCHS = 30


class Topology:
    """The compose services as processes; `redis` first, then the api and the workers."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.password = secrets.token_hex(16)
        self.api_key = secrets.token_hex(16)
        self.minio_user = f"minio-{secrets.token_hex(8)}"
        self.minio_password = secrets.token_hex(16)
        self.compose = load_compose(
            {
                "REDIS_PASSWORD": self.password,
                "BACKPROP_API_KEYS": f"{self.api_key}:admin",
                "MINIO_ROOT_USER": self.minio_user,
                "MINIO_ROOT_PASSWORD": self.minio_password,
            }
        )
        self.services: dict[str, Any] = self.compose["services"]
        self.redis_port = free_port()
        self.api_port = free_port()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        self.minio: S3Server | None = None

    # --- translation -------------------------------------------------------------------------------------
    def volume_dir(self, volume: str) -> Path:
        path = self.tmp_path / "volumes" / volume
        path.mkdir(parents=True, exist_ok=True)
        return path

    def translate_path(self, service: dict[str, Any], value: str) -> str:
        for mount in service.get("volumes", []):
            volume, target = str(mount).split(":")[:2]
            if value == target or value.startswith(target.rstrip("/") + "/"):
                return str(self.volume_dir(volume)) + value[len(target.rstrip("/")) :]
        return value

    def translate_url(self, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme == "http" and parts.hostname == "minio" and self.minio is not None:
            return urlunsplit(parts._replace(netloc=f"127.0.0.1:{self.minio.port}"))
        if parts.scheme != "redis" or parts.hostname != "redis":
            return value
        credentials = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        return urlunsplit(parts._replace(netloc=f"{credentials}127.0.0.1:{self.redis_port}"))

    def environment(self, name: str) -> dict[str, str]:
        service = self.services[name]
        env = clean_environment()
        for key, value in service_environment(service).items():
            env[key] = self.translate_path(service, self.translate_url(value))
        if name == "api":
            (mapping,) = service["ports"]
            container_port = str(mapping).split(":")[-1]
            assert env.get("BACKPROP_PORT", "8000") == container_port
            env["BACKPROP_PORT"] = str(self.api_port)
        env.update(FAST_RECOVERY)
        return env

    def argv(self, name: str) -> list[str]:
        """The service's command: the image's `redis-server` or the project's console script."""
        argv = command_argv(self.services[name]["command"])
        # console scripts sit beside python; redis-server is the image's, here the bundled binary
        console_script = str(Path(sys.executable).with_name(argv[0]))
        executable = find_redis_server() if argv[0] == "redis-server" else console_script
        assert Path(executable).exists(), argv[0]
        translated = [executable]
        for previous, word in itertools.pairwise(argv):
            translated.append("127.0.0.1" if previous == "--host" else word)
        return translated

    # --- processes ---------------------------------------------------------------------------------------
    def spawn(self, key: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        with (self.tmp_path / f"{key}.log").open("ab") as log:
            process = subprocess.Popen(
                argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.processes[key] = process
        return process

    def start_redis(self) -> None:
        redis_service = self.services["redis"]
        (mount,) = redis_service["volumes"]
        data = self.volume_dir(str(mount).split(":")[0])
        argv = [
            *self.argv("redis"),
            "--port",
            str(self.redis_port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(data),
        ]
        self.spawn("redis", argv, clean_environment())
        client = self.redis_client()

        def answers() -> bool:
            with contextlib.suppress(redis.ConnectionError, redis.BusyLoadingError):
                return bool(client.ping())
            return False

        wait_until(answers, 15, "redis answers PING with the password")

    def start_minio(self) -> None:
        """The minio service's credentials and volume, served by an S3-compatible server."""
        minio = self.services["minio"]
        environment = service_environment(minio)
        (mount,) = minio["volumes"]
        self.minio = S3Server(
            self.volume_dir(str(mount).split(":")[0]),
            access_key=environment["MINIO_ROOT_USER"],
            secret_key=environment["MINIO_ROOT_PASSWORD"],
        ).start()

    def start_app(self) -> None:
        self.spawn("api", self.argv("api"), self.environment("api"))
        replicas = int(self.services["worker"]["deploy"]["replicas"])
        for index in range(1, replicas + 1):
            self.spawn(f"worker-{index}", self.argv("worker"), self.environment("worker"))

    def redis_client(self) -> redis.Redis:
        return redis.Redis(port=self.redis_port, password=self.password, socket_timeout=2)

    def log(self, key: str) -> str:
        path = self.tmp_path / f"{key}.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        if self.minio is not None:
            self.minio.stop()
        for key, process in reversed(list(self.processes.items())):
            for pid in descendants(process.pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
            del self.processes[key]


@pytest.fixture()
def topology(tmp_path: Path) -> Iterator[Topology]:
    running = Topology(tmp_path)
    try:
        running.start_redis()
        running.start_minio()
        running.start_app()
        yield running
    finally:
        running.stop()


def metric(text: str, name: str, **labels: str) -> float | None:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None


def test_compose_redis_healthcheck_needs_the_password(topology: Topology) -> None:
    redis_service = topology.services["redis"]
    kind, command = redis_service["healthcheck"]["test"]
    assert kind == "CMD-SHELL"
    redis_cli = Path(find_redis_server()).with_name("redis-cli")
    # Inside the container redis-cli talks to the default port; here, to the translated one.
    shell = command.replace("redis-cli", f"{redis_cli} -p {topology.redis_port}", 1)
    env = {**clean_environment(), **service_environment(redis_service)}
    assert subprocess.run(["/bin/sh", "-c", shell], env=env, check=False).returncode == 0
    env["REDISCLI_AUTH"] = "wrong-password"
    assert subprocess.run(["/bin/sh", "-c", shell], env=env, check=False, capture_output=True).returncode != 0


def test_compose_topology_survives_a_killed_worker(topology: Topology) -> None:
    base_url = f"http://127.0.0.1:{topology.api_port}"
    headers = {"Authorization": f"Bearer {topology.api_key}"}
    client = httpx.Client(base_url=base_url, timeout=30.0, headers=headers)

    def ready() -> bool:
        assert topology.processes["api"].poll() is None, topology.log("api")
        with contextlib.suppress(httpx.TransportError):
            scrape = client.get("/metrics").text
            return client.get("/readyz").status_code == 200 and metric(scrape, "backprop_workers_alive") == 2
        return False

    wait_until(ready, 60, "api ready with both workers alive", interval=0.2)

    # The image's HEALTHCHECK command, run against the API as Docker would run it in the container.
    _, stages = parse_dockerfile(DOCKERFILE.read_text())
    (healthcheck,) = stages[-1].all("HEALTHCHECK")
    probe = json.loads(healthcheck.arguments[healthcheck.arguments.index("CMD") + 3 :].strip())
    probe_env = topology.environment("api")
    assert subprocess.run(probe, env=probe_env, check=False).returncode == 0
    probe_env["BACKPROP_PORT"] = str(free_port())  # nothing listens there: unhealthy
    assert subprocess.run(probe, env=probe_env, check=False, capture_output=True).returncode != 0

    before = client.get("/metrics").text
    assert not metric(before, "backprop_jobs", status="succeeded")

    X, y = make_classification(
        n_samples=3000, n_features=20, n_informative=10, n_classes=3, random_state=0, class_sep=2.0
    )
    response = client.post("/v1/datasets", json={"features": X.tolist(), "labels": y.tolist()})
    assert response.status_code == 201, response.text
    spec = {
        "dataset_id": response.json()["id"],
        "hidden_layers": [256, 256],
        "epochs": EPOCHS,
        "batch_size": 16,
        "seed": 3,
    }
    response = client.post("/v1/jobs", json=spec)
    assert response.status_code == 202, response.text
    job_id = response.json()["id"]

    # Kill the worker that runs the job, after a few epochs (and so a checkpoint), with its work-horse.
    def training() -> bool:
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] in ("queued", "running"), job
        return bool(job["status"] == "running" and (job.get("progress") or {}).get("epoch", 0) >= 3)

    wait_until(training, 60, "job running past epoch 3", interval=0.05)
    conn = topology.redis_client()
    (busy,) = [w for w in Worker.all(connection=conn) if w.get_current_job_id() == job_id]
    workers = {key: p for key, p in topology.processes.items() if key.startswith("worker-")}
    busy_pid = busy.pid
    assert busy_pid is not None
    (victim,) = [key for key, process in workers.items() if process.pid == busy_pid]
    victim_tree = [busy_pid, *descendants(busy_pid)]
    assert len(victim_tree) >= 2, "the busy worker has no work-horse"
    for pid in victim_tree:
        os.kill(pid, signal.SIGKILL)
    topology.processes[victim].wait()
    epoch_at_kill = client.get(f"/v1/jobs/{job_id}").json()["progress"]["epoch"]
    assert epoch_at_kill < EPOCHS, "the job finished before the kill: make it longer"

    job: dict[str, Any] = {}

    def finished() -> bool:
        nonlocal job
        job = client.get(f"/v1/jobs/{job_id}").json()
        return job["status"] in ("succeeded", "failed", "canceled")

    wait_until(finished, 180, "the surviving worker finished the job", interval=0.5)
    assert job["status"] == "succeeded", job
    assert job["attempts"] >= 2
    assert [entry["epoch"] for entry in job["history"]] == list(range(1, EPOCHS + 1))
    assert not any(pid_alive(pid) for pid in victim_tree)
    survivor = next(key for key in workers if key != victim)
    assert topology.processes[survivor].poll() is None

    response = client.post(f"/v1/models/{job['model_id']}/predict", json={"instances": X[:200].tolist()})
    assert response.status_code == 200, response.text
    assert np.mean(np.array(response.json()["predictions"]) == y[:200]) > 0.9

    blob_files = [path for path in topology.tmp_path.rglob("*.npz") if "minio-data" not in path.parts]
    assert blob_files == [], "datasets and models belong in the bucket"
    after = client.get("/metrics").text
    assert metric(after, "backprop_jobs", status="succeeded") == 1
    assert metric(after, "backprop_queue_depth") == 0
    epochs_trained = metric(after, "backprop_epochs_trained")
    assert epochs_trained is not None and epochs_trained >= EPOCHS
    client.close()
