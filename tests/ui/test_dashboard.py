"""The dashboard in headless Chromium against a real API, worker and Redis: upload, train, watch, cancel, predict,
API keys, markup in labels, the event stream's chart, and the phone viewport."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest
from playwright.sync_api import expect

from backprop.local_stack import wait_until
from tests.ui.browser import PHONE
from tests.ui.conftest import ApiStack, Console, classes_csv

if TYPE_CHECKING:
    from playwright.sync_api import Page, Route

MARKUP = "<img src=x onerror=alert(1)>"

OpenPage = Callable[..., "Page"]


def upload(client: httpx.Client, path: Path) -> dict[str, Any]:
    with path.open("rb") as handle:
        response = client.post("/v1/datasets", files={"file": (path.name, handle, "text/csv")})
    assert response.status_code == 201, response.text
    return dict(response.json())


def start_job(client: httpx.Client, dataset_id: str, **options: Any) -> dict[str, Any]:
    response = client.post("/v1/jobs", json={"dataset_id": dataset_id, **options})
    assert response.status_code == 202, response.text
    return dict(response.json())


def finished_job(client: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    job: dict[str, Any] = {}

    def done() -> bool:
        nonlocal job
        job = client.get(f"/v1/jobs/{job_id}").json()
        return job["status"] in ("succeeded", "failed", "canceled")

    wait_until(done, timeout, f"job {job_id} finished", interval=0.2)
    return job


def trained_model(stack: ApiStack, tmp_path: Path, labels: list[str]) -> dict[str, Any]:
    with stack.client() as client:
        dataset = upload(client, classes_csv(tmp_path / "data.csv", labels))
        started = start_job(client, dataset["id"], epochs=15, hidden_layers=[16], learning_rate=0.02)
        job = finished_job(client, started["id"])
        assert job["status"] == "succeeded", job
        return dict(client.get(f"/v1/models/{job['model_id']}").json())


def points(page: Page) -> int:
    return int(page.get_by_test_id("loss-chart").get_attribute("data-points") or "0")


def wait_status(page: Page, status: str, timeout: float = 60_000) -> None:
    """Until job-status shows `status`."""
    page.wait_for_function(
        "s => document.querySelector('[data-testid=job-status]')?.dataset.status === s", arg=status, timeout=timeout
    )


def wait_points(page: Page, count: int) -> None:
    """Until loss-chart has drawn `count` points."""
    page.wait_for_function("n => +document.querySelector('[data-testid=loss-chart]')?.dataset.points === n", arg=count)


def test_dashboard_upload_pick_label_train_watch_and_predict(
    stack: ApiStack, open_page: OpenPage, tmp_path: Path
) -> None:
    rows = tmp_path / "points.csv"
    lines = ["kind,a,b,c,d,e,f,g,h"]
    source = classes_csv(tmp_path / "source.csv", ["left", "right"], n_per_class=1000, n_features=8)
    for line in source.read_text().splitlines()[1:]:
        *features, label = line.split(",")
        lines.append(",".join([label, *features]))
    rows.write_text("\n".join(lines) + "\n")

    page = open_page(f"{stack.url}/")
    page.get_by_role("link", name="Upload").click()
    page.get_by_test_id("dataset-upload").set_input_files(str(rows))
    label = page.get_by_test_id("label-column")
    page.wait_for_function("() => document.querySelector('[data-testid=label-column]').options.length === 9")
    assert label.evaluate("s => [...s.options].map(o => o.value)") == ["kind", "a", "b", "c", "d", "e", "f", "g", "h"]
    assert label.input_value() == "h"  # the API's default: the last column
    label.select_option("kind")
    page.get_by_test_id("dataset-submit").click()
    page.get_by_test_id("upload-ok").wait_for()
    assert "2,000 rows, 8 features, 2 classes" in page.get_by_test_id("upload-ok").inner_text()

    page.get_by_test_id("train-link").click()
    form = page.get_by_test_id("job-form")
    form.wait_for()
    form.get_by_label("Hidden Layers").fill("128, 128")
    form.get_by_label("Epochs").fill("100")
    form.get_by_label("Batch Size").fill("8")
    page.get_by_test_id("job-submit").click()

    status = page.get_by_test_id("job-status")
    status.wait_for()
    page.wait_for_function(
        "() => +document.querySelector('[data-testid=loss-chart]')?.dataset.points > 0"
        " && document.querySelector('[data-testid=job-status]')?.dataset.status === 'running'"
    )
    seen_running = points(page)
    wait_status(page, "succeeded", timeout=180_000)
    wait_points(page, 100)
    assert 0 < seen_running < 100
    assert page.get_by_test_id("job-progress").evaluate("p => [p.value, p.max]") == [100, 100]
    assert page.get_by_test_id("cancel-job").is_hidden()

    page.get_by_test_id("model-link").click()
    page.get_by_test_id("predict-input").fill("a,b,c,d,e,f,g,h\n4,0,0,0,0,0,0,0\n0,4,0,0,0,0,0,0")
    page.get_by_test_id("predict-submit").click()
    result = page.get_by_test_id("predict-result")
    result.locator("[data-testid=predicted-label]").first.wait_for()
    assert result.locator("[data-testid=predicted-label]").all_inner_texts() == ["left", "right"]
    assert result.locator("meter").count() == 4
    assert points(page) == 100  # the model's final curves


def test_dashboard_cancel_long_job(stack: ApiStack, open_page: OpenPage, tmp_path: Path) -> None:
    with stack.client() as client:
        dataset = upload(client, classes_csv(tmp_path / "big.csv", ["a", "b"], n_per_class=1000, n_features=8))
        job = start_job(client, dataset["id"], epochs=10_000, hidden_layers=[128, 128], batch_size=8)
    page = open_page(f"{stack.url}/ui/#/jobs/{job['id']}")
    page.wait_for_function("() => +document.querySelector('[data-testid=loss-chart]')?.dataset.points > 0")
    cancel = page.get_by_test_id("cancel-job")
    assert cancel.is_enabled()
    cancel.click()
    wait_status(page, "canceled", timeout=120_000)
    expect(cancel).to_be_hidden()  # the status and the button are redrawn in separate frames
    with stack.client() as client:
        assert client.get(f"/v1/jobs/{job['id']}").json()["status"] == "canceled"


def test_dashboard_failed_job_shows_its_error(stack: ApiStack, open_page: OpenPage, tmp_path: Path) -> None:
    X = np.random.default_rng(0).normal(size=(60, 3)) * 1e3  # unscaled, with a huge step: the loss overflows
    data = tmp_path / "huge.csv"
    data.write_text("a,b,c,label\n" + "".join(f"{a:.3f},{b:.3f},{c:.3f},{i % 2}\n" for i, (a, b, c) in enumerate(X)))
    with stack.client() as client:
        dataset = upload(client, data)
        job = start_job(
            client, dataset["id"], epochs=50, optimizer="sgd", learning_rate=10.0, standardize=False, hidden_layers=[16]
        )
    page = open_page(f"{stack.url}/ui/#/jobs/{job['id']}")
    wait_status(page, "failed")
    assert "diverged" in page.get_by_test_id("job-error").inner_text()
    expect(page.get_by_test_id("cancel-job")).to_be_hidden()
    assert page.get_by_test_id("model-link").count() == 0


def test_dashboard_job_form_comes_from_openapi_and_shows_422_beside_field(
    stack: ApiStack, open_page: OpenPage, tmp_path: Path, console: Console
) -> None:
    console.allowed_statuses.add(422)
    with stack.client() as client:
        dataset = upload(client, classes_csv(tmp_path / "data.csv", ["a", "b"]))
        schema = client.get("/openapi.json").json()["components"]["schemas"]["JobCreate"]
    page = open_page(f"{stack.url}/ui/#/jobs/new?dataset={dataset['id']}")
    form = page.get_by_test_id("job-form")
    form.wait_for()
    for name, prop in schema["properties"].items():
        control = form.locator(f"[data-field={name}]")
        assert control.count() == 1, name
        label = page.locator(f"label[for=field-{name}]")
        assert label.count() == 1, f"{name} has no label"
        if "enum" in prop:
            assert control.evaluate("s => [...s.options].map(o => o.value)") == prop["enum"]
            assert control.input_value() == prop["default"]
        elif prop.get("type") == "boolean":
            assert control.is_checked() == prop["default"]
        elif prop.get("type") in ("integer", "number"):
            assert float(control.input_value()) == prop["default"], name
            for bound in ("minimum", "maximum"):
                if bound in prop:
                    assert float(control.get_attribute(bound[:3]) or "nan") == prop[bound], (name, bound)
    assert form.locator("[data-field=dataset_id]").input_value() == dataset["id"]

    form.get_by_label("Hidden Layers").fill("8, 0")
    page.get_by_test_id("job-submit").click()
    error = page.locator("[data-error-for=hidden_layers]")
    error.wait_for()
    assert "hidden_layers[1]" in error.inner_text()
    assert "greater than or equal to 1" in error.inner_text()
    assert form.get_by_label("Hidden Layers").get_attribute("aria-invalid") == "true"
    assert page.locator("[data-error-for=epochs]").inner_text() == ""

    # Keyboard only: the field with the error has the focus; fix it and press Enter to submit.
    assert page.evaluate("document.activeElement.dataset.field") == "hidden_layers"
    page.keyboard.press("Control+A")
    page.keyboard.type("8")
    page.keyboard.press("Enter")
    page.get_by_test_id("job-status").wait_for()
    assert "#/jobs/" in page.url


def test_dashboard_upload_error_names_row_and_column(
    stack: ApiStack, open_page: OpenPage, tmp_path: Path, console: Console
) -> None:
    console.allowed_statuses.add(422)
    bad = tmp_path / "bad.csv"
    bad.write_text("x1,x2,label\n1,2,a\n3,oops,b\n5,6,a\n")
    page = open_page(f"{stack.url}/ui/#/upload")
    page.get_by_test_id("dataset-upload").set_input_files(str(bad))
    page.get_by_test_id("dataset-submit").click()
    error = page.get_by_test_id("upload-error")
    error.wait_for()
    text = error.inner_text()
    assert "oops" in text and "x2" in text and "row" in text.lower(), text


def test_dashboard_markup_in_labels_is_text(stack: ApiStack, open_page: OpenPage, tmp_path: Path) -> None:
    model = trained_model(stack, tmp_path, [MARKUP, "plain"])
    page = open_page(f"{stack.url}/ui/#/models/{model['id']}")
    classes = page.get_by_test_id("model-classes").locator("li")
    classes.first.wait_for()
    assert classes.all_inner_texts() == sorted([MARKUP, "plain"])
    page.get_by_test_id("predict-input").fill("4,0,0\n0,4,0")
    page.get_by_test_id("predict-submit").click()
    labels = page.get_by_test_id("predict-result").locator("[data-testid=predicted-label]")
    labels.first.wait_for()
    assert labels.all_inner_texts() == [MARKUP, "plain"]
    assert page.locator("main img").count() == 0
    assert page.evaluate("window.__alerted") is False
    page.goto(f"{stack.url}/ui/#/")
    page.get_by_test_id("model-link").first.wait_for()
    assert page.evaluate("window.__alerted") is False
    assert page.locator("img").count() == 0


def test_dashboard_api_key_dialog_and_isolation(
    make_stack: Callable[..., ApiStack], open_page: OpenPage, tmp_path: Path, console: Console
) -> None:
    console.allowed_statuses.add(401)
    stack = make_stack(api_keys="alice-key:user,bob-key:user")
    with stack.client("alice-key") as alice:
        dataset = upload(alice, classes_csv(tmp_path / "alices.csv", ["a", "b"]))

    page = open_page(f"{stack.url}/ui/")
    key_input = page.get_by_test_id("api-key-input")
    key_input.wait_for()
    key_input.press_sequentially("alice-key")
    key_input.press("Enter")  # keyboard only
    page.get_by_role("heading", name="Datasets (1)").wait_for()
    assert page.get_by_role("cell", name="alices").is_visible()
    assert page.evaluate("sessionStorage.getItem('backprop.apiKey')") == "alice-key"
    assert page.evaluate("localStorage.length") == 0
    assert page.evaluate("document.cookie") == ""

    other = open_page(f"{stack.url}/ui/#/jobs/new")  # another browser context: its own sessionStorage
    other.get_by_test_id("api-key-input").fill("wrong-key")
    other.get_by_role("button", name="Use key").click()
    other.wait_for_function("() => document.getElementById('key-dialog-reason').textContent.includes('not accepted')")
    other.get_by_test_id("api-key-input").fill("bob-key")
    other.get_by_role("button", name="Use key").click()
    other.get_by_text("No dataset yet").wait_for()
    other.goto(f"{stack.url}/ui/#/")
    other.get_by_role("heading", name="Datasets (0)").wait_for()
    assert other.get_by_role("cell", name="alices").count() == 0
    other.goto(f"{stack.url}/ui/#/jobs/new?dataset={dataset['id']}")
    other.get_by_text("No dataset yet").wait_for()


def _sse(event: str, data: Any, event_id: int | None = None) -> str:
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data)}\n\n"


def test_dashboard_event_stream_draws_the_same_chart_as_polling(
    stack: ApiStack, open_page: OpenPage, tmp_path: Path
) -> None:
    """The job page fed by the event stream (progress events that skip epochs, a status change, the end event)
    draws what polling draws. The stream is played from a real finished job's record."""
    model = trained_model(stack, tmp_path, ["a", "b", "c"])
    with stack.client() as client:
        final = client.get(f"/v1/jobs/{model['job_id']}").json()
        document = client.get("/openapi.json").json()
    history = final["history"]
    assert len(history) == 15
    polled = open_page(f"{stack.url}/ui/#/jobs/{final['id']}")
    wait_points(polled, 15)

    document["paths"]["/v1/jobs/{job_id}/events"] = {"get": {"operationId": "job_events", "responses": {}}}
    running = {**final, "status": "running", "history": history[:3], "progress": history[2], "model_id": None}
    body = _sse("status", {"status": "running", "attempt": 1})
    body += "".join(_sse("progress", entry, entry["epoch"]) for entry in history[3:] if entry["epoch"] % 4 != 1)
    body += ": keep-alive\n\n" + _sse("end", final)
    job_reads = 0

    def read_job(route: Route) -> None:
        nonlocal job_reads
        job_reads += 1
        if job_reads == 1:
            route.fulfill(json=running)
        else:
            route.continue_()

    streamed = open_page(f"{stack.url}/ui/")
    streamed.route("**/openapi.json", lambda route: route.fulfill(json=document))
    streamed.route(f"**/v1/jobs/{final['id']}", read_job)
    streamed.route(
        f"**/v1/jobs/{final['id']}/events",
        lambda route: route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body),
    )
    streamed.goto(f"{stack.url}/ui/#/jobs/{final['id']}")
    wait_status(streamed, "succeeded")
    wait_points(streamed, 15)
    assert streamed.get_by_test_id("job-feed").get_attribute("data-mode") == "events"
    assert polled.get_by_test_id("job-feed").get_attribute("data-mode") is None  # finished: nothing to follow
    for name in ("loss-chart", "accuracy-chart"):
        assert streamed.get_by_test_id(name).screenshot() == polled.get_by_test_id(name).screenshot(), name
    assert streamed.get_by_test_id("model-link").get_attribute("href") == f"#/models/{model['id']}"


