"""The run directory: written once, secrets private, addresses and targets atomic."""

import json
import os
import stat
import threading

import pytest

from ba3c import config as configuration
from ba3c.rundir import (
    RunDir,
    RunDirError,
    Stopped,
    atomic_write,
    checkpoint_name,
    checkpoint_version,
)


def test_create_writes_config_and_a_private_secret_once(tmp_path):
    run_dir = RunDir(tmp_path / "run")
    cfg = configuration.Config()
    cfg.optim.lr = 0.5
    assert run_dir.create(cfg) is True
    token = run_dir.read_secret()
    assert len(token) >= 32
    assert stat.S_IMODE(run_dir.secret_path.stat().st_mode) == 0o600
    for name in ("addresses", "targets", "checkpoints", "tensorboard", "videos", "logs"):
        assert (run_dir.path / name).is_dir()

    cfg.optim.lr = 0.9  # a second start (resume, requeue) keeps what the first wrote
    assert run_dir.create(cfg) is False
    assert run_dir.read_secret() == token
    assert run_dir.load_config(environ={}).optim.lr == 0.5


def test_a_world_readable_secret_is_refused(tmp_path):
    run_dir = RunDir(tmp_path)
    run_dir.create(configuration.Config())
    os.chmod(run_dir.secret_path, 0o644)
    with pytest.raises(RunDirError, match="readable by others.*chmod 600"):
        run_dir.read_secret()


def test_a_missing_secret_says_how_to_make_one(tmp_path):
    with pytest.raises(RunDirError, match="does not exist.*ba3c train"):
        RunDir(tmp_path).read_secret()


def test_the_secret_ends_with_a_newline_that_readers_strip(tmp_path):
    """docs/contracts.md: the file ends with a newline; a token is the stripped content, so
    a secret written by another tool (no newline, CRLF) reads the same."""
    run_dir = RunDir(tmp_path)
    run_dir.create(configuration.Config())
    text = run_dir.secret_path.read_text()
    assert text.endswith("\n") and text.count("\n") == 1
    token = run_dir.read_secret()
    assert token == text[:-1]
    for written in (token, token + "\r\n", " " + token + "\n\n"):
        run_dir.secret_path.write_text(written)
        assert run_dir.read_secret() == token


def test_atomic_write_never_shows_a_partial_file(tmp_path):
    path = tmp_path / "f"
    big_a, big_b = b"a" * 1_000_000, b"b" * 1_000_000
    atomic_write(path, big_a)
    stop = threading.Event()
    seen = set()

    def reader():
        while not stop.is_set():
            seen.add(path.read_bytes())

    t = threading.Thread(target=reader)
    t.start()
    for i in range(40):
        atomic_write(path, big_b if i % 2 else big_a)
    stop.set()
    t.join()
    assert seen <= {big_a, big_b} and seen
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp left


def test_an_exclusive_write_keeps_what_the_first_writer_wrote(tmp_path):
    path = tmp_path / "config.toml"
    assert atomic_write(path, "first", exclusive=True) is True
    assert atomic_write(path, "second", exclusive=True) is False
    assert path.read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]  # no temp left


def test_racing_starters_write_one_whole_config(tmp_path):
    run_dir = RunDir(tmp_path / "run")
    results = []
    threads = [
        threading.Thread(target=lambda: results.append(run_dir.create(configuration.Config())))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [False] * 7 + [True]
    assert run_dir.config_path.read_text() == configuration.to_toml(configuration.Config())


def test_checkpoint_names_are_parsed_in_one_place(tmp_path):
    run_dir = RunDir(tmp_path)
    assert run_dir.checkpoint_files(0) == [] and run_dir.newest_checkpoint_version(0) is None
    folder = run_dir.checkpoints(0)
    folder.mkdir(parents=True)
    for name in (checkpoint_name(7), checkpoint_name(12), "ckpt-12.ckpt", checkpoint_name(3)):
        (folder / name).write_bytes(b"")
    (folder / (checkpoint_name(99) + ".corrupt")).write_bytes(b"")
    assert [checkpoint_version(p) for p in run_dir.checkpoint_files(0)] == [12, 7, 3]
    assert run_dir.newest_checkpoint_version(0) == 12


def test_addresses_and_targets_are_published_and_listed(tmp_path):
    run_dir = RunDir(tmp_path / "r").ensure()
    run_dir.write_address("paramserver", 1, "127.0.0.1:5001")
    run_dir.write_address("paramserver", 0, "127.0.0.1:5000")
    run_dir.write_address("learner", 0, "127.0.0.1:6000")
    assert run_dir.addresses("paramserver") == {0: "127.0.0.1:5000", 1: "127.0.0.1:5001"}
    assert run_dir.wait_for_address("learner", 0, timeout=1) == "127.0.0.1:6000"
    with pytest.raises(TimeoutError):
        run_dir.wait_for_address("learner", 1, timeout=0.2)
    stop = threading.Event()
    stop.set()
    with pytest.raises(Stopped) as stopped:  # asked to stop: not a timeout
        run_dir.wait_for_address("learner", 1, stop=stop)
    assert not isinstance(stopped.value, TimeoutError)

    run_dir.write_target("learner", 0, "127.0.0.1:9100")
    entry = json.loads(run_dir.target_path("learner", 0).read_text())
    assert entry == [
        {"targets": ["127.0.0.1:9100"], "labels": {"run": "r", "role": "learner", "index": "0"}}
    ]
