"""pneumo.serving.trend: the reviewer's trend chart, drawn on the server (no servers needed)."""

from __future__ import annotations

import xml.etree.ElementTree as ElementTree

from pneumo.serving.trend import trend_svg

SVG = "{http://www.w3.org/2000/svg}"


def _rows() -> list[dict]:
    return [
        {"date": "2026-11-01 06:00", "drift_share": 0.1, "positive_rate": 0.4, "live_sensitivity": None},
        {"date": "2026-11-08 06:00", "drift_share": 0.2, "positive_rate": 0.5, "live_sensitivity": 0.9,
         "live_specificity": 0.8},
        {"date": "2026-11-15 06:00", "drift_share": 0.9, "positive_rate": 0.7, "live_sensitivity": 0.6,
         "live_specificity": 0.7},
    ]  # fmt: skip


def test_the_chart_is_valid_svg_with_a_line_per_series_and_the_threshold():
    root = ElementTree.fromstring(trend_svg(_rows(), 0.3))
    lines = root.findall(f"{SVG}polyline")
    assert len(lines) == 4  # drift share, positive rate, live sensitivity (2 points), live specificity
    assert [len(line.get("points").split()) for line in lines] == [3, 3, 2, 2]
    dashed = [line for line in root.findall(f"{SVG}line") if line.get("stroke-dasharray")]
    assert len(dashed) == 2  # the threshold in the plot and in the legend
    texts = "".join(text.text or "" for text in root.iter(f"{SVG}text"))
    assert "threshold 0.3" in texts and "11-15" in texts and "live specificity" in texts


def test_values_map_to_height_and_a_missing_week_leaves_a_gap():
    rows = _rows()
    rows[1]["live_sensitivity"] = None
    root = ElementTree.fromstring(trend_svg(rows, None))
    series = root.findall(f"{SVG}polyline")
    heights = [float(point.split(",")[1]) for point in series[0].get("points").split()]
    assert heights[0] > heights[1] > heights[2]  # drift share rising: higher on the page
    assert sum(len(line.get("points").split()) for line in series[2:3]) == 1  # sensitivity: one point left
