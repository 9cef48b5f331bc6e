"""The `backprop` client commands as a person runs them: the console script against uvicorn, real Redis and
a real RQ worker; exit codes, `--json`, Ctrl-C, and the progress bar in a pseudo-terminal."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from backprop.embedded_redis import free_port
from backprop.local_stack import clean_environment
from service.settings import Settings
from tests.live import ApiServer, Processes, api_server, blobs, slow_options, wait_until, worker_command

BACKPROP = Path(sys.executable).with_name("backprop")  # the console script of `make install`
KEY = "alice-0123456789"
HEADERS = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture()
def settings(redis_url: str, data_dir: Path) -> Settings:
    return Settings(
        redis_url=redis_url,
        data_dir=data_dir,
        reaper_interval=3600,
        queue_name="cli-training",
        api_keys=f"{KEY}:user",
        metrics_public=False,
    )


@pytest.fixture()
def server(settings: Settings, processes: Processes) -> Iterator[ApiServer]:
    """The API in this process and one worker subprocess on its queue."""
    with api_server(settings) as running:
        processes.start(worker_command(settings, name="cli-worker"), name="worker")
        yield running


@pytest.fixture()
def blobs_csv(tmp_path: Path) -> Path:
    """90 rows of three blobs, labels red/green/blue in the last column `color`."""
    X, y = blobs(n=90)
    colors = np.array(["red", "green", "blue"])[y]
    lines = [",".join(f"{v:.5f}" for v in row) + f",{color}" for row, color in zip(X, colors, strict=True)]
    path = tmp_path / "blobs.csv"
    path.write_text("\n".join(["a,b,c,d,color", *lines]) + "\n")
    return path


def cli_env(server: ApiServer, **extra: str) -> dict[str, str]:
    return clean_environment({"BACKPROP_URL": server.url, "BACKPROP_API_KEY": KEY, **extra})


def run(server: ApiServer, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """`backprop ARGS` (stdout and stderr pipes, not terminals)."""
    return subprocess.run(
        [str(BACKPROP), *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=cli_env(server),
        timeout=120,
        check=False,
    )


def run_json(server: ApiServer, *args: str, stdin: str | None = None) -> Any:
    """`backprop --json ARGS`: exit 0 and exactly one JSON document on stdout."""
    result = run(server, "--json", *args, stdin=stdin)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def api(server: ApiServer, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(method, f"{server.url}{path}", headers=HEADERS, timeout=30, **kwargs)
    response.raise_for_status()
    return response.json()


def wait_for_epoch(server: ApiServer, job_id: str, epoch: int) -> None:
    def reached() -> bool:
        progress = api(server, "GET", f"/v1/jobs/{job_id}").get("progress") or {}
        return int(progress.get("epoch") or 0) >= epoch

    wait_until(reached, timeout=120, what=f"epoch {epoch} of job {job_id}", interval=0.1)


def csv_bytes(X: np.ndarray, y: np.ndarray) -> bytes:
    lines = ["a,b,c,d,label", *(",".join(map(str, [*row, label])) for row, label in zip(X, y, strict=True))]
    return ("\n".join(lines) + "\n").encode()


def slow_dataset(server: ApiServer) -> str:
    """A dataset (uploaded by the API) on which the SLOW options take a while per epoch."""
    X, y = blobs(n=600)
    dataset: dict[str, Any] = api(server, "POST", "/v1/datasets", files=[("file", ("slow.csv", csv_bytes(X, y)))])
    return str(dataset["id"])


_slow = slow_options(10_000)  # as train flags
SLOW = (
    f"--hidden {_slow['hidden_layers'][0]} --epochs {_slow['epochs']} --batch-size {_slow['batch_size']} "
    f"--set validation_fraction={_slow['validation_fraction']}"
).split()


# --- imports ------------------------------------------------------------------------------------------
def test_cli_import_loads_no_server_package() -> None:
    code = (
        "import sys, backprop.cli; "
        "print(','.join(sorted(m for m in ('fastapi', 'uvicorn', 'rq', 'engine', 'starlette', 'service', "
        "'worker', 'redis') if m in sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_cli_help_lists_client_and_server_commands() -> None:
    result = subprocess.run([str(BACKPROP), "--help"], capture_output=True, text=True, check=False, timeout=60)
    assert result.returncode == 0
    for command in ("datasets", "train", "jobs", "models", "predict", "serve", "api", "worker"):
        assert command in result.stdout
    for option in ("--url", "--api-key", "--json"):
        assert option in result.stdout


# --- the commands -------------------------------------------------------------------------------------
def test_cli_datasets_upload_and_list(server: ApiServer, blobs_csv: Path) -> None:
    dataset = run_json(server, "datasets", "upload", str(blobs_csv), "--label", "color", "--name", "colors")
    assert (dataset["n_samples"], dataset["n_features"], dataset["name"]) == (90, 4, "colors")
    assert dataset["classes"] == {"blue": 30, "green": 30, "red": 30}
    listed = run_json(server, "datasets", "list")
    assert [item["id"] for item in listed] == [dataset["id"]]
    table = run(server, "datasets", "list")
    assert table.returncode == 0
    assert dataset["id"] in table.stdout and "colors" in table.stdout
    human = run(server, "datasets", "upload", str(blobs_csv))
    assert human.returncode == 0 and "90 rows, 4 features" in human.stdout


def test_cli_train_waits_then_predicts_what_the_api_predicts(server: ApiServer, blobs_csv: Path) -> None:
    flags = "--label color --name colors --hidden 8,4 --epochs 4 --batch-size 16 --optimizer adam "
    flags += "--learning-rate 0.01 --set activation=tanh --set validation_fraction=0.2 --wait"
    job = run_json(server, "train", str(blobs_csv), *flags.split())
    assert job["status"] == "succeeded" and job["model_id"]
    config = job["config"]
    assert config["hidden_layers"] == [8, 4] and config["epochs"] == 4 and config["batch_size"] == 16
    assert (config["activation"], config["validation_fraction"], config["learning_rate"]) == ("tanh", 0.2, 0.01)

    X, _ = blobs(n=90)
    rows = "\n".join(",".join(f"{v:.5f}" for v in row) for row in X[:12]) + "\n"
    answer = api(
        server,
        "POST",
        f"/v1/models/{job['model_id']}/predict",
        json={"instances": [[float(v) for v in line.split(",")] for line in rows.split()]},
    )
    predicted = run(server, "predict", "colors", "-", stdin="a,b,c,d\n" + rows)  # a header row, from stdin
    assert predicted.returncode == 0, predicted.stderr
    assert predicted.stdout.split() == answer["predictions"]
    rows_file = blobs_csv.with_name("rows.csv")
    rows_file.write_text(rows)
    assert run(server, "predict", "colors", str(rows_file)).stdout == predicted.stdout
    as_json = run_json(server, "predict", job["model_id"], "-", stdin=rows)
    assert as_json == {"predictions": answer["predictions"], "probabilities": answer["probabilities"]}
    with_proba = run(server, "predict", "colors", "-", "--proba", stdin=rows)
    first = with_proba.stdout.splitlines()[0].split("\t")
    assert first[0] == answer["predictions"][0]
    shares = dict(item.split("=") for item in first[1:])
    assert list(shares) == answer["classes"]
    assert [float(p) for p in shares.values()] == pytest.approx(answer["probabilities"][0], abs=1e-4)


def test_cli_jobs_and_models_commands(server: ApiServer, blobs_csv: Path) -> None:
    queued = run_json(server, "train", str(blobs_csv), "--name", "colors", "--epochs", "3", "--hidden", "8")
    assert queued["status"] in ("queued", "running")  # no TTY: --no-wait is the default
    final = run_json(server, "jobs", "watch", queued["id"])
    assert final["status"] == "succeeded" and final["id"] == queued["id"]
    shown = run_json(server, "jobs", "show", queued["id"])
    assert shown["model_id"] == final["model_id"] and len(shown["history"]) == 3
    assert [job["id"] for job in run_json(server, "jobs", "list", "--status", "succeeded")] == [queued["id"]]
    assert run_json(server, "jobs", "list", "--status", "queued") == []
    models = run_json(server, "models", "list", "--name", "colors")
    assert [model["id"] for model in models] == [final["model_id"]]
    model = run_json(server, "models", "show", "colors")
    assert model["id"] == final["model_id"] and model["classes"] == ["blue", "green", "red"]

    human = {
        "jobs list": run(server, "jobs", "list").stdout,
        "jobs show": run(server, "jobs", "show", queued["id"]).stdout,
        "models list": run(server, "models", "list").stdout,
        "models show": run(server, "models", "show", final["model_id"]).stdout,
    }
    assert queued["id"] in human["jobs list"] and "succeeded" in human["jobs list"]
    assert "epoch 3/3" in human["jobs show"] and final["model_id"] in human["jobs show"]
    assert final["model_id"] in human["models list"]
    assert "blue, green, red" in human["models show"] and "4 -> 8 -> 3" in human["models show"]
    watched = run(server, "jobs", "watch", queued["id"])  # a finished job: its history at once, then the end
    assert watched.returncode == 0
    assert "epoch 1/3" in watched.stderr and "status: succeeded" in watched.stderr
    assert f"model {final['model_id']}" in watched.stdout


def test_cli_jobs_cancel_and_a_canceled_job_exits_1(server: ApiServer, tmp_path: Path) -> None:
    job = run_json(server, "train", slow_dataset(server), *SLOW)
    wait_for_epoch(server, job["id"], 1)
    canceled = run_json(server, "jobs", "cancel", job["id"])
    assert canceled["id"] == job["id"]
    watched = run(server, "--json", "jobs", "watch", job["id"])
    assert watched.returncode == 1
    assert json.loads(watched.stdout)["status"] == "canceled"
    assert f"job {job['id']} canceled" in watched.stderr
    again = run(server, "jobs", "cancel", job["id"])
    assert again.returncode == 1 and again.stdout == ""
    assert "backprop:" in again.stderr


# --- exit codes ---------------------------------------------------------------------------------------
def test_cli_failed_job_exits_1_with_the_servers_reason(server: ApiServer, tmp_path: Path) -> None:
    X, y = blobs(n=60)
    path = tmp_path / "huge.csv"
    path.write_bytes(csv_bytes(X * 1e6, y))
    result = run(
        server,
        "train",
        str(path),
        "--optimizer",
        "sgd",
        "--learning-rate",
        "10",
        "--epochs",
        "5",
        "--set",
        "standardize=false",
        "--set",
        "l2=0",
        "--wait",
    )
    assert result.returncode == 1
    assert "diverged at epoch" in result.stderr
    assert result.stdout == ""


def test_cli_usage_errors_exit_2(server: ApiServer, blobs_csv: Path, tmp_path: Path) -> None:
    bad_hidden = run(server, "train", str(blobs_csv), "--hidden", "64,x")
    assert bad_hidden.returncode == 2 and "64,x" in bad_hidden.stderr
    no_equals = run(server, "train", str(blobs_csv), "--set", "epochs")
    assert no_equals.returncode == 2 and "FIELD=VALUE" in no_equals.stderr
    twice = run(server, "train", str(blobs_csv), "--epochs", "3", "--set", "epochs=4")
    assert twice.returncode == 2 and "epochs" in twice.stderr
    assert run(server, "jobs", "frobnicate").returncode == 2
    assert run(server, "train").returncode == 2
    missing = run(server, "train", "nope.csv")
    assert missing.returncode == 2 and "nope.csv" in missing.stderr
    bad_rows = tmp_path / "rows.csv"
    bad_rows.write_text("1,2,3,4\n5,6,seven,8\n")
    unreadable = run(server, "predict", "some-model", str(bad_rows))
    assert unreadable.returncode == 2
    assert "line 2, column 3: 'seven' is not a finite number" in unreadable.stderr


def test_cli_sweep_waits_and_prints_the_final_sweep(server: ApiServer, blobs_csv: Path) -> None:
    flags = "--label color --grid learning_rate=0.05,0.01 --grid hidden=4:8,4 --seeds 0,1 --metric validation_loss"
    flags += " --set epochs=2 --set batch_size=30 --set validation_fraction=0.2 --wait"
    record = run_json(server, "sweep", str(blobs_csv), *flags.split())
    assert record["status"] == "succeeded" and record["metric"] == "validation_loss"
    overrides = [trial["overrides"] for trial in record["trials"]]
    assert {(o["learning_rate"], tuple(o["hidden_layers"])) for o in overrides} == {
        (0.05, (4,)),
        (0.05, (8, 4)),
        (0.01, (4,)),
        (0.01, (8, 4)),
    }
    assert all(len(trial["seeds"]) == 2 for trial in record["trials"])
    means = [row["mean"] for row in record["leaderboard"]]
    assert len(means) == 4 and means == sorted(means)
    assert record["best"]["trial"] == record["leaderboard"][0]["index"] and record["best"]["model_id"]


def test_cli_sweep_without_json_prints_the_leaderboard_and_the_best(server: ApiServer, blobs_csv: Path) -> None:
    flags = "--label color --grid l2=0,0.001 --set epochs=1 --set validation_fraction=0.2 --wait"
    result = run(server, "sweep", str(blobs_csv), *flags.split())
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["RANK", "TRIAL", "OVERRIDES", "MEAN", "STD", "EPOCHS"]
    assert [line.split()[2] for line in lines[1:3]] in (["l2=0", "l2=0.001"], ["l2=0.001", "l2=0"])
    assert "succeeded; best trial" in lines[3]


def test_cli_sweep_usage_errors_exit_2(server: ApiServer, blobs_csv: Path) -> None:
    bad_grid = run(server, "sweep", str(blobs_csv), "--label", "color", "--grid", "learning_rate")
    assert bad_grid.returncode == 2 and "NAME=V1,V2" in bad_grid.stderr
    bad_hidden = run(server, "sweep", str(blobs_csv), "--label", "color", "--grid", "hidden=8:x")
    assert bad_hidden.returncode == 2 and "'x'" in bad_hidden.stderr
    assert run(server, "sweep", str(blobs_csv)).returncode == 2  # no --grid
    assert api(server, "GET", "/v1/sweeps")["items"] == []


def test_cli_server_validation_errors_exit_2_naming_the_field(server: ApiServer, blobs_csv: Path) -> None:
    dataset = run_json(server, "datasets", "upload", str(blobs_csv))
    result = run(server, "--json", "train", dataset["id"], "--epochs", "0", "--set", 'momentum="lots"')
    assert result.returncode == 2
    assert result.stdout == ""
    assert "epochs:" in result.stderr and "momentum:" in result.stderr
    assert run(server, "jobs", "list", "--status", "sleeping").returncode == 2


def test_cli_unreachable_server_or_refused_key_exits_3(server: ApiServer) -> None:
    nobody = subprocess.run(
        [str(BACKPROP), "--url", f"http://127.0.0.1:{free_port()}", "jobs", "list"],
        capture_output=True,
        text=True,
        env=clean_environment(),
        timeout=120,
        check=False,
    )
    assert nobody.returncode == 3, nobody.stderr
    assert "Traceback" not in nobody.stderr and nobody.stdout == ""
    refused = run(server, "--api-key", "wrong-key", "--json", "models", "list")
    assert refused.returncode == 3 and refused.stdout == ""
    assert "--api-key or BACKPROP_API_KEY" in refused.stderr
    missing = run(server, "jobs", "show", "no-such-job")
    assert missing.returncode == 1 and "no-such-job" in missing.stderr


# --- Ctrl-C -----------------------------------------------------------------------------------------
def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def interrupt_while_waiting(server: ApiServer, *extra: str) -> tuple[str, subprocess.CompletedProcess[str]]:
    """`backprop train --wait` on a long job, SIGINT once epochs show: the job id and what the command did."""
    dataset_id = slow_dataset(server)
    argv = [str(BACKPROP), "train", dataset_id, *SLOW, "--wait", *extra]
    process = subprocess.Popen(
        argv,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=cli_env(server),
        preexec_fn=_default_sigint,  # as at a terminal, even when the suite runs in the background (SIGINT ignored)
    )
    try:
        jobs: list[dict[str, Any]] = []

        def running() -> bool:
            assert process.poll() is None
            jobs[:] = api(server, "GET", "/v1/jobs")["items"]
            return bool(jobs) and int((jobs[0].get("progress") or {}).get("epoch") or 0) >= 1

        wait_until(running, timeout=120, what="the job's first epoch", interval=0.1)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    return str(jobs[0]["id"]), subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


def test_cli_ctrl_c_leaves_the_job_running_and_says_how_to_reattach(server: ApiServer) -> None:
    job_id, result = interrupt_while_waiting(server)
    assert result.returncode == 130
    assert f"backprop jobs watch {job_id}" in result.stderr
    assert "Traceback" not in result.stderr
    # the job is left alone: still running, and its epochs keep coming
    before = int(api(server, "GET", f"/v1/jobs/{job_id}")["progress"]["epoch"])
    wait_for_epoch(server, job_id, before + 1)
    assert api(server, "GET", f"/v1/jobs/{job_id}")["status"] == "running"
    api(server, "POST", f"/v1/jobs/{job_id}/cancel")


def test_cli_ctrl_c_with_cancel_on_interrupt_cancels_the_job(server: ApiServer) -> None:
    job_id, result = interrupt_while_waiting(server, "--cancel-on-interrupt")
    assert result.returncode == 130
    assert f"job {job_id} canceled" in result.stderr
    wait_until(
        lambda: api(server, "GET", f"/v1/jobs/{job_id}")["status"] == "canceled", timeout=60, what="the job canceled"
    )


# --- the progress bar in a pseudo-terminal ---------------------------------------------------------
def in_terminal(argv: list[str], env: dict[str, str], *, columns: int = 120) -> tuple[int, str]:
    """Run `argv` with a pseudo-terminal as stdin, stdout and stderr: its exit status and the screen's bytes."""
    pid, controller = pty.fork()
    if pid == 0:  # the child: the terminal is its controlling terminal
        os.execve(argv[0], argv, env)
    fcntl.ioctl(controller, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    chunks: list[bytes] = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 1.0)
        if not ready:
            continue
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        chunks.append(chunk)
    _, status = os.waitpid(pid, 0)
    os.close(controller)
    return os.waitstatus_to_exitcode(status), b"".join(chunks).decode(errors="replace")


def test_cli_train_shows_a_live_progress_bar_on_a_terminal(server: ApiServer, blobs_csv: Path) -> None:
    argv = [str(BACKPROP), "train", str(blobs_csv), "--epochs", "6", "--batch-size", "16", "--hidden", "8"]
    code, screen = in_terminal(argv, cli_env(server))  # on a terminal, train waits by default
    assert code == 0, screen
    assert "epoch 6/6" in screen and "100%" in screen and "ETA" in screen
    assert "samples/s" in screen and "val loss" in screen
    # the job may already have ended when the CLI attaches (a tiny job): only its last status is certain here;
    # the lines for every status change are checked with scripted events in test_cli_parts
    assert "status: succeeded (attempt 1)" in screen
    assert screen.rindex("100%") > screen.rindex("epoch 1/6")  # the last frame shows the end
    assert "\x1b[" in screen  # drawn in place with escape codes, not plain lines
