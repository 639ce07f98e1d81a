"""Bar charts as inline SVG, drawn on the server: readable without JavaScript, nothing loaded
from elsewhere.

Colours are SVG presentation attributes (``fill="…"``), not ``style`` attributes, which the
console's Content-Security-Policy would block. Each bar segment has a ``<title>``, which
browsers show as a tooltip.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal

from plugins.console.markup import Html, attrs, esc, fill, join

#: Series colours, in order (distinguishable, and dark enough for white text around them).
PALETTE = ("#4f46e5", "#0891b2", "#ea580c", "#16a34a", "#db2777", "#ca8a04", "#7c3aed",
           "#475569", "#0d9488", "#b91c1c")
_WIDTH, _HEIGHT = 760, 240
_LEFT, _RIGHT, _TOP, _BOTTOM = 84, 8, 12, 28
_MAX_X_LABELS = 8


def colours(names: Sequence[str]) -> dict[str, str]:
    """A colour per series name, the same in every chart of a page."""
    return {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(names)}


def nice_ceiling(value: float) -> float:
    """The smallest of 1, 2 or 5 times a power of ten that is at least ``value``."""
    if value <= 0:
        return 0.0
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return float(step * power)
    return float(10 * power)


def number(value: float | Decimal) -> str:
    """``1234567`` as ``1,234,567``; fractions with up to nine decimals (costs are kept to
    the billionth)."""
    if value == int(value):
        return f"{int(value):,}"
    return f"{value:,.9f}".rstrip("0").rstrip(".")


def stacked_bars(title: str, days: Sequence[str], series: Mapping[str, Mapping[str, float]],
                 palette: Mapping[str, str], *, unit: str,
                 fmt: Callable[[float], str] = number) -> Html:
    """A figure of one bar per day, stacked by series (a model), with a legend.

    ``series`` maps a series name to its value per day (``YYYY-MM-DD``); ``unit`` follows
    the values in tooltips and the axis title.
    """
    plot_w = _WIDTH - _LEFT - _RIGHT
    plot_h = _HEIGHT - _TOP - _BOTTOM
    totals = [sum(values.get(day, 0.0) for values in series.values()) for day in days]
    peak = nice_ceiling(max(totals, default=0.0)) or 1.0
    slot = plot_w / max(len(days), 1)
    bar = max(slot * 0.72, 1.0)
    parts: list[Html] = []
    for fraction in (0.0, 0.5, 1.0):
        y = _TOP + plot_h * (1 - fraction)
        line = attrs(x1=_LEFT, x2=_WIDTH - _RIGHT, y1=f"{y:.1f}", y2=f"{y:.1f}", class_="grid")
        tick = attrs(x=_LEFT - 6, y=f"{y + 4:.1f}", text_anchor="end")
        parts.append(Html(f"<line{line}/><text{tick}>{esc(fmt(peak * fraction))}</text>"))
    step = max(1, math.ceil(len(days) / _MAX_X_LABELS))
    for index, day in enumerate(days):
        x = _LEFT + index * slot + (slot - bar) / 2
        base = float(_TOP + plot_h)
        for name, values in series.items():
            value = values.get(day, 0.0)
            if value <= 0:
                continue
            height = plot_h * value / peak
            base -= height
            box = attrs(x=f"{x:.1f}", y=f"{base:.1f}", width=f"{bar:.1f}",
                        height=f"{height:.1f}", fill=palette.get(name, PALETTE[-1]))
            tip = esc(f"{day} · {name}: {fmt(value)} {unit}")
            parts.append(Html(f"<rect{box}><title>{tip}</title></rect>"))
        if index % step == 0:
            parts.append(Html(
                f'<text{attrs(x=f"{x + bar / 2:.1f}", y=_HEIGHT - 8, text_anchor="middle")}>'
                f"{esc(day[5:])}</text>"))
    label = f"{title}: {unit} per day, from {days[0]} to {days[-1]}" if days else title
    svg = Html(f'<svg{attrs(viewBox=f"0 0 {_WIDTH} {_HEIGHT}", role="img", aria_label=label)}'
               f' xmlns="http://www.w3.org/2000/svg">{join(parts)}</svg>')
    legend = [fill('<li><svg width="12" height="12" aria-hidden="true"><rect width="12" '
                   'height="12" fill="$colour"/></svg> $name</li>',
                   colour=palette.get(name, PALETTE[-1]), name=name) for name in series]
    return fill('<figure class="chart"><figcaption>$title <small>($unit)</small></figcaption>'
                '$svg<ul class="legend">$legend</ul></figure>', title=title, unit=unit,
                svg=svg, legend=join(legend))
