"""How fast `rainier` answers before any server is involved: `--help`, `--version`, a
subcommand's help, and a command against a control plane that is not running.

Each is run as a fresh process (the way a user runs it), several times in alternating
rounds; the median is reported. `rainier --help` must stay under 0.3 s, so the figure
`help_s` is checked against that budget, and the modules the help imported are listed: none
of the heavy ones (pydantic, httpx, numpy, sqlalchemy, torch, fastapi) may be among them.

The last line printed is one JSON object of the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time

HEAVY = ("pydantic", "httpx", "numpy", "sqlalchemy", "torch", "fastapi", "yaml", "rainier.spec")
BUDGET_S = 0.3


def timed(argv: list[str], env: dict[str, str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, env=env, capture_output=True, check=False)
    return time.perf_counter() - started


def imported_by_help(env: dict[str, str]) -> list[str]:
    probe = (
        "import sys\n"
        "from rainier.cli.main import cli\n"
        "try:\n    cli.main(['--help'], prog_name='rainier')\n"
        "except SystemExit:\n    pass\n"
        f"print(','.join(sorted(m for m in sys.modules if m.split('.')[0] in {HEAVY!r} "
        f"or m in {HEAVY!r})), file=sys.stderr)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    return [m for m in out.stderr.strip().split(",") if m]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory(prefix="rainier-cli-") as home:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("RAINIER_")},
            "RAINIER_HOME": home,
            "RAINIER_URL": f"http://127.0.0.1:{closed_port}",
        }
        rainier = [sys.executable, "-m", "rainier.cli.main"]
        cases = {
            "help_s": [*rainier, "--help"],
            "version_s": [*rainier, "--version"],
            "apply_help_s": [*rainier, "apply", "--help"],
            "ps_no_server_s": [*rainier, "ps"],
            "python_startup_s": [sys.executable, "-c", "pass"],
        }
        times: dict[str, list[float]] = {k: [] for k in cases}
        for _ in range(args.rounds):
            for name, argv in cases.items():
                times[name].append(timed(argv, env))
        heavy = imported_by_help(env)
    out: dict[str, object] = {
        name: round(statistics.median(values), 4) for name, values in times.items()
    }
    out["help_within_budget"] = bool(out["help_s"] < BUDGET_S)  # type: ignore[operator]
    out["budget_s"] = BUDGET_S
    out["heavy_modules_imported_by_help"] = heavy
    out["rounds"] = args.rounds
    print(json.dumps(out))


if __name__ == "__main__":
    main()
