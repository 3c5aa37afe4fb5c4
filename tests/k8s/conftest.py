"""The `rendered` fixture: each overlay's objects, one test per overlay. `k8s`: the one-node cluster
(tests/k8s/cluster), up for the module that uses it (test_cluster.py) and torn down after it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support import cluster
from tests.support.k8s import OVERLAYS, Rendered, render


@pytest.fixture(params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> Rendered:
    return Rendered(request.param, render(request.param))


@pytest.fixture(scope="module")
def k8s() -> Iterator[cluster.Cluster]:
    cluster.require_machine()
    image = cluster.image()
    with cluster.one_at_a_time():
        kernel_before = cluster.kernel_settings()
        try:
            # down.sh runs however the start or the tests end (up.sh also runs it when a step fails)
            running = cluster.start_cluster(image)
            cluster.install_crds(running)
            yield running
        finally:
            cluster.stop_cluster()
            left = cluster.leftovers(kernel_before)
            assert not left, "tests/k8s/cluster/down.sh left behind:\n" + "\n".join(left)
