"""The supervisor behind `backprop serve`, on real child processes."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from backprop.supervisor import ProcessChild, RestartPolicy, Supervisor, descendants, worker_blas_threads
from tests.processes import pid_alive

FAST = RestartPolicy(first_delay=0.05, max_delay=0.4, stable_after=30.0)

# A child that appends `<name> <event>` to a file: `started` at once, then each SIGTERM it gets; it exits on
# the SIGTERM number `exit_on` (1 = a well-behaved process, 2 = RQ's warm-then-cold shutdown, 0 = never).
CHILD = """
import signal, sys, time
path, name, exit_on = sys.argv[1], sys.argv[2], int(sys.argv[3])
seen = 0
def note(event):
    with open(path, "a") as f:
        f.write(f"{name} {event}\\n")
def on_term(signum, frame):
    global seen
    seen += 1
    note(f"sigterm{seen}")
    if seen == exit_on:
        sys.exit(0)
signal.signal(signal.SIGTERM, on_term)
note("started")
while True:
    time.sleep(0.05)
"""


def child(tmp_path: Path, name: str, exit_on: int = 1, **kwargs: int) -> ProcessChild:
    argv = [sys.executable, "-c", CHILD, str(tmp_path / "events"), name, str(exit_on)]
    return ProcessChild(name, argv, dict(os.environ), **kwargs)


def events(tmp_path: Path) -> list[str]:
    path = tmp_path / "events"
    return path.read_text().splitlines() if path.exists() else []


def wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def polling(supervisor: Supervisor, condition: Callable[[], bool]) -> Callable[[], bool]:
    """`condition`, checked after one round of the supervisor's loop."""

    def check() -> bool:
        supervisor.poll()
        return condition()

    return check


def test_restart_policy_doubles_then_caps() -> None:
    policy = RestartPolicy(first_delay=0.5, max_delay=15.0)
    assert [policy.delay(n) for n in range(1, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0]


def test_supervisor_restarts_killed_child(tmp_path: Path) -> None:
    worker = child(tmp_path, "worker")
    supervisor = Supervisor([[worker]], status_file=tmp_path / "status.json", policy=FAST, grace_seconds=5)
    supervisor.start()
    try:
        first = worker.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        wait_for(polling(supervisor, lambda: worker.pid not in (None, first)))
        assert worker.restarts == 1
        status = json.loads((tmp_path / "status.json").read_text())
        assert status["children"]["worker"] == {"pid": worker.pid, "restarts": 1}
        assert status["pid"] == os.getpid()
    finally:
        supervisor.stop()
    assert not (tmp_path / "status.json").exists()
    assert not worker.running()


def test_supervisor_backs_off_a_crash_loop(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    crashing = ProcessChild("api", [sys.executable, "-c", "raise SystemExit(3)"], dict(os.environ))
    supervisor = Supervisor([[crashing]], policy=FAST)
    caplog.set_level(logging.WARNING, logger="backprop.supervisor")
    supervisor.start()
    try:
        wait_for(polling(supervisor, lambda: crashing.restarts >= 5))
    finally:
        supervisor.stop()
    delays = [
        float(match[1])
        for record in caplog.records
        if (match := re.search(r"api exited \(status 3\).*restarting in ([0-9.]+)s", record.getMessage()))
    ]
    assert delays[:5] == [0.05, 0.1, 0.2, 0.4, 0.4]


def test_supervisor_stops_tiers_in_reverse_order(tmp_path: Path) -> None:
    redis, api = child(tmp_path, "redis"), child(tmp_path, "api")
    workers = [child(tmp_path, "worker-1"), child(tmp_path, "worker-2")]
    supervisor = Supervisor([[redis], workers, [api]], policy=FAST, grace_seconds=10)
    supervisor.start()
    wait_for(lambda: len(events(tmp_path)) == 4)
    supervisor.stop()
    stopped = [line.split()[0] for line in events(tmp_path)[4:]]
    assert stopped[0] == "api"
    assert sorted(stopped[1:3]) == ["worker-1", "worker-2"]
    assert stopped[3:] == ["redis"]
    assert not any(c.running() for c in (redis, api, *workers))


def test_supervisor_forces_a_worker_after_the_grace_period(tmp_path: Path) -> None:
    # Like RQ: the first SIGTERM asks for a warm shutdown (finish the job), the second for a cold one.
    worker = child(tmp_path, "worker", exit_on=2, force_signal=signal.SIGTERM)
    supervisor = Supervisor([[worker]], policy=FAST, grace_seconds=0.3, force_seconds=10)
    supervisor.start()
    wait_for(lambda: events(tmp_path) == ["worker started"])
    supervisor.stop()
    assert events(tmp_path) == ["worker started", "worker sigterm1", "worker sigterm2"]
    assert worker.returncode() == 0


def test_supervisor_kills_a_child_that_ignores_sigterm(tmp_path: Path) -> None:
    stubborn = child(tmp_path, "api", exit_on=0)
    supervisor = Supervisor([[stubborn]], policy=FAST, grace_seconds=0.2, force_seconds=0.2)
    supervisor.start()
    wait_for(lambda: events(tmp_path) == ["api started"])
    supervisor.stop()
    assert stubborn.returncode() == -signal.SIGKILL


def test_process_child_kill_takes_its_own_process_groups_along(tmp_path: Path) -> None:
    # RQ's work-horse calls setpgrp(): killing the worker must not leave it running.
    script = (
        "import os, sys, time\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    os.setpgrp()\n"
        "    time.sleep(60)\n"
        "    os._exit(0)\n"
        f"open({str(tmp_path / 'horse')!r}, 'w').write(str(pid))\n"
        "time.sleep(60)\n"
    )
    worker = ProcessChild("worker", [sys.executable, "-c", script], dict(os.environ))
    worker.start()
    wait_for(lambda: (tmp_path / "horse").exists() and (tmp_path / "horse").read_text() != "")
    horse = int((tmp_path / "horse").read_text())
    assert worker.pid is not None and horse in descendants(worker.pid)
    worker.kill()
    wait_for(lambda: not pid_alive(horse))
    assert not worker.running()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_supervisor_stop_request_on_signal(tmp_path: Path, signum: int) -> None:
    worker = child(tmp_path, "worker")
    supervisor = Supervisor([[worker]], policy=FAST, grace_seconds=5)
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        supervisor.install_signal_handlers()
        supervisor.start()
        wait_for(lambda: events(tmp_path) == ["worker started"])
        signal.raise_signal(signum)
        supervisor.run(interval=0.01)  # returns once the handler asked to stop, after stopping children
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    assert supervisor.stopping
    assert not worker.running()
    assert events(tmp_path)[-1] == "worker sigterm1"


def test_worker_blas_threads_share_the_cores_unless_configured() -> None:
    assert worker_blas_threads(0, 2, cores=2) == 1
    assert worker_blas_threads(0, 1, cores=8) == 8
    assert worker_blas_threads(0, 4, cores=2) == 1
    assert worker_blas_threads(0, 3, cores=8) == 2
    assert worker_blas_threads(3, 4, cores=2) == 3
    assert worker_blas_threads(0, 1) == len(os.sched_getaffinity(0))
