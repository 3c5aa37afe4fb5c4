"""The metric-name reader the dashboard and rule checks rely on, on expressions whose answer is known."""

from __future__ import annotations

from tests.support.monitoring import all_expressions, exported_names, metric_names


def test_it_finds_metric_names_and_nothing_else() -> None:
    assert metric_names('histogram_quantile(0.99, sum by (operation, le) (rate(pipeline_operation_duration_seconds_bucket'
                        '{namespace="$namespace", operation=~"a.b|c"}[$__rate_interval])))') == \
        {"pipeline_operation_duration_seconds_bucket"}
    assert metric_names("(time() - bridge_last_ack_timestamp_seconds) > 60 and bridge_in_flight_deliveries > 0") == \
        {"bridge_last_ack_timestamp_seconds", "bridge_in_flight_deliveries"}
    assert metric_names('sum(pipeline_nodes{maintenance="true"}) or vector(0)') == {"pipeline_nodes"}
    assert metric_names("pipeline:consumer_lag:sum > 1000 and deriv(pipeline:consumer_lag:sum[15m]) > 0") == {"pipeline:consumer_lag:sum"}
    assert metric_names('min by (namespace) (x:y) > 1800 and on (namespace) sum by (namespace) (open_ops) > 0') == {"x:y", "open_ops"}
    assert metric_names('label_values(pipeline_operation_duration_seconds_count{namespace="$namespace"}, operation)') == \
        {"pipeline_operation_duration_seconds_count"}
    assert metric_names('topk(10, sum by (event_type) (rate(pipeline_events_total[5m])))') == {"pipeline_events_total"}


def test_every_shipped_expression_reads_at_least_one_metric() -> None:
    for expr in all_expressions():
        assert metric_names(expr), expr


def test_exported_names_cover_families_without_series_and_the_sample_suffixes() -> None:
    text = "\n".join([
        "# HELP bridge_filtered_total deliveries acked without relaying",
        "# TYPE bridge_filtered_total counter",
        "# HELP pipeline_operation_duration_seconds durations",
        "# TYPE pipeline_operation_duration_seconds histogram",
        'pipeline_operation_duration_seconds_bucket{le="1.0"} 0.0',
        "pipeline_nodes 3.0",
    ])
    names = exported_names(text)
    assert {"bridge_filtered_total", "pipeline_operation_duration_seconds_bucket",
            "pipeline_operation_duration_seconds_count", "pipeline_nodes"} <= names
    assert "pipeline_missing" not in names
