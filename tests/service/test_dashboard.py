"""The dashboard's files as the API serves them: redirect, security headers, package data, vendored chart library."""

from __future__ import annotations

import fnmatch
import hashlib
import json
import re
import tomllib
from pathlib import Path

from fastapi.testclient import TestClient

from service.dashboard import UI_DIR
from tests.service.conftest import ClientFactory

ROOT = Path(__file__).resolve().parents[2]


def test_root_redirects_to_dashboard(client: TestClient) -> None:
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"] == "/ui/"


def test_dashboard_index_has_strict_content_security_policy(client: TestClient) -> None:
    response = client.get("/ui/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    policy = response.headers["content-security-policy"]
    directives = dict(part.strip().split(" ", 1) for part in policy.split(";"))
    assert directives["default-src"] == "'none'"
    for name in ("script-src", "style-src", "connect-src"):
        assert directives[name] == "'self'", name
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert not re.search(r"https?:", policy)
    assert response.headers["x-content-type-options"] == "nosniff"


def test_dashboard_pages_have_no_inline_script_or_style(client: TestClient) -> None:
    html = client.get("/ui/").text
    assert "<style" not in html and " style=" not in html
    assert re.findall(r"<script(?![^>]*\bsrc=)", html) == []
    for path in UI_DIR.rglob("*.js"):
        if "vendor" not in path.parts:
            assert "innerHTML" not in path.read_text(), path.name


def test_dashboard_modules_served_as_javascript_with_headers(client: TestClient) -> None:
    response = client.get("/ui/js/app.js")
    assert response.status_code == 200
    assert "javascript" in response.headers["content-type"]
    assert "content-security-policy" in response.headers
    missing = client.get("/ui/js/nothing.js")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"


def test_dashboard_files_open_without_key_while_api_needs_one(make_client: ClientFactory) -> None:
    client = make_client(api_keys="k1:user")
    assert client.get("/ui/").status_code == 200
    assert client.get("/v1/datasets").status_code == 401


def test_vendored_uplot_matches_recorded_sha256() -> None:
    record = json.loads((UI_DIR / "vendor" / "uPlot.json").read_text())
    assert record["package"] == "uplot" and record["license"] == "MIT"
    assert re.fullmatch(r"\d+\.\d+\.\d+", record["version"])
    assert (UI_DIR / "vendor" / record["license_file"]).read_text().startswith("The MIT License")
    for name, digest in record["sha256"].items():
        assert hashlib.sha256((UI_DIR / "vendor" / name).read_bytes()).hexdigest() == digest, name


def test_dashboard_files_are_package_data() -> None:
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["service"]
    files = [path.relative_to(UI_DIR.parent).as_posix() for path in UI_DIR.rglob("*") if path.is_file()]
    assert "ui/index.html" in files
    unpackaged = [name for name in files if not any(fnmatch.fnmatch(name, pattern) for pattern in patterns)]
    assert unpackaged == []
