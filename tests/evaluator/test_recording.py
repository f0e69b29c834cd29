"""Recording an Atari evaluation: full-resolution MP4s from the service and from offline."""

import json

import imageio_ffmpeg

from ba3c import models
from tests.evaluator import cluster
from tests.evaluator.test_service import START, config_of, evaluate_offline
from tests.support import wait_for

STEPS = 40  # agent steps per episode: a short but real Breakout recording


def read_back(path):
    """((width, height), frame count) of an MP4, decoded by ffmpeg."""
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    return tuple(meta["size"]), sum(1 for _ in reader)


def test_the_first_episode_of_an_atari_evaluation_is_saved_as_a_full_size_mp4(
    run_dir_factory, processes, tmp_path
):
    run_dir = run_dir_factory(
        env="ALE/Breakout-v5", eval_episodes=1, eval_max_steps=STEPS, keep_videos=2
    )
    cfg = config_of(run_dir)
    [shard] = cluster.start_shards(processes, run_dir, 1)
    cluster.initialize(run_dir, cfg, models.get_weights(cluster.build_model(cfg)))
    evaluator = processes("evaluator", "evaluator", "--run-dir", str(run_dir.path), "--record")
    [result] = wait_for(lambda: cluster.evaluations(run_dir), START, "an evaluation")
    assert result["lengths"] == [STEPS]

    video = run_dir.path / "videos" / result["video"]
    assert result["video"] == f"eval-v000000000-score{result['scores'][0]:g}.mp4"
    # the screen, not the 84x84 input: one frame after reset plus one per agent step
    assert read_back(video) == ((160, 210), STEPS + 1)
    assert [p.name for p in (run_dir.path / "videos").iterdir()] == [video.name]
    assert evaluator.stop() == 0

    assert shard.stop() == 0
    done = evaluate_offline(
        "--checkpoint",
        str(run_dir.path),
        "--record",
        "--json",
        "--video-dir",
        str(tmp_path / "offline"),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    offline = json.loads(done.stdout)
    assert offline["scores"] == result["scores"]
    assert offline["video"] == result["video"]
    assert read_back(tmp_path / "offline" / offline["video"]) == ((160, 210), STEPS + 1)
