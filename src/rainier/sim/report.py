"""One self-contained HTML page (charts embedded as base64 PNG), the PNGs, and a JSON summary.

The page has no external references so it can be mailed or attached to a contract review as is.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.figure import Figure

from rainier.sim.metrics import job_table, sample
from rainier.sim.records import SimResult

CHARTS = ("utilization", "queue", "jct_cdf", "tenants")
_GRID_POINTS = 400


def _grid(results: Sequence[SimResult]) -> np.ndarray:
    end = max((r.end_s for r in results), default=0.0)
    return np.linspace(0.0, max(end, 1.0), _GRID_POINTS)


def _hours(grid: np.ndarray) -> np.ndarray:
    return grid / 3600.0


def utilization_chart(results: Sequence[SimResult]) -> Figure:
    flavors = sorted({f for r in results for f in r.capacity_chips})
    fig, axes = plt.subplots(len(flavors), 1, figsize=(9, 2.6 * len(flavors)), squeeze=False)
    grid = _grid(results)
    for ax, flavor in zip(axes[:, 0], flavors, strict=True):
        for r in results:
            if flavor in r.utilization:
                busy = sample(r.utilization[flavor], grid) / r.capacity_chips[flavor]
                ax.plot(_hours(grid), 100 * busy, label=r.policy, linewidth=1)
        ax.set_ylabel(f"{flavor} busy %")
        ax.set_ylim(0, 105)
        ax.legend(loc="lower right", fontsize=8)
    axes[-1, 0].set_xlabel("simulated hours")
    fig.suptitle("Utilization per flavor")
    fig.tight_layout()
    return fig


def queue_chart(results: Sequence[SimResult]) -> Figure:
    fig, ax = plt.subplots(figsize=(9, 3.2))
    grid = _grid(results)
    for r in results:
        ax.plot(_hours(grid), sample(r.queue_length, grid), label=r.policy, linewidth=1)
    ax.set_xlabel("simulated hours")
    ax.set_ylabel("jobs pending")
    ax.set_title("Queue length")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def jct_cdf_chart(results: Sequence[SimResult]) -> Figure:
    fig, ax = plt.subplots(figsize=(9, 3.6))
    for r in results:
        jct = np.sort(job_table(r).jct_s)
        if jct.size:
            ax.plot(np.maximum(jct, 1.0), np.arange(1, jct.size + 1) / jct.size, label=r.policy)
    ax.set_xscale("log")
    ax.set_xlabel("job completion time (s)")
    ax.set_ylabel("fraction of jobs")
    ax.set_title("JCT CDF")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def tenants_chart(results: Sequence[SimResult], summaries: Sequence[dict[str, Any]]) -> Figure:
    tenants = sorted({t for s in summaries for t in s["tenants"]})
    fig, ax = plt.subplots(figsize=(max(9.0, 0.5 * len(tenants) + 3), 3.8))
    x = np.arange(len(tenants))
    width = 0.8 / max(1, len(summaries) + 1)
    guaranteed = [sum(summaries[0]["tenants"][t]["guaranteed_chips"].values()) for t in tenants]
    ax.bar(x, guaranteed, width, label="guaranteed", color="lightgray", edgecolor="gray")
    for k, s in enumerate(summaries, start=1):
        held = [sum(s["tenants"].get(t, {}).get("mean_chips_held", {}).values()) for t in tenants]
        ax.bar(x + k * width, held, width, label=f"{s['policy']} (mean held)")
    ax.set_xticks(x + width * len(summaries) / 2, tenants, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("chips")
    ax.set_title("Per-tenant usage vs guarantee")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def _png(fig: Figure, path: Path) -> bytes:
    fig.savefig(path, format="png", dpi=100)
    plt.close(fig)
    return path.read_bytes()


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isinf(value):
            return "∞"
        return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.0f}"
    return html.escape(str(value))


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _policy_rows(summaries: Sequence[dict[str, Any]]) -> list[list[Any]]:
    return [
        [
            s["policy"],
            s["completed"],
            s["jct_s"]["mean"],
            s["jct_s"]["p95"],
            s["wait_s"]["mean"],
            s["wait_s"]["p95"],
            s["wait_s"]["p99"],
            ", ".join(f"{f} {100 * u:.1f}%" for f, u in s["utilization"].items()),
            ", ".join(f"{f} {100 * u:.1f}%" for f, u in s["utilization_while_arriving"].items()),
            s["makespan_s"] / 3600,
            s["preemptions"],
            s["work_lost_chip_hours"],
            s["guarantee_violations"],
            s["fairness_jain"],
            s["billed_usd"],
        ]
        for s in summaries
    ]


def _tenant_rows(s: dict[str, Any]) -> list[list[Any]]:
    return [
        [
            name,
            t["jobs"],
            t["wait_s"]["mean"],
            t["wait_s"]["p95"],
            t["jct_s"]["mean"],
            sum(t["guaranteed_chips"].values()),
            sum(t["mean_chips_held"].values()),
            sum(t["chip_hours"].values()),
            t["billed_usd"],
            ", ".join(f"{f} {100 * v:.0f}%" for f, v in t["entitlement_served"].items()) or None,
            t["preemptions"],
            t["guarantee_violations"],
        ]
        for name, t in s["tenants"].items()
    ]


def write_report(
    results: Sequence[SimResult],
    summaries: Sequence[dict[str, Any]],
    out_dir: str | Path,
    context: dict[str, Any] | None = None,
) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "utilization": utilization_chart(results),
        "queue": queue_chart(results),
        "jct_cdf": jct_cdf_chart(results),
        "tenants": tenants_chart(results, summaries),
    }
    paths: dict[str, Path] = {}
    images: dict[str, str] = {}
    for name, fig in figures.items():
        path = out / f"{name}.png"
        images[name] = base64.b64encode(_png(fig, path)).decode("ascii")
        paths[name] = path
    summary = {"context": context or {}, "policies": {s["policy"]: s for s in summaries}}
    paths["summary"] = out / "summary.json"
    paths["summary"].write_text(json.dumps(summary, indent=2, default=str) + "\n")
    paths["html"] = out / "report.html"
    paths["html"].write_text(_html(summaries, images, context or {}))
    return paths


def _html(
    summaries: Sequence[dict[str, Any]], images: dict[str, str], context: dict[str, Any]
) -> str:
    ctx = "".join(
        f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>" for k, v in context.items()
    )
    policy_table = _table(
        [
            "policy",
            "completed",
            "mean JCT s",
            "p95 JCT s",
            "mean wait s",
            "p95 wait s",
            "p99 wait s",
            "utilization",
            "utilization while jobs arrive",
            "makespan h",
            "preemptions",
            "work lost chip-h",
            "guarantee violations",
            "fairness (Jain)",
            "billed USD",
        ],
        _policy_rows(summaries),
    )
    tenant_sections = "".join(
        f"<h3>{html.escape(s['policy'])}</h3>"
        + _table(
            [
                "tenant",
                "jobs",
                "mean wait s",
                "p95 wait s",
                "mean JCT s",
                "guaranteed chips",
                "mean chips held",
                "chip-hours",
                "billed USD",
                "entitlement served",
                "preemptions",
                "guarantee violations",
            ],
            _tenant_rows(s),
        )
        for s in summaries
    )
    charts = "".join(
        f'<figure><img alt="{name}" src="data:image/png;base64,{data}"></figure>'
        for name, data in images.items()
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>rainier simulation report</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.85em; }}
th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
th {{ background: #f3f3f3; }} td:first-child {{ text-align: left; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>rainier simulation report</h1>
<ul>{ctx}</ul>
<h2>Policies</h2>{policy_table}
<p>Guarantee violation: a tenant kept waiting, longer than one grace period plus the scheduling
tick, with pending work that fits in the unserved part of its guarantee.</p>
<h2>Charts</h2>{charts}
<h2>Tenants</h2>{tenant_sections}
</body></html>
"""
