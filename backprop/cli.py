"""The `backprop` command: the client commands (datasets, train, jobs, models, predict) on a Backprop API, and
`serve`, `api`, `worker`, which run the service itself (`backprop.server_commands`, loaded only for them, so a
client command imports neither FastAPI, uvicorn, RQ nor the engine).

Exit status: 0 success; 1 the job failed or was canceled, or the server refused (not found, conflict, limit);
2 usage error, including a request the server rejects as invalid; 3 server unreachable or authentication
refused; 130 interrupted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import sys
from collections.abc import Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from backprop.client import (
    BackpropError,
    Client,
    Conflict,
    Forbidden,
    InvalidRequest,
    Job,
    NotFound,
    Unauthorized,
    Unavailable,
)
from backprop.feature_rows import FeatureRowsError, read_feature_rows
from backprop.progress_display import display_for, end_line, epoch_text, eta_text, metrics_text

SERVER_COMMANDS = ("serve", "api", "worker")
EXIT_JOB = 1
EXIT_USAGE = 2
EXIT_SERVER = 3
EXIT_INTERRUPTED = 130
PREDICT_CHUNK = 1000  # rows per predict request (the server's default cap is 10,000)


def __getattr__(name: str) -> Any:
    """The names of `backprop.server_commands` (build_parser, redact_url, LOCK_FILE, ...), on first use."""
    if name.startswith("__"):
        raise AttributeError(name)
    from backprop import server_commands

    try:
        return getattr(server_commands, name)
    except AttributeError:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None


# --- global options and output ------------------------------------------------------------------------------
@dataclasses.dataclass
class Options:
    """The global options: where the API is, the key, and whether to print JSON."""

    url: str | None = None
    api_key: str | None = None
    json: bool = False

    def client(self) -> Client:
        return Client(self.url, self.api_key)


JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON document on stdout (nothing else).")]


def options(ctx: typer.Context, json_flag: bool) -> Options:
    """The global options, with `--json` also accepted after the command."""
    found = ctx.find_object(Options) or Options()
    return dataclasses.replace(found, json=found.json or json_flag)


def print_json(document: Any) -> None:
    sys.stdout.write(json.dumps(document, indent=2, default=str) + "\n")


def fail(code: int, message: str, *details: str) -> NoReturn:
    """The error on stderr, then exit `code`."""
    print(f"backprop: {message}", *details, sep="\n", file=sys.stderr)
    raise typer.Exit(code)


def exit_code(error: BackpropError) -> int:
    if isinstance(error, Unavailable | Unauthorized | Forbidden):
        return EXIT_SERVER
    if isinstance(error, InvalidRequest):
        return EXIT_USAGE
    return EXIT_JOB


def report(error: BackpropError) -> int:
    """A server error on stderr, each detail with its field (or row, column, limit); the exit code for it."""
    lines = []
    for detail in error.details:
        where = detail.get("field") or ", ".join(
            f"{key} {detail[key]}" for key in ("row", "column", "limit") if detail.get(key) is not None
        )
        message = str(detail.get("message") or "")
        lines.append(f"{where}: {message}" if where else message)
    if lines and "; ".join(lines) == error.message:  # the message is the details: one line each
        print(*(f"backprop: {line}" for line in lines), sep="\n", file=sys.stderr)
    else:
        print(f"backprop: {error.message}", *(f"  {line}" for line in lines), sep="\n", file=sys.stderr)
    if isinstance(error, Unauthorized):
        print("backprop: give the key with --api-key or BACKPROP_API_KEY", file=sys.stderr)
    return exit_code(error)


def text(value: Any) -> str:
    """A value for a table: numbers short (integral floats as integers), None empty."""
    if value is None:
        return ""
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.4g}"
    return str(value)


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Rows under a header on stdout, in aligned columns (plain text: it is read by people and by awk)."""
    cells = [list(columns), *([text(cell) for cell in row] for row in rows)]
    widths = [max(len(row[index]) for row in cells) for index in range(len(columns))]
    for row in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """`name  value` lines on stdout, empty values left out."""
    shown = [(name, text(value)) for name, value in pairs if text(value)]
    width = max((len(name) for name, _ in shown), default=0)
    for name, value in shown:
        print(f"{name.ljust(width)}  {value}")


