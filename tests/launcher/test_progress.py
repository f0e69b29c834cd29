"""The live view's figures, formatted in-process (no run needed)."""

from ba3c.launcher.progress import Snapshot, fmt_evaluation, fmt_version, summary_fields


def test_the_parameter_version_says_what_it_counts():
    assert fmt_version(Snapshot(at=0.0)) == "-"
    assert fmt_version(Snapshot(at=0.0, versions={0: 828})) == "828"
    assert fmt_version(Snapshot(at=0.0, versions={1: 829, 0: 828})) == "828 (shards 828, 829)"
    fields = dict(summary_fields(Snapshot(at=1.0, versions={0: 5}), None, 1.0, None))
    assert fields["parameter version"] == "5"


def test_the_eval_score_shows_the_other_policy_and_the_trend():
    record = {"mean": 4.4, "max": 12, "version": 785, "env_frames": 402_240}
    assert fmt_evaluation(None, []) == "-"
    assert fmt_evaluation(record, [4.4]) == "4.4 (max 12, v785, 402.24k frames)"
    both = {**record, "greedy": False, "other_policy": {"greedy": True, "mean": 7.0}}
    assert fmt_evaluation(both, [2.0, 3.0, 4.4]) == (
        "4.4 (max 12, v785, 402.24k frames), greedy 7.0, trend 2.0 > 3.0 > 4.4"
    )
