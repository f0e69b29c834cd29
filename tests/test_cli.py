"""The `ba3c` command: a command whose extra is not installed says so in one line; a bug
inside a command's code is not disguised as a missing installation."""

import sys

import pytest

from ba3c import cli


@pytest.fixture
def command(tmp_path, monkeypatch):
    """Registers `ba3c fake`, backed by a module whose source the test writes."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def make(source: str) -> None:
        (tmp_path / "ba3c_fake_command.py").write_text(source)
        sys.modules.pop("ba3c_fake_command", None)
        monkeypatch.setitem(cli.COMMANDS, "fake", ("ba3c_fake_command:main", "a test command"))

    yield make
    sys.modules.pop("ba3c_fake_command", None)


def test_a_missing_third_party_package_is_a_one_line_error(command, capsys):
    command("import tensorflow_is_not_installed_here\ndef main(argv): return 0\n")
    assert cli.main(["fake"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ba3c fake: not available in this installation")
    assert "tensorflow_is_not_installed_here" in err


def test_a_missing_command_module_is_a_one_line_error(monkeypatch, capsys):
    monkeypatch.setitem(cli.COMMANDS, "gone", ("services.no_such_service.main:main", "gone"))
    assert cli.main(["gone"]) == 2
    assert "not available in this installation" in capsys.readouterr().err


def test_a_bad_import_inside_a_command_is_raised_not_disguised(command):
    command("import services.learner.no_such_module\ndef main(argv): return 0\n")
    with pytest.raises(ModuleNotFoundError, match="services.learner.no_such_module"):
        cli.main(["fake"])
