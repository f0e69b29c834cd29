"""What a run is doing right now, and the live view of it.

A `Snapshot` is read from the same places an operator would look: each shard's Status
RPC (versions, env frames), each process's /metrics endpoint (agent steps, train steps,
online score), and RUN_DIR/eval.jsonl (evaluation scores). Nothing here changes the run.
"""

from __future__ import annotations

import json
import time
import urllib.request
from dataclasses import dataclass, field

import grpc
from prometheus_client.parser import text_string_to_metric_families

from ba3c import rpc
from ba3c.rundir import RunDir
from ba3c.v1 import paramserver_pb2 as ps_pb
from ba3c.v1 import paramserver_pb2_grpc as ps_grpc

# What the view shows, and the metric each figure is read from (summed over processes).
AGENT_STEPS = "ba3c_simulator_agent_steps_total"
TRAIN_STEPS = "ba3c_learner_train_steps_total"
ONLINE_RETURN = "ba3c_learner_online_episode_return"  # histogram: _sum and _count
TREND = 3  # evaluations shown in the live view's trend


@dataclass
class Snapshot:
    at: float
    versions: dict[int, int] = field(default_factory=dict)  # shard -> version
    env_frames: int = 0
    agent_steps: float = 0.0
    train_steps: float = 0.0
    online_return_sum: float = 0.0
    online_return_count: float = 0.0
    evaluation: dict | None = None
    recent_means: list[float] = field(default_factory=list)  # the last evaluations' means

    @property
    def version(self) -> int:
        return min(self.versions.values()) if self.versions else 0


class Observer:
    """Reads snapshots of one run; keeps channels open between reads."""

    def __init__(self, run_dir: RunDir, num_shards: int):
        self.run_dir = run_dir
        self.num_shards = num_shards
        self._token = run_dir.read_secret()
        self._channels: dict[str, grpc.Channel] = {}

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    def _stub(self, address: str) -> ps_grpc.ParameterServerStub:
        if address not in self._channels:
            self._channels[address] = rpc.make_channel(address, self._token)
        return ps_grpc.ParameterServerStub(self._channels[address])

    def shard_status(self) -> dict[int, ps_pb.StatusResponse]:
        out = {}
        for index, address in self.run_dir.addresses("paramserver").items():
            if index >= self.num_shards:
                continue
            try:
                out[index] = self._stub(address).Status(
                    ps_pb.StatusRequest(), timeout=2, wait_for_ready=False
                )
            except grpc.RpcError:
                continue
        return out

    def metrics(self) -> dict[str, float]:
        """Every sample of every process's /metrics, summed by sample name."""
        totals: dict[str, float] = {}
        for target in sorted(self.run_dir.sub("targets").glob("*.json")):
            try:
                address = json.loads(target.read_text())[0]["targets"][0]
                with urllib.request.urlopen(f"http://{address}/metrics", timeout=2) as reply:
                    text = reply.read().decode()
            except (OSError, ValueError, KeyError, IndexError):
                continue
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    totals[sample.name] = totals.get(sample.name, 0.0) + sample.value
        return totals

    def snapshot(self) -> Snapshot:
        snap = Snapshot(at=time.monotonic())
        for index, status in self.shard_status().items():
            snap.versions[index] = status.version
            snap.env_frames = max(snap.env_frames, status.env_frames)
        metrics = self.metrics()
        snap.agent_steps = metrics.get(AGENT_STEPS, 0.0)
        snap.train_steps = metrics.get(TRAIN_STEPS, 0.0)
        snap.online_return_sum = metrics.get(ONLINE_RETURN + "_sum", 0.0)
        snap.online_return_count = metrics.get(ONLINE_RETURN + "_count", 0.0)
        evaluations = self.run_dir.evaluations()
        snap.evaluation = evaluations[-1] if evaluations else None
        snap.recent_means = [r["mean"] for r in evaluations[-TREND:] if "mean" in r]
        return snap


def rate(now: Snapshot, before: Snapshot | None, attr: str) -> float:
    if before is None or now.at <= before.at:
        return 0.0
    return (getattr(now, attr) - getattr(before, attr)) / (now.at - before.at)


def online_score(now: Snapshot, before: Snapshot | None) -> float | None:
    """Mean return of the episodes that ended since `before` (or ever, if none did)."""
    if before is not None and now.online_return_count > before.online_return_count:
        return (now.online_return_sum - before.online_return_sum) / (
            now.online_return_count - before.online_return_count
        )
    if now.online_return_count:
        return now.online_return_sum / now.online_return_count
    return None


def fmt_count(value: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.2f}{unit}"
    return f"{value:.0f}"


def fmt_duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600:d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def fmt_version(snap: Snapshot) -> str:
    """How many updates the parameters have had: the run's version (the smallest over the
    shards), with each shard's own when there are several ("828 (shards 828, 829)")."""
    if not snap.versions:
        return "-"
    if len(snap.versions) == 1:
        return str(snap.version)
    shards = ", ".join(str(v) for _, v in sorted(snap.versions.items()))
    return f"{snap.version} (shards {shards})"


def fmt_evaluation(ev: dict | None, recent_means: list[float]) -> str:
    """The newest evaluation, the other policy's mean (--eval_both) and the trend."""
    if not ev:
        return "-"
    text = (
        f"{ev['mean']:.1f} (max {ev['max']:.0f}, v{ev['version']}, "
        f"{fmt_count(ev.get('env_frames', 0))} frames)"
    )
    other = ev.get("other_policy")
    if isinstance(other, dict):
        text += f", {'greedy' if other.get('greedy') else 'sampled'} {other['mean']:.1f}"
    if len(recent_means) > 1:
        text += ", trend " + " > ".join(f"{m:.1f}" for m in recent_means)
    return text


def summary_fields(
    now: Snapshot, before: Snapshot | None, elapsed: float, score: float | None
) -> list[tuple[str, str]]:
    """(label, value) pairs shown by both the live table and the plain progress lines."""
    eval_text = fmt_evaluation(now.evaluation, now.recent_means)
    return [
        ("elapsed", fmt_duration(elapsed)),
        (
            "env frames",
            f"{fmt_count(now.env_frames)} ({fmt_count(rate(now, before, 'env_frames'))}/s)",
        ),
        (
            "agent steps",
            f"{fmt_count(now.agent_steps)} ({fmt_count(rate(now, before, 'agent_steps'))}/s)",
        ),
        ("train steps", f"{fmt_count(now.train_steps)} ({rate(now, before, 'train_steps'):.1f}/s)"),
        ("parameter version", fmt_version(now)),
        ("online score", "-" if score is None else f"{score:.1f}"),
        ("eval score", eval_text),
    ]
