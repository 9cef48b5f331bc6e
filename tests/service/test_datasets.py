"""POST/GET/DELETE /v1/datasets over HTTP: CSV, NPZ and JSON uploads and every rejection."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from redis import Redis

from service.settings import Settings
from tests.service.conftest import blobs_csv, npz_bytes, upload_csv
from worker import Store


def test_upload_csv_returns_summary(client: TestClient) -> None:
    response = upload_csv(client, blobs_csv(n_per_class=5))
    assert response.status_code == 201, response.text
    body = response.json()
    assert set(body) == {"id", "name", "n_samples", "n_features", "classes", "created_at"}
    assert (body["n_samples"], body["n_features"]) == (15, 3)
    assert body["classes"] == {"0": 5, "1": 5, "2": 5}
    assert body["name"] == "data"
    assert client.get(f"/v1/datasets/{body['id']}").json() == body


def test_upload_csv_label_column_bom_crlf_quotes(client: TestClient) -> None:
    data = '\ufeffkind,"a",b\r\n"cat",1,"2"\r\ndog,3,4\r\ncat,5,6\r\n'.encode()
    response = upload_csv(client, data, label_column="kind")
    assert response.status_code == 201, response.text
    assert response.json()["classes"] == {"cat": 2, "dog": 1}
    assert response.json()["n_features"] == 2


def test_upload_npz(client: TestClient) -> None:
    data = npz_bytes(X=np.arange(12.0).reshape(6, 2), y=np.array(["a", "b"] * 3))
    response = client.post("/v1/datasets", files={"file": ("d.npz", data, "application/octet-stream")})
    assert response.status_code == 201, response.text
    assert response.json()["classes"] == {"a": 3, "b": 3}
    assert response.json()["name"] == "d"


def test_upload_json(client: TestClient) -> None:
    body = {"features": [[0.0, 1.0], [1.0, 0.0], [2.0, 2.0]], "labels": ["1", 2, 1], "name": "tiny"}
    response = client.post("/v1/datasets", json=body)
    assert response.status_code == 201, response.text
    assert response.json()["classes"] == {"1": 2, "2": 1}
    assert response.json()["name"] == "tiny"


@pytest.mark.parametrize(
    ("data", "fragments"),
    [
        (b"a,b,label\n1,2,0\n1,2\n", ["row 2", "column 3"]),
        (b"a,b,label\n1,2,0\n1,abc,1\n", ["row 2", "column 'b'"]),
        (b"a,b,label\n1,2,0\nNaN,2,1\n", ["row 2", "column 'a'"]),
        (b"a,b,label\n1,2,0\n1,-inf,1\n", ["row 2", "column 'b'"]),
        (b"", ["empty file"]),
        (b"a,b,label\n1,2,0\n3,4,0\n", ["only one class"]),
    ],
)
def test_upload_malformed_csv_is_422_naming_row_and_column(
    client: TestClient, data: bytes, fragments: list[str]
) -> None:
    response = upload_csv(client, data)
    assert response.status_code == 422
    error = response.json()["error"]
    for fragment in fragments:
        assert fragment in error["message"]
    assert error["details"]


def test_upload_npz_object_array_is_422(client: TestClient) -> None:
    y = np.array([{"a": 1}, {"b": 2}], dtype=object)
    response = client.post("/v1/datasets", files={"file": ("d.npz", npz_bytes(X=np.zeros((2, 2)), y=y))})
    assert response.status_code == 422
    assert "object arrays" in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"features": [[0.0, True], [1.0, 0.0]], "labels": [0, 1]}, "features[0][1]"),
        ({"features": [[0.0, 1.0], [1.0, 0.0]], "labels": [0, True]}, "labels[1]"),
        ({"features": [[0.0, 1.0], [1.0, "x"]], "labels": [0, 1]}, "features[1][1]"),
        ({"features": [[0.0, 1.0], [1.0, 0.0]], "labels": [0, 1], "extra": 1}, "extra"),
        ({"features": [[0.0, 1.0], [1.0]], "labels": [0, 1]}, "features[1]"),
        ({"labels": [0, 1]}, "features"),
    ],
)
def test_upload_json_rejections_name_the_field(client: TestClient, body: dict[str, object], field: str) -> None:
    response = client.post("/v1/datasets", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["details"][0]["field"] == field


def test_upload_json_nan_and_bad_json_are_422(client: TestClient) -> None:
    headers = {"content-type": "application/json"}
    nan = client.post("/v1/datasets", content=b'{"features": [[NaN], [1]], "labels": [0, 1]}', headers=headers)
    assert nan.status_code == 422
    assert nan.json()["error"]["details"][0]["field"] == "features[0][0]"
    broken = client.post("/v1/datasets", content=b'{"features": [[', headers=headers)
    assert broken.status_code == 422


def test_upload_needs_a_file_or_json(client: TestClient) -> None:
    missing = client.post("/v1/datasets", data={"label_column": "x"}, files={"other": ("a", b"1")})
    assert missing.status_code == 422
    assert missing.json()["error"]["details"][0]["field"] == "file"
    text = client.post("/v1/datasets", content=b"a,b\n1,2\n", headers={"content-type": "text/csv"})
    assert text.status_code == 415


def test_upload_too_large_is_413(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_upload_bytes=1000)
    response = upload_csv(client, blobs_csv(n_per_class=50))
    assert response.status_code == 413
    assert "max_upload_bytes=1000" in response.json()["error"]["message"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while reading
        for _ in range(30):
            yield b'{"features": [[1.0, 2.0], [3.0, 4.0]], "labels": [0, 1]}   '

    streamed = client.post("/v1/datasets", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413
    assert streamed.json()["error"]["code"] == "payload_too_large"


def test_upload_row_limit_names_the_limit(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_rows=10)
    response = upload_csv(client, blobs_csv(n_per_class=5))
    assert response.status_code == 422
    assert "max_rows=10" in response.json()["error"]["message"]


def test_datasets_list_read_delete_and_404(client: TestClient) -> None:
    first = upload_csv(client, blobs_csv(n_per_class=3)).json()
    second = upload_csv(client, blobs_csv(n_per_class=4)).json()
    listing = client.get("/v1/datasets").json()
    assert [d["id"] for d in listing["items"]] == [second["id"], first["id"]]
    assert listing["total"] == 2
    assert [d["id"] for d in client.get("/v1/datasets", params={"limit": 1, "offset": 1}).json()["items"]] == [
        first["id"]
    ]
    assert client.delete(f"/v1/datasets/{first['id']}").status_code == 204
    missing = client.get(f"/v1/datasets/{first['id']}")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    assert client.delete(f"/v1/datasets/{first['id']}").status_code == 404
    assert client.get("/v1/datasets", params={"limit": 0}).status_code == 422


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    data=st.binary(max_size=300) | st.text(alphabet='01,.-"\r\nab', max_size=120).map(str.encode),
    filename=st.sampled_from(["d.csv", "d.npz", "d"]),
)
def test_upload_any_bytes_is_201_or_4xx(client: TestClient, data: bytes, filename: str) -> None:
    response = client.post("/v1/datasets", files={"file": (filename, data)})
    assert response.status_code == 201 or response.status_code in (400, 413, 415, 422), response.text
    if response.status_code != 201:
        assert response.json()["error"]["message"]


# --- large uploads: JSON limit and parsing off the event loop, compact storage, exact CSV messages -------


def test_json_body_over_max_json_bytes_is_413_before_parsing(make_client: Callable[..., TestClient]) -> None:
    client = make_client(max_json_bytes=2000)
    body = json.dumps({"features": [[0.5, 1.5]] * 200, "labels": [0, 1] * 100}).encode()
    for path in ("/v1/datasets", "/v1/models/no-such-model/predict"):
        response = client.post(path, content=body, headers={"content-type": "application/json"})
        assert response.status_code == 413, (path, response.text)
        assert "max_json_bytes=2000" in response.json()["error"]["message"]
    csv_upload = upload_csv(client, blobs_csv(n_per_class=50))  # a file upload keeps max_upload_bytes
    assert csv_upload.status_code == 201, csv_upload.text


def test_upload_large_json_errors_name_the_exact_item(client: TestClient) -> None:
    features: list[list[object]] = [[0.25, 1.0]] * 9000
    features = [*features[:7000], [0.25, "x"], *features[7001:]]
    labels: list[object] = [0, 1] * 4500
    labels[8500] = True
    body = json.dumps({"features": features, "labels": labels}).encode()  # validated in chunks
    response = client.post("/v1/datasets", content=body, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    fields = [detail["field"] for detail in response.json()["error"]["details"]]
    assert fields == ["features[7000][1]", "labels[8500]"]
    good = json.dumps({"features": [[float(i % 7), 1.0] for i in range(9000)], "labels": [0, 1] * 4500})
    created = client.post("/v1/datasets", content=good, headers={"content-type": "application/json"})
    assert created.status_code == 201, created.text
    assert created.json()["n_samples"] == 9000


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_upload_stores_features_as_dataset_dtype(
    make_client: Callable[..., TestClient], redis_url: str, data_dir: Path, dtype: str
) -> None:
    client = make_client(dataset_dtype=dtype)
    csv_id = upload_csv(client, blobs_csv(n_per_class=5)).json()["id"]
    npz = npz_bytes(X=np.ones((4, 2), dtype=np.int8), y=np.array([0, 1, 0, 1]))
    npz_id = client.post("/v1/datasets", files={"file": ("d.npz", npz)}).json()["id"]
    json_id = client.post("/v1/datasets", json={"features": [[1.0], [2.0]], "labels": [0, 1]}).json()["id"]
    store = Store(Redis.from_url(redis_url), data_dir / "blobs")
    for dataset_id in (csv_id, npz_id, json_id):
        X, _ = store.load_dataset(dataset_id)
        assert X.dtype == np.dtype(dtype)


def test_upload_large_csv_bad_cell_near_the_end_is_named_exactly(client: TestClient) -> None:
    rows = [f"{i % 97 / 10},{i % 13},{'ab'[i % 2]}" for i in range(200_000)]
    rows[199_000] = "1.5,oops,a"
    data = ("a,b,label\n" + "\n".join(rows) + "\n").encode()
    response = upload_csv(client, data)
    assert response.status_code == 422
    assert response.json()["error"]["message"] == "row 199001 (line 199002), column 'b' (#2): 'oops' is not a number"


@contextmanager
def _serving(app: object) -> Iterator[str]:
    """`app` served by uvicorn on a free port in a thread (TestClient cannot send two requests at once)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


def test_healthz_answers_while_a_50_mb_json_body_is_parsed(redis_url: str, data_dir: Path) -> None:
    from service.main import create_app

    rows = 500_000  # about 52 MB of JSON
    row = "[0.1234567, 1.2345678, 2.3456789, 3.4567891, 4.5678912, 5.6789123, 6.7891234, 7.8912345, 8.9123456]"
    body = '{"features": [' + ", ".join([row] * rows) + '], "labels": [' + ", ".join(["0", "1"] * (rows // 2))
    body = (body + "]}").encode()
    assert len(body) > 50_000_000
    settings = Settings(redis_url=redis_url, data_dir=data_dir, max_json_bytes=64 * 1024 * 1024)
    with _serving(create_app(settings)) as url:
        upload: dict[str, int] = {}

        def send() -> None:
            response = httpx.post(
                f"{url}/v1/datasets", content=body, headers={"content-type": "application/json"}, timeout=600
            )
            upload["status"] = response.status_code

        sender = threading.Thread(target=send)
        sender.start()
        answered = 0
        while sender.is_alive():
            assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200  # generous: the target is 0.2 s
            answered += 1
            time.sleep(0.05)
        sender.join()
    assert upload["status"] == 201
    assert answered >= 2
