"""The blob layer: on a full disk a write lands whole or leaves nothing; both backends keep one contract;
S3 start-up checks name the setting to fix, and an outage is an error that a retry gets past."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import os
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from backprop.embedded_redis import free_port
from tests.s3server import S3Server
from worker import blobs
from worker.blobs import (
    BlobConfig,
    BlobConfigError,
    BlobError,
    BlobStore,
    BlobStoreUnavailableError,
    LocalBlobStore,
    StorageFullError,
    open_blob_store,
    parse_s3_location,
    retry_unavailable,
)
from worker.s3blobs import MULTIPART_BYTES


def _fail_halfway(code: int) -> object:
    def write_fd(fd: int, data: bytes) -> None:
        os.write(fd, data[: len(data) // 2])  # some bytes reach the disk, then it is full
        raise OSError(code, os.strerror(code))

    return write_fd


def _files(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*") if path.is_file())


def test_blob_write_full_disk_raises_storage_full_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalBlobStore(tmp_path)
    monkeypatch.setattr(blobs, "write_fd", _fail_halfway(errno.ENOSPC))
    with pytest.raises(StorageFullError, match="no space left"):
        store.write("datasets/a.npz", b"x" * 10_000)
    assert _files(tmp_path) == []


def test_blob_write_full_disk_keeps_the_previous_blob_whole(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalBlobStore(tmp_path)
    sha256 = store.write("models/m.npz", b"old" * 100)
    monkeypatch.setattr(blobs, "write_fd", _fail_halfway(errno.EDQUOT))
    with pytest.raises(StorageFullError):
        store.write("models/m.npz", b"new" * 1000)
    assert _files(tmp_path) == ["models/m.npz"]
    assert store.read("models/m.npz", sha256) == b"old" * 100


def test_blob_write_other_io_error_propagates_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalBlobStore(tmp_path)
    monkeypatch.setattr(blobs, "write_fd", _fail_halfway(errno.EIO))
    with pytest.raises(OSError) as raised:
        store.write("datasets/b.npz", b"y" * 10_000)
    assert raised.value.errno == errno.EIO and not isinstance(raised.value, StorageFullError)
    assert _files(tmp_path) == []


def test_blob_write_whole_after_the_disk_has_room_again(tmp_path: Path) -> None:
    store = LocalBlobStore(tmp_path)
    data = bytes(range(256)) * 4000  # larger than one os.write may take at once on some systems
    sha256 = store.write("datasets/c.npz", data)
    assert store.read("datasets/c.npz", sha256) == data
    assert _files(tmp_path) == ["datasets/c.npz"]


# --- the interface, on both backends ----------------------------------------------------------------------
@pytest.fixture(params=["local", "s3"])
def blob_store(request: pytest.FixtureRequest, tmp_path: Path) -> BlobStore:
    """An empty blob store of each backend: a directory, and a fresh bucket on the session S3 server."""
    if request.param == "local":
        store: BlobStore = LocalBlobStore(tmp_path / "blobs")
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        store = open_blob_store(server.config(server.new_location()))
    store.check(create=True)
    return store


def test_blob_store_write_read_roundtrip_checks_sha256(blob_store: BlobStore) -> None:
    sha256 = blob_store.write("datasets/a.npz", b"abc" * 1000)
    assert sha256 == hashlib.sha256(b"abc" * 1000).hexdigest()
    assert blob_store.read("datasets/a.npz", sha256) == b"abc" * 1000
    with pytest.raises(BlobError, match="checksum"):
        blob_store.read("datasets/a.npz", "0" * 64)


def test_blob_store_read_missing_blob_raises_blob_error(blob_store: BlobStore) -> None:
    with pytest.raises(BlobError, match="missing"):
        blob_store.read("models/nothing.npz", "0" * 64)


def test_blob_store_overwrite_is_whole(blob_store: BlobStore) -> None:
    blob_store.write("models/m.npz", b"old" * 100)
    sha256 = blob_store.write("models/m.npz", b"new" * 200)
    assert blob_store.read("models/m.npz", sha256) == b"new" * 200


def test_blob_store_delete_removes_and_tolerates_missing(blob_store: BlobStore) -> None:
    sha256 = blob_store.write("checkpoints/j-1-1.bin", b"state")
    blob_store.delete("checkpoints/j-1-1.bin")
    blob_store.delete("checkpoints/j-1-1.bin")
    with pytest.raises(BlobError, match="missing"):
        blob_store.read("checkpoints/j-1-1.bin", sha256)


def test_blob_store_list_by_prefix_with_sizes_and_ages(blob_store: BlobStore) -> None:
    blob_store.write("checkpoints/job1-1-2.bin", b"a" * 10)
    blob_store.write("checkpoints/job1-1-3.bin", b"b" * 20)
    blob_store.write("checkpoints/job2-1-2.bin", b"c")
    blob_store.write("models/job1.npz", b"d")
    found = blob_store.list("checkpoints/job1-")
    assert sorted((blob.name, blob.size) for blob in found) == [
        ("checkpoints/job1-1-2.bin", 10),
        ("checkpoints/job1-1-3.bin", 20),
    ]
    assert all(0.0 <= blob.age_seconds < 3600 for blob in found)
    assert {blob.name for blob in blob_store.list("models/")} == {"models/job1.npz"}
    assert blob_store.list("datasets/") == []


def test_blob_store_refuses_names_outside_the_store(blob_store: BlobStore) -> None:
    with pytest.raises(BlobError, match="outside"):
        blob_store.write("../escape.bin", b"x")


def test_blob_store_large_object_streams_in_chunks(blob_store: BlobStore) -> None:
    data = np.random.default_rng(0).bytes(3 * MULTIPART_BYTES + 12345)  # several multipart parts on S3
    sha256 = blob_store.write("models/big.npz", data)
    chunks = list(blob_store.stream("models/big.npz"))
    assert len(chunks) > 1 and b"".join(chunks) == data
    assert blob_store.read("models/big.npz", sha256) == data


def test_blob_store_writer_stores_pieces_as_one_blob_of_its_sha256(blob_store: BlobStore) -> None:
    rng = np.random.default_rng(1)
    pieces = [rng.bytes(MULTIPART_BYTES // 2) for _ in range(5)]  # past the multipart threshold on S3
    with blob_store.writer("predictions/p.npz") as writer:
        for piece in pieces:
            writer.write(memoryview(piece))
    data = b"".join(pieces)
    assert (writer.size, writer.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert blob_store.read("predictions/p.npz", writer.sha256) == data


def test_blob_store_writer_stores_nothing_when_the_block_raises(blob_store: BlobStore) -> None:
    sha256 = blob_store.write("states/s.bin", b"old")
    with pytest.raises(RuntimeError, match="stop"), blob_store.writer("states/s.bin") as writer:
        writer.write(b"new, half written")
        raise RuntimeError("stop")
    with blob_store.writer("states/t.bin") as never:
        pass
    assert never.size == 0
    assert blob_store.read("states/s.bin", sha256) == b"old"
    assert sorted(blob.name for blob in blob_store.list("states/")) == ["states/s.bin", "states/t.bin"]


def test_blob_store_open_verified_hands_out_the_checked_file(blob_store: BlobStore) -> None:
    data = np.random.default_rng(2).bytes(2 * MULTIPART_BYTES + 7)
    sha256 = blob_store.write("predictions/in.npz", data)
    with blob_store.open_verified("predictions/in.npz", sha256) as handle:
        assert handle.read(5) == data[:5]
        handle.seek(0)
        assert handle.read() == data
    with pytest.raises(BlobError, match="checksum"):
        blob_store.open_verified("predictions/in.npz", "0" * 64)
    with pytest.raises(BlobError, match="missing"):
        blob_store.open_verified("predictions/none.npz", sha256)


# --- S3: start-up checks and outages ------------------------------------------------------------------------
def test_s3_check_creates_a_missing_bucket(s3_server: S3Server) -> None:
    location = s3_server.new_location()
    store = open_blob_store(s3_server.config(location))
    store.check(create=True)
    store.check(create=False)  # it exists now
    sha256 = store.write("datasets/x.npz", b"x")
    assert open_blob_store(s3_server.config(location)).read("datasets/x.npz", sha256) == b"x"


def test_s3_check_missing_bucket_without_create_names_blob_url(s3_server: S3Server) -> None:
    store = open_blob_store(s3_server.config(s3_server.new_location()))
    with pytest.raises(BlobConfigError, match="BACKPROP_BLOB_URL"):
        store.check(create=False)


def test_s3_check_bad_credentials_names_the_settings(s3_server: S3Server) -> None:
    config = dataclasses.replace(s3_server.config(s3_server.new_location()), secret_access_key="wrong-secret-key-xx")
    with pytest.raises(BlobConfigError, match="AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"):
        open_blob_store(config).check()


def test_s3_check_unreachable_endpoint_names_the_setting(s3_server: S3Server) -> None:
    config = dataclasses.replace(
        s3_server.config(s3_server.new_location(), timeout=1.0, attempts=1),
        endpoint_url=f"http://127.0.0.1:{free_port()}",
    )
    with pytest.raises(BlobConfigError, match="BACKPROP_S3_ENDPOINT_URL"):
        open_blob_store(config).check()


def test_s3_location_must_name_a_bucket() -> None:
    with pytest.raises(BlobConfigError, match="BACKPROP_BLOB_URL"):
        parse_s3_location("s3://No_Such/prefix")
    assert parse_s3_location("s3://bucket-1/a/b/") == ("bucket-1", "a/b/")
    assert parse_s3_location("s3://bucket-1") == ("bucket-1", "")


def test_s3_outage_raises_unavailable_then_retry_succeeds_after_restart(tmp_path: Path) -> None:
    server = S3Server(tmp_path / "s3").start()
    try:
        store = open_blob_store(server.config(server.new_location(), timeout=1.0, attempts=1))
        store.check()
        sha256 = store.write("models/kept.npz", b"kept")
        server.stop()
        with pytest.raises(BlobStoreUnavailableError, match=r"s3://bp-.* at http://127\.0\.0\.1"):
            store.write("models/new.npz", b"new")
        with pytest.raises(BlobStoreUnavailableError):
            store.read("models/kept.npz", sha256)
        restart = threading.Timer(1.0, server.start)
        restart.start()
        written = retry_unavailable(lambda: store.write("models/new.npz", b"new"), seconds=60, what="test")
        restart.join()
        assert store.read("models/new.npz", written) == b"new"
        assert store.read("models/kept.npz", sha256) == b"kept"  # nothing acknowledged was lost
    finally:
        server.stop()


def _hang_up_on_everyone(listener: socket.socket, accepted: list[int], done: threading.Event) -> None:
    """Accept every connection on `listener` and close it unanswered, counting them, until `done`."""
    listener.settimeout(0.05)
    while not done.is_set():
        try:
            connection, _ = listener.accept()
        except TimeoutError:
            continue
        accepted.append(1)
        connection.close()


@pytest.mark.parametrize("attempts", [1, 2, 3])
def test_s3_store_call_tries_attempts_times_in_all_against_a_store_that_hangs_up(attempts: int) -> None:
    accepted: list[int] = []
    done = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        thread = threading.Thread(target=_hang_up_on_everyone, args=(listener, accepted, done), daemon=True)
        thread.start()
        config = BlobConfig(
            "s3://bucket-1/prefix",
            endpoint_url=f"http://127.0.0.1:{port}",
            access_key_id="key",
            secret_access_key="secret",
            region="us-east-1",
            attempts=attempts,
        )
        try:
            with pytest.raises(BlobStoreUnavailableError, match=f"s3://bucket-1/prefix/ at http://127.0.0.1:{port}"):
                open_blob_store(config).read("models/a.npz", "0" * 64)
        finally:
            done.set()
            thread.join(5)
    assert len(accepted) == attempts  # the bound of an outage: `attempts` tries, not one more


def test_retry_unavailable_gives_up_after_its_time() -> None:
    calls = []

    def always_down() -> None:
        calls.append(1)
        raise BlobStoreUnavailableError("s3://b/", "down")

    with pytest.raises(BlobStoreUnavailableError):
        retry_unavailable(always_down, seconds=0.3, what="test", first_delay=0.1)
    assert 2 <= len(calls) <= 4
