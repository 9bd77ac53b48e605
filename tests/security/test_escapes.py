"""A tenant's job tries every way out of its sandbox it can; every one fails, and the other
tenant's job, the control plane and the records billing trusts are untouched."""

from __future__ import annotations

from pathlib import Path

from .conftest import PY, Sealed, finished, logs, needs_sandbox, wait_until
from .escapes import run_probe

pytestmark = needs_sandbox


def test_a_hostile_job_escapes_nothing(sealed: Sealed) -> None:
    alpha = sealed.tenant("alpha")
    sealed.nodes({"name": "n1", "flavor": "cpu", "chips": 2})
    probed = run_probe(sealed, sealed.server.url, sealed.secret)
    results, home, a = probed.results, probed.home, probed.alpha_job

    escaped = {k: v for k, v in results.items() if not v.startswith("blocked")}
    assert escaped == {}, escaped
    assert len(results) >= 15
    # each attempt was refused by the system, not lost to a slip of the probe itself
    assert not any(
        v.split(":")[1].strip() in ("KeyError", "NameError", "TypeError") for v in results.values()
    )
    # the probe ran as beta's own unprivileged user, on cores alpha does not hold
    assert probed.own["uid"] >= 1000
    assert not set(probed.own["cores"]) & set(probed.alpha_cores), (probed.own, probed.alpha_cores)
    # and nothing of alpha's, nor of the control plane, was touched
    assert alpha.get(f"/api/v1/jobs/{a}")["state"] == "running"
    assert all(Path(f"/proc/{pid}").exists() for pid in probed.alpha_pids)
    assert (home / "checkpoints" / a / "weights").read_text() == "alpha-private-weights"
    assert not (home / "checkpoints" / "planted").exists()
    assert not (home / "rainier-escape").exists()
    assert alpha.get(f"/api/v1/jobs/{a}/metrics") == []
    beta = sealed.tenant("beta")
    task = beta.get(f"/api/v1/jobs/{probed.own['job']}")["tasks"][0]
    assert task["exit_code"] == 0 and task["state"] == "exited"
    assert (home / "checkpoints" / probed.own["job"] / "own-state").read_text() == "mine"

    alpha.post(f"/api/v1/jobs/{a}/stop")
    wait_until(finished(alpha, a), 60, "alpha's job to stop")


# Attempts that would change this machine when they succeed: the unsealed run leaves them out.
HARMFUL_WHEN_THEY_ESCAPE = (
    "signal the control plane",
    "write outside its folders",
    "mount the host's disk",
)


def test_without_the_sandbox_the_same_probe_escapes(bare: Sealed) -> None:
    """The probe finds what is there to find: run bare, its attempts succeed."""
    bare.nodes({"name": "n1", "flavor": "cpu", "chips": 2})
    probed = run_probe(bare, bare.server.url, bare.secret, skip=HARMFUL_WHEN_THEY_ESCAPE)
    escaped = {k for k, v in probed.results.items() if v.startswith("escaped")}
    assert {
        "read the database",
        "read the server's environment through /proc",
        "read another tenant's checkpoint",
        "read another tenant's task records",
        "read the operator's credentials",
        "forge its own exit record",
        "list another tenant's processes",
        "signal another tenant's process",
    } <= escaped, probed.results


def test_a_job_that_exceeds_its_memory_ends_out_of_memory(sealed: Sealed) -> None:
    sealed.nodes({"name": "n1", "flavor": "cpu", "chips": 2})
    beta = sealed.tenant("beta")
    hog = "x = bytearray(1 << 30); x[::4096] = b'1' * len(x[::4096]); print('not limited')"
    job = beta.post(
        "/api/v1/jobs",
        {"kind": "Job", "name": "hog", "command": [PY, "-c", hog], "memory_gb": 0.25},
    )
    done = wait_until(finished(beta, job["id"]), 60, "the memory hog")
    assert done["state"] == "failed"
    assert done["reason"].startswith("out of memory (limit 256 MiB)"), done["reason"]
    assert "not limited" not in logs(beta, job["id"])
    assert any("out of memory" in e["message"] for e in done["events"])


def test_a_tenant_cannot_be_given_another_tenants_files_as_its_data(sealed: Sealed) -> None:
    """Naming a path in a job's `data` binds it only where the tenant's user may read it."""
    sealed.nodes({"name": "n1", "flavor": "cpu", "chips": 2})
    alpha, beta = sealed.tenant("alpha"), sealed.tenant("beta")
    write = "import os, pathlib; pathlib.Path(os.environ['RAINIER_CHECKPOINT_DIR'], 'w').write_text('alpha-only')"
    a = alpha.post("/api/v1/jobs", {"kind": "Job", "name": "w", "command": [PY, "-c", write]})
    assert wait_until(finished(alpha, a["id"]), 60)["state"] == "succeeded"
    home = Path(sealed.settings.home)
    stolen = str(home / "checkpoints" / a["id"])
    b = beta.post(
        "/api/v1/jobs",
        {
            "kind": "Job",
            "name": "r",
            "train": {"data": [stolen], "steps": 1, "batch_size": 1, "seq_len": 8},
        },
    )
    assert wait_until(finished(beta, b["id"]), 120)["state"] == "failed"
    assert "alpha-only" not in logs(beta, b["id"])
