"""LocalStack: a throwaway `backprop serve` in a temporary directory, stopped and removed on exit."""

from __future__ import annotations

import httpx
import pytest

from backprop.local_stack import LocalStack
from tests.processes import pid_alive

pytestmark = pytest.mark.slow


def test_local_stack_serves_with_api_keys_then_leaves_nothing_behind() -> None:
    with LocalStack(workers=2, api_keys={"secret-key-1": "user"}) as stack:
        assert stack.data_dir.is_dir()
        assert set(stack.worker_pids()) == {"worker-1", "worker-2"}
        tree = stack.tree()
        assert httpx.get(f"{stack.url}/v1/jobs").status_code == 401
        headers = {"Authorization": "Bearer secret-key-1"}
        assert httpx.get(f"{stack.url}/v1/jobs", headers=headers).status_code == 200
    assert stack.process is not None and stack.process.returncode == 0
    assert [pid for pid in tree if pid_alive(pid)] == []
    assert not stack.data_dir.exists()

