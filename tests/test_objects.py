"""The result-store contract (``delivery/objects/base.py``), run over both backends.

The same tests run over :class:`LocalStore` (a temporary directory) and
:class:`S3Store` against a real S3 endpoint (``moto_server`` in its own process).
moto accepts any credentials and enforces no policy, so credential handling is
checked by *which* keys end up in ``client_fields`` and presigned URLs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from servers import LOOPBACK, _terminate, s3_server, skip_or_fail, wait_for_port

from delivery.config import Settings
from delivery.errors import TransientError
from delivery.objects import ObjectInfo, ObjectStore, open_store
from delivery.objects.local import LocalStore

WRITE_KEY, WRITE_SECRET = "delivery-writer", "write-secret-9f3ZqLw"
READ_KEY, READ_SECRET = "delivery-reader", "read-secret-K2pVx7"
MiB = 1 << 20


def host_port(endpoint: str) -> str:
    return endpoint.split("://", 1)[1].rstrip("/")


def s3_store(endpoint: str, *, read: bool = True, **kwargs: object) -> ObjectStore:
    from delivery.objects.s3 import S3Store

    pair = {"read_access_key": READ_KEY, "read_secret_key": READ_SECRET} if read else {}
    return S3Store(host_port(endpoint), WRITE_KEY, WRITE_SECRET, **pair, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStore:
    if request.param == "local":
        return LocalStore(tmp_path / "results")
    return s3_store(request.getfixturevalue("s3_endpoint"))


@pytest.fixture
def bucket() -> str:
    return str(uuid.uuid4())  # a request id; unique, so tests share the S3 server safely


def make_file(directory: Path, name: str, size: int, seed: int = 0) -> Path:
    path = directory / name
    path.write_bytes(bytes((i * 31 + seed) % 251 for i in range(size)) if size < 1 << 16
                     else os.urandom(size))
    return path


def fetch(store: ObjectStore, bucket: str, key: str, headers: dict[str, str] | None = None) -> bytes:
    """The object's bytes as a client gets them: the local file, or the URL with no credentials."""
    local = store.local_path(bucket, key)
    if local is not None:
        return local.read_bytes()
    url = store.download_url(bucket, key)
    assert url is not None
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as r:
        return bytes(r.read())


# --- the contract, over both backends ---------------------------------------------------------


def test_put_size_list_are_exact(store: ObjectStore, bucket: str, tmp_path: Path) -> None:
    assert store.list(bucket) == []
    assert store.size(bucket, "a.parquet") is None
    a = make_file(tmp_path, "a", 12_345)
    b = make_file(tmp_path, "b", 1)
    assert store.put_file(bucket, "part-1.parquet", a) == 12_345
    assert store.put_file(bucket, "part-0.root", b) == 1
    assert store.size(bucket, "part-1.parquet") == 12_345
    assert store.size(bucket, "part-0.root") == 1
    assert store.size(bucket, "absent.parquet") is None
    listing = store.list(bucket)
    assert listing == [("part-0.root", 1), ("part-1.parquet", 12_345)]
    assert all(isinstance(o, ObjectInfo) for o in listing)
    assert (listing[1].key, listing[1].size) == ("part-1.parquet", 12_345)
    assert fetch(store, bucket, "part-1.parquet") == a.read_bytes()


def test_empty_file_and_odd_valid_names(store: ObjectStore, bucket: str, tmp_path: Path) -> None:
    empty = make_file(tmp_path, "empty", 0)
    assert store.put_file(bucket, "empty.arrow", empty) == 0
    assert store.size(bucket, "empty.arrow") == 0
    # what transformers.run.output_path can make of an input called ".hidden..root"
    odd = ".hidden..3f2a9c.parquet"
    assert store.put_file(bucket, odd, empty) == 0
    long = "x" * 247 + ".parquet"  # 255 characters
    assert store.put_file(bucket, long, empty) == 0
    assert store.list(bucket) == sorted([(odd, 0), ("empty.arrow", 0), (long, 0)])


def test_overwrite_leaves_one_complete_object(store: ObjectStore, bucket: str, tmp_path: Path) -> None:
    old = make_file(tmp_path, "old", 5_000, seed=1)
    new = make_file(tmp_path, "new", 1_234, seed=2)
    assert store.put_file(bucket, "out.parquet", old) == 5_000
    assert store.put_file(bucket, "out.parquet", new) == 1_234
    assert store.list(bucket) == [("out.parquet", 1_234)]
    assert store.size(bucket, "out.parquet") == 1_234
    assert fetch(store, bucket, "out.parquet") == new.read_bytes()


