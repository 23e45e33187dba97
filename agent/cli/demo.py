"""`fabpass demo`: the newcomer's tour."""

from __future__ import annotations

import sys

import click


@click.command()
@click.option("--broker", "broker_url", metavar="URL", help="Also publish the events to this broker.")
@click.option("--prefix", "topic_prefix", default="fabpass-demo", show_default=True,
              help="The MQTT topic prefix the demo publishes under: not the lab's own, so that its "
                   "sessions never reach the real logbook.")
def demo(broker_url: str | None, topic_prefix: str) -> None:
    """A simulated laser cutter, a sample member list and scripted taps, as a timeline."""
    import logging

    from agent.devtools.demo import run_demo

    logging.basicConfig(level=logging.WARNING)
    sys.exit(run_demo(click.echo, broker_url, topic_prefix))
