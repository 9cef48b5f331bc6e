"""docker-compose.yml, Dockerfile, .dockerignore and .env.example agree with the code (no Docker needed)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from typing import Any
from urllib.parse import urlsplit

import pytest

from backprop.cli import build_parser
from service.settings import Settings
from tests.deploy.deploy_files import (
    COMPOSE_ONLY_VARIABLES,
    DOCKERFILE,
    ROOT,
    WORKERS_COMPOSE_FILE,
    InterpolationError,
    Stage,
    command_argv,
    dockerignore_patterns,
    dockerignored,
    env_example_entries,
    load_compose,
    parse_dockerfile,
    service_environment,
    settings_env_vars,
    settings_from,
)

PASSWORD = "s3cret-Pw-0123456789"
MINIO_USER = "backprop-minio"
MINIO_PASSWORD = "minio-s3cret-0123456789"
API_KEYS = "alice-0123456789:user,ops-0123456789:admin"
# a .env with what compose requires
DOT_ENV = {
    "REDIS_PASSWORD": PASSWORD,
    "BACKPROP_API_KEYS": API_KEYS,
    "MINIO_ROOT_USER": MINIO_USER,
    "MINIO_ROOT_PASSWORD": MINIO_PASSWORD,
}
COMPOSE_ENV = DOT_ENV
MINIO = {"MINIO_ROOT_USER": MINIO_USER, "MINIO_ROOT_PASSWORD": MINIO_PASSWORD}
APP_SERVICES = ("api", "worker")
# The Settings fields `backprop worker` reads: all a worker container is given.
WORKER_SETTINGS = {
    "redis_url",
    "data_dir",
    "blob_dir",
    "blob_url",
    "s3_endpoint_url",
    "aws_access_key_id",
    "aws_secret_access_key",
    "aws_default_region",
    "blob_retry_seconds",
    "queue_name",
    "worker_ttl",
    "job_monitoring_interval",
    "checkpoint_seconds",
    "progress_min_interval",
    "blas_threads",
    "log_format",
    "log_level",
}
# Settings whose compose default differs from the Settings default on purpose: the workers are `replicas`
# processes on one host, so each gets its share of the cores rather than the automatic value of a lone worker.
COMPOSE_OWN_DEFAULTS = {"blas_threads"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_compose(DOT_ENV)


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse_dockerfile(DOCKERFILE.read_text())[1]


def project_scripts() -> dict[str, str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return dict(pyproject["project"]["scripts"])


def assert_is_project_command(argv: list[str]) -> None:
    """argv[0] is a console script of this project, installed, and the rest parses as its arguments."""
    installed = {ep.name: ep.value for ep in metadata.distribution("backprop").entry_points}
    assert argv[0] in project_scripts(), f"{argv[0]} is not in [project.scripts]"
    assert installed.get(argv[0]) == project_scripts()[argv[0]], f"{argv[0]} is not installed as declared"
    assert installed[argv[0]] == "backprop.cli:main"
    build_parser().parse_args(argv[1:])  # SystemExit(2) on an unknown command or option


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Named-volume source -> container path of a service's short-syntax volumes."""
    found = {}
    for volume in service.get("volumes", []):
        source, target = str(volume).split(":")[:2]
        found[source] = target
    return found


# --- compose --------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", APP_SERVICES)
def test_compose_command_is_project_entry_point(compose: dict[str, Any], name: str) -> None:
    assert_is_project_command(command_argv(compose["services"][name]["command"]))


@pytest.mark.parametrize("name", APP_SERVICES)
def test_compose_environment_is_settings_fields(compose: dict[str, Any], name: str) -> None:
    environment = service_environment(compose["services"][name])
    known = settings_env_vars()
    unknown = sorted(variable for variable in environment if variable.upper() not in known)
    assert not unknown, f"{name}: not Settings fields: {unknown}"
    settings = settings_from(environment)  # and the values validate
    assert settings.redis_url == f"redis://:{PASSWORD}@redis:6379/0"


def test_compose_api_port_matches_settings(compose: dict[str, Any], stages: list[Stage]) -> None:
    api = compose["services"]["api"]
    settings = settings_from(service_environment(api))
    args = build_parser().parse_args(command_argv(api["command"])[1:])
    listening = args.port if args.port is not None else settings.port
    published = [str(port).split(":") for port in api["ports"]]
    assert published == [[str(listening), str(listening)]]
    assert args.host == "0.0.0.0"
    exposed = [word for item in stages[-1].all("EXPOSE") for word in item.arguments.split()]
    assert str(listening) in exposed


