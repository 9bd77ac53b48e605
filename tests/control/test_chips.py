"""Chips are specific: a placement names which chips of a node each task holds, and the task is
handed exactly those, the flavor's way (cores for `cpu`, a device variable for accelerators)."""

from __future__ import annotations

import json
import sys
from typing import Any

from rainier.cli.client import Client

from .conftest import Cloud, job_state, wait_until

PY = sys.executable
SHOW = """
import json, os, sys, time
seen = {"cores": sorted(os.sched_getaffinity(0)), "chips": os.environ["RAINIER_CHIP_IDS"]}
for name in ("CUDA_VISIBLE_DEVICES", "NEURON_RT_VISIBLE_CORES"):
    seen[name] = os.environ.get(name)
print("SEEN", json.dumps(seen), flush=True)
time.sleep(float(sys.argv[1]))
"""


def run(client: Client, name: str, chips: int, flavor: str = "cpu", hold_s: float = 0) -> str:
    doc = {
        "kind": "Job",
        "name": name,
        "flavor": flavor,
        "chips_per_node": chips,
        "command": [PY, "-c", SHOW, str(hold_s)],
        "grace_period_s": 1,
    }
    return str(client.post("/api/v1/jobs", doc)["id"])


def seen(client: Client, job_id: str) -> dict[str, Any] | None:
    data = client.get(f"/api/v1/jobs/{job_id}/logs")["data"]
    if "SEEN " not in data:
        return None
    found: dict[str, Any] = json.loads(data.split("SEEN ")[1].splitlines()[0])
    return found


def test_two_tenants_one_chip_each_run_on_different_cores(cloud: Cloud) -> None:
    cloud.nodes({"name": "vm", "flavor": "cpu", "chips": 2})
    alpha, beta = cloud.tenant("alpha"), cloud.tenant("beta")
    a = run(alpha, "a", 1, hold_s=60)
    b = run(beta, "b", 1, hold_s=60)
    got_a = wait_until(lambda: seen(alpha, a), what="alpha's task")
    got_b = wait_until(lambda: seen(beta, b), what="beta's task")
    assert len(got_a["cores"]) == 1 and len(got_b["cores"]) == 1
    assert got_a["cores"] != got_b["cores"], (got_a, got_b)
    assert {got_a["chips"], got_b["chips"]} == {"0", "1"}
    for client, job in ((alpha, a), (beta, b)):
        client.post(f"/api/v1/jobs/{job}/stop")
        wait_until(job_state(client, job, "stopped", "failed", "succeeded"), what="a stop")


def test_gpu_chips_two_and_three_are_the_only_ones_visible(cloud: Cloud) -> None:
    cloud.nodes({"name": "gpu-1", "flavor": "h200", "chips": 8})
    acme = cloud.tenant("acme")
    first = run(acme, "first", 2, "h200", hold_s=60)
    assert wait_until(lambda: seen(acme, first))["CUDA_VISIBLE_DEVICES"] == "0,1"
    second = run(acme, "second", 2, "h200")
    got = wait_until(lambda: seen(acme, second), what="the second job")
    assert got["CUDA_VISIBLE_DEVICES"] == "2,3" and got["chips"] == "2,3"
    placement = acme.get(f"/api/v1/jobs/{second}")
    assert placement["state"] in ("running", "succeeded")
    acme.post(f"/api/v1/jobs/{first}/stop")
    wait_until(job_state(acme, first, "stopped", "failed", "succeeded"), what="the first job")
    # chips given back are handed out again
    third = run(acme, "third", 4, "h200")
    assert wait_until(lambda: seen(acme, third))["CUDA_VISIBLE_DEVICES"] == "0,1,2,3"


def test_a_trn2_chip_is_four_neuron_cores(cloud: Cloud) -> None:
    cloud.nodes({"name": "trn-1", "flavor": "trn2", "chips": 16})
    acme = cloud.tenant("acme")
    hold = run(acme, "hold", 1, "trn2", hold_s=60)
    wait_until(lambda: seen(acme, hold))
    job = run(acme, "second", 2, "trn2")
    assert wait_until(lambda: seen(acme, job))["NEURON_RT_VISIBLE_CORES"] == "4,5,6,7,8,9,10,11"
    acme.post(f"/api/v1/jobs/{hold}/stop")
    wait_until(job_state(acme, hold, "stopped", "failed", "succeeded"), what="the stop")
