"""The benchmark's stages, each a coroutine that returns its figures; progress goes to `say` (stderr).

- `limits`: the raw limits (bare aio-pika drain, bare aiokafka produce and consume, oslo's publisher);
- `bridge`: `pipeline bridge` relaying a full queue;
- `workers`: `pipeline worker` processes reading a full topic, alone or as one group;
- `latency`: events at a fixed rate through RabbitMQ, bridge and worker, timed end to end;
- `progress`: what they share (progress lines, the window a rate is measured over).
"""
from .bridge import wait_relayed
from .latency import end_to_end, percentile, publish_on_schedule
from .limits import amqp_drain, create_topics, declare_queue, fill_queue, kafka_consume, kafka_produce, oslo_publish_rate
from .progress import Say, Ticker, Window, cpu_of
from .workers import free_port, wait_group, wait_worker, wait_workers, worker_records

__all__ = ["Say", "Ticker", "Window", "amqp_drain", "cpu_of", "create_topics", "declare_queue", "end_to_end",
           "fill_queue", "free_port", "kafka_consume", "kafka_produce", "oslo_publish_rate", "percentile", "publish_on_schedule",
           "wait_group", "wait_relayed", "wait_worker", "wait_workers", "worker_records"]
