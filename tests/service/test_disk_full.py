"""A full disk: uploads answer 507 and store nothing; a checkpoint that cannot be written is counted, and the
job trains on."""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from tests.service.conftest import blobs_csv, upload_csv
from worker import blobs


def _disk_full(fd: int, data: bytes) -> None:
    os.write(fd, data[:100])
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def _files(root: Path) -> list[Path]:
    return [path for path in root.rglob("*") if path.is_file()] if root.exists() else []


def test_create_dataset_full_disk_is_507_and_stores_nothing(
    client: TestClient, data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(blobs, "write_fd", _disk_full)
    csv = upload_csv(client, blobs_csv(n_per_class=4), name="full")
    as_json = client.post("/v1/datasets", json={"features": [[0.0], [1.0]], "labels": [0, 1]})
    for response in (csv, as_json):
        assert response.status_code == 507, response.text
        error = response.json()["error"]
        assert error["code"] == "insufficient_storage"
        assert "disk is full" in error["message"] and "nothing was stored" in error["message"]
    assert client.get("/v1/datasets").json()["total"] == 0
    assert _files(data_dir / "blobs") == []

    monkeypatch.undo()  # room again: the same upload is stored
    assert upload_csv(client, blobs_csv(n_per_class=4), name="full").status_code == 201


def test_checkpoint_write_failure_is_counted_and_training_goes_on(
    client: TestClient, data_dir: Path, run_worker: Callable[[], None]
) -> None:
    # a file where the checkpoint directory should be: every checkpoint write fails with a real OSError
    (data_dir / "blobs").mkdir(parents=True, exist_ok=True)
    (data_dir / "blobs" / "checkpoints").write_bytes(b"")
    dataset_id = upload_csv(client, blobs_csv(n_per_class=4)).json()["id"]
    spec = {"dataset_id": dataset_id, "hidden_layers": [4], "epochs": 4}
    job_id = client.post("/v1/jobs", json=spec).json()["id"]
    run_worker()  # checkpoints after every epoch

    job = client.get(f"/v1/jobs/{job_id}").json()
    assert job["status"] == "succeeded", job
    assert job["history_total"] == 4 and job["model_id"]
    match = re.search(r"^backprop_checkpoint_failures_total (\S+)$", client.get("/metrics").text, re.MULTILINE)
    assert match and float(match.group(1)) == 3  # epochs 1-3 (the last epoch is not checkpointed)
