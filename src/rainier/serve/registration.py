"""Telling the control plane where a replica answers: over HTTP, with the job's token.

A replica started by rainier has `RAINIER_CONTROL_URL`, `RAINIER_JOB_ID` and `RAINIER_TOKEN`
in its environment; once it listens it registers its port (and, when `RAINIER_NODE_ADDRESS`
is set, the address the control plane reaches its node at; else the control plane takes the
address the registration came from). Nothing reads its output to find it.

An engine that cannot register itself (vLLM's server, say) is wrapped instead:

    python -m rainier.serve.registration --port 8000 -- vllm serve MODEL --port 8000

starts the command, waits until `http://127.0.0.1:8000/health` answers, registers port 8000
for it, and exits with the command's status, passing SIGTERM on.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import threading
import time

import httpx

from rainier.tasklink import DEFAULT_DEADLINE_S, RETRY_S, ControlPlane


def register_in_background(port: int, host: str | None = None) -> threading.Thread | None:
    """Registers the replica's port from a thread, when rainier started it; says a failure on
    stderr (the replica then stays out of the gateway's choice, and its job's log says why)."""
    plane = ControlPlane.from_env()
    if plane is None:
        return None

    def run() -> None:
        try:
            plane.register(port, host=host)
        except (httpx.HTTPError, TimeoutError) as exc:
            print(
                f"rainier.serve: registering with the control plane failed: {exc}", file=sys.stderr
            )

    thread = threading.Thread(target=run, name="rainier-register", daemon=True)
    thread.start()
    return thread


def advertised_host(bound: str) -> str | None:
    """The address to register for a server bound to `bound`: none of its own when it bound
    every address (the control plane takes the one the registration came from)."""
    return None if bound in ("", "0.0.0.0", "::") else bound


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], deadline_s: float) -> bool:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return True
        except httpx.TransportError:
            pass
        time.sleep(RETRY_S)
    return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rainier.serve.registration",
        description="Start a server, and register its port with the control plane once healthy.",
    )
    parser.add_argument("--port", type=int, required=True, help="the port the command serves on")
    parser.add_argument(
        "--host", help="the address to register (default: as the control plane sees it)"
    )
    parser.add_argument("--health-path", default="/health")
    parser.add_argument("--deadline-s", type=float, default=DEFAULT_DEADLINE_S)
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("command: give the server's command line after --")
    proc = subprocess.Popen(command)
    signal.signal(signal.SIGTERM, lambda *_: proc.send_signal(signal.SIGTERM))
    plane = ControlPlane.from_env()
    health = f"http://127.0.0.1:{args.port}{args.health_path}"
    if plane is not None and _wait_healthy(health, proc, args.deadline_s):
        try:
            plane.register(args.port, host=args.host, deadline_s=args.deadline_s)
        except (httpx.HTTPError, TimeoutError) as exc:
            print(f"rainier: registering port {args.port} failed: {exc}", file=sys.stderr)
    code = proc.wait()
    return 128 - code if code < 0 else code


if __name__ == "__main__":
    sys.exit(main())
