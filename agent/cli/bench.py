"""`fabpass bench`: the benchmarks and their figures (docs/performance.md)."""

from __future__ import annotations

import click

from agent.cli import text
from agent.cli.options import RuntimeFailure, json_option, print_json


def _value(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def table(figures: dict) -> str:
    from agent.devtools.bench import FIGURES, target_text, verdict

    m = figures["machine"]
    lines = [f"fabpass bench{' --quick (sizes and counts trimmed)' if figures['quick'] else ''}",
             f"machine: {m['cpu']}, {m['cores']} cores, {m['arch']}, Linux {m['kernel']}; "
             f"Python {figures['python']}; calibration {m['calibration_start_ms']} ms at the start, "
             f"{m['calibration_end_ms']} ms at the end (lower is faster; compare runs by it)", ""]
    rows = []
    for key in FIGURES:
        value = figures.get(key)
        shown = _value(value)
        if key == "outbox_commit_p99_ms":
            shown += f" ({figures.get('outbox_commit_fs')})"
        if key == "fleet_agents_per_broker" and figures.get("fleet_cap_reached"):
            shown = f"≥ {shown} (cap)"
        rows.append((key, shown, target_text(key), verdict(key, value)))
    lines.append(text.table(["figure", "value", "target", ""], rows, align=["left", "right", "left", "left"]))
    lines += ["", "details: " + ", ".join(f"{k}={_value(v)}" for k, v in figures.items()
                                          if k not in FIGURES and not isinstance(v, dict)
                                          and k not in ("quick", "python"))]
    lines += ["seconds: " + ", ".join(f"{name} {s}" for name, s in figures.get("seconds", {}).items())]
    return "\n".join(lines)


@click.command()
@click.option("--quick", is_flag=True, help="Trim sizes and counts (about a minute, for CI); says so in the output.")
@json_option
def bench(quick: bool, as_json: bool) -> None:
    """Measure the benchmarks: tap to relay, card to relay on an emulated MFRC522,
    serial frame to relay, the command line's start, member list apply, outbox,
    idle agent, fleet.

    Takes minutes, most of them ramping the fleet up to 640 agents, which loads
    every core (--quick: about a minute). Storage goes to a RAM filesystem
    where a figure says so and to a real disk for outbox_commit; a Mosquitto
    on a free loopback port is started and stopped. See docs/performance.md.
    """
    from agent.devtools.bench import run

    progress = None if as_json else (lambda name: click.echo(f"measuring {name}…", err=True))
    try:
        figures = run(quick=quick, progress=progress)
    except RuntimeError as err:
        raise RuntimeFailure(str(err)) from None
    if as_json:
        print_json(figures)
    else:
        click.echo(table(figures))
