"""Broker URLs and paho clients configured from them.

`mqtt://[user[:password]@]host[:port]` or `mqtts://…` (TLS). A password can
also come from a file (`password_file`) or the environment (`FABPASS_MQTT_PASSWORD`),
so that it never has to stand on a command line.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import paho.mqtt.client as mqtt


PASSWORD_ENV = "FABPASS_MQTT_PASSWORD"


class BadBrokerURL(ValueError):
    pass


class BrokerUnreachable(ConnectionError):
    """No connection: the broker is down, unreachable, or refused our credentials."""


@dataclass(frozen=True)
class Broker:
    host: str
    port: int
    tls: bool = False
    username: str | None = None
    password: str | None = None
    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None

    @classmethod
    def parse(cls, url: str) -> Broker:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts"):
            raise BadBrokerURL(f"{url!r}: a broker URL starts with mqtt:// or mqtts://")
        try:
            port = parts.port
        except ValueError:
            raise BadBrokerURL(f"{url!r}: the port is not a number from 1 to 65535") from None
        if not parts.hostname:
            raise BadBrokerURL(f"{url!r}: no host")
        if parts.path not in ("", "/") or parts.query or parts.fragment:
            raise BadBrokerURL(f"{url!r}: a broker URL has no path or query")
        tls = parts.scheme == "mqtts"
        return cls(
            host=parts.hostname,
            port=port or (8883 if tls else 1883),
            tls=tls,
            username=urllib.parse.unquote(parts.username) if parts.username else None,
            password=urllib.parse.unquote(parts.password) if parts.password else None,
        )

    def with_credentials(
        self,
        username: str | None = None,
        password_file: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
    ) -> Broker:
        """Fill what the URL left out from config: a password file, then the environment."""
        password = self.password
        if password is None and password_file:
            password = Path(password_file).read_text(encoding="utf-8").strip()
        if password is None:
            password = os.environ.get(PASSWORD_ENV) or None
        return replace(
            self,
            username=self.username or username,
            password=password,
            ca_file=ca_file or self.ca_file,
            cert_file=cert_file or self.cert_file,
            key_file=key_file or self.key_file,
        )

    def __str__(self) -> str:
        """The URL without its password, for logs."""
        user = f"{self.username}@" if self.username else ""
        return f"{'mqtts' if self.tls else 'mqtt'}://{user}{self.host}:{self.port}"


def make_client(broker: Broker, client_id: str = "", protocol: int | None = None,
                persistent: bool = False) -> mqtt.Client:
    """A paho 2.x client (callback API v2) with credentials and TLS from `broker`.

    `persistent` keeps the session for MQTT 3.1.1 (clean session off); with
    MQTT 5 the session is chosen at connect (clean_start, session expiry).
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    protocol = mqtt.MQTTv5 if protocol is None else protocol
    client = mqtt.Client(
        callback_api_version=CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        clean_session=None if protocol == mqtt.MQTTv5 else not persistent,
    )
    if broker.username:
        client.username_pw_set(broker.username, broker.password)
    if broker.tls:
        context = ssl.create_default_context(cafile=broker.ca_file)
        if broker.cert_file:
            context.load_cert_chain(broker.cert_file, broker.key_file)
        client.tls_set_context(context)
    return client


class Outage:
    """Tells the journal once per outage, not at every retry, that the broker cannot be
    reached: paho calls on_connect_fail at each failed attempt, every few seconds."""

    def __init__(self, log: logging.Logger, broker: Broker, meanwhile: str) -> None:
        self._log, self._broker, self._meanwhile = log, broker, meanwhile
        self._told = False

    def on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if not self._told:
            self._told = True
            self._log.warning("cannot reach broker %s; %s", self._broker, self._meanwhile)

    def ended(self) -> None:
        """Connected: the next failure starts another outage."""
        self._told = False


def disconnect(client: mqtt.Client, properties: Any = None) -> None:
    """Disconnect and stop paho's network thread.

    Once our DISCONNECT is written that thread ends by itself, and paho 2.1's
    loop_stop() raises AttributeError (it joins `_thread` after the thread
    has set it to None) when the thread ends between its check and its join:
    then the thread has already stopped, which is all loop_stop() is for.
    """
    client.disconnect(properties=properties)
    try:
        client.loop_stop()
    except AttributeError:
        pass


@contextmanager
def connected(broker: Broker, client_id: str = "", timeout: float = 15.0) -> Iterator[mqtt.Client]:
    """A client connected to `broker`, its network loop running, for a short errand;
    disconnected at the end. Raises BrokerUnreachable."""
    client = make_client(broker, client_id)
    answered = threading.Event()
    refused: list[str] = []

    def on_connect(client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            refused.append(f"broker {broker} refused the connection: {reason_code}")
        answered.set()

    client.on_connect = on_connect
    try:
        client.connect(broker.host, broker.port, keepalive=30)
    except OSError as err:
        raise BrokerUnreachable(f"cannot reach broker {broker}: {err}") from None
    client.loop_start()
    try:
        if not answered.wait(timeout) or refused:
            raise BrokerUnreachable(refused[0] if refused else f"no answer from broker {broker}")
        yield client
    finally:
        disconnect(client)
