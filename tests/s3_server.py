"""An S3-compatible server for tests: moto in server mode on 127.0.0.1 (no network, no AWS account).

Two ways in:

- the pytest fixture ``s3_root`` (import it into a test module or a conftest:
  ``from s3_server import s3_root``, or ``pytest_plugins``-style): starts one moto server for
  the test session, creates a fresh bucket for the test, sets ``AWS_ENDPOINT_URL``,
  ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY`` and ``AWS_DEFAULT_REGION`` with
  ``monkeypatch`` (so child processes started by the test inherit them; they are restored
  afterwards) and yields ``s3://<bucket>/<prefix>``;
- the context manager ``moto_s3()`` for use outside pytest (a benchmark, a script, a Dask
  worker test that needs the environment in ``os.environ``): starts a server, creates the
  bucket, sets the variables in ``os.environ``, yields an `S3Server`, and restores
  everything on exit.

`S3Server.client()` is a boto3 client on the server (to list or corrupt objects from a test).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pytest

REGION = "us-east-1"
ACCESS_KEY = "testing-access-key"
SECRET_KEY = "testing-secret-key"


@dataclass(frozen=True)
class S3Server:
    """A running moto server: ``endpoint`` (``http://127.0.0.1:<port>``), ``bucket``, ``prefix``."""

    endpoint: str
    bucket: str
    prefix: str

    @property
    def uri(self) -> str:
        """The storage URI of the prefix: ``s3://bucket/prefix``."""
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def env(self) -> dict[str, str]:
        """The AWS variables that point a process at this server."""
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": REGION}

    def client(self) -> Any:
        """A boto3 S3 client on this server."""
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                            aws_secret_access_key=SECRET_KEY)

    def keys(self, markers: bool = False) -> list[str]:
        """Every object key in the bucket, sorted; without the empty ``dir/`` markers that pyarrow
        leaves behind when it deletes the last object of a "directory" (unless ``markers``)."""
        out: list[str] = []
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            out += [o["Key"] for o in page.get("Contents", []) if markers or not o["Key"].endswith("/")]
        return sorted(out)

    def with_bucket(self, bucket: str | None = None, prefix: str = "market") -> S3Server:
        """The same server with a new bucket (created now)."""
        other = S3Server(self.endpoint, bucket or f"gbt-{uuid.uuid4().hex[:12]}", prefix)
        other.client().create_bucket(Bucket=other.bucket)
        return other


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _server() -> Iterator[str]:
    """Start a moto server on a free loopback port; yield its endpoint URL."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


def _reset_filesystems() -> None:
    from gpu_backtest.core import storage

    storage.clear_cache()


_AWS_VARS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
             "AWS_SESSION_TOKEN", "AWS_DEFAULT_REGION", "AWS_REGION", "AWS_PROFILE")


@contextmanager
def moto_s3(bucket: str | None = None, prefix: str = "market") -> Iterator[S3Server]:
    """Outside pytest: a moto S3 server with ``bucket`` created and the AWS variables set in
    ``os.environ`` (restored on exit)."""
    saved = {k: os.environ.get(k) for k in _AWS_VARS}
    with _server() as endpoint:
        srv = S3Server(endpoint, "unused", "").with_bucket(bucket, prefix)
        try:
            for k in _AWS_VARS:
                os.environ.pop(k, None)
            os.environ.update(srv.env)
            _reset_filesystems()
            yield srv
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            _reset_filesystems()


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """One moto server for the whole test session (its endpoint URL)."""
    with _server() as endpoint:
        yield endpoint


@pytest.fixture
def s3_server(s3_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Server]:
    """A fresh bucket on the session's moto server, with the AWS variables set for this test."""
    srv = S3Server(s3_endpoint, "unused", "").with_bucket()
    for k in _AWS_VARS:
        monkeypatch.delenv(k, raising=False)
    for k, v in srv.env.items():
        monkeypatch.setenv(k, v)
    _reset_filesystems()
    yield srv
    _reset_filesystems()


@pytest.fixture
def s3_root(s3_server: S3Server) -> str:
    """``s3://<fresh bucket>/market`` on a local moto server, the AWS variables set for this test."""
    return s3_server.uri
