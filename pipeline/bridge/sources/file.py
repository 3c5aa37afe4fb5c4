"""JSON lines from a file or stdin, as `pipeline inspect` reads them: replays and captures."""
from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from typing import IO

from pipeline import wire
from pipeline.config import ConfigError

from .base import Delivery


class LinesSource:
    """Lines of a file (or stdin for "-"): a body as published or a capture object each."""

    def __init__(self, path: str, max_body_bytes: int = wire.MAX_BODY_BYTES) -> None:
        self.path = path
        self.max_body_bytes = max_body_bytes
        self.description = "stdin" if path == "-" else f"file {path}"
        self._stopping = False
        self.lines = 0
        self._file = self._open()  # a missing file is a settings error, found before connecting

    def stop(self) -> None:
        self._stopping = True

    def _open(self) -> IO[bytes]:
        if self.path == "-":
            return sys.stdin.buffer
        try:
            return open(self.path, "rb")
        except OSError as exc:
            raise ConfigError(f"--source file:{self.path}: {exc.strerror}") from None

    async def __aiter__(self) -> AsyncIterator[Delivery]:
        f = self._file
        try:
            while not self._stopping:
                # a thread keeps a slow pipe from blocking the event loop
                chunk = await asyncio.to_thread(f.readlines, 1 << 20)
                if not chunk:
                    return
                for line in chunk:
                    self.lines += 1
                    if not line.strip():
                        continue  # blank lines separate, they are not messages
                    try:
                        body, exchange, routing_key = wire.read_line(line, max_bytes=self.max_body_bytes)
                    except wire.Rejected as exc:
                        yield Delivery(line.rstrip(b"\r\n"), None, None, reason=exc.reason)
                        continue
                    yield Delivery(body, exchange, routing_key)
                    if self._stopping:
                        return
        finally:
            if f is not sys.stdin.buffer:
                f.close()

    async def close(self) -> None:
        pass
