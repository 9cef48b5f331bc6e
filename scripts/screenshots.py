"""Screenshots of every dashboard page, for the README: `.venv/bin/python scripts/screenshots.py`.

Starts `backprop serve` (embedded Redis, one worker, the API, with an API key) on a free port in a temporary
data directory, fills it through the API with scikit-learn's digits, and drives the system's Chromium through
the pages at 1280x800 (and two at 390x844). Writes docs/screenshots/*.png.
"""

from __future__ import annotations

import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from playwright.sync_api import Page, sync_playwright  # noqa: E402
from sklearn.datasets import load_digits  # noqa: E402

from backprop.embedded_redis import free_port  # noqa: E402
from tests.ui.browser import CHROMIUM_ARGS, DESKTOP, PHONE, chromium_path  # noqa: E402

OUT = ROOT / "docs" / "screenshots"
KEY = "screenshot-key"


def digits_csv() -> bytes:
    X, y = load_digits(return_X_y=True)
    out = io.StringIO()
    out.write(",".join([f"pixel{i}" for i in range(X.shape[1])] + ["digit"]) + "\n")
    for row, label in zip(X.astype(int), y, strict=True):
        out.write(",".join(map(str, row)) + f",{label}\n")
    return out.getvalue().encode()


def digit_rows(count: int) -> str:
    """The first `count` digits' pixels, one comma-separated row per line (what a user would paste)."""
    X, _ = load_digits(return_X_y=True)
    return "\n".join(",".join(str(int(v)) for v in row) for row in X[:count])


def wait_job(client: httpx.Client, job_id: str, *, until: str = "finished") -> dict[str, Any]:
    for _ in range(3000):
        job = dict(client.get(f"/v1/jobs/{job_id}").json())
        if until == "running" and job["status"] == "running" and len(job["history"]) >= 25:
            return job
        if job["status"] in ("succeeded", "failed", "canceled"):
            return job
        time.sleep(0.1)
    raise RuntimeError(f"job {job_id} did not get {until}")


def start_serve(data_dir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    backprop = Path(sys.executable).with_name("backprop")
    env = {"PATH": "/usr/bin:/bin", "BACKPROP_API_KEYS": f"{KEY}:user", "BACKPROP_PROGRESS_MIN_INTERVAL": "0.1"}
    process = subprocess.Popen(
        [str(backprop), "serve", "--port", str(port), "--data-dir", str(data_dir)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    for _ in range(600):
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    process.terminate()
    raise RuntimeError("backprop serve did not get ready")


def shoot(page: Page, name: str, ready: str, *, full_page: bool = True) -> None:
    page.get_by_test_id(ready).first.wait_for()
    page.wait_for_timeout(400)  # the charts' first frame and the overview's lists
    page.screenshot(path=str(OUT / f"{name}.png"), full_page=full_page)
    print(f"docs/screenshots/{name}.png")


def fill(client: httpx.Client) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    """A dataset, a finished job (its model) and a running one."""
    response = client.post("/v1/datasets", files={"file": ("digits.csv", digits_csv(), "text/csv")})
    response.raise_for_status()
    dataset = response.json()
    options = {"dataset_id": dataset["id"], "name": "digits", "hidden_layers": [64], "batch_size": 32}
    done = client.post("/v1/jobs", json={**options, "epochs": 40, "learning_rate": 0.003}).json()
    finished = wait_job(client, done["id"])
    live = client.post("/v1/jobs", json={**options, "name": "digits-wide", "hidden_layers": [256, 256], "epochs": 400})
    running = wait_job(client, live.json()["id"], until="running")
    return dataset, finished, running


def main() -> int:
    executable = chromium_path()
    if executable is None:
        print("no chromium on PATH (apt-get install chromium)", file=sys.stderr)
        return 1
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        process, url = start_serve(Path(tmp) / "var")
        try:
            with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=60) as client:
                dataset, finished, running = fill(client)
                with sync_playwright() as playwright:
                    browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
                    page = browser.new_page(viewport=DESKTOP)  # type: ignore[arg-type]
                    page.goto(f"{url}/ui/")
                    page.get_by_test_id("api-key-input").fill(KEY)
                    shoot(page, "api-key", "api-key-input", full_page=False)
                    page.get_by_test_id("api-key-input").press("Enter")
                    shoot(page, "overview", "model-link")
                    page.goto(f"{url}/ui/#/upload")
                    csv = Path(tmp) / "digits.csv"
                    csv.write_bytes(digits_csv())
                    page.get_by_test_id("dataset-upload").set_input_files(str(csv))
                    shoot(page, "upload", "label-column")
                    page.goto(f"{url}/ui/#/jobs/new?dataset={dataset['id']}")
                    shoot(page, "new-job", "job-form")
                    page.goto(f"{url}/ui/#/jobs/{running['id']}")
                    shoot(page, "job", "loss-chart")
                    page.goto(f"{url}/ui/#/models/{finished['model_id']}")
                    page.get_by_test_id("predict-input").fill(digit_rows(3))
                    page.get_by_test_id("predict-submit").click()
                    shoot(page, "model", "predicted-label")
                    phone = browser.new_page(viewport=PHONE)  # type: ignore[arg-type]
                    phone.goto(f"{url}/ui/")
                    phone.get_by_test_id("api-key-input").fill(KEY)
                    phone.get_by_test_id("api-key-input").press("Enter")
                    phone.goto(f"{url}/ui/#/jobs/{running['id']}")
                    shoot(phone, "job-phone", "loss-chart", full_page=False)
                    phone.goto(f"{url}/ui/#/models/{finished['model_id']}")
                    shoot(phone, "model-phone", "predict-submit", full_page=False)
                    browser.close()
                client.post(f"/v1/jobs/{running['id']}/cancel")
        finally:
            process.terminate()
            process.wait(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
