"""The worker creates faust's own topics before faust starts (streams/topics.py): under the names
faust gives them, with the tables' partition counts, or faust would create others a moment before
its consumer joins (issue 28)."""
from __future__ import annotations

from pipeline.streams import topics


def test_faust_s_own_topics_are_named_as_faust_names_them(rt) -> None:
    own = topics.faust_topics(rt.settings.app_id)
    changelogs = {t.changelog_topic.get_topic_name(): t.changelog_topic.partitions for t in (rt.resources, rt.loss)}
    leader = rt.app._leader_assignor._leader_topic_name  # faust's name for it, pinned here
    assert set(own) == set(changelogs) | {leader}
    assert own[leader] == 1 and all(own[name] is None for name in changelogs)  # None: the relay topics' count
    assert set(changelogs.values()) == {rt.partitions}
    assert {t.name for t in rt.app.tables.values()} == set(topics.TABLES)
