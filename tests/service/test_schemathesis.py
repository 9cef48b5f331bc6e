"""Schemathesis (all checks, all phases, deterministic) against the API served by uvicorn on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from rq import Queue, Worker
from rq.serializers import JSONSerializer

from backprop.embedded_redis import free_port
from tests.service.conftest import ClientFactory

ADMIN_KEY = "schemathesis-admin-key"


def config(*, keys: bool) -> str:
    """Schemathesis' configuration: with keys, an admin key on every request (the `ignored_auth` check sends
    requests without it and expects 401); without keys, no header at all.

    The schema cannot say which bytes make a valid CSV, or how many features a model expects: for these
    operations a schema-valid request may rightly get a 422 naming the row, column or field (and a 404 for a
    dataset id the generator made up, a 409/429 for a job the queue refuses)."""
    refused = ["2xx", "404", "409", "422", "429"] + (["401", "403"] if keys else [])
    headers = f'headers = {{ Authorization = "Bearer {ADMIN_KEY}" }}\n' if keys else ""
    return f"""
{headers}
[generation]
max-examples = 20
deterministic = true

[[operations]]
include-path = ["/v1/datasets", "/v1/jobs"]
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = {refused!r}

# a trained model (2 features) so predictions run through the engine
[[operations]]
include-path = "/v1/models/{{model_id}}/predict"
include-method = "POST"
parameters = {{ model_id = "seeded" }}
checks.positive_data_acceptance.expected-statuses = {refused!r}

[[operations]]
include-path = "/v1/models/{{model_id}}"
include-method = "GET"
parameters = {{ model_id = "seeded" }}

# an alias' version is a strict JSON integer (834.0 is refused with 422, as for a job's options); a made-up
# dataset id is a 404, a version the model lacks too
[[operations]]
include-path = ["/v1/models/{{model_id}}/evaluate", "/v1/models/{{name}}/aliases/{{alias}}"]
include-method = ["POST", "PUT"]
parameters = {{ model_id = "seeded", name = "seeded" }}
checks.positive_data_acceptance.expected-statuses = {refused!r}

# the Open Inference Protocol answers a request its shape cannot tell is wrong (a tensor's shape, name or
# datatype) with 400
[[operations]]
include-path-regex = "^/v2/models/.*/infer$"
include-method = "POST"
parameters = {{ name = "seeded" }}
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404", "409"]
"""


@pytest.fixture(params=[True, False], ids=["with-keys", "without-keys"])
def keys(request: pytest.FixtureRequest) -> bool:
    """Whether the API under test has API keys configured."""
    return bool(request.param)


@pytest.fixture()
def api_url(
    redis_url: str, data_dir: Path, make_client: ClientFactory, run_worker: Callable[[], None], keys: bool
) -> Iterator[str]:
    """The API as `uvicorn --factory service.main:create_app` (with API keys or without), a trained model
    named `seeded`, and one live RQ worker."""
    api_keys = f"{ADMIN_KEY}:admin,schemathesis-user-key:user" if keys else ""
    seeding = make_client(api_keys=api_keys)
    headers = {"Authorization": f"Bearer {ADMIN_KEY}"} if keys else {}
    # two features, like the predict example in the OpenAPI document
    features = [[0.0, 0.1], [0.1, 0.0], [1.0, 0.9], [0.9, 1.0], [0.0, 0.0], [1.0, 1.0]]
    dataset = {"features": features, "labels": [0, 0, 1, 1, 0, 1]}
    dataset_id = seeding.post("/v1/datasets", json=dataset, headers=headers).json()["id"]
    job = {"dataset_id": dataset_id, "name": "seeded", "hidden_layers": [4], "epochs": 2}
    assert seeding.post("/v1/jobs", json=job, headers=headers).status_code == 202
    run_worker()
    assert seeding.get("/v1/models/seeded", headers=headers).status_code == 200
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "BACKPROP_DATA_DIR": str(data_dir),
        "BACKPROP_API_KEYS": api_keys,
        "BACKPROP_MAX_EPOCHS": "5",
        "LOG_LEVEL": os.environ.get("SHOW_ST_LOG_LEVEL", "WARNING"),
    }
    command = [sys.executable, "-m", "uvicorn", "--factory", "service.main:create_app"]
    process = subprocess.Popen(
        [*command, "--host", "127.0.0.1", "--port", str(port), "--no-access-log"], env=env
    )
    url = f"http://127.0.0.1:{port}"
    connection = redis.Redis.from_url(redis_url)
    # a registered worker makes /readyz 200; it takes no jobs, so nothing trains during the run
    worker = Worker(
        [Queue("training", connection=connection, serializer=JSONSerializer)], connection=connection
    )
    worker.register_birth()  # type: ignore[no-untyped-call]
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or process.poll() is not None:
                raise RuntimeError("the API did not start")
            time.sleep(0.1)
        yield url
    finally:
        worker.register_death()  # type: ignore[no-untyped-call]
        connection.close()
        process.terminate()
        process.wait(10)


@pytest.mark.slow
def test_schemathesis_all_checks_pass(api_url: str, keys: bool, tmp_path: Path) -> None:
    config_file = tmp_path / "schemathesis.toml"
    config_file.write_text(config(keys=keys))
    st = Path(sys.executable).with_name("st")
    result = subprocess.run(
        [
            str(st),
            "--config-file",
            str(config_file),
            "run",
            f"{api_url}/openapi.json",
            "--checks",
            "all",
            "--phases",
            "examples,coverage,fuzzing,stateful",
            "--generation-deterministic",
            "--max-examples",
            "20",
            "--no-color",
            "--request-timeout",
            "10",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-15000:] + result.stderr[-3000:]
    if os.environ.get("SHOW_ST"):
        print(result.stdout)
