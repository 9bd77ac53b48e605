"""A vLLM server run as a rainier replica.

    python -m rainier.engines.vllm_replica --vllm-python PY --model DIR --host H \\
        --served-model-name NAME [--max-batch-tokens N] [--dtype D] [--threads N] \\
        [--vllm-args "MORE VLLM OPTIONS"]

vLLM cannot register itself with rainier's control plane, so this wrapper starts it on a free
port, waits until its `/health` answers, and then registers the port over HTTP with the job's
token exactly as rainier's own replicas do (`rainier.serve.registration`), and says so on
stdout (`{"event": "listening", "port": N}`) for whoever reads the log. The control plane sees
a replica only once it can serve. The wrapper stays as vLLM's parent: a stop request (SIGTERM) is passed
on, and the wrapper exits with vLLM's status, so the executor restarts a crashed server as it
would any task.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

import httpx

from rainier.engines.vllm_launch import VllmServer, server_argv, server_environment
from rainier.serve.registration import advertised_host, register_in_background

POLL_S = 0.5


def free_port(host: str) -> int:
    """A port the OS has just handed out on `host`; vLLM binds it a moment later."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_healthy(child: subprocess.Popen[bytes], url: str) -> bool:
    """True once `url` answers 200; False when the server exits first. vLLM loads the model
    and warms up before it answers, half a minute or more on a CPU, so there is no deadline
    here: a server that hangs is the executor's to stop."""
    with httpx.Client(timeout=5.0) as http:
        while child.poll() is None:
            try:
                if http.get(url).status_code == 200:
                    return True
            except httpx.HTTPError:
                pass
            time.sleep(POLL_S)
    return False


def exit_status(returncode: int) -> int:
    """A child killed by a signal exits as shells report it: 128 + the signal."""
    return 128 - returncode if returncode < 0 else returncode


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m rainier.engines.vllm_replica")
    parser.add_argument("--vllm-python", required=True, help="an interpreter that has vLLM")
    parser.add_argument("--model", required=True, help="model folder (Hugging Face layout)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--served-model-name", required=True)
    parser.add_argument("--max-batch-tokens", type=int, default=2048)
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="CPU cores to use; 0 = all given")
    parser.add_argument("--vllm-args", default="", help="more of vLLM's options, shell-quoted")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(os.environ.get("RAINIER_WORKDIR") or os.getcwd())
    on_cpu = os.environ.get("RAINIER_FLAVOR", "cpu") == "cpu"
    cpus = sorted(os.sched_getaffinity(0))
    if args.threads > 0:
        cpus = cpus[: args.threads]
    port = free_port(args.host)
    server = VllmServer(
        model=args.model,
        served_model_name=args.served_model_name,
        host=args.host,
        port=port,
        max_batch_tokens=args.max_batch_tokens,
        dtype=args.dtype,
        extra_args=tuple(shlex.split(args.vllm_args)),
    )
    env = server_environment(os.environ, workdir, cpus, on_cpu)
    child = subprocess.Popen(server_argv(args.vllm_python, server), env=env)

    def pass_on(signum: int, _frame: FrameType | None) -> None:
        if child.poll() is None:
            child.send_signal(signum)

    signal.signal(signal.SIGTERM, pass_on)
    signal.signal(signal.SIGINT, pass_on)
    probe_host = "127.0.0.1" if args.host in ("0.0.0.0", "") else args.host
    if wait_until_healthy(child, f"http://{probe_host}:{port}/health"):
        # on a line of its own even when vLLM left one unfinished (a progress bar)
        announcement = json.dumps({"event": "listening", "port": port, "engine": "vllm"})
        print(f"\n{announcement}", flush=True)
        register_in_background(port, advertised_host(args.host))
    return exit_status(child.wait())


if __name__ == "__main__":
    sys.exit(main())
