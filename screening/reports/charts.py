"""Server-rendered inline SVG charts: no JavaScript, nothing fetched. Each chart is an image
with a title and description; the page puts the same numbers in a table next to it."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 720, 240
LEFT, RIGHT, TOP, BOTTOM = 52, 12, 12, 44
MAX_X_LABELS = 12
DASH = "\u2013"  # shown for a missing value


@dataclass(frozen=True)
class Series:
    label: str
    colour: str
    values: Sequence[float | None]


def nice_max(value: float) -> float:
    """A round upper bound for an axis (1, 2, 2.5, 5 x 10^n)."""
    if value <= 0:
        return 1.0
    exp = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if value <= step * exp:
            return step * exp
    return 10 * exp


def _fmt(value: float, unit: str) -> str:
    if unit == "%":
        return f"{value * 100:.0f}%"
    if unit == "s":
        return f"{value / 1000:g} s"
    return f"{value:,.0f}" if value >= 1 or value == 0 else f"{value:g}"


def _open(title: str, desc: str, chart_id: str) -> list[str]:
    return [
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{chart_id}-t {chart_id}-d" preserveAspectRatio="xMidYMid meet">',
        f'<title id="{chart_id}-t">{escape(title)}</title>',
        f'<desc id="{chart_id}-d">{escape(desc)}</desc>',
    ]


def _axes(parts: list[str], top: float, unit: str, labels: Sequence[str]) -> None:
    plot_h = HEIGHT - TOP - BOTTOM
    for i in range(5):
        value = top * i / 4
        y = HEIGHT - BOTTOM - plot_h * i / 4
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="tick" x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{escape(_fmt(value, unit))}</text>"
        )
    n = len(labels)
    if not n:
        return
    step = max(1, math.ceil(n / MAX_X_LABELS))
    slot = (WIDTH - LEFT - RIGHT) / n
    for i in range(0, n, step):
        x = LEFT + slot * (i + 0.5)
        parts.append(
            f'<text class="tick" x="{x:.1f}" y="{HEIGHT - BOTTOM + 16}" text-anchor="middle">'
            f"{escape(labels[i])}</text>"
        )


def bar_chart(
    chart_id: str,
    title: str,
    desc: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    unit: str = "",
    max_value: float | None = None,
) -> SafeString:
    """Vertical bars, stacked when there is more than one series."""
    n = len(labels)
    totals = [sum(s.values[i] or 0 for s in series) for i in range(n)]
    top = max_value if max_value is not None else nice_max(max(totals, default=0))
    plot_h = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / max(n, 1)
    bar_w = max(slot * 0.78, 0.6)
    parts = _open(title, desc, chart_id)
    _axes(parts, top, unit, labels)
    for i, label in enumerate(labels):
        x = LEFT + slot * i + (slot - bar_w) / 2
        base = HEIGHT - BOTTOM
        for s in series:
            value = s.values[i] or 0
            if value <= 0:
                continue
            h = plot_h * min(value, top) / top
            base -= h
            parts.append(
                f'<rect x="{x:.2f}" y="{base:.2f}" width="{bar_w:.2f}" height="{h:.2f}" '
                f'fill="{s.colour}"><title>{escape(label)}: {escape(s.label)} '
                f"{escape(_fmt(value, unit))}</title></rect>"
            )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text part above is escaped


def line_chart(
    chart_id: str,
    title: str,
    desc: str,
    labels: Sequence[str],
    series: Sequence[Series],
    *,
    unit: str = "",
    reference: tuple[str, float] | None = None,
) -> SafeString:
    """Lines (with a dot per point; gaps where a value is missing) and an optional dashed
    reference line such as the PBX window."""
    n = len(labels)
    values = [v for s in series for v in s.values if v is not None]
    top = nice_max(max([*values, reference[1] if reference else 0], default=0))
    plot_h = HEIGHT - TOP - BOTTOM
    slot = (WIDTH - LEFT - RIGHT) / max(n, 1)
    parts = _open(title, desc, chart_id)
    _axes(parts, top, unit, labels)

    def y_of(value: float) -> float:
        return HEIGHT - BOTTOM - plot_h * min(value, top) / top

    if reference:
        y = y_of(reference[1])
        label_y = y + 15 if y < TOP + 16 else y - 5  # under the line when it is at the top
        parts.append(
            f'<line class="ref" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{y:.1f}" y2="{y:.1f}"/>'
            f'<text class="ref-label" x="{WIDTH - RIGHT - 4}" y="{label_y:.1f}" '
            f'text-anchor="end">{escape(reference[0])}</text>'
        )
    for s in series:
        segment: list[str] = []
        for i, value in enumerate([*s.values, None]):
            if value is None:
                if len(segment) > 1:
                    parts.append(
                        f'<polyline fill="none" stroke="{s.colour}" stroke-width="2" '
                        f'points="{" ".join(segment)}"/>'
                    )
                segment = []
                continue
            x, y = LEFT + slot * (i + 0.5), y_of(value)
            segment.append(f"{x:.1f},{y:.1f}")
            if n <= 62:
                parts.append(
                    f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{s.colour}">'
                    f"<title>{escape(labels[i])}: {escape(s.label)} "
                    f"{escape(_fmt(value, unit))}</title></circle>"
                )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text part above is escaped


def hbar_chart(
    chart_id: str, title: str, desc: str, items: Sequence[tuple[str, float | None]], colour: str
) -> SafeString:
    """Horizontal bars for rates (0..1) by name: readable on a narrow screen."""
    row_h, label_w = 26, 180
    height = TOP + row_h * max(len(items), 1) + 8
    values = [v for _, v in items if v is not None]
    top = nice_max(max(values, default=0) * 100) / 100
    width = WIDTH - label_w - RIGHT - 56
    parts = [
        f'<svg class="chart hbar" viewBox="0 0 {WIDTH} {height}" role="img" '
        f'aria-labelledby="{chart_id}-t {chart_id}-d">',
        f'<title id="{chart_id}-t">{escape(title)}</title>',
        f'<desc id="{chart_id}-d">{escape(desc)}</desc>',
    ]
    for i, (label, value) in enumerate(items):
        y = TOP + row_h * i
        parts.append(
            f'<text class="tick" x="{label_w - 8}" y="{y + 17}" text-anchor="end">'
            f"{escape(label[:28])}</text>"
        )
        w = 0 if value is None else width * min(value, top) / top
        parts.append(
            f'<rect x="{label_w}" y="{y + 4}" width="{w:.1f}" height="{row_h - 8}" '
            f'fill="{colour}"/>'
            f'<text class="tick" x="{label_w + w + 6:.1f}" y="{y + 17}">'
            f"{DASH if value is None else escape(_fmt(value, '%'))}</text>"
        )
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text part above is escaped
