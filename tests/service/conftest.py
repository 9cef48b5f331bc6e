"""Fixtures of the API tests: apps built with create_app(Settings(...)) on the session's real Redis."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.settings import Settings

ClientFactory = Callable[..., TestClient]


@pytest.fixture()
def make_client(redis_url: str, data_dir: Path) -> Iterator[ClientFactory]:
    """Build a TestClient for an app with these setting overrides (lifespan running)."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        from service.main import create_app

        settings = Settings(redis_url=redis_url, data_dir=data_dir, **overrides)
        client = TestClient(create_app(settings), raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture()
def client(make_client: ClientFactory) -> TestClient:
    """An app without API keys."""
    return make_client()


@pytest.fixture()
def run_worker(redis_url: str, data_dir: Path) -> Callable[[], None]:
    """Drain the training queue with a real RQ worker in burst mode."""
    from worker import run_worker as run

    def drain() -> None:
        run(redis_url, queue_name="training", blobs=data_dir / "blobs", burst=True, checkpoint_seconds=0.0)

    return drain


def blobs_csv(n_per_class: int = 20, seed: int = 0) -> bytes:
    """A small, separable 3-class CSV with a header row and integer labels in the last column."""
    rng = np.random.default_rng(seed)
    lines = ["x1,x2,x3,label"]
    for label, center in enumerate(([0.0, 0.0, 0.0], [4.0, 4.0, 0.0], [0.0, 4.0, 4.0])):
        for row in rng.normal(center, 0.5, size=(n_per_class, 3)):
            lines.append(",".join(f"{v:.4f}" for v in row) + f",{label}")
    return ("\n".join(lines) + "\n").encode()


def npz_bytes(**arrays: Any) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def upload_csv(client: TestClient, data: bytes, headers: dict[str, str] | None = None, **form: str) -> Any:
    return client.post(
        "/v1/datasets", files={"file": ("data.csv", data, "text/csv")}, data=form or None, headers=headers
    )
