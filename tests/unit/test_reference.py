"""The repository documents its own interfaces, and the documents cannot drift:
the command and config references are made from the code, the MQTT reference
names every event type, topic and command key, every test that docs/guarantees.md
cites exists, and nothing shipped points outside the repository."""

from __future__ import annotations

import re

import pytest

from agent.cli import reference
from agent.core.model import EventType
from agent.link import commands
from agent.link.topics import Topics
from tests.support import ROOT

MQTT = (ROOT / "docs" / "reference" / "mqtt.md").read_text()


@pytest.mark.parametrize("name", sorted(reference.PAGES))
def test_reference_generated_pages_match_the_code(name: str) -> None:
    page = ROOT / "docs" / "reference" / name
    assert page.read_text() == reference.PAGES[name](), (
        f"docs/reference/{name} is out of date: run python -m agent.cli.reference")


@pytest.mark.parametrize("kind", list(EventType), ids=str)
def test_reference_every_event_type_has_its_section(kind: EventType) -> None:
    assert f"### `{kind}`" in MQTT


def test_reference_every_topic_is_in_the_table() -> None:
    topics = Topics("P")
    for topic in (topics.members, topics.status("ID"), topics.events("ID"), topics.commands("ID"),
                  topics.sim_tap("ID"), topics.archived("ID")):
        assert f"| `{topic}` |" in MQTT, topic


@pytest.mark.parametrize("key", sorted(commands.KEYS))
def test_reference_every_command_key_is_described(key: str) -> None:
    section = MQTT.split("## Commands", 1)[1].split("\n## ", 1)[0]
    assert f"| `{key}` |" in section


@pytest.mark.parametrize("doc", ["guarantees.md", "threat-model.md"])
def test_reference_every_test_the_guarantees_and_the_threat_model_cite_exists(doc: str) -> None:
    text = (ROOT / "docs" / doc).read_text()
    tests = {p.name: p.read_text() for p in (ROOT / "tests").rglob("test_*.py")}
    cited = re.findall(r"`(test_\w+\.py)(?:::(test_\w+))?`", text)
    assert cited
    for file, name in cited:
        assert file in tests, f"docs/{doc} cites {file}, which does not exist"
        if name:
            assert f"def {name}(" in tests[file], f"docs/{doc} cites {file}::{name}, which does not exist"


SHIPPED = ["README.md", "agent", "config", "deploy", "docs", "firmware", "scripts", "pyproject.toml"]


def test_reference_nothing_shipped_links_outside_the_repository() -> None:
    outside = []
    for root in SHIPPED:
        path = ROOT / root
        for file in [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()):
            if "__pycache__" in file.parts:
                continue
            text = file.read_text(errors="replace")
            if "../shared" in text or "CONTRACT.md" in text or "the contract" in text.lower():
                outside.append(str(file.relative_to(ROOT)))
    assert not outside, f"these point outside the repository (users have no ../shared): {outside}"
