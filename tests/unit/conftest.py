"""Fixtures shared by the unit tests."""
from __future__ import annotations

import uuid

import pytest

from pipeline.streams.app import WorkerSettings, create_app


@pytest.fixture()
def rt():
    """A worker app (memory tables, no web) finalized but not started: no broker needed."""
    settings = WorkerSettings(app_id=f"unit-{uuid.uuid4().hex[:8]}", store="memory://", web_enabled=False,
                              replay_guard_s=0.0)
    rt = create_app(settings, partitions=1)
    rt.app.finalize()
    return rt