def test_concurrent_first_uploads_share_one_bucket(store: ObjectStore, bucket: str,
                                                   tmp_path: Path) -> None:
    files = [make_file(tmp_path, f"f{i}", 100 + i) for i in range(6)]
    errors: list[BaseException] = []

    def put(i: int) -> None:
        try:
            store.put_file(bucket, f"f{i}.parquet", files[i])
        except BaseException as exc:  # noqa: B036 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=put, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert store.list(bucket) == [(f"f{i}.parquet", 100 + i) for i in range(6)]


def test_delete_bucket_is_idempotent(store: ObjectStore, bucket: str, tmp_path: Path) -> None:
    for i in range(3):
        store.put_file(bucket, f"x{i}.parquet", make_file(tmp_path, f"x{i}", 10 * i))
    store.delete_bucket(bucket)
    assert store.list(bucket) == []
    assert store.size(bucket, "x1.parquet") is None
    store.delete_bucket(bucket)  # again
    store.delete_bucket(str(uuid.uuid4()))  # never existed
    # the bucket can be used again afterwards
    assert store.put_file(bucket, "again.root", make_file(tmp_path, "again", 7)) == 7
    assert store.list(bucket) == [("again.root", 7)]


BAD_KEYS = ["", ".", "..", "../escape.parquet", "a/b.parquet", "/abs.parquet", "nul\0.parquet",
            "tilde~.tmp", "sp ace.root", "tab\t.root", "new\nline.root", "é.parquet",
            "back\\slash.root", "x" * 256]
BAD_BUCKETS = ["", "ab", "UPPER-case", "under_score", "-leading", "trailing-", "a..b", "..",
               "a/b", "nul\0bucket", "x" * 64, "../etc"]


@pytest.mark.parametrize("key", BAD_KEYS)
def test_bad_keys_are_rejected(store: ObjectStore, bucket: str, tmp_path: Path, key: str) -> None:
    src = make_file(tmp_path, "src", 10)
    with pytest.raises(ValueError, match="invalid object key"):
        store.put_file(bucket, key, src)
    for call in (store.size, store.download_url, store.local_path):
        with pytest.raises(ValueError, match="invalid object key"):
            call(bucket, key)
    assert store.list(bucket) == []


@pytest.mark.parametrize("name", BAD_BUCKETS)
def test_bad_buckets_are_rejected(store: ObjectStore, tmp_path: Path, name: str) -> None:
    src = make_file(tmp_path, "src", 10)
    with pytest.raises(ValueError, match="invalid bucket name"):
        store.put_file(name, "ok.parquet", src)
    for call in (store.size, store.download_url, store.local_path):
        with pytest.raises(ValueError, match="invalid bucket name"):
            call(name, "ok.parquet")
    for call1 in (store.list, store.delete_bucket):
        with pytest.raises(ValueError, match="invalid bucket name"):
            call1(name)
    if isinstance(store, LocalStore):
        assert not any(tmp_path.rglob("ok.parquet"))


