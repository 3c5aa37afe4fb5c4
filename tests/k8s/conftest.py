"""The `rendered` fixture: each overlay's objects, one test per overlay."""

from __future__ import annotations

import pytest

from tests.support.k8s import OVERLAYS, Rendered, render


@pytest.fixture(params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> Rendered:
    return Rendered(request.param, render(request.param))
