"""The model registry and deployment documents: versions, tenancy, references, job tokens."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from rainier.cli.client import Client
from rainier.serve.tiny_model import build_tiny_llama

from .conftest import Cloud, wait_until


def test_versions_count_up_per_tenant_and_name(
    cloud: Cloud, acme: Client, globex: Client, model_dir: Path
) -> None:
    first = acme.post("/api/v1/models", {"name": "reg", "path": str(model_dir)})
    second = acme.post("/api/v1/models", {"name": "reg", "path": str(model_dir)})
    own = build_tiny_llama(cloud.server.settings.storage_dir / "globex" / "tiny")
    other = globex.post("/api/v1/models", {"name": "reg", "path": str(own)})
    assert (first["version"], second["version"], other["version"]) == (1, 2, 1)
    assert first["tenant"] == "acme" and other["tenant"] == "globex"
    assert acme.get("/api/v1/models/reg")["version"] == 2
    assert acme.get("/api/v1/models/reg:1")["id"] == first["id"]
    listed = acme.get("/api/v1/models", name="reg")["items"]
    assert [m["version"] for m in listed] == [2, 1]
    assert {m["tenant"] for m in acme.get("/api/v1/models")["items"]} == {"acme"}
    assert acme.http.get("/api/v1/models/reg:9").status_code == 404
    assert globex.http.get("/api/v1/models/reg:2").status_code == 404


def test_bad_model_folders_are_refused(acme: Client, tmp_path: Path) -> None:
    relative = acme.http.post("/api/v1/models", json={"name": "bad", "path": "models/x"})
    missing = acme.http.post("/api/v1/models", json={"name": "bad", "path": str(tmp_path / "x")})
    for response in (relative, missing):
        assert response.status_code == 422
        assert response.json()["problems"][0]["field"] == "path"
    assert acme.get("/api/v1/models", name="bad")["items"] == []


def test_a_job_registers_its_model_with_its_token(
    cloud: Cloud, acme: Client, globex: Client, model_dir: Path
) -> None:
    code = (
        "import os, httpx; r = httpx.post(os.environ['RAINIER_CONTROL_URL'] + '/api/v1/models', "
        "headers={'Authorization': 'Bearer ' + os.environ['RAINIER_TOKEN']}, "
        f"json={{'name': 'trained', 'path': {str(model_dir)!r}}}); "
        "r.raise_for_status(); print(r.json()['version'])"
    )
    job = acme.post(
        "/api/v1/jobs", {"kind": "Job", "name": "trainer", "command": [sys.executable, "-c", code]}
    )
    done = wait_until(
        lambda: (
            (j := acme.get(f"/api/v1/jobs/{job['id']}"))["state"] in ("succeeded", "failed") and j
        )
    )
    assert done["state"] == "succeeded", acme.get(f"/api/v1/jobs/{job['id']}/logs")["data"]
    model = acme.get("/api/v1/models/trained")
    assert (model["job_id"], model["tenant"], model["version"]) == (job["id"], "acme", 1)
    assert globex.http.get("/api/v1/models/trained").status_code == 404
    stranger = globex.http.post(
        "/api/v1/models", json={"name": "x", "path": str(model_dir), "job_id": job["id"]}
    )
    assert stranger.status_code == 404


def deployment(name: str, model: str, **extra: Any) -> dict[str, Any]:
    return {"kind": "Deployment", "name": name, "model": model, **extra}


def test_deployment_references_are_checked(acme: Client, model_dir: Path) -> None:
    for ref in ("never-registered", "tiny:99", "relative/folder", "Bad Name"):
        response = acme.http.post("/api/v1/deployments", json=deployment("d", ref))
        assert response.status_code == 422, ref
        assert response.json()["problems"][0]["field"] == "model"
    assert acme.http.get("/api/v1/deployments/d").status_code == 404


def test_deployment_by_folder_update_and_delete(
    cloud: Cloud, acme: Client, globex: Client, model_dir: Path
) -> None:
    doc = deployment("cold", str(model_dir), replicas={"min": 0, "max": 1})
    created = acme.http.post("/api/v1/deployments", json=doc)
    assert created.status_code == 201
    body = created.json()
    assert (body["model"], body["desired_replicas"], body["revision"]) == (str(model_dir), 0, 1)
    assert globex.http.get("/api/v1/deployments/cold").status_code == 404
    assert globex.http.delete("/api/v1/deployments/cold").status_code == 404
    assert "cold" not in {d["name"] for d in globex.get("/api/v1/deployments")["items"]}
    again = acme.http.post("/api/v1/deployments", json={**doc, "rate_limit_rpm": 5})
    assert again.status_code == 200 and again.json()["revision"] == 1
    moved = acme.http.post("/api/v1/deployments", json={**doc, "chips_per_replica": 2})
    assert moved.json()["revision"] == 2
    described = acme.get("/api/v1/deployments/cold")
    assert [e["kind"] for e in described["events"]] == ["created", "updated", "updated"]
    assert described["replica_list"] == []
    assert acme.delete("/api/v1/deployments/cold")["replicas_stopping"] == 0
    assert acme.http.get("/api/v1/deployments/cold").status_code == 404
