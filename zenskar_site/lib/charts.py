"""Bar charts for the dashboard: laid out here as plain numbers, drawn as inline SVG by
templates/zenskar_site/_bar_chart.html (no JavaScript library, nothing from a CDN)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

CHART_WIDTH, CHART_HEIGHT = 1000, 230
PLOT_LEFT, PLOT_RIGHT, PLOT_TOP, PLOT_BOTTOM = 64, 950, 12, 200


@dataclass(frozen=True)
class ChartBar:
    slot_x: float
    slot_width: float
    x: float
    y: float
    width: float
    height: float
    value: str  # the amount as text ("" when a period has none), also the bar's data attribute
    title: str

    @property
    def count(self) -> int:
        return int(self.value) if self.value else 0


@dataclass(frozen=True)
class ChartTick:
    position: float
    label: str


@dataclass(frozen=True)
class ChartPoint:
    amount: Decimal | None
    text: str
    title: str
    label: str | None  # the x-axis label under this bar, if any


@dataclass(frozen=True)
class BarChart:
    bars: list[ChartBar]
    x_ticks: list[ChartTick]
    y_ticks: list[ChartTick]
    zero: float
    total: int | str
    bucket: str = ""
    width: int = CHART_WIDTH
    height: int = CHART_HEIGHT
    left: int = PLOT_LEFT
    right: int = PLOT_RIGHT
    top: int = PLOT_TOP
    bottom: int = PLOT_BOTTOM

    @property
    def plot_height(self) -> int:
        return self.bottom - self.top

    @property
    def y_label_x(self) -> int:
        return self.left - 8

    @property
    def tick_end(self) -> int:
        return self.bottom + 4

    @property
    def x_label_y(self) -> int:
        return self.bottom + 18


def nice_step(span: float, *, ticks: int = 4, integers: bool = False) -> Decimal:
    """The smallest 1, 2 or 5 times a power of ten that covers `span` in `ticks` steps."""
    raw = span / ticks if span > 0 else 1.0
    if integers:
        raw = max(raw, 1.0)
    magnitude = Decimal(10) ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (Decimal(1), Decimal(2), Decimal(5), Decimal(10)) if m * magnitude >= raw)


def tick_label(value: Decimal, step: Decimal) -> str:
    places = max(0, -step.normalize().as_tuple().exponent)  # type: ignore[operator]
    return f"{value:,.{places}f}"


def bar_chart(*, points: list[ChartPoint], total: int | str, bucket: str = "", integers: bool = False) -> BarChart:
    """One bar per point, scaled to a 'nice' axis that includes zero (amounts may be negative)."""
    known = [p.amount for p in points if p.amount is not None]
    low, high = min([Decimal(0), *known]), max([Decimal(0), *known])
    step = nice_step(float(high - low), integers=integers)
    top = max(step, step * math.ceil(high / step))
    bottom = min(Decimal(0), step * math.floor(low / step))
    plot_height = PLOT_BOTTOM - PLOT_TOP

    def y_of(value: Decimal) -> float:
        return PLOT_BOTTOM - plot_height * float((value - bottom) / (top - bottom))

    zero = y_of(Decimal(0))
    slot = (PLOT_RIGHT - PLOT_LEFT) / max(len(points), 1)
    bars, x_ticks = [], []
    for index, point in enumerate(points):
        slot_x = PLOT_LEFT + slot * index
        y = y_of(point.amount if point.amount is not None else Decimal(0))
        bars.append(
            ChartBar(
                slot_x=round(slot_x, 2),
                slot_width=round(slot, 2),
                x=round(slot_x + slot * 0.125, 2),
                y=round(min(y, zero), 2),
                width=round(slot * 0.75, 2),
                height=round(abs(zero - y), 2),
                value=point.text,
                title=point.title,
            )
        )
        if point.label is not None:
            x_ticks.append(ChartTick(position=round(slot_x + slot / 2, 2), label=point.label))
    y_ticks = []
    tick = bottom
    while tick <= top:
        y_ticks.append(ChartTick(position=round(y_of(tick), 2), label=tick_label(tick, step)))
        tick += step
    return BarChart(bars=bars, x_ticks=x_ticks, y_ticks=y_ticks, zero=round(zero, 2), total=total, bucket=bucket)
