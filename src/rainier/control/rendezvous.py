"""Where a gang meets: a port rank 0's node chose, found by the others through the control plane.

Before a task of a gang (`WORLD_SIZE` > 1) starts, the part of rainier that starts it on its node
(outside the sandbox) settles `MASTER_ADDR` and `MASTER_PORT`: on rank 0's node it binds a free
port on every address of that node, registers it with the control plane with the job's token
(`rendezvous`, for the task's attempt) and hands it to rank 0; on the other nodes it waits until
that registration is there and hands its address and port to the task. So nothing about rank
0's node is decided anywhere else, and an attempt restarted on other nodes meets at its own
port. Tasks started without a control plane to ask keep the variables they were given.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping

import httpx

from rainier.tasklink import DEFAULT_DEADLINE_S, RETRY_S, ControlPlane

RENDEZVOUS_ENV = "RAINIER_RENDEZVOUS"
BY_CONTROL_PLANE = "control"


class RendezvousFailed(ConnectionError):
    """The gang's meeting point could not be settled: the task cannot start (an `OSError`, as
    a command that cannot be started is)."""


def free_port() -> int:
    """A port nothing on this node listens on, on any of its addresses."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return int(sock.getsockname()[1])


def settle(env: Mapping[str, str], deadline_s: float = DEFAULT_DEADLINE_S) -> dict[str, str]:
    """`env` with `MASTER_ADDR` and `MASTER_PORT` of the task's gang, when it is a gang that
    meets through the control plane; `env` as it is otherwise."""
    out = dict(env)
    if env.get(RENDEZVOUS_ENV) != BY_CONTROL_PLANE:
        return out
    if int(env.get("WORLD_SIZE", "1") or 1) <= 1:
        out["MASTER_PORT"] = str(free_port())  # a gang of one meets itself, on its own node
        return out
    plane = ControlPlane.from_env(env)
    if plane is None:
        raise RendezvousFailed("a gang needs RAINIER_CONTROL_URL, RAINIER_JOB_ID and RAINIER_TOKEN")
    rank = int(env.get("RANK", "0") or 0)
    attempt = int(env.get("RAINIER_ATTEMPT", "0") or 0)
    try:
        if rank == 0:
            port = free_port()
            found = plane.register(port, purpose="rendezvous", rank=0, deadline_s=deadline_s)
        else:
            found = _wait_for_rank0(plane, attempt, deadline_s)
    except (httpx.HTTPError, TimeoutError) as exc:
        raise RendezvousFailed(f"cannot settle where the gang meets: {exc}") from None
    out["MASTER_ADDR"], out["MASTER_PORT"] = str(found["host"]), str(found["port"])
    return out


def _wait_for_rank0(plane: ControlPlane, attempt: int, deadline_s: float) -> dict[str, object]:
    deadline = time.monotonic() + deadline_s
    while True:
        try:
            found = plane.lookup("rendezvous", 0, attempt)
        except httpx.HTTPError:
            found = None
        if found is not None:
            return found
        if time.monotonic() >= deadline:
            raise RendezvousFailed(
                f"rank 0 registered no rendezvous port within {deadline_s:.0f} s"
            )
        time.sleep(RETRY_S / 2)
