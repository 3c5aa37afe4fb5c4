"""The raw limit of the bridge's intake at a fleet's rate: a bare aio-pika consumer of a queue that
acks each message and does nothing else (`python -m pipeline.bench.bare URL QUEUE`, run by the cost
stage in a process of its own, so its CPU is measured apart from the publisher's).

Under a backlog the bench compares the bridge with a bare drain; at 20 or 100 events/s what counts is
the same consumer's CPU per message when each message wakes it alone.
"""
from __future__ import annotations

import asyncio
import signal
import sys

import aio_pika


async def consume(url: str, queue: str) -> int:
    connection = await aio_pika.connect(url)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    count = 0

    async def on_message(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        nonlocal count
        await message.ack()
        count += 1

    channel = await connection.channel()
    await channel.set_qos(prefetch_count=1000)
    await (await channel.get_queue(queue)).consume(on_message)
    print("consuming", file=sys.stderr, flush=True)
    await stop.wait()
    await connection.close()
    print(f"consumed {count}", file=sys.stderr, flush=True)
    return count


if __name__ == "__main__":
    asyncio.run(consume(sys.argv[1], sys.argv[2]))
