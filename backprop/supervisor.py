"""Supervision for `backprop serve`: start children in order, restart the dead ones, stop in reverse order."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from backprop.embedded_redis import RedisServer

logger = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class RestartPolicy:
    """When to restart a dead child: soon after a crash, with exponential backoff while it keeps crashing."""

    first_delay: float = 0.5
    max_delay: float = 15.0
    stable_after: float = 10.0  # a child that ran this long before dying is not in a crash loop

    def delay(self, consecutive_failures: int) -> float:
        """Seconds to wait before the next start after `consecutive_failures` quick deaths in a row."""
        exponent = max(consecutive_failures - 1, 0)
        return float(min(self.first_delay * 2**exponent, self.max_delay))


def worker_blas_threads(configured: int, workers: int, cores: int | None = None) -> int:
    """BLAS threads of each of `workers` workers sharing this machine: `configured` when above 0 (the
    BACKPROP_BLAS_THREADS setting), else max(1, cores // workers) over the cores this process may use."""
    if configured > 0:
        return configured
    available = cores if cores is not None else len(os.sched_getaffinity(0))
    return max(1, available // max(1, workers))


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """A preexec_fn asking Linux to SIGTERM the child when the supervisor dies (no orphans)."""

    def preexec() -> None:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent_pid:  # the supervisor died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def descendants(pid: int) -> list[int]:
    """Pids of all descendants of `pid` (Linux /proc; empty elsewhere or once it is gone)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        current = pending.pop()
        task_dir = Path(f"/proc/{current}/task")
        try:
            tasks = list(task_dir.iterdir())
        except OSError:
            continue
        for task in tasks:
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in children:
                found.append(int(child))
                pending.append(int(child))
    return found


def _signal_pid(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


class Child(ABC):
    """One supervised process."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.restarts = 0
        self.started_at: float | None = None
        self.consecutive_failures = 0
        self.next_start: float | None = None

    @property
    @abstractmethod
    def pid(self) -> int | None:
        """Pid of the running process, or None."""

    @abstractmethod
    def start(self) -> None:
        """Start the process (raises RuntimeError when it cannot)."""

    @abstractmethod
    def running(self) -> bool:
        """Whether the process is alive."""

    @abstractmethod
    def returncode(self) -> int | None:
        """Exit status of the last run, None while running or never started."""

    @abstractmethod
    def request_stop(self) -> None:
        """Ask the process to stop gracefully."""

    def force_stop(self) -> None:
        """Ask harder (the second step of a shutdown); by default, kill."""
        self.kill()

    @abstractmethod
    def kill(self) -> None:
        """SIGKILL the process and anything it forked."""


class ProcessChild(Child):
    """A command run as a child process in its own session, with its own environment."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        *,
        force_signal: int = signal.SIGKILL,
    ) -> None:
        super().__init__(name)
        self.argv = list(argv)
        self.env = dict(env)
        self.force_signal = force_signal
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None

    def start(self) -> None:
        preexec = _die_with_parent(os.getpid()) if sys.platform == "linux" else None
        try:
            # A new session: Ctrl-C in the terminal reaches the supervisor only, which then stops the
            # children in order.
            self.process = subprocess.Popen(
                self.argv, env=self.env, start_new_session=True, preexec_fn=preexec
            )
        except OSError as exc:
            raise RuntimeError(f"cannot start {self.name} ({self.argv[0]}): {exc}") from exc

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def returncode(self) -> int | None:
        return None if self.process is None else self.process.poll()

    def request_stop(self) -> None:
        if self.running() and self.process is not None:
            _signal_pid(self.process.pid, signal.SIGTERM)

    def force_stop(self) -> None:
        if self.running() and self.process is not None:
            if self.force_signal == signal.SIGKILL:
                self.kill()
            else:
                _signal_pid(self.process.pid, self.force_signal)

    def kill(self) -> None:
        if self.process is None:
            return
        # RQ's work-horses call setpgrp(), so a process-group kill would miss them: walk /proc instead.
        for pid in descendants(self.process.pid):
            _signal_pid(pid, signal.SIGKILL)
        if self.process.poll() is None:
            _signal_pid(self.process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(5)


class RedisChild(Child):
    """The embedded redis-server (AOF on), restarted on the same port so clients reconnect."""

    def __init__(self, name: str, server: RedisServer, *, start_timeout: float = 10.0) -> None:
        super().__init__(name)
        self.server = server
        self.start_timeout = start_timeout

    @property
    def pid(self) -> int | None:
        process = self.server.process
        return process.pid if process is not None and process.poll() is None else None

    def start(self) -> None:
        # In its own session: a terminal's Ctrl-C would otherwise stop Redis before the API and workers.
        preexec = _die_with_parent(os.getpid()) if sys.platform == "linux" else None
        self.server.start(self.start_timeout, own_session=True, preexec_fn=preexec)

    def running(self) -> bool:
        return self.server.alive()

    def returncode(self) -> int | None:
        process = self.server.process
        return None if process is None else process.poll()

    def request_stop(self) -> None:
        process = self.server.process
        if process is not None and process.poll() is None:
            process.terminate()  # redis-server flushes the AOF on SIGTERM

    def kill(self) -> None:
        self.server.kill()


class Supervisor:
    """Runs tiers of children: started first to last, stopped last to first, each tier all at once."""

    def __init__(
        self,
        tiers: Sequence[Sequence[Child]],
        *,
        status_file: Path | None = None,
        policy: RestartPolicy | None = None,
        grace_seconds: float = 10.0,
        force_seconds: float = 5.0,
        status_extra: Mapping[str, object] | None = None,
    ) -> None:
        self.tiers = [list(tier) for tier in tiers]
        self.status_file = status_file
        self.policy = policy or RestartPolicy()
        self.grace_seconds = grace_seconds
        self.force_seconds = force_seconds
        self.status_extra = dict(status_extra or {})
        self.stopping = False
        self.signals_received = 0

    @property
    def children(self) -> list[Child]:
        return [child for tier in self.tiers for child in tier]

    # --- lifecycle -----------------------------------------------------------------------------------
    def start(self) -> None:
        """Start every tier in order; a child that fails to start is retried by `poll`."""
        for tier in self.tiers:
            for child in tier:
                self._start(child)
        self.write_status()

    def _start(self, child: Child) -> None:
        try:
            child.start()
        except RuntimeError as exc:
            child.consecutive_failures += 1
            delay = self.policy.delay(child.consecutive_failures)
            child.next_start = time.monotonic() + delay
            logger.error("%s failed to start: %s; retrying in %.2fs", child.name, exc, delay)
            return
        child.started_at = time.monotonic()
        child.next_start = None
        logger.info("started %s (pid %s)", child.name, child.pid)

    def poll(self) -> None:
        """Notice dead children and (re)start those whose backoff has elapsed."""
        changed = False
        now = time.monotonic()
        for child in self.children:
            if self.stopping:
                return
            if child.running():
                if child.started_at is not None and now - child.started_at >= self.policy.stable_after:
                    child.consecutive_failures = 0
                continue
            if child.next_start is None:
                lived = now - child.started_at if child.started_at is not None else 0.0
                if lived >= self.policy.stable_after:
                    child.consecutive_failures = 0
                child.consecutive_failures += 1
                delay = self.policy.delay(child.consecutive_failures)
                child.next_start = now + delay
                logger.warning(
                    "%s exited (status %s) after %.1fs; restarting in %.2fs",
                    child.name,
                    child.returncode(),
                    lived,
                    delay,
                )
                changed = True  # the status file shows no pid while it is down
            if now >= child.next_start:
                child.restarts += 1
                self._start(child)
                changed = True
        if changed:
            self.write_status()

    def run(self, tick: Callable[[], None] | None = None, interval: float = 0.2) -> None:
        """Supervise until `request_stop` (or a signal handler calling it), then stop everything."""
        try:
            while not self.stopping:
                self.poll()
                if tick is not None:
                    tick()
                time.sleep(interval)
        finally:
            self.stop()

    def request_stop(self) -> None:
        """Begin shutdown (safe to call from a signal handler); a second call shortens the grace period."""
        self.signals_received += 1
        self.stopping = True

    def install_signal_handlers(self) -> None:
        """SIGINT (Ctrl-C) and SIGTERM stop the stack in order."""

        def handler(signum: int, frame: object) -> None:
            if self.signals_received:
                logger.warning("second stop request: not waiting for children to finish their work")
            self.request_stop()

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)

    def stop(self) -> None:
        """Stop the tiers in reverse order: ask, wait the grace period, ask harder, then SIGKILL."""
        self.stopping = True
        for tier in reversed(self.tiers):
            self._stop_tier(tier)
        self.remove_status()

    def _stop_tier(self, tier: list[Child]) -> None:
        running = [child for child in tier if child.running()]
        if not running:
            return
        logger.info("stopping %s", ", ".join(child.name for child in running))
        for child in running:
            child.request_stop()
        if self._wait(running, self.grace_seconds):
            return
        for child in running:
            if child.running():
                logger.warning("%s still running after %.0fs: forcing it", child.name, self.grace_seconds)
                child.force_stop()
        if self._wait(running, self.force_seconds):
            return
        for child in running:
            if child.running():
                logger.warning("%s still running: SIGKILL", child.name)
                child.kill()

    def _wait(self, children: list[Child], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not any(child.running() for child in children):
                return True
            if self.signals_received >= 2:
                return False
            time.sleep(0.05)
        return not any(child.running() for child in children)

    # --- status file -----------------------------------------------------------------------------------
    def status(self) -> dict[str, object]:
        """What is running: the supervisor's and each child's pid and restart count (no secrets)."""
        return {
            **self.status_extra,
            "pid": os.getpid(),
            "updated_at": datetime.now(UTC).isoformat(),
            "children": {
                child.name: {"pid": child.pid, "restarts": child.restarts} for child in self.children
            },
        }

    def write_status(self) -> None:
        if self.status_file is None:
            return
        tmp = self.status_file.with_name(self.status_file.name + ".tmp")
        tmp.write_text(json.dumps(self.status(), indent=2) + "\n")
        os.replace(tmp, self.status_file)

    def remove_status(self) -> None:
        if self.status_file is not None:
            with contextlib.suppress(FileNotFoundError):
                self.status_file.unlink()
