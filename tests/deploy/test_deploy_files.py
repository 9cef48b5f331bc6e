"""docker-compose.yml, Dockerfile, .dockerignore and .env.example agree with the code (no Docker needed)."""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path, PurePosixPath
from typing import Any

import pytest

from backprop.cli import build_parser
from service.settings import Settings
from tests.deploy.deploy_files import (
    DOCKERFILE,
    ROOT,
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
API_KEYS = "alice-0123456789:user,ops-0123456789:admin"
DOT_ENV = {"REDIS_PASSWORD": PASSWORD, "BACKPROP_API_KEYS": API_KEYS}  # a .env with what compose requires
APP_SERVICES = ("api", "worker")
# The Settings fields `backprop worker` reads: all a worker container is given.
WORKER_SETTINGS = {
    "redis_url",
    "data_dir",
    "blob_dir",
    "queue_name",
    "worker_ttl",
    "job_monitoring_interval",
    "checkpoint_seconds",
    "progress_min_interval",
    "log_format",
    "log_level",
}


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


def test_compose_blob_volume_shared_at_settings_path(compose: dict[str, Any]) -> None:
    services = compose["services"]
    blob_dirs = {name: settings_from(service_environment(services[name])).blobs for name in APP_SERVICES}
    assert blob_dirs["api"] == blob_dirs["worker"]
    blob_dir = PurePosixPath(blob_dirs["api"].as_posix())
    assert blob_dir.is_absolute()
    shared = set(mounts(services["api"]).items()) & set(mounts(services["worker"]).items())
    holding = [(volume, target) for volume, target in shared if blob_dir.is_relative_to(target)]
    assert len(holding) == 1, f"no volume mounted at {blob_dir} in both api and worker: {shared}"
    volume, _ = holding[0]
    assert volume in compose["volumes"], "the blob volume must be a named volume"
    assert volume not in mounts(services["redis"])


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
        {"REDIS_PASSWORD": PASSWORD},
        {"REDIS_PASSWORD": PASSWORD, "BACKPROP_API_KEYS": ""},
        {"REDIS_PASSWORD": PASSWORD, "BACKPROP_ALLOW_NO_AUTH": "true"},
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
    for name in WORKER_SETTINGS - {"redis_url", "data_dir", "blob_dir", "log_format"}:
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
    }
    services = load_compose(dot_env)["services"]
    worker = settings_from(service_environment(services["worker"]))
    assert (worker.queue_name, worker.worker_ttl, worker.job_monitoring_interval) == ("other", 30, 2)
    assert (worker.checkpoint_seconds, worker.progress_min_interval, worker.log_level) == (5.0, 1.0, "DEBUG")
    api = settings_from(service_environment(services["api"]))
    assert api.queue_name == worker.queue_name
    assert api.blobs == worker.blobs == Path("/data/blobs")  # the shared volume, whatever .env says
    env_files = [entry["path"] for entry in services["api"]["env_file"]]
    assert env_files == [".env"]  # the api gets every other setting of .env


@pytest.mark.parametrize("name", APP_SERVICES)
def test_compose_app_services_restart_and_wait_for_redis(compose: dict[str, Any], name: str) -> None:
    service = compose["services"][name]
    assert service["restart"] == "unless-stopped"
    assert service["depends_on"]["redis"]["condition"] == "service_healthy"
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
    unknown = sorted(var for var in entries if var not in known and var != "REDIS_PASSWORD")
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
