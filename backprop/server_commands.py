"""`backprop serve` (the whole stack, supervised), `backprop api` and `backprop worker` (each part alone).

Their own argparse parser: `backprop.cli` hands these commands over before it parses anything, so their flags,
help and exit codes are argparse's. This module imports the server's settings; the client commands never load it.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import signal
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import IO, TYPE_CHECKING, NoReturn
from urllib.parse import urlsplit, urlunsplit

from pydantic import AliasChoices, ValidationError

from service.settings import Settings, get_settings, is_loopback

if TYPE_CHECKING:
    from backprop.embedded_redis import RedisServer
    from backprop.supervisor import Child, ProcessChild, Supervisor

logger = logging.getLogger("backprop")

EXIT_CONFIG = 2
STATUS_FILE = "serve.json"
LOCK_FILE = "serve.lock"


# --- configuration ---------------------------------------------------------------------------------------
def env_names(field_name: str) -> list[str]:
    """Environment variables that set Settings field `field_name`, in priority order."""
    field = Settings.model_fields[field_name]
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [str(choice) for choice in alias.choices]
    if isinstance(alias, str):
        return [alias]
    prefix = str(Settings.model_config.get("env_prefix", ""))
    return [f"{prefix}{field_name}".upper()]


def _env_name_for(loc: object) -> str:
    """The variable to blame for a validation error at `loc`: the one that is set, else the main one."""
    name = str(loc)
    if name in Settings.model_fields:
        candidates = env_names(name)
    else:
        candidates = next(
            (env_names(field) for field in Settings.model_fields if name in env_names(field)), [name]
        )
    environ = {key.upper() for key in os.environ}
    return next((candidate for candidate in candidates if candidate.upper() in environ), candidates[0])


def describe_settings_error(error: ValidationError) -> list[str]:
    """One line per problem, naming the environment variable (not the value: it may be a secret)."""
    lines = []
    for item in error.errors():
        where = _env_name_for(item["loc"][0]) if item["loc"] else "configuration"
        message = str(item["msg"]).removeprefix("Value error, ")
        lines.append(f"{where}: {message}")
    return lines


def load_settings() -> Settings:
    """The process' settings, or exit 2 with a message naming each bad variable (no traceback)."""
    try:
        return get_settings()
    except ValidationError as error:
        details = [f"  {line}" for line in describe_settings_error(error)]
        _fail(EXIT_CONFIG, "invalid configuration:", *details)


def _fail(code: int, message: str, *details: str) -> NoReturn:
    print(f"backprop: {message}", *details, sep="\n", file=sys.stderr)
    raise SystemExit(code)


def check_blob_store(settings: Settings) -> None:
    """Exit 2 with a message naming the setting when the blob store is unusable (a missing bucket is created
    when the credentials allow it)."""
    from worker import BlobConfigError, open_blob_store

    try:
        open_blob_store(settings.blob_config()).check(create=True)
    except BlobConfigError as exc:
        _fail(EXIT_CONFIG, f"blob store: {exc}")


def configure_logging(settings: Settings) -> None:
    """Log lines per settings.log_format and settings.log_level."""
    from service.logs import configure_logging as configure

    configure(settings.log_format, settings.log_level)