app = typer.Typer(
    name="backprop",
    help="Backprop: train and serve neural-network classifiers. Client commands talk to the API at --url.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,  # a traceback's locals would show the API key
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
datasets_app = typer.Typer(help="Upload and list datasets.", no_args_is_help=True)
jobs_app = typer.Typer(help="List, show, watch and cancel training jobs.", no_args_is_help=True)
models_app = typer.Typer(help="List and show trained models.", no_args_is_help=True)
app.add_typer(datasets_app, name="datasets")
app.add_typer(jobs_app, name="jobs")
app.add_typer(models_app, name="models")


def _version(value: bool) -> None:
    if value:
        with contextlib.suppress(metadata.PackageNotFoundError):
            print(metadata.version("backprop"))
        raise typer.Exit()


@app.callback()
def global_options(
    ctx: typer.Context,
    url: Annotated[
        str | None,
        typer.Option("--url", envvar="BACKPROP_URL", help="The API (default http://127.0.0.1:8000)."),
    ] = None,
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="BACKPROP_API_KEY", help="API key.", show_default=False)
    ] = None,
    json_flag: JsonFlag = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version and exit.")
    ] = False,
) -> None:
    ctx.obj = Options(url=url, api_key=api_key, json=json_flag)


# --- datasets -------------------------------------------------------------------------------------------
@datasets_app.command("upload")
def upload_dataset(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False, help="A CSV (header row) or NPZ file.")],
    label: Annotated[str | None, typer.Option("--label", help="The label column (default: the last).")] = None,
    name: Annotated[str | None, typer.Option("--name", help="The dataset's name.")] = None,
    json_flag: JsonFlag = False,
) -> None:
    """Upload a dataset."""
    opts = options(ctx, json_flag)
    with opts.client() as client:
        dataset = client.upload_dataset(file, label_column=label, name=name)
    if opts.json:
        print_json(dataclasses.asdict(dataset))
        return
    classes = ", ".join(f"{label} ({count})" for label, count in dataset.classes.items())
    print(f"dataset {dataset.id}: {dataset.n_samples} rows, {dataset.n_features} features, classes {classes}")


@datasets_app.command("list")
def list_datasets(ctx: typer.Context, json_flag: JsonFlag = False) -> None:
    """Your datasets, newest first."""
    opts = options(ctx, json_flag)
    with opts.client() as client:
        datasets = client.datasets()
    if opts.json:
        print_json([dataclasses.asdict(dataset) for dataset in datasets])
        return
    rows = [(d.id, d.name, d.n_samples, d.n_features, len(d.classes), d.created_at) for d in datasets]
    table(("ID", "NAME", "ROWS", "FEATURES", "CLASSES", "CREATED"), rows)


# --- train ----------------------------------------------------------------------------------------------
def parse_hidden(text: str) -> list[int]:
    """`64,32` -> [64, 32]; an empty text is no hidden layer."""
    try:
        return [int(width) for width in text.split(",") if width.strip()]
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not comma-separated layer widths like 64,32") from None


def parse_set(assignments: Sequence[str]) -> dict[str, Any]:
    """`FIELD=VALUE` pairs; a VALUE that parses as JSON is that JSON value, else the text itself."""
    found: dict[str, Any] = {}
    for assignment in assignments:
        field, separator, text = assignment.partition("=")
        if not separator or not field.strip():
            raise typer.BadParameter(f"{assignment!r} is not FIELD=VALUE", param_hint="'--set'")
        try:
            found[field.strip()] = json.loads(text)
        except ValueError:
            found[field.strip()] = text
    return found


def job_options(flags: dict[str, Any], assignments: Sequence[str]) -> dict[str, Any]:
    """The job's fields from the named flags (those given) and `--set`; one field set twice is an error."""
    chosen = {field: value for field, value in flags.items() if value is not None}
    extra = parse_set(assignments)
    twice = sorted(set(chosen) & set(extra))
    if twice:
        raise typer.BadParameter(f"{', '.join(twice)} given by its own option and by --set", param_hint="'--set'")
    return {**extra, **chosen}


