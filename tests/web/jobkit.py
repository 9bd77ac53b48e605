"""Jobs whose progress a test controls: each waits for a gate file before it goes on, reports
training metrics with its own job token, and prints what it is told to."""

from __future__ import annotations

from pathlib import Path
from typing import Any

# Runs under the node's python3 with the standard library only.
GATED = """
import json, os, sys, time, urllib.request
gate, text = sys.argv[1], sys.argv[2]
deadline = time.time() + 180
while not os.path.exists(gate) and time.time() < deadline:
    time.sleep(0.1)
url = os.environ["RAINIER_CONTROL_URL"] + "/api/v1/jobs/" + os.environ["RAINIER_JOB_ID"] + "/metrics"
for step in range(1, 11):
    body = {"step": step, "metrics": {"loss": 6.0 / step, "tokens_per_s": 1000.0 + 50 * step, "mfu": 0.01 * step}}
    request = urllib.request.Request(url, json.dumps(body).encode(), method="POST", headers={
        "Authorization": "Bearer " + os.environ["RAINIER_TOKEN"], "Content-Type": "application/json"})
    urllib.request.urlopen(request, timeout=30).read()
    print("step", step, "loss", round(6.0 / step, 3), flush=True)
print(text, flush=True)
"""


def gated_job(name: str, gate: Path, text: str = "done", chips: int = 1) -> dict[str, Any]:
    return {
        "kind": "Job",
        "name": name,
        "flavor": "cpu",
        "chips_per_node": chips,
        "command": ["python3", "-c", GATED, str(gate), text],
    }
