"""How a task (or the wrapper that runs it on its node) speaks to the control plane: over
HTTP, with the job's token, from the `RAINIER_*` variables the task was started with.

Registering where it listens (`register`), finding what another rank registered (`lookup`) and
sending output (`send_log`) are all it needs: machines share nothing but the network.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

RETRY_S = 0.5
DEFAULT_DEADLINE_S = 300.0


@dataclass(frozen=True)
class ControlPlane:
    """Who to tell: the control plane's URL, the job, and the job's token."""

    url: str
    job_id: str
    token: str
    node_address: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> ControlPlane | None:
        """The control plane a task was started with, or None when it was started by hand."""
        env = os.environ if env is None else env
        url = (env.get("RAINIER_CONTROL_URL") or "").rstrip("/")
        token = env.get("RAINIER_TOKEN") or env.get("RAINIER_JOB_TOKEN") or ""
        job_id = env.get("RAINIER_JOB_ID") or ""
        if not (url and token and job_id):
            return None
        return cls(url, job_id, token, env.get("RAINIER_NODE_ADDRESS") or None)

    def register(
        self,
        port: int,
        *,
        purpose: str = "serve",
        rank: int = 0,
        host: str | None = None,
        deadline_s: float = DEFAULT_DEADLINE_S,
    ) -> dict[str, object]:
        """Registers `port` (retrying while the control plane is unreachable or answers 5xx);
        answers what the control plane recorded. Raises on a refusal (4xx) or at the deadline."""
        body: dict[str, object] = {"rank": rank, "port": port}
        if host or self.node_address:
            body["host"] = host or self.node_address
        url = f"{self.url}/api/v1/jobs/{self.job_id}/endpoints/{purpose}"
        headers = self._auth
        deadline = time.monotonic() + deadline_s
        while True:
            try:
                answer = httpx.put(url, json=body, headers=headers, timeout=10.0)
                if answer.status_code < 500:
                    answer.raise_for_status()
                    found: dict[str, object] = answer.json()
                    return found
            except httpx.TransportError:
                pass
            if time.monotonic() >= deadline:
                raise TimeoutError(f"could not register {purpose} port {port} at {self.url}")
            time.sleep(RETRY_S)

    @property
    def _auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def lookup(
        self, purpose: str, rank: int = 0, attempt: int | None = None, timeout_s: float = 10.0
    ) -> dict[str, Any] | None:
        """What `rank` registered in `attempt` (the job's current one by default), or None
        while it has not."""
        params = {"rank": rank} if attempt is None else {"rank": rank, "attempt": attempt}
        answer = httpx.get(
            f"{self.url}/api/v1/jobs/{self.job_id}/endpoints/{purpose}",
            params=params,
            headers=self._auth,
            timeout=timeout_s,
        )
        if answer.status_code == 404:
            return None
        answer.raise_for_status()
        found: dict[str, Any] = answer.json()
        return found

    def send_log(
        self, rank: int, attempt: int, offset: int, data: bytes, timeout_s: float = 10.0
    ) -> int:
        """Sends a batch of output that starts at `offset` of the attempt's output; answers
        the offset the control plane has stored up to (where the next batch starts). Raises
        `httpx.HTTPStatusError` when refused (410: a later attempt has begun)."""
        answer = httpx.post(
            f"{self.url}/api/v1/jobs/{self.job_id}/logs",
            params={"rank": rank, "attempt": attempt, "offset": offset},
            content=data,
            headers={**self._auth, "Content-Type": "application/octet-stream"},
            timeout=timeout_s,
        )
        if answer.status_code == 409:
            return int(answer.headers["x-stored-offset"])
        answer.raise_for_status()
        return int(answer.json()["offset"])