def test_compose_api_workers_from_environment(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    assert "BACKPROP_API_WORKERS" in service_environment(api)
    scaled = load_compose({**DOT_ENV, "BACKPROP_API_WORKERS": "5"})
    assert settings_from(service_environment(scaled["services"]["api"])).api_workers == 5


def test_compose_blobs_in_the_minio_bucket_and_no_shared_volume(compose: dict[str, Any]) -> None:
    services = compose["services"]
    settings = {name: settings_from(service_environment(services[name])) for name in APP_SERVICES}
    assert settings["api"].blob_url == settings["worker"].blob_url
    assert str(settings["api"].blob_url).startswith("s3://")
    for name in APP_SERVICES:
        assert "volumes" not in services[name], f"{name} mounts a volume: the blob store is the bucket"
        config = settings[name].blob_config()
        assert urlsplit(config.endpoint_url or "").hostname == "minio"
        assert (config.access_key_id, config.secret_access_key) == (MINIO_USER, MINIO_PASSWORD)
    assert "backprop-data" not in compose["volumes"]


def test_compose_minio_pinned_persistent_with_healthcheck(compose: dict[str, Any]) -> None:
    minio = compose["services"]["minio"]
    assert re.fullmatch(r"(quay\.io/)?minio/minio:RELEASE\.\d{4}-\d\d-\d\dT[\d-]+Z", minio["image"]), minio["image"]
    environment = service_environment(minio)
    assert (environment["MINIO_ROOT_USER"], environment["MINIO_ROOT_PASSWORD"]) == (MINIO_USER, MINIO_PASSWORD)
    argv = command_argv(minio["command"])
    assert argv[0] == "server"
    assert mounts(minio)["minio-data"] == argv[1]
    assert "minio-data" in compose["volumes"]
    assert minio["healthcheck"]["test"][0] in ("CMD", "CMD-SHELL")
    assert "ports" not in minio, "MinIO must not be published to the host"
    for name in APP_SERVICES:
        assert compose["services"][name]["depends_on"]["minio"]["condition"] == "service_healthy"


@pytest.mark.parametrize("variable", ["MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD"])
def test_compose_requires_minio_credentials(variable: str) -> None:
    with pytest.raises(InterpolationError, match=variable):
        load_compose({name: value for name, value in COMPOSE_ENV.items() if name != variable})


WORKERS_ENV = {
    "REDIS_URL": f"redis://:{PASSWORD}@main.example:6379/0",
    "BACKPROP_BLOB_URL": "s3://backprop/blobs",
    "BACKPROP_S3_ENDPOINT_URL": "http://main.example:9000",
    "AWS_ACCESS_KEY_ID": MINIO_USER,
    "AWS_SECRET_ACCESS_KEY": MINIO_PASSWORD,
}


def test_workers_compose_file_runs_workers_from_environment_without_volumes() -> None:
    workers = load_compose(WORKERS_ENV, WORKERS_COMPOSE_FILE)
    assert set(workers["services"]) == {"worker"}
    worker = workers["services"]["worker"]
    assert_is_project_command(command_argv(worker["command"]))
    assert command_argv(worker["command"])[1] == "worker"
    assert "volumes" not in worker and "ports" not in worker and "container_name" not in worker
    assert "env_file" not in worker, "a worker must not get every variable of .env (API keys among them)"
    environment = service_environment(worker)
    known = settings_env_vars()
    assert not [variable for variable in environment if variable.upper() not in known]
    given = {known[variable] for variable in environment}
    assert given <= WORKER_SETTINGS, f"a worker does not read {sorted(given - WORKER_SETTINGS)}"
    settings = settings_from(environment)
    assert settings.redis_url == WORKERS_ENV["REDIS_URL"]
    assert settings.blob_config().location == "s3://backprop/blobs"
    assert settings.blob_config().endpoint_url == "http://main.example:9000"


@pytest.mark.parametrize("variable", ["REDIS_URL", "BACKPROP_BLOB_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"])
def test_workers_compose_file_requires(variable: str) -> None:
    with pytest.raises(InterpolationError, match=variable):
        load_compose({k: v for k, v in WORKERS_ENV.items() if k != variable}, WORKERS_COMPOSE_FILE)


def test_compose_redis_persistent_with_password_and_healthcheck(compose: dict[str, Any]) -> None:
    redis = compose["services"]["redis"]
    assert re.fullmatch(r"redis:7(\.\d+)*(-[a-z0-9.]+)?", redis["image"])
    argv = command_argv(redis["command"])
    options = dict(zip(argv[1::2], argv[2::2], strict=True))
    assert argv[0] == "redis-server"
    assert options["--appendonly"] == "yes"
    assert options["--appendfsync"] == "everysec"
    assert options["--maxmemory-policy"] == "noeviction"
    assert options["--requirepass"] == PASSWORD
    test = redis["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL")
    assert "redis-cli" in " ".join(test) and "ping" in " ".join(test)
    assert service_environment(redis).get("REDISCLI_AUTH") == PASSWORD or PASSWORD in " ".join(test)
    assert "ports" not in redis, "Redis must not be published to the host"
    assert mounts(redis)["redis-data"] == "/data"
    assert "redis-data" in compose["volumes"]


def test_compose_requires_redis_password() -> None:
    with pytest.raises(InterpolationError, match="REDIS_PASSWORD"):
        load_compose({"BACKPROP_API_KEYS": API_KEYS})


@pytest.mark.parametrize(
    "dot_env",
    [
        {**MINIO, "REDIS_PASSWORD": PASSWORD},
        {**MINIO, "REDIS_PASSWORD": PASSWORD, "BACKPROP_API_KEYS": ""},
        {**MINIO, "REDIS_PASSWORD": PASSWORD, "BACKPROP_ALLOW_NO_AUTH": "true"},
    ],
)
def test_compose_requires_api_keys(dot_env: dict[str, str]) -> None:
    with pytest.raises(InterpolationError, match=r"BACKPROP_API_KEYS: set BACKPROP_API_KEYS in \.env"):
        load_compose(dot_env)


def test_compose_api_is_authenticated_on_every_interface(compose: dict[str, Any]) -> None:
    api = compose["services"]["api"]
    settings = settings_from(service_environment(api))
    args = build_parser().parse_args(command_argv(api["command"])[1:])
    assert settings.parsed_api_keys() == {"alice-0123456789": "user", "ops-0123456789": "admin"}
    assert not settings.allow_no_auth
    assert settings.open_access_refusal(args.host) is None


def test_env_example_as_is_does_not_start_compose() -> None:
    # `cp .env.example .env && docker compose up` stops until a Redis password and API keys are chosen.
    assigned = env_example_entries(active_only=True)
    assert assigned.get("REDIS_PASSWORD") == "" and assigned.get("BACKPROP_API_KEYS") == ""
    with pytest.raises(InterpolationError):
        load_compose(assigned)


def test_compose_worker_gets_only_worker_settings(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert "env_file" not in worker, "a worker must not get every variable of .env (API keys among them)"
    environment = service_environment(worker)
    known = settings_env_vars()
    given = {known[variable] for variable in environment}
    assert given <= WORKER_SETTINGS, f"a worker does not read {sorted(given - WORKER_SETTINGS)}"
    assert not any(API_KEYS in value or value == PASSWORD for value in environment.values())
    settings = settings_from(environment)
    defaults = Settings.model_validate({})
    blob_store = {"blob_url", "s3_endpoint_url", "aws_access_key_id", "aws_secret_access_key", "aws_default_region"}
    compose_own = COMPOSE_OWN_DEFAULTS | blob_store
    for name in WORKER_SETTINGS - {"redis_url", "data_dir", "blob_dir", "log_format"} - compose_own:
        assert getattr(settings, name) == getattr(defaults, name), f"{name}: the compose default differs"


def test_compose_worker_settings_come_from_dot_env() -> None:
    dot_env = {
        **DOT_ENV,
        "BACKPROP_QUEUE_NAME": "other",
        "BACKPROP_WORKER_TTL": "30",
        "BACKPROP_JOB_MONITORING_INTERVAL": "2",
        "BACKPROP_CHECKPOINT_SECONDS": "5",
        "BACKPROP_PROGRESS_MIN_INTERVAL": "1",
        "LOG_LEVEL": "DEBUG",
        "BACKPROP_BLOB_DIR": "/elsewhere",
        "BACKPROP_BLOB_URL": "/elsewhere",
        "BACKPROP_BLOB_RETRY_SECONDS": "90",
    }
    services = load_compose(dot_env)["services"]
    worker = settings_from(service_environment(services["worker"]))
    assert (worker.queue_name, worker.worker_ttl, worker.job_monitoring_interval) == ("other", 30, 2)
    assert (worker.checkpoint_seconds, worker.progress_min_interval, worker.log_level) == (5.0, 1.0, "DEBUG")
    api = settings_from(service_environment(services["api"]))
    assert api.queue_name == worker.queue_name
    assert api.blob_url == worker.blob_url == "s3://backprop/blobs"  # the bucket, whatever .env says
    assert worker.blob_retry_seconds == 90.0
    env_files = [entry["path"] for entry in services["api"]["env_file"]]
    assert env_files == [".env"]  # the api gets every other setting of .env


@pytest.mark.parametrize("name", APP_SERVICES)
def test_compose_app_services_restart_and_wait_for_redis(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    assert service["restart"] == "unless-stopped"
    assert service["depends_on"]["redis"]["condition"] == "service_healthy"
    assert service["depends_on"]["minio"]["condition"] == "service_healthy"
    assert "container_name" not in service


def test_compose_worker_scales(compose: dict[str, Any]) -> None:
    worker = compose["services"]["worker"]
    assert worker["deploy"]["replicas"] == 2
    assert re.fullmatch(r"\d+[kmg]?", str(worker["deploy"]["resources"]["limits"]["memory"]).lower())
    # `--scale worker=4` needs no fixed name and no host port.
    assert "container_name" not in worker and "ports" not in worker and "hostname" not in worker


# --- Dockerfile -----------------------------------------------------------------------------------
def test_dockerfile_multi_stage_slim_python(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    for stage in stages:
        assert re.fullmatch(r"python:3\.1[1-9]-slim(-\w+)?", stage.base), stage.base
    builder, final = stages[0], stages[-1]
    assert builder.name
    wheel = " ".join(item.arguments for item in builder.all("RUN") if "pip wheel" in item.arguments)
    assert "constraints.txt" in wheel, "the builder must pin dependencies with constraints.txt"
    final_text = " ".join(item.arguments for item in final.instructions)
    assert f"from={builder.name}" in final_text or f"--from={builder.name}" in final_text
    assert "--no-index" in final_text
    compilers = re.search(r"\b(gcc|g\+\+|build-essential|clang)\b", final_text)
    assert compilers is None, "no compilers in the final stage"


def test_dockerfile_runs_as_non_root(stages: list[Stage]) -> None:
    final = stages[-1]
    users = final.all("USER")
    assert users, "the final stage must set USER"
    user = users[-1].arguments.split(":")[0]
    assert user not in ("root", "0")
    created = " ".join(item.arguments for item in final.all("RUN"))
    assert re.search(rf"useradd\b.*\b{re.escape(user)}\b", created), f"user {user} is never created"


def test_dockerfile_healthcheck_probes_healthz(stages: list[Stage]) -> None:
    final = stages[-1]
    (healthcheck,) = final.all("HEALTHCHECK")
    assert "/healthz" in healthcheck.arguments
    assert "curl" not in healthcheck.arguments and "wget" not in healthcheck.arguments  # not in -slim


def test_dockerfile_default_command_is_api(stages: list[Stage]) -> None:
    (cmd,) = stages[-1].all("CMD")
    argv = cmd.exec_form()
    assert argv is not None, "CMD must use the exec form (signals reach the process)"
    assert argv[:2] == ["backprop", "api"]
    assert_is_project_command(argv)


def test_dockerfile_copies_existing_files_that_the_context_keeps(stages: list[Stage]) -> None:
    patterns = dockerignore_patterns()
    sources = []
    for item in stages[0].all("COPY"):
        words = [word for word in item.arguments.split() if not word.startswith("--")]
        sources += words[:-1]
    assert "constraints.txt" in sources and "pyproject.toml" in sources
    for source in sources:
        assert (ROOT / source).exists(), f"COPY {source}: no such file in the repository"
        assert not dockerignored(source, patterns), f"COPY {source}: excluded by .dockerignore"


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        "var/redis/appendonly.aof",
        "var/blobs/datasets/x.npy",
        ".git/HEAD",
        "service/__pycache__/cli.cpython-311.pyc",
        ".pytest_cache/v/cache/nodeids",
        ".mypy_cache/3.11/x.json",
        "tests/deploy/test_deploy_files.py",
        ".env",
        "backprop.egg-info/PKG-INFO",
    ],
)
def test_dockerignore_keeps_out(path: str) -> None:
    assert dockerignored(path, dockerignore_patterns())


@pytest.mark.parametrize(
    "path",
    ["backprop/cli.py", "engine/__init__.py", "worker/__init__.py", "pyproject.toml", "constraints.txt"],
)
def test_dockerignore_keeps_in(path: str) -> None:
    assert not dockerignored(path, dockerignore_patterns())


# --- configuration documents ----------------------------------------------------------------------
def test_env_example_lists_every_setting_with_its_default() -> None:
    entries = env_example_entries()
    known = settings_env_vars()
    covered = {known[var] for var in entries if var in known}
    missing = [name for name in Settings.model_fields if name not in covered]
    assert not missing, f".env.example lacks {missing}"
    unknown = sorted(var for var in entries if var not in known and var not in COMPOSE_ONLY_VARIABLES)
    assert not unknown, f".env.example has variables that are not settings: {unknown}"
    documented = settings_from({var: value for var, value in entries.items() if var in known and value != ""})
    defaults = Settings.model_validate({})
    for name in Settings.model_fields:
        value, default = getattr(documented, name), getattr(defaults, name)
        assert value == default, f"{name}: .env.example says {value!r}, the default is {default!r}"


def test_readme_lists_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    known = settings_env_vars()
    documented = {field for var, field in known.items() if f"`{var}`" in readme}
    missing = [name for name in Settings.model_fields if name not in documented]
    assert not missing, f"README.md does not document {missing}"
