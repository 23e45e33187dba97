"""An inline SVG bar chart of hours per machine per week (pure; no plotting library needed)."""

from __future__ import annotations

import math
from html import escape

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 760, 260, 44, 40, 12


STEPS_H = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
MAX_TICKS = 6


def hour_ticks(peak: float) -> list[int]:
    """Whole hours from 0 to the first tick at or above `peak`, at most MAX_TICKS of them
    (the smallest of 1, 2, 5, 10… hours apart that fits)."""
    step = next((s for s in STEPS_H if math.ceil(peak / s) < MAX_TICKS), STEPS_H[-1])
    return [i * step for i in range(max(1, math.ceil(peak / step)) + 1)]


def weekly_chart(weeks: dict[str, dict[str, float]]) -> str:
    """Stacked bars, one per week (keyed by its Monday), one colour per machine, on an
    axis of whole hours."""
    machines = sorted({m for hours in weeks.values() for m in hours})
    colour = {m: PALETTE[i % len(PALETTE)] for i, m in enumerate(machines)}
    ticks = hour_ticks(max((sum(h.values()) for h in weeks.values()), default=0.0))
    peak = float(ticks[-1])
    plot_h = HEIGHT - BOTTOM - TOP
    slot = (WIDTH - LEFT) / max(1, len(weeks))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" id="weekly-chart" width="{WIDTH}" '
             f'height="{HEIGHT + 20 * ((len(machines) + 4) // 5)}" role="img" '
             f'aria-label="Hours of use per machine per week">']
    for tick in ticks:
        y = TOP + plot_h - tick / peak * plot_h
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{WIDTH}" y2="{y:.1f}" stroke="#ddd"/>'
                     f'<text class="tick" x="{LEFT - 4}" y="{y + 4:.1f}" text-anchor="end" '
                     f'font-size="11">{tick} h</text>')
    for i, (monday, hours) in enumerate(weeks.items()):
        x, y = LEFT + i * slot + slot * 0.15, TOP + plot_h
        for machine in machines:
            h = hours.get(machine, 0.0) / peak * plot_h
            if h:
                y -= h
                parts.append(f'<rect class="bar" data-machine="{escape(machine)}" data-week="{monday}" '
                             f'x="{x:.1f}" y="{y:.1f}" width="{slot * 0.7:.1f}" height="{h:.1f}" '
                             f'fill="{colour[machine]}"><title>{escape(machine)}, week of {monday}: '
                             f'{hours[machine]:.1f} h</title></rect>')
        parts.append(f'<text x="{x + slot * 0.35:.1f}" y="{TOP + plot_h + 16}" text-anchor="middle" '
                     f'font-size="11">{monday[5:]}</text>')
    for i, machine in enumerate(machines):
        x, y = LEFT + (i % 5) * 140, HEIGHT + 20 * (i // 5) - 4
        parts.append(f'<rect x="{x}" y="{y - 10}" width="12" height="12" fill="{colour[machine]}"/>'
                     f'<text x="{x + 16}" y="{y}" font-size="12">{escape(machine)}</text>')
    parts.append("</svg>")
    return "".join(parts)
