"""Small inline SVG line charts for report.html: the learning curves and the LR schedule.

Why SVG built here rather than the matplotlib PNGs: plots/curves.png and plots/one_cycle.png are drawn
only when a run ends (drawing them every epoch costs 0.1 to 0.3 s of matplotlib, a large share of a
GPU epoch), while the report is rewritten after every epoch. A few hundred points of SVG cost about a
millisecond, stay sharp at any zoom, and look the same mid-run and at the end.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from html import escape

# matplotlib's first three colours, as in plots/curves.png: train, validation, test
COLORS = {"train": "#1f77b4", "val": "#ff7f0e", "test": "#2ca02c"}
MAX_POINTS = 600  # a polyline longer than the chart is wide adds bytes, not detail


@dataclass
class Series:
    label: str
    points: list[tuple[float, float]]
    color: str = "#333"
    dashed: bool = False
    markers: bool = False  # a dot per point (epochs); not for per-iteration series


@dataclass
class Chart:
    title: str
    x_label: str
    y_label: str
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    series: list[Series] = field(default_factory=list)
    y_format: str = "{:g}"
    x_integer: bool = False
    hlines: list[tuple[float, str]] = field(default_factory=list)  # (y, label): dashed reference lines
    vlines: list[tuple[float, str]] = field(default_factory=list)
    notes: list[tuple[float, float, str]] = field(default_factory=list)  # (x, y, text) marked with a dot
    ref_label_at: float = 0.0  # where along the x axis (0 to 1) the hlines' labels start
    width: int = 480
    height: int = 290


def nice_ticks(lo: float, hi: float, count: int = 5, integer: bool = False) -> list[float]:
    """About `count` round tick values (1, 2, 2.5 or 5 times a power of ten) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(count, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    if integer:
        step = max(1, round(step))
    first = math.ceil(lo / step - 1e-9) * step
    ticks, k = [], 0
    while first + k * step <= hi + step * 1e-9:
        ticks.append(round(first + k * step, 12))
        k += 1
    return ticks


def thin(points: list[tuple[float, float]], limit: int = MAX_POINTS) -> list[tuple[float, float]]:
    """Every k-th point, keeping the last and the highest (the One Cycle peak must not fall between two)."""
    if len(points) <= limit:
        return points
    k = math.ceil(len(points) / limit)
    keep = set(range(0, len(points), k)) | {len(points) - 1, max(range(len(points)), key=lambda i: points[i][1])}
    return [points[i] for i in sorted(keep)]


def render(chart: Chart) -> str:
    """The chart as an <svg> element (text escaped); an empty series draws nothing."""
    left, right, top, bottom = 62, 14, 44, 46
    w, h = chart.width - left - right, chart.height - top - bottom
    (x0, x1), (y0, y1) = chart.x_range, chart.y_range
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * w

    def sy(y: float) -> float:
        return top + h - (min(max(y, y0), y1) - y0) / (y1 - y0) * h

    out = [f'<svg class="chart" viewBox="0 0 {chart.width} {chart.height}" width="{chart.width}" '
           f'height="{chart.height}" role="img" aria-label="{escape(chart.title)}">',
           f'<text x="{left + w / 2:.1f}" y="16" class="title">{escape(chart.title)}</text>']
    for t in nice_ticks(y0, y1):
        out.append(f'<line x1="{left}" x2="{left + w}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" class="grid"/>'
                   f'<text x="{left - 6}" y="{sy(t) + 4:.1f}" class="ytick">{escape(chart.y_format.format(t))}</text>')
    for t in nice_ticks(x0, x1, 6, chart.x_integer):
        out.append(f'<line x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{top + h}" y2="{top + h + 4}" class="axis"/>'
                   f'<text x="{sx(t):.1f}" y="{top + h + 17}" class="xtick">{t:g}</text>')
    out.append(f'<rect x="{left}" y="{top}" width="{w}" height="{h}" class="frame"/>')
    out.append(f'<text x="{left + w / 2:.1f}" y="{chart.height - 6}" class="xlabel">{escape(chart.x_label)}</text>')
    out.append(f'<text transform="translate(14 {top + h / 2:.1f}) rotate(-90)" class="ylabel">'
               f'{escape(chart.y_label)}</text>')
    for y, label in chart.hlines:
        out.append(f'<line x1="{left}" x2="{left + w}" y1="{sy(y):.1f}" y2="{sy(y):.1f}" class="ref"/>'
                   f'<text x="{left + 4 + chart.ref_label_at * w:.1f}" y="{sy(y) - 4:.1f}" class="reflabel">'
                   f'{escape(label)}</text>')
    for x, label in chart.vlines:
        out.append(f'<line x1="{sx(x):.1f}" x2="{sx(x):.1f}" y1="{top}" y2="{top + h}" class="ref"/>'
                   f'<text x="{sx(x) - 4:.1f}" y="{top + 12}" class="reflabel end">{escape(label)}</text>')
    for s in chart.series:
        pts = thin(s.points)
        if not pts:
            continue
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
        dash = ' stroke-dasharray="5 4"' if s.dashed else ""
        out.append(f'<polyline points="{path}" fill="none" stroke="{s.color}" stroke-width="2"{dash}/>')
        if s.markers or len(pts) == 1:
            out.extend(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{s.color}"/>' for x, y in pts)
    for x, y, text in chart.notes:
        anchor = "end" if sx(x) > left + w * 0.6 else "start"
        dx = -4 if anchor == "end" else 4
        out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="4" class="note"/>'  # the label above the dot
                   f'<text x="{sx(x) + dx:.1f}" y="{sy(y) - 8:.1f}" class="notelabel {anchor}">{escape(text)}</text>')
    # the legend in a row between the title and the plot: it never hides a curve
    x, drawn = left + w, [s for s in chart.series if s.points]
    for s in reversed(drawn if len(drawn) > 1 else []):  # one series needs no legend: the title names it
        x -= 34 + 6.5 * len(s.label)
        dash = ' stroke-dasharray="5 4"' if s.dashed else ""
        out.append(f'<line x1="{x:.1f}" x2="{x + 22:.1f}" y1="{top - 10}" y2="{top - 10}" stroke="{s.color}" '
                   f'stroke-width="2"{dash}/><text x="{x + 27:.1f}" y="{top - 6}" class="legend">{escape(s.label)}</text>')
    out.append("</svg>")
    return "".join(out)
