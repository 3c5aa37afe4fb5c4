"""The other workers of the group, as the web views reach them.

Routing a node: the key is the node UUID as UTF-8 bytes, exactly as the bridge keys the relay record,
and the table is co-partitioned with that topic, so the owner is the member whose changelog
partitions include murmur2(key) % partitions, read from the assignment every member shares.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientSession, ClientTimeout
from aiokafka.partitioner import murmur2
from yarl import URL

PEER_TIMEOUT_S = 5.0


@dataclass
class Peers:
    """The other members' canonical URLs, from the group assignment every member receives."""

    app: Any
    token: str | None = None
    session: ClientSession | None = None
    timeout: ClientTimeout = field(default_factory=lambda: ClientTimeout(total=PEER_TIMEOUT_S))

    def own(self) -> tuple[str, int]:
        return ident(URL(str(self.app.conf.canonical_url)))

    def distribution(self) -> Mapping[str, Mapping[str, list[int]]]:
        try:
            return self.app.assignor.tables_metadata() or {}
        except Exception:
            return {}

    def others(self) -> list[str]:
        own = self.own()
        return sorted(url for url in self.distribution() if ident(URL(url)) != own)

    def owner(self, changelog_topic: str, key: bytes) -> str | None:
        """The canonical URL of the member holding `key`'s partition, None before an assignment."""
        holders: dict[int, str] = {}
        for url, topics in self.distribution().items():
            for partition in topics.get(changelog_topic, ()):
                holders[int(partition)] = url
        if not holders:
            return None
        count = max(holders) + 1
        partition = (murmur2(key) & 0x7FFFFFFF) % count
        return holders.get(partition)

    def client(self) -> ClientSession:
        if self.session is None or self.session.closed:
            self.session = ClientSession(timeout=self.timeout)
        return self.session

    async def get(self, base: str, rel_url: URL, headers: Mapping[str, str]) -> tuple[int, bytes, str]:
        url = URL(base).with_path(rel_url.path).with_query(rel_url.query)
        headers = dict(headers)
        if self.token:  # every worker of a deployment shares the token
            headers["Authorization"] = f"Bearer {self.token}"
        async with self.client().get(url, headers=headers, allow_redirects=False) as response:
            return response.status, await response.read(), response.content_type


def ident(url: URL) -> tuple[str, int]:
    host = (url.host or "").lower()
    if host in ("localhost", "::1"):
        host = "127.0.0.1"
    return host, int(url.port or 80)
