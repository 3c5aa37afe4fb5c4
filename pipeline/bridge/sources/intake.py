"""Paced intake for the AMQP source: RabbitMQ's socket read in rounds.

At the rates a fleet sends (1-300 events/s) RabbitMQ pushes each delivery on its own, and the
bridge paid a whole event-loop wake (a socket read, aiormq's frame parsing and task hops, a produce
round, an ack write) per event: about 1 ms of CPU at 100/s on this project's 2-core machine, where a
bare aio-pika consumer that only acks already cost 0.7 ms per message. Pausing the socket's reading
for a few milliseconds after a delivery lets the next ones wait in the kernel's buffer and arrive in
one read, be relayed in one produce round and acked with one `basic.ack(multiple=True)`; a record
reaches Kafka at most `intake_ms` later. (Acking on a timer of its own, once per 50 ms, was tried:
no gain measured, since acks already go once per produce round.)

It is built on aio-pika's and aiormq's public extension points: a subclass of aio-pika's
`Connection` (whose `PARAMETERS` pass a keyword through to aiormq, as aio-pika's RobustConnection
adds its own) and aiormq's `transport_factory`.
"""
from __future__ import annotations

import asyncio
from typing import Any

import aio_pika
from aio_pika.connection import ConnectionParameter, make_url
from aiormq.connection import TCPTransportFactory, TLSTransportFactory, TransportFactory
from yarl import URL


class PacedTransports(TransportFactory):
    """aiormq's own TCP or TLS streams, keeping the newest transport so its reading can be paused."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None

    async def create(self, url: URL, **kwargs: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        inner = TLSTransportFactory() if url.scheme == "amqps" else TCPTransportFactory()
        reader, writer = await inner.create(url, **kwargs)
        self.transport = writer.transport  # type: ignore[assignment]
        return reader, writer


class PacedConnection(aio_pika.Connection):
    """aio-pika's connection with aiormq's `transport_factory` let through."""

    PARAMETERS = (*aio_pika.Connection.PARAMETERS,
                  ConnectionParameter(name="transport_factory", parser=lambda value: value, is_kwarg=True))


async def connect(url: str, transports: PacedTransports, **kwargs: Any) -> aio_pika.abc.AbstractConnection:
    """`aio_pika.connect` through `transports` (which connect() itself cannot take: it copies
    every keyword into the URL's query too)."""
    connection = PacedConnection(make_url(url), transport_factory=transports, **kwargs)
    await connection.connect()
    return connection


class Intake:
    """Pauses the socket's reading for `pause_s` after each delivery that found it reading (0: off).

    A delivery wakes the loop; what follows within `pause_s` is read together when it resumes."""

    __slots__ = ("transports", "pause_s", "paused", "loop")

    def __init__(self, transports: PacedTransports, pause_s: float) -> None:
        self.transports = transports
        self.pause_s = pause_s
        self.paused = False
        self.loop = asyncio.get_running_loop()

    def delivered(self) -> None:
        if self.paused or not self.pause_s:
            return
        transport = self.transports.transport
        if transport is None or transport.is_closing():
            return
        self.paused = True
        transport.pause_reading()
        self.loop.call_later(self.pause_s, self._resume, transport)

    def _resume(self, transport: asyncio.Transport) -> None:
        self.paused = False
        if not transport.is_closing():
            transport.resume_reading()
