"""What goes where: which priorities are relayed, the relay and dead-letter topics, and the classes
of dead-letter reasons the metrics are labelled with."""
from __future__ import annotations

from pipeline import events

# Ironic's notification_level order; `warning` is what Ironic's option spells, `warn` the wire.
# audit and sample rank with info: oslo's AUDIT log level sits just above INFO, and samples are
# routine measurements, so a filter at info keeps them and one at warn drops them.
PRIORITY_RANK = {"debug": 10, "info": 20, "audit": 20, "sample": 20, "warn": 30, "warning": 30,
                 "error": 40, "critical": 50}
MIN_PRIORITIES = ("debug", "info", "warning", "warn", "error", "critical")


def deadletter_topic(topic_prefix: str) -> str:
    return events.topic_for("deadletter", topic_prefix)


# reason text -> the small set of classes the dead-letter metric is labelled with
_REASON_CLASSES = (
    ("not JSON", "not_json"),
    ("exceeds the limit", "too_large"),
    ("oslo.", "bad_envelope"),
    ("body is", "bad_body"),
    ("line", "bad_body"),
    ("capture", "bad_body"),
    ("cannot be created", "topic_refused"),
    ("kafka", "kafka_rejected"),
)


REASON_CLASSES = tuple(dict.fromkeys([cls for _, cls in _REASON_CLASSES] + ["bad_message"]))


def reason_class(reason: str) -> str:
    for needle, cls in _REASON_CLASSES:
        if needle in reason:
            return cls
    return "bad_message"


def catalog_topics(topic_prefix: str) -> list[str]:
    """The relay topic of every family in the event catalog, plus the dead-letter topic."""
    from pipeline import catalog

    families = dict.fromkeys(row.family for row in catalog.ROWS)
    return [events.topic_for(f, topic_prefix) for f in families] + [deadletter_topic(topic_prefix)]
