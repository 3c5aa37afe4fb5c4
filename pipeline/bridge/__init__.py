"""The bridge: sources (RabbitMQ, JSON lines, oslo's Kafka topics) -> Kafka relay topics, at least once.

In-process use (the benchmark): build a `relay.BridgeSettings` and a source from `sources`, then
`await service.run_bridge(settings, source, stop_event)`.
"""
