"""What a vLLM replica is started with, and how a replica's load is read: pure parts, and the
wrapper's behaviour when the server it starts dies before it answers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from rainier.control.deployments import replica_spec
from rainier.engines.replica_load import load_from_health, load_from_metrics
from rainier.engines.vllm_launch import (
    REPLICA_MODULE,
    VLLM_ARGS_ENV,
    VLLM_PYTHON_ENV,
    VllmServer,
    cpu_list,
    server_argv,
    server_environment,
    venv_root,
    vllm_python,
)
from rainier.engines.vllm_replica import parse_args
from rainier.serve.metrics import ServeMetrics
from rainier.serve.vllm_metrics import render, vllm_registry
from rainier.spec import DeploymentSpec, ServingEngine
from rainier.store.tables import Deployment


def deployment(**fields: object) -> Deployment:
    doc = DeploymentSpec.model_validate({"name": "chat", "model": "tiny", **fields})
    return Deployment(
        name="chat", spec=doc.model_dump(mode="json"), model="tiny:1", model_path="/m", revision=3
    )


def test_engine_defaults_to_rainier_and_rejects_unknown_names() -> None:
    assert DeploymentSpec(name="d", model="m").engine == ServingEngine.RAINIER
    with pytest.raises(ValidationError) as err:
        DeploymentSpec.model_validate({"name": "d", "model": "m", "engine": "tgi"})
    assert err.value.errors()[0]["loc"] == ("engine",)
    with pytest.raises(ValidationError) as err:
        DeploymentSpec.model_validate({"name": "d", "model": "m", "dtype": "int3"})
    assert err.value.errors()[0]["loc"] == ("dtype",)


def test_a_vllm_replica_runs_the_wrapper_with_the_deployments_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv(VLLM_PYTHON_ENV, str(tmp_path / "venv" / "bin" / "python"))
    spec = replica_spec(
        deployment(engine="vllm", chips_per_replica=2, dtype="bf16", max_batch_tokens=512)
    )
    command = spec.command
    assert command[:3] == [sys.executable, "-m", REPLICA_MODULE]

    def arg(flag: str) -> str:
        return command[command.index(flag) + 1]

    assert arg("--vllm-python") == str(tmp_path / "venv" / "bin" / "python")
    assert (arg("--model"), arg("--served-model-name")) == ("/m", "chat")
    assert (arg("--dtype"), arg("--threads"), arg("--max-batch-tokens")) == ("bf16", "2", "512")
    assert spec.env["RAINIER_DEPLOYMENT_REVISION"] == "3"
    assert not any(a.startswith("--vllm-args") for a in command)
    monkeypatch.setenv(VLLM_ARGS_ENV, "--enforce-eager --seed 1")
    command = replica_spec(deployment(engine="vllm")).command
    assert command[-1] == "--vllm-args=--enforce-eager --seed 1"
    assert parse_args(command[3:]).vllm_args == "--enforce-eager --seed 1"


def test_a_rainier_replica_gets_a_dtype_only_when_one_is_asked_for() -> None:
    assert "--dtype" not in replica_spec(deployment()).command
    command = replica_spec(deployment(dtype="fp32")).command
    assert command[1:3] == ["-m", "rainier.serve"]
    assert command[command.index("--dtype") + 1] == "fp32"


def test_vllm_python_is_the_named_one_unresolved(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    venv = tmp_path / "v"
    (venv / "bin").mkdir(parents=True)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\n")
    (venv / "bin" / "python").symlink_to(sys.executable)
    monkeypatch.setenv(VLLM_PYTHON_ENV, str(venv / "bin" / "python"))
    assert vllm_python() == venv / "bin" / "python"
    assert venv_root(vllm_python()) == venv
    assert venv_root(Path(sys.base_prefix) / "bin" / "python3") is None


def test_server_argv_names_the_model_port_and_dtype() -> None:
    server = VllmServer("/m", "chat", "127.0.0.1", 8123, 1024, "float32")
    argv = server_argv("/py", server)
    assert argv[:3] == ["/py", "-m", "vllm.entrypoints.openai.api_server"]
    pairs = dict(zip(argv[3::2], argv[4::2], strict=False))
    assert pairs["--model"] == "/m" and pairs["--served-model-name"] == "chat"
    assert pairs["--port"] == "8123" and pairs["--dtype"] == "float32"
    assert pairs["--max-num-batched-tokens"] == "1024"
    eager = VllmServer("/m", "chat", "127.0.0.1", 8123, 1024, extra_args=("--enforce-eager",))
    assert server_argv("/py", eager)[-1] == "--enforce-eager"


def test_every_cache_lies_in_the_work_folder_and_hugging_face_is_offline(tmp_path: Path) -> None:
    env = server_environment({"PATH": "/usr/bin", "X": "1"}, tmp_path, [2, 3, 5], on_cpu=True)
    assert env["X"] == "1" and env["PATH"] == "/usr/bin"
    for name in (
        "HOME",
        "XDG_CACHE_HOME",
        "XDG_CONFIG_HOME",
        "HF_HOME",
        "VLLM_CACHE_ROOT",
        "VLLM_CONFIG_ROOT",
        "TORCHINDUCTOR_CACHE_DIR",
        "TRITON_CACHE_DIR",
        "NUMBA_CACHE_DIR",
    ):
        assert Path(env[name]).is_relative_to(tmp_path), name
    assert env["HF_HUB_OFFLINE"] == env["TRANSFORMERS_OFFLINE"] == "1"
    assert env["VLLM_CPU_OMP_THREADS_BIND"] == "2-3,5" and env["OMP_NUM_THREADS"] == "3"
    on_gpu = server_environment({}, tmp_path, [0, 1], on_cpu=False)
    assert "VLLM_CPU_OMP_THREADS_BIND" not in on_gpu and "VLLM_CPU_KVCACHE_SPACE" not in on_gpu


@pytest.mark.parametrize(
    ("cpus", "expected"),
    [([], ""), ([0], "0"), ([3, 1, 2], "1-3"), ([0, 2, 4, 5], "0,2,4-5"), ([7, 7], "7")],
)
def test_cpu_list(cpus: list[int], expected: str) -> None:
    assert cpu_list(cpus) == expected


def test_load_reads_rainiers_health_or_either_engines_metrics() -> None:
    assert load_from_health({"status": "ok", "running": 3, "waiting": 1}) == (3, 1)
    assert load_from_health({}) is None and load_from_health(None) is None
    vllm_text = (
        "# TYPE vllm:num_requests_running gauge\n"
        'vllm:num_requests_running{engine="0",model_name="a"} 2.0\n'
        'vllm:num_requests_running{engine="1",model_name="a"} 1.0\n'
        "# TYPE vllm:num_requests_waiting gauge\n"
        'vllm:num_requests_waiting{engine="0",model_name="a"} 4.0\n'
    )
    assert load_from_metrics(vllm_text) == (3, 4)
    assert load_from_metrics("") == (0, 0)
    metrics = ServeMetrics()
    metrics.running.set(5)
    metrics.waiting.set(6)
    assert load_from_metrics(render(metrics, vllm_registry(metrics, "m")).decode()) == (5, 6)


def test_the_wrapper_exits_with_the_servers_status_and_announces_nothing(tmp_path: Path) -> None:
    """A server that dies while loading (here an interpreter that fails at once) is the
    wrapper's failure too, so the executor restarts the replica as it would any task."""
    failing = tmp_path / "python"
    failing.write_text("#!/bin/sh\nexit 3\n")
    failing.chmod(0o755)
    args = ["--vllm-python", str(failing), "--model", str(tmp_path), "--served-model-name", "m"]
    done = subprocess.run(
        [sys.executable, "-m", REPLICA_MODULE, *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={"RAINIER_WORKDIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 3
    assert "listening" not in done.stdout
