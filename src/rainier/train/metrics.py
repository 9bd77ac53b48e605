"""Where a run's numbers go: JSON lines on stdout and in a file, and the control plane.

Posting is best effort on a background thread with a bounded queue: a slow or absent control
plane costs the run nothing, and a failed post is dropped rather than retried forever.
"""

from __future__ import annotations

import json
import math
import os
import queue
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any, TextIO

import torch

POST_TIMEOUT_S = 5.0


class Poster:
    def __init__(self, control_url: str, token: str | None) -> None:
        self.control_url, self.token = control_url, token
        self.failures = 0
        self._queue: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue(maxsize=1000)
        self._thread = threading.Thread(target=self._run, name="rainier-metrics", daemon=True)
        self._thread.start()

    def post(self, path: str, body: dict[str, Any]) -> None:
        try:
            self._queue.put_nowait((path, body))
        except queue.Full:
            self.failures += 1

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            if not post_json(self.control_url + item[0], item[1], self.token):
                self.failures += 1

    def close(self, timeout_s: float = 10.0) -> None:
        try:
            self._queue.put(None, timeout=timeout_s)
        except queue.Full:
            return
        self._thread.join(timeout_s)


def post_json(url: str, body: dict[str, Any], token: str | None) -> bool:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=POST_TIMEOUT_S) as response:
            return 200 <= response.status < 300
    except Exception:
        return False


class Reporter:
    """JSON lines for people and programs; only rank 0 reports so every line is said once."""

    def __init__(
        self,
        enabled: bool,
        metrics_file: Path | None,
        poster: Poster | None,
        job_id: str | None,
        out: TextIO | None = None,
    ) -> None:
        self.enabled, self.poster, self.job_id = enabled, poster, job_id
        self.out = out or sys.stdout
        self._file: TextIO | None = None
        self._progress: Any = None
        if enabled and metrics_file is not None:
            metrics_file.parent.mkdir(parents=True, exist_ok=True)
            self._file = metrics_file.open("a", encoding="utf-8")

    def progress(self, start: int, total: int) -> None:
        """A progress bar, but only for a person watching a terminal."""
        if self.enabled and self.out.isatty():
            from tqdm import tqdm

            self._progress = tqdm(initial=start, total=total, unit="step", dynamic_ncols=True)

    def advance(self, loss: float | None = None) -> None:
        if self._progress is not None:
            self._progress.update(1)
            if loss is not None:
                self._progress.set_postfix(loss=f"{loss:.4f}", refresh=False)

    def event(self, name: str, **fields: Any) -> None:
        self._emit({"event": name, **fields})

    def metrics(self, step: int, values: dict[str, float]) -> None:
        self._emit({"step": step, **values})
        if self.enabled and self.poster is not None and self.job_id is not None:
            finite = {k: v for k, v in values.items() if math.isfinite(v)}
            self.poster.post(
                f"/api/v1/jobs/{self.job_id}/metrics", {"step": step, "metrics": finite}
            )

    def _emit(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        line = json.dumps({"time": round(time.time(), 3), **record}, default=str)
        if self._progress is not None:
            self._progress.write(line, file=self.out)
        else:
            print(line, file=self.out, flush=True)
        if self._file is not None:
            self._file.write(line + "\n")
            self._file.flush()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.close()
        if self.poster is not None:
            self.poster.close()
            if self.poster.failures:
                self.event("metrics_not_posted", count=self.poster.failures)
        if self._file is not None:
            self._file.close()


def measure_matmul_tflops(device: torch.device, dtype: torch.dtype, budget_s: float = 0.3) -> float:
    """The best square-matmul rate this device reaches here and now, in TFLOP/s.

    A CPU has no datasheet peak that means anything under shared load, so its MFU is measured
    against what it can actually do at the start of the run.
    """
    n = 2048 if device.type == "cuda" else 512
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = 0.0
    deadline = time.perf_counter() + budget_s
    for _ in range(2):
        a @ b
    while True:
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(4):
            a @ b
        _sync(device)
        elapsed = time.perf_counter() - t0
        best = max(best, 4 * 2 * n**3 / elapsed / 1e12)
        if time.perf_counter() > deadline:
            return best


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_tflops(flavor: str | None, device: torch.device, dtype: torch.dtype) -> tuple[float, str]:
    """Peak TFLOP/s of one chip in the dtype the run computes in, and where the number came
    from: MFU against the bf16 peak of a run that computes in fp32 (or the reverse) would
    misstate how much of the chip it uses.

    The flavor's datasheet value for that dtype when the job runs on that accelerator; a
    flavor missing from the environment is recognised from the CUDA device name; anything
    else (CPUs, whose peak depends on what else runs on them) is measured in that dtype.
    """
    if device.type != "cpu":
        from rainier.catalog import FLAVORS
        from rainier.precision import short_name

        published = os.environ.get("RAINIER_FLAVOR_PEAK_TFLOPS")  # the catalog's bf16, at launch
        if flavor and flavor != "cpu" and published and dtype == torch.bfloat16:
            return float(published), f"flavor {flavor}"
        name = flavor
        if name is None and device.type == "cuda":
            device_name = torch.cuda.get_device_name(device).lower()
            name = next((f for f in FLAVORS if f != "cpu" and f in device_name), None)
        if name in FLAVORS and name != "cpu":
            peaks = dict(FLAVORS[name].peak_tflops_by_dtype)
            if short_name(dtype) in peaks:
                return peaks[short_name(dtype)], f"flavor {name} {short_name(dtype)}"
        if name in FLAVORS and name != "cpu":
            return FLAVORS[name].peak_tflops, f"flavor {name}"
    return measure_matmul_tflops(device, dtype), "measured"
