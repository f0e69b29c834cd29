"""MP4 recordings: written with the bundled ffmpeg, read back, pruned to newest N + best."""

import os

import imageio_ffmpeg
import numpy as np
import pytest

from services.evaluator import videos


def frames(count, height, width):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    return [np.roll(base, i, axis=1) for i in range(count)]


def read_back(path):
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = next(reader)
    count = sum(1 for _ in reader)
    return meta["size"], count


@pytest.mark.parametrize("height,width", [(210, 160), (101, 75)])
def test_a_recording_decodes_with_every_frame_at_full_size(tmp_path, height, width):
    recorder = videos.VideoRecorder(tmp_path, fps=15)
    for frame in frames(23, height, width):
        recorder.add(frame)
    path = recorder.finish(videos.video_name(120, 7.5))
    assert path == tmp_path / "eval-v000000120-score7.5.mp4"
    size, count = read_back(path)
    # odd sides are padded by one pixel (yuv420p needs even sides), never scaled
    assert size == (width + width % 2, height + height % 2)
    assert count == 23
    assert [p.name for p in tmp_path.iterdir()] == [path.name], "temporary file left behind"


def test_a_discarded_recording_leaves_nothing(tmp_path):
    recorder = videos.VideoRecorder(tmp_path, fps=15)
    recorder.add(frames(1, 20, 20)[0])
    recorder.discard()
    assert list(tmp_path.iterdir()) == []


def test_a_frame_that_is_not_rgb_is_refused(tmp_path):
    recorder = videos.VideoRecorder(tmp_path, fps=15)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        recorder.add(np.zeros((84, 84), np.uint8))


def test_names_parse_back_to_version_and_score(tmp_path):
    for version, score in [(0, 0.0), (12, -21.0), (123456, 432.5)]:
        parsed = videos.Video.parse(tmp_path / videos.video_name(version, score))
        assert (parsed.version, parsed.score) == (version, score)
    assert videos.Video.parse(tmp_path / "holiday.mp4") is None


def test_pruning_keeps_the_newest_and_the_best_and_nothing_else_is_touched(tmp_path):
    scores = {10: 3.0, 20: 9.0, 30: 1.0, 40: 2.0, 50: 0.0}
    for version, score in scores.items():
        (tmp_path / videos.video_name(version, score)).write_bytes(b"x")
    (tmp_path / "someone-elses.mp4").write_bytes(b"x")
    deleted = videos.prune(tmp_path, keep=2)
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(
        [
            videos.video_name(50, 0.0),
            videos.video_name(40, 2.0),
            videos.video_name(20, 9.0),
            "someone-elses.mp4",
        ]
    )
    assert {p.name for p in deleted} == {videos.video_name(10, 3.0), videos.video_name(30, 1.0)}


def test_keeping_zero_keeps_only_the_best(tmp_path):
    for version, score in {1: 5.0, 2: 4.0}.items():
        (tmp_path / videos.video_name(version, score)).write_bytes(b"x")
    videos.prune(tmp_path, keep=0)
    assert [p.name for p in tmp_path.iterdir()] == [videos.video_name(1, 5.0)]


def test_the_newest_of_one_version_is_the_one_written_last(tmp_path):
    a, b = tmp_path / videos.video_name(7, 1.0), tmp_path / videos.video_name(7, 2.0)
    a.write_bytes(b"x")
    b.write_bytes(b"x")
    os.utime(a, (1, 1))
    assert [v.path for v in videos.recordings(tmp_path)] == [b, a]