def dataset_id_for(client: Client, source: str, label: str | None, name: str | None) -> str:
    """The dataset to train on: `source` uploaded when it is a file, else `source` as a dataset id."""
    if Path(source).is_file():
        return client.upload_dataset(source, label_column=label, name=name).id
    if label is not None:
        raise typer.BadParameter(f"--label applies to a FILE, and {source!r} is not a file", param_hint="'--label'")
    return source


@app.command()
def train(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(metavar="FILE|DATASET_ID", help="A CSV/NPZ file, or a dataset id.")],
    label: Annotated[str | None, typer.Option("--label", help="The label column of FILE.")] = None,
    name: Annotated[str | None, typer.Option("--name", help="The model's name (and FILE's dataset's).")] = None,
    hidden: Annotated[str | None, typer.Option("--hidden", help="Hidden layer widths, e.g. 64,32.")] = None,
    epochs: Annotated[int | None, typer.Option("--epochs")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    optimizer: Annotated[str | None, typer.Option("--optimizer", help="e.g. adam, sgd, momentum.")] = None,
    learning_rate: Annotated[float | None, typer.Option("--learning-rate")] = None,
    assignments: Annotated[
        list[str] | None,
        typer.Option("--set", metavar="FIELD=VALUE", help="Any job field; VALUE is JSON when it parses."),
    ] = None,
    wait: Annotated[
        bool | None, typer.Option("--wait/--no-wait", help="Follow the job until it ends (default: on a TTY).")
    ] = None,
    cancel_on_interrupt: Annotated[
        bool, typer.Option("--cancel-on-interrupt", help="Ctrl-C cancels the job (default: it keeps running).")
    ] = False,
    json_flag: JsonFlag = False,
) -> None:
    """Train a model on FILE (uploaded first) or on an uploaded dataset."""
    opts = options(ctx, json_flag)
    flags = {
        "name": name,
        "hidden_layers": None if hidden is None else parse_hidden(hidden),
        "epochs": epochs,
        "batch_size": batch_size,
        "optimizer": optimizer,
        "learning_rate": learning_rate,
    }
    fields_ = job_options(flags, assignments or [])
    with opts.client() as client:
        dataset_id = dataset_id_for(client, source, label, name)
        try:
            job = client.train(dataset_id, **fields_)
        except NotFound as exc:
            if Path(source).suffix or "/" in source:
                fail(EXIT_USAGE, f"{source}: no such file")
            raise exc
        if not (sys.stdout.isatty() if wait is None else wait):
            if opts.json:
                print_json(job.data)
            else:
                print(f"job {job.id} {job.status}; follow it with: backprop jobs watch {job.id}")
            return
        raise typer.Exit(follow(job, opts, cancel_on_interrupt=cancel_on_interrupt))


def follow(job: Job, opts: Options, *, cancel_on_interrupt: bool) -> int:
    """Show the job's events until it ends; the exit code of its outcome (or of an interruption)."""
    try:
        with display_for(sys.stderr, job.id) as display:
            for event in job.events():
                display.show(event)
    except KeyboardInterrupt:
        return interrupted(job, cancel_on_interrupt)
    final = job.data
    if opts.json:
        print_json(final)
    if final.get("status") == "succeeded":
        if not opts.json:
            print(end_line(final))
        return 0
    print(f"backprop: {end_line(final)}", file=sys.stderr)
    return EXIT_JOB


def interrupted(job: Job, cancel: bool) -> int:
    """Ctrl-C while following: the job keeps running (say how to reattach), or is canceled when asked."""
    if cancel:
        try:
            job.cancel()
        except Conflict:  # it ended meanwhile
            job.refresh()
        state = "canceled: it stops at its next epoch" if job.status == "running" else job.status
        print(f"backprop: interrupted; job {job.id} {state}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print(
        f"backprop: interrupted; job {job.id} keeps running. Reattach with: backprop jobs watch {job.id}",
        file=sys.stderr,
    )
    return EXIT_INTERRUPTED


# --- jobs -----------------------------------------------------------------------------------------------
def epoch_cell(job: dict[str, Any]) -> str:
    progress = job.get("progress")
    return "" if not progress else epoch_text(progress)


