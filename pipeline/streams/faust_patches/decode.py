"""7. The relay topics' records handed on as the bytes they are."""
from __future__ import annotations

from typing import Any


def raw_bytes_schema() -> Any:
    """A faust `Schema` for topics of raw bytes keys and values whose decode builds the event only.

    Symptom: with ``key_type=bytes, value_type=bytes`` and the ``raw`` serializer, faust's decode
    (faust/serializers/schemas.py:181-200, `Schema.compile`) still goes, per record, through
    `Registry.loads_key` and `loads_value` (faust/serializers/registry.py:39-111: the codec
    lookup, `raw._loads`, `want_bytes`, `_prepare_payload`) and `App.create_event`, which reads
    `app.conf.Event` through the settings' `__getattribute__` on every call (app/base.py:1547):
    about 14 µs of the conductor's path per record under cProfile, all to return the bytes it was
    given. For bytes from aiokafka those calls are the identity (a None key or value stays None),
    so the event is made directly, with `conf.Event` read once. Other schemas and topics are
    faust's. Upstream: faust-streaming 0.15.3, no issue. Can go: if faust short-cuts raw bytes;
    re-diff on every upgrade (`PATCHED_SOURCES` pins the methods this stands in for and
    `Topic._compile_decode`, faust's call of it).
    """
    from faust.serializers.schemas import Schema

    class RawBytesSchema(Schema):
        def compile(self, app: Any, *, on_key_decode_error: Any = None, on_value_decode_error: Any = None,
                    default_propagate: bool = False) -> Any:
            event_type = app.conf.Event

            async def decode(message: Any, *, propagate: bool = default_propagate) -> Any:  # noqa: ARG001
                return event_type(app, message.key, message.value, message.headers, message)

            return decode

    return RawBytesSchema(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")
