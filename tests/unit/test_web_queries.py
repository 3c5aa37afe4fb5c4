"""Request validation and response shaping of the web views (pure)."""

from __future__ import annotations

import pytest

from pipeline.web import queries
from pipeline.web.queries import BadRequest, NodeQuery


def q(**values: str) -> dict[str, list[str]]:
    return {k: [v] for k, v in values.items()}


def test_uuid_is_lower_cased_and_checked() -> None:
    assert queries.parse_uuid("1BE26C0B-03F2-4D2E-AE87-C02D7F33C123") == "1be26c0b-03f2-4d2e-ae87-c02d7f33c123"
    for bad in ("", "1be26c0b", "1be26c0b03f24d2eae87c02d7f33c123", "../../etc/passwd", "g" * 36, "x" * 5000,
                "1be26c0b-03f2-4d2e-ae87-c02d7f33c123/..", "1be26c0b-03f2-4d2e-ae87-c02d7f33c1234"):
        with pytest.raises(BadRequest) as info:
            queries.parse_uuid(bad)
        assert "not a UUID" in info.value.reason and len(info.value.reason) < 120


def test_node_query_filters_and_limits() -> None:
    parsed = queries.parse_node_query(q(power_state="Power On", provision_state="active", maintenance="false", limit="5"))
    assert parsed == NodeQuery("power on", "active", False, 5)
    assert queries.parse_node_query({}) == NodeQuery(limit=queries.DEFAULT_LIMIT)


@pytest.mark.parametrize(
    "query, words",
    [
        (q(power_state="on"), "unknown power_state"),
        (q(provision_state="flying"), "unknown provision_state"),
        (q(maintenance="maybe"), "maintenance must be true or false"),
        (q(limit="1001"), "limit must be an integer from 1 to 1000"),
        (q(limit="0"), "limit must be"),
        (q(limit="-1"), "limit must be"),
        (q(limit="ten"), "limit must be"),
        (q(limit="9" * 400), "limit must be"),
        (q(colour="red"), "unknown parameter 'colour'"),
        ({"limit": ["1", "2"]}, "given 2 times"),
    ],
)
def test_bad_node_queries_say_why(query: dict, words: str) -> None:
    with pytest.raises(BadRequest) as info:
        queries.parse_node_query(query)
    assert words in info.value.reason


def test_huge_query_string_is_refused() -> None:
    with pytest.raises(BadRequest, match="query string is"):
        queries.parse_node_query({}, "a=" + "x" * 5000)


def test_alert_types() -> None:
    assert queries.parse_alert_query(q(type="missing_end")).type == "missing_end"
    with pytest.raises(BadRequest, match="unknown alert type"):
        queries.parse_alert_query(q(type="fire"))


NODES = [
    {"uuid": "c", "power_state": "power on", "provision_state": "active", "maintenance": False},
    {"uuid": "a", "power_state": "power off", "provision_state": "available", "maintenance": True},
    {"uuid": "b", "power_state": "power on", "provision_state": "active", "maintenance": True},
    {"uuid": "d", "power_state": None, "provision_state": "enroll", "maintenance": None},
]


def test_select_and_merge_nodes_across_workers() -> None:
    query = NodeQuery(power_state="power on", limit=1)
    first = queries.select_nodes(NODES[:2], query)
    second = queries.select_nodes(NODES[2:], query)
    assert first == {"nodes": [NODES[0]], "matched": 1}
    fleet = queries.merge_node_answers([first, second], query)
    assert fleet == {"nodes": [NODES[2]], "count": 1, "matched": 2, "limit": 1}
    assert [n["uuid"] for n in queries.select_nodes(NODES, NodeQuery(power_state="none"))["nodes"]] == ["d"]
    assert [n["uuid"] for n in queries.select_nodes(NODES, NodeQuery(maintenance=False))["nodes"]] == ["c", "d"]


def test_counts_merge() -> None:
    merged = queries.merge_counts([queries.state_counts(NODES[:2]), queries.state_counts(NODES[2:])])
    assert merged == {
        "total": 4,
        "power_state": {"power on": 2, "none": 1, "power off": 1},
        "provision_state": {"active": 2, "available": 1, "enroll": 1},
        "maintenance": 2,
    }


def test_loss_rate_per_publisher() -> None:
    loss = queries.merge_loss([{"ironic-conductor.c1": {"started": 6, "missing": 1}},
                               {"ironic-conductor.c1": {"started": 4, "missing": 1, "rate": 0.25}}])
    assert loss == {"ironic-conductor.c1": {"started": 10, "missing": 2, "rate": 0.2}}
    assert queries.merge_loss([{"glance": {"ended": 3}}])["glance"]["rate"] == 0.0


def test_alerts_newest_first_deduplicated() -> None:
    alerts = [
        {"alert_id": "1", "kind": "missing_end", "resource_uuid": "a", "raised_at": "2026-01-01T00:00:01Z"},
        {"alert_id": "2", "kind": "orphan_end", "resource_uuid": "b", "raised_at": "2026-01-01T00:00:03Z"},
        {"alert_id": "1", "kind": "missing_end", "resource_uuid": "a", "raised_at": "2026-01-01T00:00:01Z"},
        {"alert_id": "3", "kind": "missing_end", "resource_uuid": "c", "raised_at": "2026-01-01T00:00:02Z"},
    ]
    got = queries.sort_alerts(alerts, queries.AlertQuery(type="missing_end", limit=10))
    assert [a["resource_uuid"] for a in got] == ["c", "a"]
    assert len(queries.sort_alerts(alerts, queries.AlertQuery(limit=2))) == 2
