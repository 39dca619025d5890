"""core/storage.py on a local directory and on an S3-compatible bucket (a moto server, tests/s3_server.py)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from gpu_backtest.core import storage
from gpu_backtest.core.config import Settings
from gpu_backtest.core.errors import ConfigError
from gpu_backtest.core.storage import InvalidStorageURI

sys.path.insert(0, str(Path(__file__).resolve().parent))
from s3_server import S3Server, moto_s3, s3_endpoint, s3_root, s3_server  # noqa: F401 - pytest fixtures


# -- URIs ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("uri", "reason"), [
    ("", "empty"),
    ("s3://user:secret@bucket/prefix", "credentials do not belong in a URI"),
    ("s3://AKIA@bucket/prefix", "credentials do not belong in a URI"),
    ("s3://bucket/a/../b", "'..'"),
    ("s3://bucket/a//b", "empty, '.' and '..'"),
    ("s3://bucket/./b", "empty, '.' and '..'"),
    ("s3://Bucket/prefix", "not a valid bucket name"),
    ("s3://b/prefix", "not a valid bucket name"),
    ("s3://my_bucket/prefix", "not a valid bucket name"),
    ("s3://bucket../prefix", "not a valid bucket name"),
    ("s3://192.168.1.1/prefix", "not a valid bucket name"),
    ("s3://-bucket/prefix", "not a valid bucket name"),
    ("s3:///prefix", "not a valid bucket name"),
    ("s3://bucket/prefix?endpoint_override=evil:9000", "no query or fragment"),
    ("s3://bucket/prefix#x", "no query or fragment"),
    ("s3://bucket/a\\b", "characters not allowed"),
    ("gs://bucket/prefix", "unsupported scheme 'gs'"),
    ("http://example.com/market", "unsupported scheme 'http'"),
    ("hdfs://nn/market", "unsupported scheme"),
    ("file://host/data", "file:///path"),
    ("/data/../etc", "'..'"),
    ("../market", "'..'"),
    ("/data/mar\x01ket", "control characters"),
    ("s3://bucket/a\tb", "control characters"),
])
def test_bad_uris_are_refused_with_a_clear_error(uri: str, reason: str) -> None:
    with pytest.raises(InvalidStorageURI) as info:
        storage.check_uri(uri)
    err = info.value
    assert isinstance(err, ConfigError) and err.code == "invalid_storage_uri"
    assert reason in err.message, err.message
    assert "secret" not in err.message and "AKIA" not in err.message  # credentials never echoed


def test_good_uris_are_normalised(tmp_path: Path) -> None:
    assert storage.check_uri("s3://my-bucket.data/a/b/").uri == "s3://my-bucket.data/a/b"
    assert storage.check_uri("s3://my-bucket.data/a/b").path == "my-bucket.data/a/b"
    assert storage.check_uri("s3://bucket").path == "bucket"
    assert storage.check_uri(tmp_path).uri == str(tmp_path)
    assert storage.check_uri(f"file://{tmp_path}").uri == str(tmp_path)
    assert storage.check_uri("file:///data/my%20dir").uri == "/data/my dir"
    assert storage.check_uri("rel/dir").uri == os.path.abspath("rel/dir")
    assert storage.join("s3://bucket/p", "upload/1d", "symbol=A/bars.parquet") == \
        "s3://bucket/p/upload/1d/symbol=A/bars.parquet"
    for bad in ("..", "a/../b", "", "a//b", "x\\y"):
        with pytest.raises(InvalidStorageURI):
            storage.join("s3://bucket/p", bad)


def test_settings_refuse_a_bad_market_or_artifact_root() -> None:
    with pytest.raises(ConfigError, match="GPU_BACKTEST_MARKET_ROOT") as info:
        Settings.from_env({"GPU_BACKTEST_MARKET_ROOT": "s3://k:s@bucket/x"})
    assert "k:s" not in info.value.message
    with pytest.raises(ConfigError, match="GPU_BACKTEST_ARTIFACT_ROOT"):
        Settings.from_env({"GPU_BACKTEST_ARTIFACT_ROOT": "ftp://host/x"})
    assert Settings.from_env({"GPU_BACKTEST_MARKET_ROOT": "s3://bucket/market"}).market_uri == "s3://bucket/market"


def test_s3_filesystem_from_the_aws_variables(monkeypatch) -> None:
    for k in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://s3.example.test:8443")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_REGION", "eu-central-1")
    storage.clear_cache()
    try:
        fs, path = storage.resolve("s3://bucket/prefix")
        assert isinstance(fs, pafs.S3FileSystem) and path == "bucket/prefix"
        assert fs.region == "eu-central-1"  # AWS_REGION wins over AWS_DEFAULT_REGION
        assert storage._s3_options() == {"endpoint_override": "s3.example.test:8443", "scheme": "https",
                                         "region": "eu-central-1"}  # the S3-specific endpoint wins
        assert storage.resolve("s3://bucket/other")[0] is fs  # cached per configuration
        monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "not a url")
        with pytest.raises(ConfigError, match="AWS_ENDPOINT_URL_S3 must be"):
            storage.resolve("s3://bucket/prefix")
    finally:
        storage.clear_cache()


# -- files, on both kinds of root ----------------------------------------------------------------
@pytest.fixture(params=["local", "s3"])
def root(request, tmp_path: Path) -> str:
    if request.param == "local":
        return str(tmp_path / "root")
    return request.getfixturevalue("s3_root")


def test_file_helpers(root: str) -> None:
    a = storage.join(root, "x", "a.bin")
    assert not storage.exists(a) and storage.list_files(root) == []
    with pytest.raises(FileNotFoundError):
        storage.read_bytes(a)
    storage.write_bytes(a, b"one")
    storage.write_bytes(a, b"two")  # replaced
    assert storage.read_bytes(a) == b"two" and storage.exists(a)
    table = pa.table({"v": np.arange(5.0)})
    t = storage.join(root, "y/z/t.parquet")
    storage.write_table(t, table)
    assert storage.read_table(t).equals(table)
    assert storage.read_table(t, columns=["v"]).column_names == ["v"]
    assert storage.list_files(root) == ["x/a.bin", "y/z/t.parquet"]
    assert storage.list_files(storage.join(root, "y")) == ["z/t.parquet"]
    b = storage.join(root, "x", "b.bin")
    assert storage.copy(a, b) and storage.read_bytes(b) == b"two"
    assert not storage.copy(storage.join(root, "nope"), storage.join(root, "x", "c.bin"))
    storage.delete(a)
    storage.delete(a)  # missing is fine
    with pytest.raises(FileNotFoundError):
        storage.delete(a, missing_ok=False)
    assert storage.list_files(root) == ["x/b.bin", "y/z/t.parquet"]


def test_bytes_are_stored_as_given_whatever_the_name(root: str, request) -> None:
    import gzip

    raw = gzip.compress(b"payload")
    uri = storage.join(root, "a.json.gz")  # no compression guessed from the extension, either way
    storage.write_bytes(uri, raw)
    assert storage.read_bytes(uri) == raw
    if storage.is_local(root):
        assert Path(uri).read_bytes() == raw
    else:
        srv = request.getfixturevalue("s3_server")
        assert srv.client().get_object(Bucket=srv.bucket, Key="market/a.json.gz")["Body"].read() == raw


def test_failed_table_write_leaves_the_previous_file(root: str, monkeypatch) -> None:
    t = storage.join(root, "t.parquet")
    storage.write_table(t, pa.table({"v": [1.0]}))

    def boom(*a, **k):
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(pq, "write_table", boom)
        with pytest.raises(OSError, match="disk full"):
            storage.write_table(t, pa.table({"v": [2.0]}))
    assert storage.read_table(t).column("v").to_pylist() == [1.0]
    assert storage.list_files(root) == ["t.parquet"]  # no temporary file left


def test_local_write_is_atomic_and_fsynced(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "d" / "f.bin"
    synced, replaced = [], []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (replaced.append((a, b)), real_replace(a, b))[1])
    storage.write_bytes(target, b"data")
    assert synced and replaced and replaced[0][1] == str(target)
    assert Path(replaced[0][0]).parent == target.parent  # the temp file is in the same directory
    assert os.listdir(target.parent) == ["f.bin"]


def test_moto_s3_context_manager_outside_pytest(tmp_path: Path) -> None:
    before = os.environ.get("AWS_ENDPOINT_URL")
    with moto_s3(prefix="p") as srv:
        assert os.environ["AWS_ENDPOINT_URL"] == srv.endpoint
        storage.write_bytes(storage.join(srv.uri, "k.bin"), b"x")
        assert srv.keys() == ["p/k.bin"]
    assert os.environ.get("AWS_ENDPOINT_URL") == before


def test_a_torn_s3_read_is_retried(s3_server: S3Server, monkeypatch) -> None:  # noqa: F811
    uri = storage.join(s3_server.uri, "t.parquet")
    storage.write_table(uri, pa.table({"v": [1.0, 2.0]}))
    good = storage.read_bytes(uri)
    real = storage._read_s3
    torn = [good[: len(good) // 2]]  # the first read sees a prefix of a larger, newer object

    def read(fs, root):
        return torn.pop() if torn else real(fs, root)

    monkeypatch.setattr(storage, "_read_s3", read)
    assert storage.read_table(uri).column("v").to_pylist() == [1.0, 2.0]
    torn.append(good[:10])
    assert storage.read_bytes(uri) == good  # the size check catches it too
    monkeypatch.setattr(storage, "_read_s3", lambda fs, root: good[:10])
    with pytest.raises(OSError, match="kept changing"):
        storage.read_bytes(uri)
