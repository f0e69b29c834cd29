"""Configuration layering: defaults -> TOML -> BA3C_* environment -> flags."""

import argparse
import subprocess
import sys

import pytest

from ba3c import config as configuration
from ba3c.config import ConfigError


def parse(argv):
    parser = argparse.ArgumentParser()
    configuration.add_flags(parser)
    return parser.parse_args(argv)


def test_defaults_follow_the_seeds_best_run():
    cfg = configuration.load(environ={})
    assert (cfg.optim.optimizer, cfg.optim.lr, cfg.optim.beta1, cfg.optim.beta2) == (
        "adam",
        0.001,
        0.8,
        0.75,
    )
    assert cfg.optim.epsilon == 1e-8 and cfg.learner.t_max == 5 and cfg.learner.gamma == 0.99


def test_each_layer_overrides_the_one_before(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text(
        '[optim]\nlr = 0.01\nbeta1 = 0.5\n[learner]\nbatch_size = 64\n[run]\nenv = "Pong"\n'
    )
    environ = {"BA3C_LR": "0.02", "BA3C_BATCH_SIZE": "32"}
    args = parse(["-l", "0.03", "--use_sync", "-g", "4"])
    cfg = configuration.load(toml, environ=environ, args=args)
    assert cfg.optim.lr == 0.03  # flag beats environment beats file
    assert cfg.learner.batch_size == 32  # environment beats file
    assert cfg.optim.beta1 == 0.5  # file beats default
    assert cfg.run.env == "Pong"
    assert cfg.paramserver.use_sync is True and cfg.paramserver.replicas_to_aggregate == 4
    assert cfg.optim.beta2 == 0.75  # untouched default


def test_a_preset_sits_over_the_defaults_and_under_every_explicit_value(tmp_path):
    cfg = configuration.load(environ={}, args=parse(["--preset", "seed-best"]))
    assert (cfg.model.model, cfg.model.fc_neurons, cfg.model.fc_splits) == ("seed", 128, 4)
    assert (cfg.model.fc_init, cfg.model.conv_init) == ("uniform", "normal")
    assert (cfg.learner.batch_size, cfg.paramserver.ps, cfg.paramserver.use_sync) == (32, 4, True)
    assert cfg.simulator.simulator_procs == 10 and cfg.evaluator.record_node is True
    toml = tmp_path / "c.toml"
    toml.write_text('[run]\npreset = "seed-best"\n[model]\nfc_neurons = 256\n')
    cfg = configuration.load(toml, environ={"BA3C_PS": "2"}, args=parse(["-b", "64"]))
    assert cfg.model.model == "seed"  # the preset named in the file applies
    assert cfg.model.fc_neurons == 256 and cfg.paramserver.ps == 2 and cfg.learner.batch_size == 64
    # a run's config.toml holds the resolved values: read back, it is the same configuration
    written = tmp_path / "resolved.toml"
    written.write_text(configuration.to_toml(cfg))
    assert configuration.load(written, environ={}) == cfg


def test_an_unknown_preset_is_refused_with_the_known_ones():
    with pytest.raises(ConfigError, match="seed-best"):
        configuration.load(environ={"BA3C_PRESET": "seed-worst"})


def test_seed_flag_names_are_accepted():
    args = parse(
        [
            "--ps",
            "4",
            "--fc_neurons",
            "256",
            "--fc_splits",
            "2",
            "--simulator_procs",
            "8",
            "--beta1",
            "0.9",
            "--beta2",
            "0.99",
            "--epsilon",
            "1e-6",
            "--save_every",
            "10",
            "-e",
            "CartPole-v1",
            "-b",
            "16",
            "-o",
            "rmsprop",
            "--eval_node",
            "--record_node",
        ]
    )
    cfg = configuration.load(environ={}, args=args)
    assert cfg.paramserver.ps == 4 and cfg.model.fc_splits == 2
    assert cfg.simulator.simulator_procs == 8 and cfg.run.env == "CartPole-v1"
    assert cfg.optim.optimizer == "rmsprop" and cfg.evaluator.record_node is True


def test_toml_written_by_to_toml_reads_back_identically(tmp_path):
    cfg = configuration.load(environ={}, args=parse(["-e", 'we"ird\\name', "--lr", "3e-4"]))
    path = tmp_path / "config.toml"
    path.write_text(configuration.to_toml(cfg))
    assert configuration.load(path, environ={}) == cfg


@pytest.mark.parametrize(
    "environ, words",
    [
        ({"BA3C_BATCH_SIZE": "many"}, "BA3C_BATCH_SIZE: batch_size expects int"),
        ({"BA3C_USE_SYNC": "perhaps"}, "use_sync expects bool"),
        ({"BA3C_OPTIMIZER": "adagrad"}, "must be one of adam, rmsprop, sgd"),
        ({"BA3C_PS": "0"}, "--ps must be at least 1"),
        ({"BA3C_GAMMA": "1.5"}, "--gamma must be in"),
    ],
)
def test_bad_values_name_the_knob(environ, words):
    with pytest.raises(ConfigError, match=words):
        configuration.load(environ=environ)


def test_unknown_toml_keys_are_errors_not_silently_ignored(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text("[optim]\nlearning_rate = 0.1\n")
    with pytest.raises(ConfigError, match="unknown key 'learning_rate' in \\[optim\\]"):
        configuration.load(path, environ={})
    path.write_text("[optimiser]\nlr = 0.1\n")
    with pytest.raises(ConfigError, match="unknown section"):
        configuration.load(path, environ={})
    path.write_text("[optim\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        configuration.load(path, environ={})


def test_every_knob_is_documented_in_help():
    out = subprocess.run(
        [sys.executable, "-m", "ba3c.cli", "config", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for k in configuration.knobs():
        assert k.flag in out, k.name
        assert k.help.split()[0] in out


def test_each_group_of_flags_says_what_it_holds():
    parser = argparse.ArgumentParser()
    configuration.add_flags(parser)
    groups = {g.title: g.description for g in parser._action_groups if g.title.endswith(" options")}
    assert set(groups) >= {f"{s} options" for s in ("run", "paramserver", "learner", "net")}
    for title, description in groups.items():
        if title == "options":
            continue
        assert description and "Config(" not in description and "=" not in description, title


def test_bad_flag_value_is_one_line_not_a_traceback():
    proc = subprocess.run(
        [sys.executable, "-m", "ba3c.cli", "config", "--lr", "fast"], capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "ba3c config: error: flag --lr: lr expects float, got 'fast'"
    )
    assert "Traceback" not in proc.stderr
