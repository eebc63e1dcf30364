"""The weekly reviewer's trend chart, drawn on the server as SVG: no script, no image library."""

from __future__ import annotations

from html import escape
from typing import Any

SERIES = (  # key in a report row, legend, colour
    ("drift_share", "drift share", "#b3261e"),
    ("positive_rate", "positive rate", "#8250df"),
    ("live_sensitivity", "live sensitivity", "#1f6feb"),
    ("live_specificity", "live specificity", "#1a7f37"),
)
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 760, 260, 44, 150, 16, 40


def trend_svg(rows: list[dict[str, Any]], threshold: float | None) -> str:
    """A line per series over the reports in ``rows`` (oldest first), values 0..1, with the drift
    threshold as a dashed line. Missing values (no labels that week) leave a gap."""
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + (plot_w * i / (len(rows) - 1) if len(rows) > 1 else plot_w / 2)

    def y(value: float) -> float:
        return TOP + plot_h * (1 - min(max(value, 0.0), 1.0))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-label="Trend of drift share, positive rate and live performance" '
             f'font-family="system-ui, sans-serif" font-size="11">']  # fmt: skip
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
                     f'stroke="#d8dee4"/><text x="{LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" '
                     f'fill="#5b6875">{tick:.2f}</text>')  # fmt: skip
    if threshold is not None:
        level = f"{y(threshold):.1f}"
        parts.append(f'<line x1="{LEFT}" x2="{LEFT + plot_w}" y1="{level}" y2="{level}" '
                     'stroke="#b3261e" stroke-dasharray="5 4"/>')  # fmt: skip
    for i, row in enumerate(rows):
        if len(rows) <= 12 or i % max(1, len(rows) // 12) == 0:
            parts.append(f'<text x="{x(i):.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle" '
                         f'fill="#5b6875">{escape(row["date"][5:10])}</text>')  # fmt: skip
    legend_y = TOP + 4
    for key, label, colour in SERIES:
        segments, current = [], []
        for i, row in enumerate(rows):
            if row.get(key) is None:
                segments, current = [*segments, current] if current else segments, []
                continue
            current.append(f"{x(i):.1f},{y(row[key]):.1f}")
        segments += [current] if current else []
        for points in segments:
            parts.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{" ".join(points)}"/>'
            )
            parts += [
                f'<circle cx="{p.split(",")[0]}" cy="{p.split(",")[1]}" r="3" fill="{colour}"/>'
                for p in points
            ]
        parts.append(f'<rect x="{WIDTH - RIGHT + 12}" y="{legend_y}" width="12" height="3" fill="{colour}"/>'
                     f'<text x="{WIDTH - RIGHT + 30}" y="{legend_y + 5}">{escape(label)}</text>')  # fmt: skip
        legend_y += 18
    if threshold is not None:
        left = WIDTH - RIGHT
        parts.append(f'<line x1="{left + 12}" x2="{left + 24}" y1="{legend_y + 2}" y2="{legend_y + 2}" '
                     'stroke="#b3261e" stroke-dasharray="3 2"/>'
                     f'<text x="{left + 30}" y="{legend_y + 5}">threshold {threshold:g}</text>')  # fmt: skip
    parts.append("</svg>")
    return "".join(parts)
