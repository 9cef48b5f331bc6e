"""Blobs as objects in an S3-compatible bucket (AWS S3, MinIO, rclone serve s3, ...) through boto3.

A PUT, and the completion of a multipart upload, make an object appear whole: readers never see a part of
one. Large objects go up in parts through boto3's transfer manager and come down as streams.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from worker.blobs import (
    CHUNK_BYTES,
    BlobConfig,
    BlobConfigError,
    BlobError,
    BlobInfo,
    BlobStore,
    BlobStoreUnavailableError,
    BlobWriter,
    parse_s3_location,
    remove_if_stale,
    sha256_hex,
)

MULTIPART_BYTES = 8 * 1024 * 1024
SPOOL_PREFIX = "backprop-blob-"
"""How the names of the local spool files of `S3BlobStore.writer` begin (in the system temp directory)."""
_NO_UPLOADS = ("NotImplemented", "501", "NoSuchUpload")
_MISSING = ("404", "NoSuchKey", "NotFound")
_CREDENTIALS = ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken")
_CREDENTIALS_HINT = "check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class S3BlobStore(BlobStore):
    """Objects under `s3://bucket/prefix`; every call bounded by `config.attempts` tries, each bounded by
    `config.connect_timeout` to connect and `config.timeout` to hear back."""

    def __init__(self, config: BlobConfig) -> None:
        self.bucket, self.prefix = parse_s3_location(config.location)
        self.endpoint_url = config.endpoint_url or None
        session = boto3.session.Session(
            aws_access_key_id=config.access_key_id or None,
            aws_secret_access_key=config.secret_access_key or None,
            region_name=config.region or None,
        )
        self.client: Any = session.client(
            "s3",
            endpoint_url=self.endpoint_url,
            config=Config(
                connect_timeout=config.connect_timeout,
                read_timeout=config.timeout,
                # botocore's `max_attempts` counts retries after the first try; `total_max_attempts` counts all
                retries={"total_max_attempts": max(1, config.attempts), "mode": "standard"},
                s3={"addressing_style": "path" if self.endpoint_url else "auto"},
                signature_version="s3v4",
            ),
        )
        self.transfer = TransferConfig(
            multipart_threshold=MULTIPART_BYTES, multipart_chunksize=MULTIPART_BYTES, max_concurrency=4
        )

    @property
    def description(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    def key(self, relative: str) -> str:
        """The object key of blob `relative` (no `..` segments, no leading slash)."""
        parts = relative.split("/")
        if relative.startswith("/") or any(part in ("", ".", "..") for part in parts):
            raise BlobError(f"blob path {relative!r} is outside the blob store")
        return self.prefix + relative

    @contextlib.contextmanager
    def _errors(self, relative: str) -> Iterator[None]:
        """Translate boto3's errors: missing object -> BlobError, anything about reaching the store (or its
        refusing our credentials) -> BlobStoreUnavailableError."""
        try:
            yield
        except ClientError as exc:
            code = _code(exc)
            if code in _MISSING:
                raise BlobError(f"blob {relative!r} is missing") from None
            reason = f"{code}: {_CREDENTIALS_HINT}" if code in _CREDENTIALS else code or "error"
            raise BlobStoreUnavailableError(self.description, reason) from exc
        except S3UploadFailedError as exc:
            raise BlobStoreUnavailableError(self.description, str(exc).splitlines()[0][:200]) from exc
        except (BotoCoreError, Urllib3HTTPError, OSError) as exc:
            raise BlobStoreUnavailableError(self.description, type(exc).__name__) from exc

    def write(self, relative: str, data: bytes) -> str:
        sha256 = sha256_hex(data)
        key = self.key(relative)
        with self._errors(relative):
            self.client.upload_fileobj(
                io.BytesIO(data), self.bucket, key, Config=self.transfer, ExtraArgs={"Metadata": {"sha256": sha256}}
            )
        return sha256

    @contextlib.contextmanager
    def writer(self, relative: str) -> Iterator[BlobWriter]:
        """The pieces are spooled to a local temp file, then uploaded as one object (in parts when large) when
        the block ends without an exception; the temp file is removed either way."""
        key = self.key(relative)
        fd, tmp_name = tempfile.mkstemp(prefix=SPOOL_PREFIX)
        try:
            out = BlobWriter(fd)
            try:
                yield out
            finally:
                os.close(fd)
            with self._errors(relative):
                self.client.upload_file(
                    tmp_name, self.bucket, key, Config=self.transfer, ExtraArgs={"Metadata": {"sha256": out.sha256}}
                )
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)

    def stream(self, relative: str) -> Iterator[bytes]:
        key = self.key(relative)
        with self._errors(relative):
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"]
        return self._chunks(relative, body)

    def _chunks(self, relative: str, body: Any) -> Iterator[bytes]:
        with self._errors(relative), contextlib.closing(body):
            yield from body.iter_chunks(CHUNK_BYTES)

    def delete(self, relative: str) -> None:
        with self._errors(relative):
            self.client.delete_object(Bucket=self.bucket, Key=self.key(relative))

    def list(self, prefix: str) -> list[BlobInfo]:
        now = time.time()
        found = []
        with self._errors(prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix
            )
            for page in pages:
                for item in page.get("Contents", []):
                    age = max(0.0, now - item["LastModified"].timestamp())
                    found.append(BlobInfo(item["Key"][len(self.prefix) :], int(item["Size"]), age))
        return found

    def remove_temp_files(self, min_age_seconds: float) -> Sequence[str]:
        """This host's spool files of killed writers, and the bucket's multipart uploads under the prefix that
        were started at least `min_age_seconds` ago and never completed (aborted: their parts are freed)."""
        return [*self.remove_local_temp_files(min_age_seconds), *self._abort_stale_uploads(min_age_seconds)]

    def remove_local_temp_files(self, min_age_seconds: float) -> Sequence[str]:
        """This host's spool files (in the system temp directory) of writers killed midway."""
        spool = sorted(Path(tempfile.gettempdir()).glob(f"{SPOOL_PREFIX}*"))
        return [str(path) for path in spool if remove_if_stale(path, min_age_seconds)]

    def _abort_stale_uploads(self, min_age_seconds: float) -> Sequence[str]:
        now = time.time()
        aborted = []
        with self._errors("multipart uploads"):
            for upload in self._uploads():
                if now - upload["Initiated"].timestamp() < min_age_seconds:
                    continue
                try:
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                except ClientError as exc:
                    if _code(exc) != "NoSuchUpload":  # else completed or aborted meanwhile
                        raise
                    continue
                aborted.append(f"multipart upload of {upload['Key'][len(self.prefix) :]}")
        return aborted

    def _uploads(self) -> Sequence[dict[str, Any]]:
        """The bucket's unfinished multipart uploads under the prefix; none when the store cannot list them
        (rclone answers NoSuchUpload when there are none)."""
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=self.prefix)
            return [upload for page in pages for upload in page.get("Uploads", [])]
        except ClientError as exc:
            if _code(exc) in _NO_UPLOADS:
                return []
            raise

    def check(self, *, create: bool = True) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            code = _code(exc)
            if code in _CREDENTIALS:
                raise BlobConfigError(
                    f"AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY: {self.description} refused the credentials ({code})"
                ) from None
            if code not in ("404", "NoSuchBucket") or not create:
                raise BlobConfigError(f"BACKPROP_BLOB_URL: bucket {self.bucket!r} is not usable ({code})") from None
        except (BotoCoreError, OSError) as exc:
            raise BlobConfigError(
                f"BACKPROP_S3_ENDPOINT_URL: cannot reach {self.description} ({type(exc).__name__})"
            ) from None
        self._create_bucket()

    def _create_bucket(self) -> None:
        region = self.client.meta.region_name
        options: dict[str, Any] = {"Bucket": self.bucket}
        if region and region != "us-east-1" and not self.endpoint_url:
            options["CreateBucketConfiguration"] = {"LocationConstraint": region}
        try:
            self.client.create_bucket(**options)
        except ClientError as exc:
            code = _code(exc)
            if code in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                return
            raise BlobConfigError(
                f"BACKPROP_BLOB_URL: bucket {self.bucket!r} does not exist and cannot be created ({code})"
            ) from None
        except (BotoCoreError, OSError) as exc:
            raise BlobConfigError(
                f"BACKPROP_S3_ENDPOINT_URL: cannot reach {self.description} ({type(exc).__name__})"
            ) from None
