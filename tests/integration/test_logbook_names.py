"""Members' names in the logbook, from the list on P/members, written as changes only."""

from __future__ import annotations

import json

import pytest

from agent.link.broker import Broker
from agent.logbook.collector import Collector
from agent.logbook.events import MalformedEvent
from agent.logbook.names import names, record_names
from agent.logbook.store import open_db
from tests.support.helpers import wait_for
from tests.support.logbook import publish


def members(version: int, **named: str | None) -> bytes:
    return json.dumps({"v": 1, "version": version,
                       "members": [{"id": i, "status": "active", **({"name": n} if n else {})}
                                   for i, n in named.items()]}).encode()


def test_logbook_names_follow_the_newest_list_and_write_only_changes(tmp_path) -> None:
    with open_db(tmp_path / "logbook.db", create=True) as db:
        assert record_names(db, members(5, **{"m-1": "Ada", "m-2": "Grace", "m-3": None})) == 3
        assert names(db) == {"m-1": "Ada", "m-2": "Grace"}
        assert record_names(db, members(6, **{"m-1": "Ada", "m-2": "Grace", "m-3": None})) == 0
        assert record_names(db, members(7, **{"m-1": "Ada Lovelace", "m-3": "Alan"})) == 3
        assert names(db) == {"m-1": "Ada Lovelace", "m-3": "Alan"}
        assert record_names(db, members(4, **{"m-9": "Old"})) == 0  # an older list changes nothing
        assert names(db) == {"m-1": "Ada Lovelace", "m-3": "Alan"}


@pytest.mark.parametrize("payload", [b"not json", b'{"version": "x", "members": []}', b'{"members": [1]}'])
def test_logbook_names_refuse_what_is_not_a_member_list(tmp_path, payload: bytes) -> None:
    with open_db(tmp_path / "logbook.db", create=True) as db:
        with pytest.raises(MalformedEvent):
            record_names(db, payload)


def test_logbook_collector_keeps_names_from_the_retained_list(mosquitto, tmp_path) -> None:
    publish(mosquitto.url, [("fabpass/members", members(3, **{"m-1": "Ada"}))], retain=True)
    db_path = tmp_path / "logbook.db"
    with Collector(Broker.parse(mosquitto.url), db_path):
        with open_db(db_path) as db:
            wait_for(lambda: names(db) == {"m-1": "Ada"}, what="the names from the retained list")
        publish(mosquitto.url, [("fabpass/members", b"garbage")], retain=True)
        publish(mosquitto.url, [("fabpass/members", members(4, **{"m-1": "Ada L."}))], retain=True)
        with open_db(db_path) as db:
            wait_for(lambda: names(db) == {"m-1": "Ada L."}, what="the next list's names")
            # the garbage in between changed nothing; the version kept is the last good list's
            assert [row["version"] for row in db["member_list"].rows] == [4]
            assert names(db) == {"m-1": "Ada L."}
