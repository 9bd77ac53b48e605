"""Charts as inline SVG geometry, computed here and drawn by the templates.

No script draws them, so a chart is there on first paint, prints, and shows the same numbers
the API returned; the templates escape every label.
"""

from __future__ import annotations

from dataclasses import dataclass, field

WIDTH, HEIGHT = 560.0, 160.0
PAD_LEFT, PAD_RIGHT, PAD_TOP, PAD_BOTTOM = 56.0, 12.0, 10.0, 22.0


@dataclass(frozen=True)
class Tick:
    at: float
    label: str
    anchor: str = "end"


@dataclass(frozen=True)
class Line:
    points: str
    css: str
    label: str
    end_x: float = 0.0
    end_y: float = 0.0


@dataclass(frozen=True)
class Chart:
    title: str
    lines: list[Line]
    y_ticks: list[Tick]
    x_ticks: list[Tick]
    last: str
    width: float = WIDTH
    height: float = HEIGHT
    markers: list[Tick] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.lines


def _label(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.3g}"


def line_chart(
    title: str,
    series: dict[str, list[tuple[float, float]]],
    *,
    x_label: str = "",
    y_from_zero: bool = False,
) -> Chart:
    """Each named series (x, y) drawn against shared axes; empty when there is nothing to draw."""
    points = [p for values in series.values() for p in values]
    if not points:
        return Chart(title, [], [], [], "no data yet")
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x_lo, x_hi = min(xs), max(xs)
    y_lo, y_hi = (0.0 if y_from_zero else min(ys)), max(ys)
    if y_hi == y_lo:
        y_hi = y_lo + (abs(y_lo) or 1.0)
    x_span = (x_hi - x_lo) or 1.0
    inner_w = WIDTH - PAD_LEFT - PAD_RIGHT
    inner_h = HEIGHT - PAD_TOP - PAD_BOTTOM

    def px(x: float) -> float:
        return PAD_LEFT + (x - x_lo) / x_span * inner_w

    def py(y: float) -> float:
        return PAD_TOP + (1 - (y - y_lo) / (y_hi - y_lo)) * inner_h

    lines = []
    for index, (name, values) in enumerate(series.items()):
        if values:
            coords = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in values)
            end_x, end_y = values[-1]
            lines.append(Line(coords, f"series-{index}", name, px(end_x), py(end_y)))
    y_ticks = [
        Tick(py(y_lo + (y_hi - y_lo) * i / 3), _label(y_lo + (y_hi - y_lo) * i / 3))
        for i in range(4)
    ]
    mid = (x_lo + x_hi) / 2
    if x_hi - x_lo >= 4:
        mid = round(mid)
    whole = x_hi - x_lo >= 4  # days or steps: no fractions on the axis
    x_ticks = [
        Tick(px(x), f"{x_label}{round(x) if whole else _label(x)}", anchor)
        for x, anchor in ((x_lo, "start"), (mid, "middle"), (x_hi, "end"))
    ]
    last_name, last_values = next(((n, v) for n, v in reversed(series.items()) if v), ("", []))
    last = f"{last_name} {_label(last_values[-1][1])}" if last_values else ""
    return Chart(title, lines, y_ticks, x_ticks, last)


def metric_charts(rows: list[dict[str, float]]) -> list[Chart]:
    """Loss (and validation loss), tokens per second and MFU of a training job, by step."""

    def series(key: str) -> list[tuple[float, float]]:
        return [
            (float(r["step"]), float(r[key])) for r in rows if isinstance(r.get(key), int | float)
        ]

    losses = {"loss": series("loss"), "val_loss": series("val_loss")}
    return [
        line_chart("loss", {k: v for k, v in losses.items() if v}, x_label="step "),
        line_chart(
            "tokens/s", {"tokens/s": series("tokens_per_s")}, x_label="step ", y_from_zero=True
        ),
        line_chart("MFU", {"mfu": series("mfu")}, x_label="step ", y_from_zero=True),
    ]


def burn_down(
    committed: float, spent_by_day: list[tuple[float, float]], projected: list[tuple[float, float]]
) -> Chart:
    """Cumulative spend by day of the term against the commitment, and where the burn leads."""
    series = {
        "committed": [
            (spent_by_day[0][0] if spent_by_day else 0.0, committed),
            (projected[-1][0] if projected else 1.0, committed),
        ],
        "spent": spent_by_day,
        "projected": projected,
    }
    return line_chart("committed vs spent (USD)", series, x_label="day ", y_from_zero=True)