def test_dashboard_sse_parser_and_decimation(stack: ApiStack, open_page: OpenPage) -> None:
    page = open_page(f"{stack.url}/ui/")
    parsed = page.evaluate(
        """async () => {
        const { sseParser } = await import('/ui/js/live.js');
        const feed = sseParser();
        const out = [];
        for (const chunk of ['id: 3\\nevent: prog', 'ress\\ndata: {"epoch": 3}\\r\\n\\r\\n: ping\\n\\n',
                             'event: end\\ndata: {"a":\\ndata: 1}\\n\\n', 'event: status\\ndata: {}'])
            out.push(...feed(chunk));
        return out;
    }"""
    )
    assert parsed == [
        {"event": "progress", "data": '{"epoch": 3}', "id": "3"},
        {"event": "end", "data": '{"a":\n1}', "id": None},
    ]
    thinned = page.evaluate(
        """async () => {
        const { Curves, MAX_POINTS } = await import('/ui/js/chart.js');
        const curves = new Curves();
        for (let epoch = 1; epoch <= 10000; epoch++) curves.add({ epoch, train_loss: 1 / epoch });
        const streamed = curves.data('loss')[0];
        const replayed = new Curves();
        replayed.setHistory(Array.from({ length: 10000 }, (_, i) => ({ epoch: i + 1, train_loss: 1 / (i + 1) })));
        return { max: MAX_POINTS, n: streamed.length, last: streamed.at(-1), first: streamed[0],
                 same: JSON.stringify(replayed.data('loss')) === JSON.stringify(curves.data('loss')) };
    }"""
    )
    assert thinned["n"] <= thinned["max"] < 10000
    assert thinned["last"] == 10000 and thinned["first"] >= 1
    assert thinned["same"] is True


