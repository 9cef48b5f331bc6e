"""Browser tests of the dashboard: Playwright driving the system's Chromium against a real API, worker and Redis.

Without Chromium (or the playwright package) the tests skip with the reason; with CI=true they fail instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest

from backprop.embedded_redis import free_port
from backprop.local_stack import clean_environment, wait_until
from tests.ui.browser import CHROMIUM_ARGS, DESKTOP, chromium_path

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Dialog, Page

BACKPROP = Path(sys.executable).with_name("backprop")
# Set before any page script runs: a flag that any alert/confirm/prompt call raises (markup that runs code).
ALERT_TRAP = """
window.__alerted = false;
for (const name of ["alert", "confirm", "prompt"]) {
  const original = window[name];
  window[name] = function (...args) { window.__alerted = true; return original.apply(this, args); };
}
"""


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"browser tests must run in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    """Headless Chromium, shared by the session's browser tests."""
    executable = chromium_path()
    if executable is None:
        _unavailable("chromium not found: neither BACKPROP_CHROMIUM nor chromium on PATH (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (the test extra)")
    playwright = sync_playwright().start()
    try:
        chromium = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        yield chromium
        chromium.close()
    finally:
        playwright.stop()


class ApiStack:
    """`backprop api` and `backprop worker` as subprocesses on the test's Redis and data directory."""

    def __init__(self, redis_url: str, data_dir: Path, api_keys: str = "") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = data_dir.parent / f"stack-{self.port}.log"
        self.env = clean_environment(
            {
                "REDIS_URL": redis_url,
                "BACKPROP_DATA_DIR": str(data_dir),
                "BACKPROP_API_KEYS": api_keys,
                "BACKPROP_PROGRESS_MIN_INTERVAL": "0.05",
                "BACKPROP_CHECKPOINT_SECONDS": "60",
            }
        )
        self.processes: list[subprocess.Popen[bytes]] = []

    def _spawn(self, *args: str) -> None:
        with self.log_path.open("ab") as log:
            self.processes.append(
                subprocess.Popen([str(BACKPROP), *args], env=self.env, stdout=log, stderr=subprocess.STDOUT)
            )

    def start(self) -> None:
        self._spawn("worker")
        self._spawn("api", "--port", str(self.port))

        def ready() -> bool:
            for process in self.processes:
                if process.poll() is not None:
                    raise AssertionError(f"{process.args} exited with {process.returncode}:\n{self.log()}")
            try:
                return httpx.get(f"{self.url}/readyz", timeout=2.0).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(ready, 60, f"API and worker ready on {self.url}", interval=0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate()
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30.0)


@pytest.fixture()
def make_stack(redis_url: str, data_dir: Path) -> Iterator[Callable[..., ApiStack]]:
    """Start an API + worker pair (optionally with API keys); stopped after the test."""
    stacks: list[ApiStack] = []

    def make(api_keys: str = "") -> ApiStack:
        stack = ApiStack(redis_url, data_dir, api_keys)
        stacks.append(stack)
        stack.start()
        return stack

    yield make
    for stack in stacks:
        stack.stop()


@pytest.fixture()
def stack(make_stack: Callable[..., ApiStack]) -> ApiStack:
    """An API without keys and one worker."""
    return make_stack()


@dataclass
class Console:
    """What the pages of a test printed as errors (console errors, uncaught exceptions, CSP violations)."""

    errors: list[str] = field(default_factory=list)
    allowed_statuses: set[int] = field(default_factory=set)

    def on_message(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        text = message.text
        prefix = "Failed to load resource: the server responded with a status of "
        if text.startswith(prefix) and int(text[len(prefix) : len(prefix) + 3]) in self.allowed_statuses:
            return
        self.errors.append(f"console: {text} ({message.location.get('url', '')})")

    def on_dialog(self, dialog: Dialog) -> None:
        self.errors.append(f"dialog opened: {dialog.type} {dialog.message}")
        dialog.dismiss()

    def on_page_error(self, error: Any) -> None:
        self.errors.append(f"page error: {error}")


@pytest.fixture()
def console() -> Console:
    return Console()


@pytest.fixture()
def open_page(browser: Browser, console: Console) -> Iterator[Callable[..., Page]]:
    """Open a page in a fresh browser context (its own sessionStorage); after the test, no page logged an error."""
    contexts = []

    def open_(url: str, viewport: dict[str, int] = DESKTOP) -> Page:
        context = browser.new_context(viewport=viewport)  # type: ignore[arg-type]
        context.set_default_timeout(30_000)
        context.add_init_script(ALERT_TRAP)
        contexts.append(context)
        page = context.new_page()
        page.on("console", console.on_message)
        page.on("pageerror", console.on_page_error)
        page.on("dialog", console.on_dialog)
        page.goto(url)
        return page

    yield open_
    for context in contexts:
        context.close()
    assert console.errors == [], "\n".join(console.errors)


def classes_csv(path: Path, labels: list[str], n_per_class: int = 30, n_features: int = 3, seed: int = 0) -> Path:
    """A separable CSV (header row, label in the last column) with these class labels, written to `path`."""
    rng = np.random.default_rng(seed)
    lines = [",".join([*(f"x{i}" for i in range(n_features)), "label"])]
    for index, label in enumerate(labels):
        center = np.zeros(n_features)
        center[index % n_features] = 4.0 * (1 + index // n_features)
        quoted = '"' + label.replace('"', '""') + '"'
        for row in rng.normal(center, 0.5, size=(n_per_class, n_features)):
            lines.append(",".join(f"{v:.4f}" for v in row) + f",{quoted}")
    path.write_text("\n".join(lines) + "\n")
    return path
