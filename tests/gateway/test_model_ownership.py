"""A tenant registers and deploys only model folders it owns; the answer never tells whether a
path it does not own exists."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from rainier.cli.client import Client
from rainier.serve.tiny_model import build_tiny_llama

from .conftest import Cloud, wait_until


def _register(client: Client, path: str, name: str = "probe") -> tuple[int, str]:
    response = client.http.post("/api/v1/models", json={"name": name, "path": path})
    return response.status_code, response.text


def test_another_tenants_folder_and_server_paths_are_refused(
    cloud: Cloud, acme: Client, globex: Client, model_dir: Path, tmp_path: Path
) -> None:
    """globex may not register acme's folder, nor any server path; the answer for an existing
    folder and a missing one is the same but for the path it names."""
    refused = {
        path: _register(globex, path)
        for path in (str(model_dir), "/root", "/etc", str(tmp_path / "missing"))
    }
    for path, (status, text) in refused.items():
        assert status == 422, (path, text)
    texts = {
        text.replace(path.replace("/", "\\/"), "P").replace(path, "P")
        for path, (_, text) in refused.items()
    }
    assert len(texts) == 1, texts
    assert "does not exist" not in next(iter(texts))
    # a link in globex's own prefix to acme's folder resolves to acme's folder: refused too
    prefix = cloud.server.settings.storage_dir / "globex"
    prefix.mkdir(parents=True, exist_ok=True)
    link = prefix / "borrowed"
    if not link.exists():
        os.symlink(model_dir, link)
    assert _register(globex, str(link))[0] == 422
    assert _register(globex, str(prefix / ".." / "acme" / "models" / "tiny-llama"))[0] == 422
    # nor may globex serve acme's folder by path
    doc = {"kind": "Deployment", "name": "stolen", "model": str(model_dir)}
    assert globex.http.post("/api/v1/deployments", json=doc).status_code == 422
    assert globex.get("/api/v1/models", name="probe")["items"] == []


def test_a_long_path_component_is_a_clear_error(acme: Client, cloud: Cloud) -> None:
    long_path = str(cloud.server.settings.storage_dir / "acme" / ("x" * 300) / "model")
    status, text = _register(acme, long_path)
    assert status == 422 and "per component" in text
    doc = {"kind": "Deployment", "name": "long", "model": long_path}
    response = acme.http.post("/api/v1/deployments", json=doc)
    assert response.status_code == 422
    assert response.json()["problems"][0]["field"] == "model"


def test_a_jobs_export_is_its_tenants_alone(cloud: Cloud, acme: Client, globex: Client) -> None:
    """A job exports under its checkpoint folder; its tenant may register that folder, another
    tenant may not."""
    code = (
        "import os, pathlib, shutil, sys; "
        "out = pathlib.Path(os.environ['RAINIER_CHECKPOINT_DIR']) / 'export'; "
        "out.mkdir(parents=True, exist_ok=True); (out / 'config.json').write_text('{}')"
    )
    job = acme.post(
        "/api/v1/jobs", {"kind": "Job", "name": "exporter", "command": [sys.executable, "-c", code]}
    )
    done = wait_until(
        lambda: (
            (j := acme.get(f"/api/v1/jobs/{job['id']}"))["state"] in ("succeeded", "failed") and j
        )
    )
    assert done["state"] == "succeeded"
    export = cloud.server.settings.checkpoints_dir / job["id"] / "export"
    assert export.is_dir()
    assert _register(globex, str(export), "theirs")[0] == 422
    mine = acme.post("/api/v1/models", {"name": "exported", "path": str(export)})
    assert mine["job_id"] == job["id"] and mine["path"] == os.path.realpath(export)
    # a folder under its own prefix is fine, and registered resolved
    own = build_tiny_llama(cloud.server.settings.storage_dir / "globex" / "own-model")
    assert globex.post("/api/v1/models", {"name": "own", "path": str(own)})["version"] == 1
