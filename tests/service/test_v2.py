"""/v2, the Open Inference Protocol: Triton's own HTTP client against the API served by uvicorn, and the
protocol's error shape for bad requests."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from tritonclient.http import InferenceServerClient, InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException

from service.main import create_app
from service.settings import Settings
from tests.service.conftest import ClientFactory, blobs_csv, upload_csv

KEYS = "alice-key-1234:user,bob-key-5678:user"
ALICE = {"Authorization": "Bearer alice-key-1234"}
BOB = {"Authorization": "Bearer bob-key-5678"}
JOB = {"hidden_layers": [6], "epochs": 4, "batch_size": 16, "learning_rate": 0.05}
ROWS = [[0.0, 0.0, 0.0], [4.0, 4.0, 0.0], [0.0, 4.0, 4.0], [2.0, 2.0, 2.0], [0.1, 3.9, 0.2]]


@pytest.fixture()
def serve(redis_url: str, data_dir: Path) -> Iterator[Callable[..., str]]:
    """Start the API with these setting overrides under uvicorn on a free loopback port (in a thread);
    returns `host:port`."""
    running: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(**overrides: Any) -> str:
        app = create_app(Settings(redis_url=redis_url, data_dir=data_dir, **overrides))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        thread.start()
        running.append((server, thread))
        deadline = time.monotonic() + 30
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the API did not start")
            time.sleep(0.05)
        host, port = sock.getsockname()
        return f"{host}:{port}"

    yield start
    for server, thread in running:
        server.should_exit = True
        thread.join(10)


def _train(client: TestClient, run_worker: Callable[[], None], data: bytes, **job: Any) -> str:
    """Train a model of the dataset `data` named "blobs" as Alice; its id."""
    dataset = upload_csv(client, data, headers=ALICE, name="blobs").json()
    response = client.post("/v1/jobs", json={"dataset_id": dataset["id"], **JOB, **job}, headers=ALICE)
    assert response.status_code == 202, response.text
    run_worker()
    model_id: str = client.get(response.headers["Location"], headers=ALICE).json()["model_id"]
    return model_id


def _predict(client: TestClient, model_id: str, rows: list[list[float]]) -> dict[str, Any]:
    response = client.post(f"/v1/models/{model_id}/predict", json={"instances": rows}, headers=ALICE)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _input(rows: list[list[float]], datatype: str = "FP32") -> InferInput:
    tensor = InferInput("input", [len(rows), len(rows[0])], datatype)
    tensor.set_data_from_numpy(np.asarray(rows, dtype=np.float32 if datatype == "FP32" else np.float64), False)
    return tensor


def test_v2_triton_client_health_metadata_and_infer(
    make_client: ClientFactory, run_worker: Callable[[], None], serve: Callable[..., str]
) -> None:
    client = make_client(api_keys=KEYS)
    first = _train(client, run_worker, blobs_csv(), seed=1)
    latest = _train(client, run_worker, blobs_csv(), seed=2)
    triton = InferenceServerClient(serve(api_keys=KEYS))
    try:
        assert triton.is_server_live() and triton.is_server_ready()
        server = triton.get_server_metadata(headers=ALICE)
        assert server["name"] == "backprop" and server["extensions"] == []
        assert triton.is_model_ready("blobs", headers=ALICE)
        assert triton.is_model_ready("blobs", "1", headers=ALICE)
        assert not triton.is_model_ready("blobs", "3", headers=ALICE)
        assert not triton.is_model_ready("blobs", headers=BOB)  # Bob has no model of that name

        metadata = triton.get_model_metadata("blobs", headers=ALICE)
        assert metadata == {
            "name": "blobs",
            "versions": ["1", "2"],
            "platform": "backprop_numpy",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3]}],
            "outputs": [
                {"name": "label", "datatype": "INT64", "shape": [-1]},
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]},
            ],
        }
        outputs = [InferRequestedOutput("label", False), InferRequestedOutput("probabilities", False)]
        for version, model_id in (("", latest), ("1", first), ("2", latest)):
            result = triton.infer(
                "blobs", [_input(ROWS)], model_version=version, outputs=outputs, request_id="r-7", headers=ALICE
            )
            expected = _predict(client, model_id, ROWS)
            response = result.get_response()
            assert response["id"] == "r-7" and response["model_version"] == str(expected["version"])
            assert result.as_numpy("label").tolist() == expected["predictions"]
            np.testing.assert_allclose(result.as_numpy("probabilities"), expected["probabilities"], atol=1e-6)

        only = triton.infer(
            "blobs", [_input(ROWS, "FP64")], outputs=[InferRequestedOutput("probabilities", False)], headers=ALICE
        )
        assert only.as_numpy("label") is None and only.as_numpy("probabilities").shape == (5, 3)

        with pytest.raises(InferenceServerException, match=r"inputs\[0\]\.shape") as wrong:
            triton.infer("blobs", [_input([row[:2] for row in ROWS])], outputs=outputs, headers=ALICE)
        assert wrong.value.status() == "400"
        with pytest.raises(InferenceServerException, match="not found") as unknown:
            triton.infer("blobs", [_input(ROWS)], outputs=outputs, headers=BOB)
        assert unknown.value.status() == "404"
    finally:
        triton.close()


def test_v2_triton_client_string_labels_are_bytes(
    make_client: ClientFactory, run_worker: Callable[[], None], serve: Callable[..., str]
) -> None:
    client = make_client()
    data = blobs_csv().replace(b",0\n", b",red\n").replace(b",1\n", b",green\n").replace(b",2\n", b",blue\n")
    dataset = upload_csv(client, data, name="colours").json()
    job = client.post("/v1/jobs", json={"dataset_id": dataset["id"], **JOB, "seed": 0}).json()
    run_worker()
    triton = InferenceServerClient(serve())
    try:
        assert triton.get_model_metadata("colours")["outputs"][0] == {
            "name": "label",
            "datatype": "BYTES",
            "shape": [-1],
        }
        result = triton.infer("colours", [_input(ROWS)], outputs=[InferRequestedOutput("label", False)])
        model_id = client.get(f"/v1/jobs/{job['id']}").json()["model_id"]
        expected = client.post(f"/v1/models/{model_id}/predict", json={"instances": ROWS})
        assert result.as_numpy("label").tolist() == expected.json()["predictions"]
        assert set(expected.json()["predictions"]) <= {"red", "green", "blue"}
    finally:
        triton.close()


def _infer_body(rows: Any, **tensor: Any) -> dict[str, Any]:
    shape = tensor.pop("shape", [len(rows), 3])
    return {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": rows, **tensor}]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (_infer_body([[0.0, 1.0, 2.0]], name="x"), "inputs[0].name: unknown input 'x'"),
        (_infer_body([[0.0, 1.0, 2.0]], datatype="INT8"), "inputs[0].datatype: 'INT8' is not supported"),
        (_infer_body([0.0, 1.0, 2.0], shape=[1, 2]), "inputs[0].shape: [1, 2], the model expects [n, 3]"),
        (_infer_body([0.0, 1.0], shape=[1, 3]), "inputs[0].data: 2 values, shape [1, 3] needs 3"),
        (_infer_body([[0.0, 1.0]], shape=[1, 3]), "inputs[0].data[0]: 2 values, the model expects 3"),
        (_infer_body([[0.0, 1.0, 2.0], 1.0], shape=[2, 3]), "inputs[0].data: mixes numbers and lists"),
        (_infer_body([0.0, 1.0, 1e39], shape=[1, 3]), "row 0, column 2 is outside the FP32 range"),
        (_infer_body([0.0, "1", 2.0], shape=[1, 3]), "inputs[0].data[1]"),
        ({**_infer_body([[0.0, 1.0, 2.0]]), "outputs": [{"name": "logits"}]}, "outputs[0].name: unknown output"),
        ({"inputs": []}, "inputs: List should have at least 1 item"),
    ],
)
def test_v2_infer_bad_request_is_400_naming_the_field(
    make_client: ClientFactory, run_worker: Callable[[], None], body: dict[str, Any], message: str
) -> None:
    client = make_client(api_keys=KEYS, max_predict_rows=10)
    _train(client, run_worker, blobs_csv(), seed=0)
    response = client.post("/v2/models/blobs/infer", json=body, headers=ALICE)
    assert response.status_code == 400, response.text
    assert message in response.json()["error"]


def test_v2_infer_accepts_flat_and_nested_data_with_the_same_result(
    make_client: ClientFactory, run_worker: Callable[[], None]
) -> None:
    client = make_client(api_keys=KEYS, max_predict_rows=10)
    model_id = _train(client, run_worker, blobs_csv(), seed=0)
    row_major = [value for row in ROWS for value in row]
    flat = client.post("/v2/models/blobs/infer", json=_infer_body(row_major, shape=[5, 3]), headers=ALICE)
    nested = client.post("/v2/models/blobs/infer", json=_infer_body(ROWS), headers=ALICE)
    assert flat.status_code == nested.status_code == 200, flat.text
    assert flat.json() == nested.json()
    assert "id" not in flat.json()
    label, probabilities = flat.json()["outputs"]
    assert label["name"] == "label" and label["datatype"] == "INT64" and label["shape"] == [5]
    assert label["data"] == _predict(client, model_id, ROWS)["predictions"]
    assert probabilities["shape"] == [5, 3] and len(probabilities["data"]) == 15

    every = client.post("/v2/models/blobs/infer", json={**_infer_body(ROWS), "outputs": []}, headers=ALICE)
    assert [output["name"] for output in every.json()["outputs"]] == ["label", "probabilities"]
    wide = client.post("/v2/models/blobs/infer", json=_infer_body([[1e39, 0.0, 0.0]], datatype="FP64"), headers=ALICE)
    assert wide.status_code == 400  # a valid FP64 value, too large for this float32 model
    assert "row 0 is too large for this float32 model" in wide.json()["error"]

    too_many = client.post("/v2/models/blobs/infer", json=_infer_body(ROWS * 3), headers=ALICE)
    assert too_many.status_code == 400 and "max_predict_rows=10" in too_many.json()["error"]


def test_v2_errors_use_the_protocol_shape(make_client: ClientFactory, run_worker: Callable[[], None]) -> None:
    client = make_client(api_keys=KEYS)
    _train(client, run_worker, blobs_csv(), seed=0)
    body = _infer_body(ROWS)
    cases = [
        (client.get("/v2/models/nope", headers=ALICE), 404, "model 'nope' not found"),
        (client.get("/v2/models/blobs", headers=BOB), 404, "model 'blobs' not found"),
        (client.get("/v2/models/blobs/versions/9", headers=ALICE), 404, "model version 'blobs/9' not found"),
        (client.get("/v2/models/blobs/versions/x/ready", headers=ALICE), 404, "'blobs/x' not found"),
        (client.post("/v2/models/blobs/infer", json=body), 401, "missing API key"),
        (client.get("/v2", headers=BOB | {"Authorization": "Bearer nope"}), 401, "unknown API key"),
        (
            client.post("/v2/models/blobs/infer", content=b"{not json", headers=ALICE),
            400,
            "JSON decode error",
        ),
        (
            client.post(
                "/v2/models/blobs/infer",
                content=b'{"inputs": []}\x00\x00',
                headers={**ALICE, "Inference-Header-Content-Length": "14"},
            ),
            400,
            "binary tensor data is not supported",
        ),
    ]
    for response, status, message in cases:
        assert response.status_code == status, response.text
        assert set(response.json()) == {"error"} and message in response.json()["error"], response.text
    assert client.get("/v2/health/live").json() == {"live": True}  # probes need no key
    assert client.get("/v2/health/ready").json() == {"ready": True}
