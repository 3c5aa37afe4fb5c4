"""Where notifications come from. Every source is one small interface, like oslo.messaging's notify
drivers: an async iterator of `Delivery` objects (`base.Source`). The relay calls `delivery.settle()`
once Kafka acknowledged the delivery's record (or its dead letter, or it was filtered); the source
then acks it in its own terms (AMQP basic.ack, a Kafka offset commit, nothing for a file).

- `amqp.AmqpSource`: the bridge's own queue (listener-pool style) bound on the configured exchanges.
- `file.LinesSource`: JSON lines from a file or stdin, as `pipeline inspect` reads them.
- `oslo_kafka.OsloKafkaSource`: the topics oslo.messaging's Kafka driver writes (`<topic>.<priority>`).
"""
from .amqp import AmqpSettings, AmqpSource, parse_binding
from .base import Delivery, InOrder, Source
from .file import LinesSource
from .oslo_kafka import OSLO_PRIORITIES, OsloKafkaSettings, OsloKafkaSource, oslo_topic_pattern

__all__ = [
    "OSLO_PRIORITIES",
    "AmqpSettings",
    "AmqpSource",
    "Delivery",
    "InOrder",
    "LinesSource",
    "OsloKafkaSettings",
    "OsloKafkaSource",
    "Source",
    "oslo_topic_pattern",
    "parse_binding",
]