def redact_url(url: str) -> str:
    """`url` with any password replaced by ***."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:***@{netloc}"))


def check_open_access(settings: Settings, host: str) -> None:
    """Exit 2 when the API would listen on `host` open to anyone; warn when that is allowed on purpose."""
    refusal = settings.open_access_refusal(host)
    if refusal is not None:
        _fail(EXIT_CONFIG, refusal)
    if not settings.parsed_api_keys() and not is_loopback(host):
        logger.warning(
            "BACKPROP_ALLOW_NO_AUTH=true and no API keys (BACKPROP_API_KEYS): anyone who can reach %s "
            "has full access",
            host,
        )


def port_number(text: str) -> int:
    """argparse type: a TCP port."""
    port = int(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (1-65535)")
    return port


def _url_host(host: str) -> str:
    if host in ("0.0.0.0", "", "::"):
        return "127.0.0.1"
    return f"[{host}]" if ":" in host else host


# --- backprop api ----------------------------------------------------------------------------------------
def run_api(args: argparse.Namespace) -> int:
    """The HTTP API under uvicorn (settings.api_workers processes)."""
    settings = load_settings()
    configure_logging(settings)
    host = args.host if args.host is not None else settings.host
    port = args.port if args.port is not None else settings.port
    check_open_access(settings, host)
    check_blob_store(settings)
    import uvicorn

    uvicorn.run(
        "service.main:create_app",
        factory=True,
        host=host,
        port=port,
        workers=settings.api_workers,
        log_config=None,
        access_log=False,  # the app logs one line per request itself
        server_header=False,
        timeout_graceful_shutdown=10,
    )
    return 0


# --- backprop worker -------------------------------------------------------------------------------------
def run_worker_command(args: argparse.Namespace) -> int:
    """One RQ worker on settings.queue_name; training jobs run in forked work-horses."""
    settings = load_settings()
    configure_logging(settings)
    check_blob_store(settings)
    import redis

    from worker import run_worker

    try:
        run_worker(
            settings.redis_url,
            queue_name=settings.queue_name,
            blobs=settings.blob_config(attempts=3),
            blob_retry_seconds=settings.blob_retry_seconds,
            burst=args.burst,
            worker_ttl=settings.worker_ttl,
            job_monitoring_interval=settings.job_monitoring_interval,
            checkpoint_seconds=settings.checkpoint_seconds,
            name=args.name,
            progress_min_interval=settings.progress_min_interval,
            running_limit=settings.max_running_jobs_per_key,
            blas_threads=settings.blas_threads,
            temp_min_age=settings.orphan_min_age,
        )
    except redis.ConnectionError as exc:
        logger.error("cannot reach Redis at %s: %s", redact_url(settings.redis_url), exc)
        return 1
    return 0


# --- backprop serve --------------------------------------------------------------------------------------
def _lock_data_dir(data_dir: Path) -> IO[str]:
    """Hold an exclusive lock on the data directory for the life of this process."""
    handle = (data_dir / LOCK_FILE).open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        _fail(1, f"another `backprop serve` is using {data_dir}")
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle


def _api_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as response:  # our own API
            return int(response.status) == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _embedded_redis(data_dir: Path) -> RedisServer:
    """The embedded Redis of `data_dir`: AOF and password (0600) under data_dir/redis, on a free port."""
    from backprop.embedded_redis import (
        RedisServer,
        RedisServerNotFoundError,
        find_redis_server,
        free_port,
        stored_password,
    )

    try:
        find_redis_server()
    except RedisServerNotFoundError as exc:
        _fail(1, str(exc))
    redis_dir = data_dir / "redis"
    return RedisServer(redis_dir, free_port(), persistent=True, password=stored_password(redis_dir))


def _redis_tier(
    settings: Settings, data_dir: Path, env: dict[str, str], *, external: bool
) -> tuple[list[Child], int | None]:
    """No child for an external Redis; else the embedded one and its port, its URL (with the password) put
    into `env`."""
    from backprop.supervisor import RedisChild

    if external:
        logger.info("using the external Redis at %s", redact_url(settings.redis_url))
        return [], None
    server = _embedded_redis(data_dir)
    env["REDIS_URL"] = server.url  # the password reaches the children here, never on a command line
    return [RedisChild("redis", server)], server.port


def _supervise(supervisor: Supervisor, api: ProcessChild, base_url: str, lock: IO[str]) -> None:
    """Run the children until a signal stops them, logging once when the API first answers; then release."""
    announced = False

    def announce_ready() -> None:
        nonlocal announced
        if not announced and api.running() and _api_ready(f"{base_url}/healthz"):
            announced = True
            logger.info("API ready at %s/docs", base_url)

    try:
        supervisor.start()
        supervisor.run(tick=announce_ready)
    finally:
        supervisor.stop()
        lock.close()


def run_serve(args: argparse.Namespace) -> int:
    """Embedded (or external) Redis, N workers and the API, each a supervised child process."""
    from backprop.supervisor import ProcessChild, Supervisor, worker_blas_threads

    settings = load_settings()
    configure_logging(settings)
    if args.workers < 1:
        _fail(EXIT_CONFIG, "--workers must be at least 1")
    host = args.host if args.host is not None else settings.host
    port = args.port if args.port is not None else settings.port
    check_open_access(settings, host)
    if settings.blob_url is not None and settings.blob_url.startswith("s3://"):
        check_blob_store(settings)  # a local directory is checked by each child, under its own data dir
    data_dir = Path(args.data_dir if args.data_dir is not None else settings.data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock_data_dir(data_dir)

    env = dict(os.environ)
    env.update(
        BACKPROP_DATA_DIR=str(data_dir),
        BACKPROP_HOST=host,
        BACKPROP_PORT=str(port),
        PYTHONUNBUFFERED="1",
    )
    external = any(name in os.environ for name in ("REDIS_URL", "BACKPROP_REDIS_URL"))
    redis_tier, redis_port = _redis_tier(settings, data_dir, env, external=external)

    command = [sys.executable, "-m", "backprop.cli"]  # the children run the same command line
    worker_env = {**env, "BACKPROP_BLAS_THREADS": str(worker_blas_threads(settings.blas_threads, args.workers))}
    workers: list[Child] = [
        ProcessChild(f"worker-{index}", [*command, "worker"], worker_env, force_signal=signal.SIGTERM)
        for index in range(1, args.workers + 1)
    ]
    api = ProcessChild("api", [*command, "api", "--host", host, "--port", str(port)], env)
    base_url = f"http://{_url_host(host)}:{port}"
    supervisor = Supervisor(
        [redis_tier, workers, [api]],
        status_file=data_dir / STATUS_FILE,
        grace_seconds=args.grace_period,
        status_extra={
            "api_url": base_url,
            "data_dir": str(data_dir),
            "redis": "external" if external else "embedded",
            "redis_port": redis_port,
        },
    )
    supervisor.install_signal_handlers()
    print(f"Backprop: API docs at {base_url}/docs, data in {data_dir} (Ctrl-C stops)", flush=True)
    _supervise(supervisor, api, base_url, lock)
    logger.info("stopped")
    return 0


# --- entry point -----------------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="backprop", description=__doc__.split("\n", 1)[0])
    with contextlib.suppress(metadata.PackageNotFoundError):
        parser.add_argument("--version", action="version", version=metadata.version("backprop"))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve", help="run Redis (embedded unless REDIS_URL is set), workers and the API, supervised"
    )
    serve.add_argument("--host", help="address the API binds to (default BACKPROP_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=port_number, help="API port (default BACKPROP_PORT or 8000)")
    serve.add_argument(
        "--data-dir", help="datasets, models, jobs and Redis' AOF (default BACKPROP_DATA_DIR or ./var)"
    )
    serve.add_argument("--workers", type=int, default=1, help="RQ worker processes (default 1)")
    serve.add_argument(
        "--grace-period",
        type=float,
        default=10.0,
        help="seconds a stopping worker may spend finishing its job before it is forced (default 10)",
    )
    serve.set_defaults(handler=run_serve)

    api = commands.add_parser("api", help="run the HTTP API (uvicorn, BACKPROP_API_WORKERS processes)")
    api.add_argument("--host", help="bind address (default BACKPROP_HOST or 127.0.0.1)")
    api.add_argument("--port", type=port_number, help="port (default BACKPROP_PORT or 8000)")
    api.set_defaults(handler=run_api)

    worker = commands.add_parser("worker", help="run one RQ training worker")
    worker.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    worker.add_argument("--name", help="worker name (default: generated, unique)")
    worker.set_defaults(handler=run_worker_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`backprop serve|api|worker ...`."""
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code
