"""An older broker that speaks only MQTT 3.1.1: the agent falls back and loses nothing.

The "older broker" is the real Mosquitto behind a small TCP relay that answers
an MQTT 5 CONNECT as a 3.1.1-only broker does (CONNACK, return code 1:
unacceptable protocol version) and relays any other connection untouched.
"""

from __future__ import annotations

import socket
import threading

import pytest

from tests.support.agents import ADA, AgentProcess, config_text, members_json
from tests.support.helpers import Collector, publish, wait_for

MQTT5 = 5


class V311OnlyRelay:
    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.refused = 0
        self.relayed = 0
        self._sockets: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            self._sockets.append(client)
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        try:
            first = client.recv(4096)
            # CONNECT: fixed header, remaining length (1 to 4 bytes, 7 bits each, the top bit
            # says another follows), protocol name (2-byte length + "MQTT"), then the level.
            length_bytes = next((i for i, byte in enumerate(first[1:5], 1) if byte < 0x80), 1)
            level = 1 + length_bytes + 6
            if first[:1] == b"\x10" and len(first) > level and first[level] == MQTT5:
                self.refused += 1
                client.sendall(b"\x20\x02\x00\x01")
                client.close()
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            self._sockets.append(upstream)
            self.relayed += 1
            upstream.sendall(first)
            threading.Thread(target=self._pipe, args=(upstream, client), daemon=True).start()
            self._pipe(client, upstream)
        except OSError:
            pass

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.server.close()
        for s in self._sockets:
            s.close()


@pytest.fixture
def relay(mosquitto):
    r = V311OnlyRelay(mosquitto.port)
    yield r
    r.close()


def test_mqtt_v311_fallback_when_the_broker_refuses_mqtt5(tmp_path, mosquitto, relay):
    storage = tmp_path / "state"
    config = tmp_path / "agent.toml"
    config.write_text(config_text(storage, extra=f'[mqtt]\nurl = "mqtt://127.0.0.1:{relay.port}"\n'))
    events = Collector(mosquitto.port, "fabpass/machines/+/events")
    publish(mosquitto.port, "fabpass/members", members_json(), retain=True)
    agent = AgentProcess(config, storage).start()
    try:
        wait_for(lambda: agent.ask({"op": "status"})["broker"], 20, "a 3.1.1 connection")
        assert relay.refused >= 1 and relay.relayed >= 1
        wait_for(lambda: agent.ask({"op": "status"})["members_version"] == 1, 10, "the retained list")
        assert agent.ask({"op": "tap", "badge": ADA})["action"] == "started"
        wait_for(lambda: [e for e in events.payloads() if e["type"] == "session_started"], 10, "the event")
        wait_for(lambda: agent.ask({"op": "status"})["outbox"] == 0, 10, "acknowledgements over 3.1.1")
    finally:
        agent.stop()
        events.close()
    assert "does not speak MQTT 5" in agent.log.read_text()
