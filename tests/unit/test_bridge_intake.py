"""The AMQP intake's pause on a real socket: reading stops after a delivery and resumes after the
pause, and a pause of 0 never stops it."""
from __future__ import annotations

import asyncio

from yarl import URL

from pipeline.bridge.sources.intake import Intake, PacedTransports

_PEERS: list[asyncio.StreamWriter] = []  # the server's ends, kept open (a dropped one closes)


async def _connected() -> tuple[PacedTransports, asyncio.Server]:
    server = await asyncio.start_server(lambda r, w: _PEERS.append(w), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    transports = PacedTransports()
    _PEERS.append((await transports.create(URL(f"amqp://127.0.0.1:{port}/")))[1])
    return transports, server


def test_reading_pauses_after_a_delivery_and_resumes() -> None:
    async def scenario() -> list[bool]:
        transports, server = await _connected()
        intake = Intake(transports, pause_s=0.05)
        seen = [transports.transport.is_reading()]
        intake.delivered()
        intake.delivered()  # a delivery read in the same burst: no second pause
        seen.append(transports.transport.is_reading())
        await asyncio.sleep(0.03)
        seen.append(transports.transport.is_reading())
        await asyncio.sleep(0.05)
        seen.append(transports.transport.is_reading())
        transports.transport.close()
        server.close()
        return seen

    assert asyncio.run(scenario()) == [True, False, False, True]


def test_no_pause_when_off() -> None:
    async def scenario() -> bool:
        transports, server = await _connected()
        Intake(transports, pause_s=0).delivered()
        reading = transports.transport.is_reading()
        transports.transport.close()
        server.close()
        return reading

    assert asyncio.run(scenario()) is True