@jobs_app.command("list")
def list_jobs(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option("--status", help="Only jobs in this status.")] = None,
    json_flag: JsonFlag = False,
) -> None:
    """Your jobs, newest first."""
    opts = options(ctx, json_flag)
    with opts.client() as client:
        jobs = client.jobs(status=status)
    if opts.json:
        print_json([job.data for job in jobs])
        return
    rows = [
        (j.id, j.data.get("name"), j.status, epoch_cell(j.data), j.model_id, j.data.get("created_at")) for j in jobs
    ]
    table(("ID", "NAME", "STATUS", "PROGRESS", "MODEL", "CREATED"), rows)


@jobs_app.command("show")
def show_job(
    ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="ID")], json_flag: JsonFlag = False
) -> None:
    """One job: status, progress, model or error, configuration."""
    opts = options(ctx, json_flag)
    with opts.client() as client:
        job = client.job(job_id)
    if opts.json:
        print_json(job.data)
        return
    progress = job.progress or {}
    config = job.data.get("config") or {}
    fields(
        [
            ("id", job.id),
            ("name", job.data.get("name")),
            ("status", job.status),
            ("dataset", job.data.get("dataset_id")),
            ("model", job.model_id),
            ("error", job.error),
            ("progress", epoch_text(progress) if progress else None),
            ("metrics", metrics_text(progress) if progress else None),
            ("eta", eta_text(progress) if progress and job.status == "running" else None),
            ("attempts", job.data.get("attempts")),
            ("created", job.data.get("created_at")),
            ("started", job.data.get("started_at")),
            ("finished", job.data.get("finished_at")),
            ("config", ", ".join(f"{key}={json.dumps(value)}" for key, value in sorted(config.items()))),
        ]
    )


@jobs_app.command("watch")
def watch_job(
    ctx: typer.Context,
    job_id: Annotated[str, typer.Argument(metavar="ID")],
    cancel_on_interrupt: Annotated[
        bool, typer.Option("--cancel-on-interrupt", help="Ctrl-C cancels the job (default: it keeps running).")
    ] = False,
    json_flag: JsonFlag = False,
) -> None:
    """Follow a job until it ends (a finished job: its history, then its outcome)."""
    opts = options(ctx, json_flag)
    with opts.client() as client:
        job = client.job(job_id)
        raise typer.Exit(follow(job, opts, cancel_on_interrupt=cancel_on_interrupt))


@jobs_app.command("cancel")
def cancel_job(
    ctx: typer.Context, job_id: Annotated[str, typer.Argument(metavar="ID")], json_flag: JsonFlag = False
) -> None:
    """Cancel a job: a queued one never runs, a running one stops at its next epoch."""
    opts = options(ctx, json_flag)
    with opts.client() as client:
        job = client.job(job_id).cancel()
    if opts.json:
        print_json(job.data)
    else:
        print(f"job {job.id} {job.status}")


# --- models ---------------------------------------------------------------------------------------------
def accuracy_cell(metrics: dict[str, Any]) -> str:
    value = metrics.get("validation_accuracy", metrics.get("train_accuracy"))
    return "" if value is None else f"{value:.3f}"


@models_app.command("list")
def list_models(
    ctx: typer.Context,
    name: Annotated[str | None, typer.Option("--name", help="Only the versions of this name.")] = None,
    json_flag: JsonFlag = False,
) -> None:
    """Your models, newest first."""
    opts = options(ctx, json_flag)
    with opts.client() as client:
        models = client.models(name=name)
    if opts.json:
        print_json([model.data for model in models])
        return
    rows = [
        (m.id, m.name, m.version, len(m.classes), m.n_features, accuracy_cell(m.metrics), m.data.get("created_at"))
        for m in models
    ]
    table(("ID", "NAME", "VERSION", "CLASSES", "FEATURES", "ACCURACY", "CREATED"), rows)


@models_app.command("show")
def show_model(
    ctx: typer.Context,
    name_or_id: Annotated[str, typer.Argument(metavar="NAME|ID", help="A model id, or a name (its latest version).")],
    json_flag: JsonFlag = False,
) -> None:
    """One model: classes, layers, metrics, where it came from."""
    opts = options(ctx, json_flag)
    with opts.client() as client:
        model = client.model(name_or_id)
    if opts.json:
        print_json(model.data)
        return
    metrics = ", ".join(f"{key} {text(value)}" for key, value in sorted(model.metrics.items()))
    fields(
        [
            ("id", model.id),
            ("name", f"{model.name} (version {model.version})"),
            ("classes", ", ".join(str(label) for label in model.classes)),
            ("features", model.n_features),
            ("layers", " -> ".join(str(width) for width in model.data.get("layer_sizes") or [])),
            ("activation", model.data.get("activation")),
            ("parameters", model.data.get("n_parameters")),
            ("metrics", metrics),
            ("dataset", model.data.get("dataset_id")),
            ("job", model.data.get("job_id")),
            ("created", model.data.get("created_at")),
        ]
    )


