"""Process helpers shared by the tests that run the stack as subprocesses."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

CONFIG_VARIABLES = ("REDIS_URL", "LOG_FORMAT", "LOG_LEVEL")


def user_environment(**extra: str) -> dict[str, str]:
    """This process' environment without any Backprop configuration (a fresh shell), plus `extra`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.upper().startswith("BACKPROP_") and key.upper() not in CONFIG_VARIABLES
    }
    env.update(extra)
    return env


def pid_alive(pid: int) -> bool:
    """Whether `pid` exists and is not a zombie (Linux /proc)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `condition` until it holds; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"{what}: not within {timeout:.0f}s")


def listening_addresses(port: int) -> set[str]:
    """Addresses with a TCP socket listening on `port`: dotted IPv4, or "v6:<hex>" from /proc/net/tcp6."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, port_hex = fields[1].split(":")
            if int(port_hex, 16) != port or fields[3] != "0A":  # 0A = LISTEN
                continue
            if len(address) == 8:  # IPv4, little-endian hex
                found.add(".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0)))
            else:
                found.add(f"v6:{address}")
    return found
