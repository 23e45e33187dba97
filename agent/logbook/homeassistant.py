"""Home Assistant MQTT discovery for every machine the logbook has seen
(`fabpass logbook run --homeassistant [PREFIX]`, default prefix `homeassistant`).

One device per machine (identifier `fabpass_ID`), with a binary sensor "In
use", a sensor "Member", a binary sensor "Locked", and an event entity "Usage"
for its events. Each entity reads the machine's own topics, so Home Assistant
needs only read access to them (docs/homeassistant.md); all are unavailable
while the machine's retained status says `offline` (its will).

The configs are retained, under `PREFIX/COMPONENT/fabpass/ID_KEY/config`,
published when the collector connects and when a machine first appears; a
retired machine's configs are cleared (an empty retained message removes an
entity in Home Assistant).
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

from agent.core.model import EventType
from agent.link.topics import Topics
from agent.logbook.retired import known_machines, retired_machines
from agent.logbook.store import open_db

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "homeassistant"
NODE = "fabpass"
AVAILABLE = "{{ 'offline' if value_json.state == 'offline' else 'online' }}"
EVENT = ("{{ {'event_type': value_json.type, 'member_id': value_json.get('member_id'), "
         "'reason': value_json.get('reason')} | to_json }}")
# (component, key, entity settings) for each entity of a machine's device.
ENTITIES: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("binary_sensor", "in_use", {"name": "In use", "device_class": "running",
                                 "value_template": "{{ 'ON' if value_json.state == 'in_use' else 'OFF' }}"}),
    ("sensor", "member", {"name": "Member", "icon": "mdi:badge-account",
                          "value_template": "{{ value_json.get('member_name') or value_json.get('member_id') or '' }}"}),
    ("binary_sensor", "locked", {"name": "Locked", "icon": "mdi:lock",
                                 "value_template": "{{ 'ON' if value_json.locked else 'OFF' }}"}),
    ("event", "usage", {"name": "Usage", "event_types": [str(t) for t in EventType], "value_template": EVENT}),
)


def config_topic(prefix: str, component: str, machine: str, key: str) -> str:
    return f"{prefix}/{component}/{NODE}/{machine}_{key}/config"


def discovery(machine: str, topics: Topics, prefix: str = DEFAULT_PREFIX,
              status: dict[str, Any] | None = None) -> list[tuple[str, dict[str, Any]]]:
    """(config topic, config) for each entity of `machine`'s device."""
    status = status or {}
    device = {"identifiers": [f"fabpass_{machine}"], "name": status.get("name") or machine,
              "manufacturer": "fabpass", "model": "badge access control"}
    if status.get("agent_version"):
        device["sw_version"] = str(status["agent_version"])
    configs = []
    for component, key, settings in ENTITIES:
        configs.append((config_topic(prefix, component, machine, key), {
            "unique_id": f"fabpass_{machine}_{key}",
            "object_id": f"fabpass_{machine}_{key}".replace("-", "_"),
            "state_topic": topics.events(machine) if component == "event" else topics.status(machine),
            "availability": [{"topic": topics.status(machine), "value_template": AVAILABLE}],
            "device": device, **settings}))
    return configs


def removal(machine: str, prefix: str = DEFAULT_PREFIX) -> list[str]:
    """The config topics to clear (an empty retained message) when `machine` is retired."""
    return [config_topic(prefix, component, machine, key) for component, key, _ in ENTITIES]


class HomeAssistant:
    """A collector listener that keeps the discovery configs published."""

    def __init__(self, db_path: Path, topics: Topics, prefix: str = DEFAULT_PREFIX) -> None:
        self.topics, self.prefix = topics, prefix
        self._db = open_db(db_path)
        self._client: Any = None
        self._announced: dict[str, Any] = {}  # machine -> the device name it was announced with
        self._lock = threading.Lock()

    def close(self) -> None:
        self._db.close()

    def connected(self, client: Any) -> None:
        """Announce every machine seen so far (the configs are retained: this only refreshes them)."""
        with self._lock:
            self._client = client
            self._announced.clear()
            retired = retired_machines(self._db)
            statuses = {row["machine"]: json.loads(row["payload"])
                        for row in self._db.query("SELECT machine, payload FROM status")}
            for machine in known_machines(self._db):
                if machine not in retired:
                    self._announce(machine, statuses.get(machine))

    def status(self, machine: str, status: dict[str, Any]) -> None:
        with self._lock:
            if self._announced.get(machine, False) != status.get("name") and machine not in retired_machines(self._db):
                self._announce(machine, status)

    def archived(self, event: dict[str, Any]) -> None:
        with self._lock:
            if event["machine"] not in self._announced and event["machine"] not in retired_machines(self._db):
                self._announce(event["machine"], None)

    def _announce(self, machine: str, status: dict[str, Any] | None) -> None:
        if self._client is None:
            return
        for topic, config in discovery(machine, self.topics, self.prefix, status):
            self._client.publish(topic, json.dumps(config), qos=1, retain=True)
        self._announced[machine] = (status or {}).get("name")
        log.info("announced %s to Home Assistant under %s/", machine, self.prefix)
