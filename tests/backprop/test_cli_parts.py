"""The command line's pieces without a server: option parsing, the predict CSV reader, the progress displays."""

from __future__ import annotations

import io
from typing import Any

import pytest
import typer
from rich.console import Console

from backprop.cli import job_options, parse_hidden, parse_set
from backprop.client import Event
from backprop.feature_rows import FeatureRowsError, read_feature_rows
from backprop.progress_display import LiveProgress, PlainProgress, display_for, epoch_line, status_line


def progress(epoch: int, epochs: int = 10, **extra: Any) -> Event:
    data = {
        "epoch": epoch,
        "epochs": epochs,
        "train_loss": 0.5,
        "train_accuracy": 0.75,
        "validation_loss": 0.625,
        "validation_accuracy": 0.5,
        "samples_per_second": 12345.6,
        "eta_seconds": 75.0,
        **extra,
    }
    return Event("progress", data, epoch)


# --- options ------------------------------------------------------------------------------------------
def test_parse_hidden_reads_comma_separated_widths() -> None:
    assert parse_hidden("64,32") == [64, 32]
    assert parse_hidden(" 8 ") == [8]
    assert parse_hidden("") == []
    with pytest.raises(typer.BadParameter, match="'64,x' is not comma-separated"):
        parse_hidden("64,x")


def test_parse_set_takes_json_when_it_parses_else_text() -> None:
    assigned = parse_set(
        ["epochs=5", "activation=tanh", "hidden_layers=[8, 4]", "early_stopping=true", "name=a=b", "seed=null"]
    )
    assert assigned == {
        "epochs": 5,
        "activation": "tanh",
        "hidden_layers": [8, 4],
        "early_stopping": True,
        "name": "a=b",
        "seed": None,
    }
    with pytest.raises(typer.BadParameter, match="FIELD=VALUE"):
        parse_set(["epochs"])
    with pytest.raises(typer.BadParameter, match="FIELD=VALUE"):
        parse_set(["=5"])


def test_job_options_merges_flags_and_set_but_refuses_a_field_twice() -> None:
    flags = {"epochs": 3, "optimizer": None, "hidden_layers": [8]}
    assert job_options(flags, ["l2=0.01"]) == {"epochs": 3, "hidden_layers": [8], "l2": 0.01}
    with pytest.raises(typer.BadParameter, match="epochs given by its own option and by --set"):
        job_options(flags, ["epochs=4"])


# --- predict's CSV ------------------------------------------------------------------------------------
def test_read_feature_rows_skips_a_header_and_empty_lines() -> None:
    with_header = ["a,b\n", "1,2\n", "\n", "3.5,-4e2\n"]
    assert list(read_feature_rows(with_header, source="f.csv")) == [[1.0, 2.0], [3.5, -400.0]]
    assert list(read_feature_rows(["1,2\n", "3,4\n"], source="f.csv")) == [[1.0, 2.0], [3.0, 4.0]]
    assert list(read_feature_rows(["a,b\n"], source="f.csv")) == []


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (["1,2\n", "3\n"], "f.csv, line 2: 1 fields, expected 2"),
        (["a,b\n", "1,2,3\n"], "f.csv, line 2: 3 fields, expected 2"),
        (["1,2\n", "3,x\n"], "f.csv, line 2, column 2: 'x' is not a finite number"),
        (["1,nan\n"], "f.csv, line 1, column 2: 'nan' is not a finite number"),
        (["a,b\n", "c,d\n"], "f.csv, line 2, column 1: 'c' is not a finite number"),
    ],
)
def test_read_feature_rows_names_the_line_and_column_of_a_bad_row(lines: list[str], message: str) -> None:
    with pytest.raises(FeatureRowsError) as info:
        list(read_feature_rows(lines, source="f.csv"))
    assert str(info.value) == message


# --- displays -----------------------------------------------------------------------------------------
def test_status_line_explains_a_stall_and_a_requeue() -> None:
    assert status_line({"status": "running", "attempt": 1}) == "status: running (attempt 1)"
    assert "stopped reporting" in status_line({"status": "stalled", "attempt": 1})
    assert "re-queued after its worker was lost" in status_line({"status": "queued", "attempt": 2})
    assert status_line({"status": "queued", "attempt": 1}) == "status: queued (attempt 1)"


def test_epoch_line_shows_epoch_metrics_speed_and_eta() -> None:
    line = epoch_line("j1", progress(3).data)
    assert line == (
        "job j1: epoch 3/10 (30%)  loss 0.5000  acc 0.750  val loss 0.6250  val acc 0.500  "
        "12,346 samples/s  ETA 0:01:15"
    )


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plain_progress_writes_an_epoch_at_most_every_second_and_every_status() -> None:
    stream = io.StringIO()
    clock = Clock()
    display = PlainProgress(stream, "j1", clock=clock)
    with display:
        display.show(Event("status", {"status": "running", "attempt": 1}))
        for epoch, at in [(1, 0.0), (2, 0.4), (3, 0.99), (4, 1.0), (5, 1.5), (6, 2.2)]:
            clock.now = at
            display.show(progress(epoch))
        display.show(Event("status", {"status": "stalled", "attempt": 1}))
    lines = stream.getvalue().splitlines()
    assert [line.split("  ")[0] for line in lines[1:4]] == [
        "job j1: epoch 1/10 (10%)",
        "job j1: epoch 4/10 (40%)",
        "job j1: epoch 6/10 (60%)",
    ]
    assert lines[0] == "job j1: status: running (attempt 1)"
    assert lines[4].startswith("job j1: status: stalled")
    assert len(lines) == 5


def test_display_for_a_pipe_is_plain() -> None:
    assert isinstance(display_for(io.StringIO(), "j1"), PlainProgress)


def test_live_progress_prints_status_lines_above_the_bar_and_ends_at_100_percent() -> None:
    stream = io.StringIO()
    console = Console(file=stream, force_terminal=True, width=100)
    with LiveProgress(console, "j1") as display:
        display.show(Event("status", {"status": "running", "attempt": 1}))
        display.show(progress(1, eta_seconds=9.0))
        display.show(Event("status", {"status": "stalled", "attempt": 1}))
        display.show(Event("status", {"status": "queued", "attempt": 2}))
        display.show(progress(2, eta_seconds=8.0))
        display.show(Event("status", {"status": "succeeded", "attempt": 2}))
        display.show(Event("end", {"id": "j1", "status": "succeeded", "model_id": "m1"}))
    screen = stream.getvalue()
    assert "status: stalled" in screen and "re-queued after its worker was lost" in screen
    assert "epoch 1/10" in screen and " 10%" in screen and "ETA 0:00:09" in screen
    assert "epoch 2/10" in screen and "ETA 0:00:08" in screen and "val acc 0.500" in screen
    assert screen.rindex("100%") > screen.rindex("status: succeeded")
    assert "ETA 0:00:00" in screen[screen.rindex("100%") :]
