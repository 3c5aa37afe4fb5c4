"""Bad input published raw (aio-pika) to the bridge's exchange on the real RabbitMQ: the committed
corpus (corpus/bad_input.jsonl), the enormous cases made at run time, and a seeded fuzzer mutating a
valid body. Every one must be dead-lettered with a reason, or relayed when oslo's format accepts it;
the bridge and a worker behind it must not crash."""
from __future__ import annotations

import asyncio
import base64
import collections
import json
import random
import time
import uuid
from pathlib import Path

import aio_pika
import pytest

from pipeline import events, wire
from tests.support.faults import Pipeline, header, read_topics, topics_starting

from .conftest import FIGURES
from .corpus.make_bad_input import enormous_cases, envelope, message

pytestmark = [pytest.mark.integration, pytest.mark.faults]

CORPUS = Path(__file__).parent / "corpus" / "bad_input.jsonl"
BASE_ID = message()["message_id"]
FUZZ_CASES = 400


def fuzz(rng: random.Random, n: int):
    """Mutations of a valid body: truncation, byte flips, insertions, deletions, splices, and a field
    of the inner message swapped for a value of another JSON type."""
    junk = [None, 0, -1, 2 ** 70, 1.5e308, True, "", "x" * 300, [], [None], {}, {"a": {"b": []}}, "\u0000", "\ud7ff"]
    for i in range(n):
        body = bytearray(envelope(message()))
        kind = rng.choice(["truncate", "flip", "insert", "delete", "splice", "field", "inner-field"])
        if kind == "truncate":
            body = body[: rng.randrange(len(body))]
        elif kind == "flip":
            for _ in range(rng.randint(1, 8)):
                body[rng.randrange(len(body))] = rng.randrange(256)
        elif kind == "insert":
            at = rng.randrange(len(body))
            body[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif kind == "delete":
            at = rng.randrange(len(body))
            del body[at: at + rng.randint(1, 32)]
        elif kind == "splice":
            a, b = sorted(rng.randrange(len(body)) for _ in range(2))
            body = body[:a] + body[b:] + body[a:b]
        else:
            msg = message()
            target = msg if kind == "field" else msg["payload"]["ironic_object.data"]
            target[rng.choice(sorted(target))] = rng.choice(junk)
            body = bytearray(envelope(msg))
        yield f"fuzz-{i}-{kind}", "either", bytes(body)


def expectation(body: bytes) -> str | None:
    """The message_id the pure core would relay the body under, None when it rejects it."""
    try:
        return events.normalize(body)["message_id"]
    except wire.Rejected:
        return None


def test_bad_input_is_dead_lettered_or_relayed(broker, tmp_path) -> None:
    cases = [(c["case"], c["expect"], base64.b64decode(c["body_b64"]))
             for c in map(json.loads, CORPUS.read_text().splitlines())]
    cases += list(enormous_cases()) + list(fuzz(random.Random(2026), FUZZ_CASES))
    # a message_id of its own per case (same length), so a relayed record says which case it was
    cases = [(name, expect, body.replace(BASE_ID.encode(), str(uuid.uuid4()).encode()))
             for name, expect, body in cases]
    result = asyncio.run(_run(broker, tmp_path, cases))
    FIGURES.append(result.pop("figure"))
    assert not result["unaccounted"], f"neither relayed nor dead-lettered: {result['unaccounted'][:10]}"
    assert not result["wrong"], f"against the corpus's expectation: {result['wrong'][:10]}"
    assert not result["crashed"], result["crashed"]


async def _run(broker, tmp_path, cases) -> dict:
    p = Pipeline(broker, tmp_path)
    try:
        bridge = p.bridge()
        await bridge.wait_for("relaying from", 60)
        worker = p.worker()
        await worker.wait_for("Ready", 90)
        connection = await aio_pika.connect(broker.amqp_url)
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            exchange = await channel.get_exchange("ironic", ensure=False)
            for i, (_, _, body) in enumerate(cases):
                await exchange.publish(aio_pika.Message(body), routing_key=f"{p.names.ironic_topic}.c{i}")
        expected = [expectation(body) for _, _, body in cases]
        deadline = time.monotonic() + 90
        while True:
            topics = await topics_starting(broker.kafka, p.names.topic_prefix)
            records = await read_topics(broker.kafka, topics)
            dead: dict[str, str] = {}
            relayed: set[str] = set()
            for topic, recs in records.items():
                for rec in recs:
                    if topic.endswith(".deadletter"):
                        dead[header(rec, "routing_key").decode()] = header(rec, "reason").decode()
                    else:
                        relayed.add(header(rec, "message_id").decode())
            fate = {}
            for i in range(len(cases)):
                rk = f"{p.names.ironic_topic}.c{i}"
                fate[i] = "dead" if rk in dead else "relay" if expected[i] in relayed else None
            unaccounted = [cases[i][0] for i, f in fate.items() if f is None]
            if not unaccounted or time.monotonic() > deadline:
                break
            await asyncio.sleep(2)
        await asyncio.sleep(3)  # the worker has read the relayed ones too
        wrong = [(cases[i][0], cases[i][1], f) for i, f in fate.items()
                 if f is not None and cases[i][1] != "either" and cases[i][1] != f]
        crashed = p.crashed() + [f"{x.name} exited {x.popen.returncode}" for x in p.procs if not x.alive()]
        reasons = collections.Counter(r.split(":")[0][:40] for r in dead.values())
        counts = collections.Counter(fate.values())
        figure = (f"bad input: {len(cases)} tried ({len(cases) - FUZZ_CASES} corpus, {FUZZ_CASES} fuzzed): "
                  f"{counts['dead']} dead-lettered with a reason, {counts['relay']} relayed (valid), "
                  f"{len(unaccounted)} unaccounted; processes crashed: {len(crashed)}; "
                  f"top reasons {reasons.most_common(6)}")
        return {"unaccounted": unaccounted, "wrong": wrong, "crashed": crashed, "figure": figure}
    finally:
        await p.stop()
        await p.cleanup()
