"""The live view's figures, formatted in-process (no run needed)."""

from ba3c.launcher.progress import Snapshot, fmt_version, summary_fields


def test_the_parameter_version_says_what_it_counts():
    assert fmt_version(Snapshot(at=0.0)) == "-"
    assert fmt_version(Snapshot(at=0.0, versions={0: 828})) == "828"
    assert fmt_version(Snapshot(at=0.0, versions={1: 829, 0: 828})) == "828 (shards 828, 829)"
    fields = dict(summary_fields(Snapshot(at=1.0, versions={0: 5}), None, 1.0, None))
    assert fields["parameter version"] == "5"
