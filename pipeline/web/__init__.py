"""Read-only web views of the worker: the node and fleet APIs, operation stats, alerts, health,
Prometheus metrics and the dashboard. `register(app, source, observations)` mounts them."""

from pipeline.web.observe import Observations
from pipeline.web.views import WebSource, WebViews, register


def observations(partitions, args=None):
    """The reporter `pipeline worker` builds its app with when the views are on."""
    from pipeline.web.source import observations as _observations

    return _observations(partitions, args)


def install(rt, args=None):
    """Called by `pipeline worker` once its app is built (see pipeline.web.source.install)."""
    from pipeline.web.source import install as _install

    return _install(rt, args)


def add_web_args(parser):
    from pipeline.web.source import add_web_args as _add

    _add(parser)


__all__ = ["Observations", "WebSource", "WebViews", "add_web_args", "install", "observations", "register"]