@pytest.mark.parametrize("viewport", [PHONE], ids=["phone"])
def test_dashboard_every_page_fits_the_phone_viewport(
    stack: ApiStack, open_page: OpenPage, tmp_path: Path, viewport: dict[str, int]
) -> None:
    model = trained_model(stack, tmp_path, ["a", "b"])
    page = open_page(f"{stack.url}/ui/", viewport)
    for hash_, ready in (
        ("#/", "model-link"),
        ("#/upload", "dataset-upload"),
        (f"#/jobs/new?dataset={model['dataset_id']}", "job-submit"),
        (f"#/jobs/{model['job_id']}", "loss-chart"),
        (f"#/models/{model['id']}", "predict-submit"),
    ):
        page.goto(f"{stack.url}/ui/{hash_}")
        page.get_by_test_id(ready).first.wait_for()
        page.wait_for_timeout(100)  # one layout pass after the charts' first frame
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= viewport["width"], f"{hash_} is {width}px wide"
        unlabelled = page.evaluate(
            "[...document.querySelectorAll('main input, main select, main textarea')]"
            ".filter(e => e.labels.length === 0).map(e => e.outerHTML)"
        )
        assert unlabelled == [], hash_
        assert page.get_by_role("link", name="Upload").is_visible()


def test_dashboard_job_page_thins_a_long_event_stream(stack: ApiStack, open_page: OpenPage) -> None:
    """6,000 epochs streamed at once (a job far faster than frames): the chart keeps a bounded number of points,
    the newest epoch among them, and the page ends on the final record."""
    epochs = 6000
    history = [{"epoch": e, "epochs": epochs, "train_loss": 1 / e, "train_accuracy": 0.5} for e in range(1, epochs + 1)]
    record = {
        "id": "stream-job",
        "name": "long",
        "dataset_id": "d",
        "status": "running",
        "config": {},
        "progress": None,
        "history": [],
        "attempts": 1,
        "created_at": "2026-01-01T00:00:00Z",
    }
    final = {**record, "status": "succeeded", "history": history, "progress": history[-1], "model_id": "m"}
    body = "".join(_sse("progress", entry, entry["epoch"]) for entry in history) + _sse("end", final)
    with stack.client() as client:
        document = client.get("/openapi.json").json()
    document["paths"]["/v1/jobs/{job_id}/events"] = {"get": {"operationId": "job_events", "responses": {}}}

    page = open_page(f"{stack.url}/ui/")
    page.route("**/openapi.json", lambda route: route.fulfill(json=document))
    page.route("**/v1/jobs/stream-job", lambda route: route.fulfill(json=record))
    page.route(
        "**/v1/jobs/stream-job/events",
        lambda route: route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body),
    )
    page.goto(f"{stack.url}/ui/#/jobs/stream-job")
    wait_status(page, "succeeded")
    page.wait_for_function("() => +document.querySelector('[data-testid=loss-chart]')?.dataset.points > 0")
    drawn = points(page)
    assert 2000 <= drawn <= 4000
    assert page.get_by_test_id("job-progress").evaluate("p => [p.value, p.max]") == [epochs, epochs]
    newest = page.evaluate(
        """async () => {
        const { Curves } = await import('/ui/js/chart.js');
        const curves = new Curves();
        curves.setHistory(Array.from({ length: 6000 }, (_, i) => ({ epoch: i + 1 })));
        return [curves.epochs.length, curves.lastEpoch];
    }"""
    )
    assert newest == [drawn, epochs]
