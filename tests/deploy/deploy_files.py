"""Readers for the deploy files as Docker reads them: compose interpolation, Dockerfile, .dockerignore."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import AliasChoices

from service.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
WORKERS_COMPOSE_FILE = ROOT / "docker-compose.workers.yml"
COMPOSE_ONLY_VARIABLES = ("REDIS_PASSWORD", "MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD")
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ENV_EXAMPLE = ROOT / ".env.example"

_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


class InterpolationError(ValueError):
    """A `${VAR:?message}` whose variable is unset or empty."""


def interpolate(value: str, env: Mapping[str, str]) -> str:
    """Compose's variable interpolation: $$, $VAR, ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["named"]
        op, arg = match["op"], match["arg"] or ""
        current = env.get(name)
        unset_or_empty = current is None or (op is not None and op.startswith(":") and current == "")
        if op in (":-", "-"):
            return arg if unset_or_empty else str(current)
        if op in (":?", "?"):
            if unset_or_empty:
                raise InterpolationError(f"{name}: {arg}")
            return str(current)
        return current or ""

    return _VARIABLE.sub(replace, value)


def _interpolate_tree(node: Any, env: Mapping[str, str]) -> Any:
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [_interpolate_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {key: _interpolate_tree(value, env) for key, value in node.items()}
    return node


def load_compose(env: Mapping[str, str], path: Path = COMPOSE_FILE) -> dict[str, Any]:
    """A compose file (docker-compose.yml unless `path`) with anchors merged and variables interpolated from
    `env` (as from `.env`)."""
    document = yaml.safe_load(path.read_text())
    assert isinstance(document, dict)
    return dict(_interpolate_tree(document, env))


def service_environment(service: Mapping[str, Any]) -> dict[str, str]:
    """A service's `environment`, in either of compose's forms, as strings."""
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        pairs = (item.split("=", 1) for item in environment)
        return {pair[0]: pair[1] if len(pair) == 2 else "" for pair in pairs}
    return {str(key): "" if value is None else str(value) for key, value in environment.items()}


def command_argv(command: str | list[str]) -> list[str]:
    """A compose or Dockerfile command as argv."""
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def settings_env_vars() -> dict[str, str]:
    """Environment variable (upper case) -> Settings field, from model_fields, aliases and env_prefix."""
    prefix = str(Settings.model_config.get("env_prefix", ""))
    names: dict[str, str] = {}
    for field_name, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            for choice in alias.choices:
                names[str(choice).upper()] = field_name
        elif isinstance(alias, str):
            names[alias.upper()] = field_name
        else:
            names[f"{prefix}{field_name}".upper()] = field_name
    return names


def settings_from(env: Mapping[str, str]) -> Settings:
    """Settings as a process with exactly `env` would read them (nothing from this process' environment)."""
    known = settings_env_vars()
    values: dict[str, str] = {}
    for name, value in env.items():
        field_name = known.get(name.upper())
        if field_name is not None:
            alias = Settings.model_fields[field_name].validation_alias
            values[name.upper() if alias is not None else field_name] = value
    # model_validate does not read this process' environment (BaseSettings.__init__ would).
    return Settings.model_validate(values)


# --- Dockerfile -----------------------------------------------------------------------------------
@dataclass
class Instruction:
    keyword: str
    arguments: str

    def exec_form(self) -> list[str] | None:
        """The JSON (exec) form of the arguments, if they are one."""
        text = self.arguments.strip()
        if not text.startswith("["):
            return None
        parsed = json.loads(text)
        return [str(part) for part in parsed]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [item for item in self.instructions if item.keyword == keyword]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the build stages (FROM with ARGs substituted) of a Dockerfile."""
    logical: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if not current and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        logical.append(current + stripped)
        current = ""
    if current:
        logical.append(current)

    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        rest = rest.strip()
        if keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name] = default
        elif keyword == "FROM":
            words = interpolate(rest, args).split()
            stage_name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=stage_name))
        else:
            assert stages, f"{keyword} before FROM"
            stages[-1].instructions.append(Instruction(keyword, rest))
    return args, stages


# --- .dockerignore --------------------------------------------------------------------------------
def _pattern_matches(pattern: str, path: str) -> bool:
    """Docker's matching: Go filepath.Match per segment, `**` for any number of segments, and a pattern
    that matches a directory excludes everything under it."""
    pattern_parts = [part for part in pattern.strip("/").split("/") if part and part != "."]
    path_parts = path.split("/")

    def match(pi: int, si: int) -> bool:
        if pi == len(pattern_parts):
            return True  # matched a prefix: a directory, and so everything in it
        if si == len(path_parts):
            return all(part == "**" for part in pattern_parts[pi:])
        if pattern_parts[pi] == "**":
            return match(pi + 1, si) or match(pi, si + 1)
        return fnmatch.fnmatchcase(path_parts[si], pattern_parts[pi]) and match(pi + 1, si + 1)

    return match(0, 0)


def dockerignored(path: str, patterns: list[str]) -> bool:
    """Whether `path` (relative to the context, with /) is left out of the build context."""
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        if _pattern_matches(pattern.lstrip("!"), path):
            excluded = not negated
    return excluded


def dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def env_example_entries(*, active_only: bool = False) -> dict[str, str]:
    """NAME -> value of each `NAME=value` line of .env.example, commented out (`# NAME=value`) or not
    (with `active_only`, only the lines that are not commented out: what a copy of it sets)."""
    entries: dict[str, str] = {}
    comment = "" if active_only else "#?"
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.fullmatch(rf"{comment}\s*([A-Z][A-Z0-9_]*)=(.*)", line.strip())
        if match:
            entries[match[1]] = match[2]
    return entries
