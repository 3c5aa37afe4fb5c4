"""Read-only web views of the worker: the node and fleet APIs, operation stats, alerts, health,
Prometheus metrics and the dashboard. `register(app, source, observations)` mounts them."""

from pipeline.web.observe import Observations
from pipeline.web.views import WebSource, WebViews, register

__all__ = ["Observations", "WebSource", "WebViews", "register"]
