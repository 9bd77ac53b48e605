"""The burn-down chart: commitment vs cumulative spend, with the projection to term end.

The one module that touches matplotlib, and only through the Agg canvas and a Figure object
(never pyplot), so rendering is thread-safe and needs no display.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from datetime import datetime

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.dates import AutoDateLocator, ConciseDateFormatter, date2num
from matplotlib.figure import Figure

from rainier.metering.aggregate import contract_status, cumulative_spend
from rainier.metering.ledger import UsageLine
from rainier.metering.periods import require_utc
from rainier.metering.terms import ContractTerms


def _x(at: datetime) -> float:
    return float(date2num(at))


def burn_down_png(
    terms: ContractTerms,
    lines: Iterable[UsageLine],
    at: datetime,
    width_in: float = 8.0,
    height_in: float = 4.5,
    dpi: int = 100,
) -> bytes:
    at = require_utc(at)
    lines = list(lines)
    curve = cumulative_spend(terms, lines, at)
    status = contract_status(terms, lines, at)
    now = min(max(at, terms.start), terms.end)

    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    committed = float(terms.committed_usd)
    ax.plot(
        [_x(terms.start), _x(terms.end)],
        [committed, committed],
        "--",
        color="grey",
        label=f"committed {terms.committed_usd:,.2f} USD",
    )
    xs = [_x(terms.start), *(_x(when) for when, _ in curve)]
    ys = [0.0, *(float(total) for _, total in curve)]
    ax.step(xs, ys, where="post", color="tab:blue", label=f"spent {status.spent_usd:,.2f} USD")
    ax.plot(
        [_x(now), _x(terms.end)],
        [float(status.spent_usd), float(status.projected_spend_at_end_usd)],
        ":",
        color="tab:orange",
        label=f"projection {status.projected_spend_at_end_usd:,.2f} USD at term end",
    )
    if status.projected_reach_at is not None and status.projected_reach_at <= terms.end:
        ax.axvline(
            _x(status.projected_reach_at),
            color="tab:red",
            linewidth=0.8,
            label=f"commitment projected to be reached {status.projected_reach_at:%Y-%m-%d}",
        )
    ax.set_title(f"{terms.tenant} / {terms.contract}: commitment burn-down")
    ax.set_ylabel("USD")
    ax.set_xlim(_x(terms.start), _x(terms.end))
    locator = AutoDateLocator()
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))
    ax.set_ylim(bottom=0)
    ax.legend(loc="upper left", fontsize="small")
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
