"""A real S3-protocol server for tests: moto's standalone server in its own process, on a free
port, awaited with a deadline, and stopped with its fixture."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import boto3
import httpx

from rainier.storage.access import StorageAccess, StoreKey

START_DEADLINE_S = 60.0
REGION = "us-east-1"
ADMIN = StoreKey("rainier-test-admin", "rainier-test-admin-secret")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class S3Server:
    def __init__(self, log_dir: Path) -> None:
        self.port = _free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log = (log_dir / f"moto-{self.port}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + START_DEADLINE_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"moto server exited with {self.proc.returncode}")
            try:
                if httpx.get(f"{self.endpoint}/moto-api/", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"moto server not answering within {START_DEADLINE_S}s")
            time.sleep(0.1)

    def access(self, credentials: StoreKey = ADMIN) -> StorageAccess:
        return StorageAccess(self.endpoint, REGION, credentials)

    def client(self, service: str = "s3", credentials: StoreKey = ADMIN) -> Any:
        return boto3.client(
            service,
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=credentials.key_id,
            aws_secret_access_key=credentials.secret_key,
        )

    def new_bucket(self) -> str:
        name = f"rainier-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def user(self, name: str, policy: dict[str, Any]) -> StoreKey:
        """An IAM user holding `policy`, and a key of its own."""
        iam = self.client("iam")
        iam.create_user(UserName=name)
        iam.put_user_policy(UserName=name, PolicyName="p", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName=name)["AccessKey"]
        return StoreKey(key["AccessKeyId"], key["SecretAccessKey"])

    def enforce_iam(self) -> None:
        """From now on every request must be signed by an IAM key its policies allow."""
        httpx.post(f"{self.endpoint}/moto-api/reset-auth", content=b"0").raise_for_status()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        self._log.close()