# --- predict --------------------------------------------------------------------------------------------
def feature_rows(path: str) -> list[list[float]]:
    """The rows of FILE, or of stdin for `-`; a usage error names the line and column of a bad cell."""
    try:
        if path == "-":
            return list(read_feature_rows(sys.stdin, source="stdin"))
        with Path(path).open(newline="") as handle:
            return list(read_feature_rows(handle, source=path))
    except FeatureRowsError as exc:
        fail(EXIT_USAGE, str(exc))
    except OSError as exc:
        fail(EXIT_USAGE, f"{path}: {exc.strerror or exc}")


def chunks(rows: list[list[float]], size: int) -> Iterator[list[list[float]]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


@app.command()
def predict(
    ctx: typer.Context,
    name_or_id: Annotated[str, typer.Argument(metavar="NAME|ID", help="A model id, or a name (its latest version).")],
    file: Annotated[str, typer.Argument(metavar="FILE|-", help="CSV rows of features (header optional); - is stdin.")],
    proba: Annotated[bool, typer.Option("--proba", help="Each label with the probabilities of all classes.")] = False,
    json_flag: JsonFlag = False,
) -> None:
    """Predict the label of each row of FILE (one per line)."""
    opts = options(ctx, json_flag)
    rows = feature_rows(file)
    if not rows:
        fail(EXIT_USAGE, f"{'stdin' if file == '-' else file}: no rows of features")
    predictions: list[Any] = []
    probabilities: list[list[float]] = []
    with opts.client() as client:
        model = client.model(name_or_id)
        for chunk in chunks(rows, PREDICT_CHUNK):
            answer = model.prediction(chunk)
            predictions += answer["predictions"]
            probabilities += answer["probabilities"]
    if opts.json:
        print_json({"predictions": predictions, "probabilities": probabilities})
        return
    for label, row in zip(predictions, probabilities, strict=True):
        if proba:
            shares = "\t".join(f"{cls}={p:.4f}" for cls, p in zip(model.classes, row, strict=True))
            print(f"{label}\t{shares}")
        else:
            print(label)


# --- serve, api, worker -----------------------------------------------------------------------------------
_PASS_THROUGH = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}


def run_server_command(argv: Sequence[str]) -> int:
    """`backprop serve|api|worker ...`, parsed and run by `backprop.server_commands`."""
    from backprop import server_commands

    return server_commands.main(argv)


@app.command(context_settings=_PASS_THROUGH, add_help_option=False)
def serve(ctx: typer.Context) -> None:
    """Run Redis (embedded unless REDIS_URL is set), workers and the API, supervised (see serve --help)."""
    raise typer.Exit(run_server_command(["serve", *ctx.args]))


@app.command(context_settings=_PASS_THROUGH, add_help_option=False)
def api(ctx: typer.Context) -> None:
    """Run the HTTP API alone (see api --help)."""
    raise typer.Exit(run_server_command(["api", *ctx.args]))


@app.command(context_settings=_PASS_THROUGH, add_help_option=False)
def worker(ctx: typer.Context) -> None:
    """Run one RQ training worker (see worker --help)."""
    raise typer.Exit(run_server_command(["worker", *ctx.args]))


# --- entry point ----------------------------------------------------------------------------------------
def main(argv: Sequence[str] | None = None) -> int:
    """`backprop COMMAND ...`: serve, api and worker go to their own parser; the rest is the client's."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in SERVER_COMMANDS:
        return run_server_command(args)
    command = typer.main.get_command(app)
    try:
        command.main(args=args, prog_name="backprop")  # exits: usage errors 2, typer.Exit's code, Ctrl-C 130
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except BackpropError as exc:
        return report(exc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