def test_missing_source_file(store: ObjectStore, bucket: str, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        store.put_file(bucket, "a.parquet", tmp_path / "does-not-exist")
    assert store.list(bucket) == []


def test_client_fields_never_carry_write_keys(store: ObjectStore) -> None:
    fields = store.client_fields()
    assert set(fields) == {"minio-endpoint", "minio-secured", "minio-access-key",
                           "minio-secret-key"}
    assert isinstance(fields["minio-endpoint"], str)
    assert isinstance(fields["minio-secured"], bool)
    text = repr(fields) + repr(store)
    assert WRITE_KEY not in text and WRITE_SECRET not in text


# --- LocalStore specifics ------------------------------------------------------------------------


def test_local_layout_and_fields(tmp_path: Path, bucket: str) -> None:
    store = LocalStore(tmp_path / "r")
    store.put_file(bucket, "a.parquet", make_file(tmp_path, "a", 3))
    assert store.local_path(bucket, "a.parquet") == tmp_path / "r" / bucket / "a.parquet"
    assert store.local_path(bucket, "b.parquet") == tmp_path / "r" / bucket / "b.parquet"
    assert store.download_url(bucket, "a.parquet") is None
    # a temporary file left by a crashed upload is not an object
    (tmp_path / "r" / bucket / ".put~0123456789abcdef.tmp").write_bytes(b"half")
    assert store.list(bucket) == [("a.parquet", 3)]
    assert store.client_fields() == {"minio-endpoint": "", "minio-secured": False,
                                     "minio-access-key": "", "minio-secret-key": ""}


def test_local_failed_put_leaves_no_object(tmp_path: Path, bucket: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    store = LocalStore(tmp_path / "r")
    old = make_file(tmp_path, "old", 500, seed=3)
    store.put_file(bucket, "kept.parquet", old)

    def disk_full(src: object, dst: object, length: int = 0) -> None:
        dst.write(b"partial")  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shutil, "copyfileobj", disk_full)
    src = make_file(tmp_path, "src", 1000)
    with pytest.raises(TransientError, match="No space left on device") as info:
        store.put_file(bucket, "new.parquet", src)
    assert "\n" not in str(info.value)
    with pytest.raises(TransientError):
        store.put_file(bucket, "kept.parquet", src)
    assert store.size(bucket, "new.parquet") is None
    assert store.list(bucket) == [("kept.parquet", 500)]  # the old object is intact
    assert store.local_path(bucket, "kept.parquet").read_bytes() == old.read_bytes()
    assert sorted(p.name for p in (tmp_path / "r" / bucket).iterdir()) == ["kept.parquet"]


# --- S3Store specifics ---------------------------------------------------------------------------


def test_s3_download_url_needs_no_credentials(s3_endpoint: str, bucket: str,
                                              tmp_path: Path) -> None:
    store = s3_store(s3_endpoint)
    src = make_file(tmp_path, "src", 70_000)
    store.put_file(bucket, "data.parquet", src)
    url = store.download_url(bucket, "data.parquet", expires_seconds=60)
    assert url is not None and url.startswith(f"{s3_endpoint}/{bucket}/data.parquet?")
    assert f"X-Amz-Credential={READ_KEY}%2F" in url
    assert WRITE_KEY not in url and WRITE_SECRET not in url and READ_SECRET not in url
    assert fetch(store, bucket, "data.parquet") == src.read_bytes()
    # The size without HEAD (a presigned GET URL is not valid for HEAD on S3/MinIO):
    with urllib.request.urlopen(urllib.request.Request(url, headers={"Range": "bytes=0-0"}),
                                timeout=30) as r:
        assert r.status == 206
        assert r.headers["Content-Range"] == "bytes 0-0/70000"
    assert fetch(store, bucket, "data.parquet", {"Range": "bytes=100-199"}) \
        == src.read_bytes()[100:200]
    with pytest.raises(ValueError):
        store.download_url(bucket, "data.parquet", expires_seconds=0)


def test_s3_without_read_pair(s3_endpoint: str, bucket: str, tmp_path: Path) -> None:
    store = s3_store(s3_endpoint, read=False)
    fields = store.client_fields()
    assert fields == {"minio-endpoint": host_port(s3_endpoint), "minio-secured": False,
                      "minio-access-key": "", "minio-secret-key": ""}
    src = make_file(tmp_path, "src", 999)
    store.put_file(bucket, "w.root", src)
    url = store.download_url(bucket, "w.root")
    assert url is not None and WRITE_SECRET not in url  # signed with the write pair: id only
    assert fetch(store, bucket, "w.root") == src.read_bytes()


def test_s3_client_fields_give_the_read_pair(s3_endpoint: str) -> None:
    assert s3_store(s3_endpoint).client_fields() == {
        "minio-endpoint": host_port(s3_endpoint), "minio-secured": False,
        "minio-access-key": READ_KEY, "minio-secret-key": READ_SECRET}


def test_s3_rejects_bad_configuration() -> None:
    from delivery.objects.s3 import S3Store

    with pytest.raises(ValueError, match="without scheme"):
        S3Store("http://127.0.0.1:9000", "k", "s")
    with pytest.raises(ValueError, match="both"):
        S3Store("127.0.0.1:9000", "k", "s", read_access_key="r")


def test_s3_multipart_upload_is_exact(s3_endpoint: str, bucket: str, tmp_path: Path) -> None:
    store = s3_store(s3_endpoint, part_size=5 * MiB)
    src = make_file(tmp_path, "big", 11 * MiB + 3)  # three parts
    assert store.put_file(bucket, "big.parquet", src) == 11 * MiB + 3
    assert store.list(bucket) == [("big.parquet", 11 * MiB + 3)]
    tail = fetch(store, bucket, "big.parquet", {"Range": f"bytes={11 * MiB - 5}-"})
    assert tail == src.read_bytes()[11 * MiB - 5:]


def test_s3_short_object_is_removed(s3_endpoint: str, bucket: str, tmp_path: Path,
                                    monkeypatch: pytest.MonkeyPatch) -> None:
    store = s3_store(s3_endpoint)
    client = store._client  # type: ignore[attr-defined]
    real_stat = client.stat_object

    class Short:
        size = 10

    monkeypatch.setattr(client, "stat_object", lambda b, k: Short())
    with pytest.raises(TransientError, match="holds 10 bytes after uploading 100"):
        store.put_file(bucket, "short.parquet", make_file(tmp_path, "src", 100))
    monkeypatch.setattr(client, "stat_object", real_stat)
    assert store.size(bucket, "short.parquet") is None
    assert store.list(bucket) == []


@contextlib.contextmanager
def moto_on(port: int) -> Iterator[None]:
    binary = shutil.which("moto_server")
    if binary is None:
        skip_or_fail("moto_server not installed (pip install 'moto[server]')")
    proc = subprocess.Popen([binary, "-H", LOOPBACK, "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        if not wait_for_port(LOOPBACK, port, 20):
            pytest.skip(f"could not restart moto_server on port {port}")
        yield
    finally:
        _terminate(proc)


@pytest.mark.integration
def test_s3_outage_is_transient_and_fast(tmp_path: Path, bucket: str) -> None:
    src = make_file(tmp_path, "src", 2_000)
    with s3_server() as endpoint:
        store = s3_store(endpoint)
        assert store.put_file(bucket, "a.parquet", src) == 2_000
    # the server is gone: every operation fails fast, as one transient line
    for op in (lambda: store.put_file(bucket, "b.parquet", src),
               lambda: store.size(bucket, "a.parquet"),
               lambda: store.list(bucket),
               lambda: store.delete_bucket(bucket)):
        start = time.monotonic()
        with pytest.raises(TransientError) as info:
            op()
        assert time.monotonic() - start < 10
        message = str(info.value)
        assert host_port(endpoint) in message and "\n" not in message
        assert "refused" in message.lower()
        assert WRITE_SECRET not in message and READ_SECRET not in message
    # a new (empty) server on the same port: the store recovers, recreating the bucket
    with moto_on(int(endpoint.rsplit(":", 1)[1])):
        assert store.put_file(bucket, "b.parquet", src) == 2_000
        assert store.list(bucket) == [("b.parquet", 2_000)]


def test_servicex_style_download(s3_endpoint: str, bucket: str, tmp_path: Path) -> None:
    """What the servicex client does: boto3, path-style, SigV4, us-east-1, HEAD + ranged GET."""
    try:
        import boto3
        from botocore.config import Config
    except ImportError:
        skip_or_fail("boto3 not installed (pip install boto3)")
    store = s3_store(s3_endpoint)
    src = make_file(tmp_path, "src", 300_000)
    store.put_file(bucket, "0001.parquet", src)
    fields = store.client_fields()
    s3 = boto3.client(
        "s3",
        endpoint_url=("https://" if fields["minio-secured"] else "http://") + fields["minio-endpoint"],
        aws_access_key_id=fields["minio-access-key"],
        aws_secret_access_key=fields["minio-secret-key"],
        region_name="us-east-1",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    listed = s3.list_objects_v2(Bucket=bucket)["Contents"]
    assert [(o["Key"], o["Size"]) for o in listed] == [("0001.parquet", 300_000)]
    head = s3.head_object(Bucket=bucket, Key="0001.parquet")
    assert head["ContentLength"] == 300_000 == store.size(bucket, "0001.parquet")
    part = s3.get_object(Bucket=bucket, Key="0001.parquet", Range="bytes=1000-1999")
    assert part["Body"].read() == src.read_bytes()[1000:2000]
    out = tmp_path / "downloaded.parquet"
    s3.download_file(bucket, "0001.parquet", str(out))
    assert out.read_bytes() == src.read_bytes()


# --- open_store ------------------------------------------------------------------------------------


def test_open_store(tmp_path: Path) -> None:
    local = open_store(Settings.from_env({"DELIVERY_STATE_DIR": str(tmp_path)}))
    assert isinstance(local, LocalStore) and local.root == tmp_path / "results"
    from delivery.objects.s3 import S3Store

    remote = open_store(Settings.from_env({
        "DELIVERY_STATE_DIR": str(tmp_path), "DELIVERY_S3_ENDPOINT": "minio:9000",
        "DELIVERY_S3_ACCESS_KEY": WRITE_KEY, "DELIVERY_S3_SECRET_KEY": WRITE_SECRET,
        "DELIVERY_S3_SECURE": "true",
        "DELIVERY_S3_READ_ACCESS_KEY": READ_KEY, "DELIVERY_S3_READ_SECRET_KEY": READ_SECRET}))
    assert isinstance(remote, S3Store)
    assert remote.client_fields() == {"minio-endpoint": "minio:9000", "minio-secured": True,
                                      "minio-access-key": READ_KEY,
                                      "minio-secret-key": READ_SECRET}
    assert WRITE_SECRET not in repr(remote)


def test_local_store_does_not_import_minio(tmp_path: Path) -> None:
    code = ("import sys; from delivery.config import Settings; from delivery.objects import "
            f"open_store; open_store(Settings.from_env({{'DELIVERY_STATE_DIR': {str(tmp_path)!r}}}));"
            " assert 'minio' not in sys.modules, 'minio imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60,
                   cwd=Path(__file__).resolve().parents[1])
