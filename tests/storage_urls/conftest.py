"""One moto S3 server for the storage tests, and a fresh bucket for each."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ..s3kit import S3Server


@pytest.fixture(scope="session")
def s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    server = S3Server(tmp_path_factory.mktemp("moto"))
    yield server
    server.stop()


@pytest.fixture
def bucket(s3: S3Server) -> str:
    return s3.new_bucket()
