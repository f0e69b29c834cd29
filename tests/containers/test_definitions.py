"""Every Apptainer definition in containers/: the header and sections Apptainer needs, %files
that exist, a %runscript that starts a real `ba3c` subcommand, and a %post that installs only
what that service needs (TensorFlow for the learner and the evaluator, never for the others).

Building the images needs Apptainer, which cannot be installed here; `make containers-check`
runs each recipe's %post and %test under bubblewrap instead."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from ba3c.cli import COMMANDS
from tests.support import ROOT

spec = importlib.util.spec_from_file_location("containers_check", ROOT / "containers" / "check.py")
check = importlib.util.module_from_spec(spec)
sys.modules["containers_check"] = check
spec.loader.exec_module(check)

SERVICES = ("paramserver", "learner", "simulator", "evaluator")
NEEDS_TENSORFLOW = {"paramserver": False, "simulator": False, "learner": True, "evaluator": True}
REQUIRED = ("labels", "help", "environment", "post", "runscript", "test")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def definition(name: str):
    return check.parse(ROOT / "containers" / f"{name}.def")


def pip_installs(post: str) -> list[str]:
    """The requirement arguments of every `pip install` in a %post."""
    found = []
    for line in post.splitlines():
        words = shlex.split(line, comments=True)
        if "pip" in words and "install" in words:
            found += [w for w in words[words.index("install") + 1 :] if not w.startswith("-")]
    return found


VARIANTS = {"learner-gpu": "learner"}  # variant: the service it runs


def test_there_is_one_definition_per_service_and_a_base():
    names = sorted(p.stem for p in (ROOT / "containers").glob("*.def"))
    assert names == sorted(("base", *SERVICES, *VARIANTS))
    assert check.SERVICES == SERVICES


def test_the_gpu_learner_installs_tensorflow_for_cuda_and_grows_gpu_memory():
    d = definition("learner-gpu")
    for section in REQUIRED:
        assert d.sections.get(section, "").strip(), f"learner-gpu.def has no %{section}"
    assert d.header == {"Bootstrap": "localimage", "From": "containers/base.sif"}
    labels = dict(line.split(None, 1) for line in d.sections["labels"].splitlines() if line)
    assert labels["ba3c.role"] == "learner"
    assert pip_installs(d.sections["post"]) == ["/opt/ba3c/src[gpu]"]
    gpu = " ".join(PYPROJECT["project"]["optional-dependencies"]["gpu"])
    assert "tensorflow[and-cuda]" in gpu
    assert "TF_FORCE_GPU_ALLOW_GROWTH=true" in d.sections["environment"]
    assert d.sections["runscript"].strip() == 'exec ba3c learner "$@"'


def test_images_ignore_a_users_local_site_packages():
    assert "PYTHONNOUSERSITE=1" in definition("base").sections["environment"]


@pytest.mark.parametrize("name", ("base", *SERVICES))
def test_header_sections_and_labels(name):
    d = definition(name)
    for section in REQUIRED:
        assert d.sections.get(section, "").strip(), f"{name}.def has no %{section}"
    labels = dict(line.split(None, 1) for line in d.sections["labels"].splitlines() if line)
    assert labels["ba3c.role"] == name
    assert labels["org.opencontainers.image.title"] == f"ba3c-{name}"
    if name == "base":
        assert d.header["Bootstrap"] == "docker"
        assert re.fullmatch(r"python:3\.11(-[\w.-]+)?", d.header["From"]), d.header
    else:
        # Services start from the base, so the package is installed once.
        assert d.header == {"Bootstrap": "localimage", "From": "containers/base.sif"}


def test_base_copies_the_package_and_installs_the_core_without_extras():
    d = definition("base")
    sources = [src for src, _ in d.files()]
    for src in sources:
        assert (ROOT / src).exists(), f"%files source {src} does not exist"
    readme = PYPROJECT["project"].get("readme")
    for needed in ("pyproject.toml", "ba3c", "services", *([readme] if readme else [])):
        assert needed in sources, f"base.def does not copy {needed}"
    assert pip_installs(d.sections["post"]) == ["/opt/ba3c/src"]
    core = " ".join(PYPROJECT["project"]["dependencies"]).lower()
    assert "tensorflow" not in core, "the core dependencies must not pull TensorFlow"


@pytest.mark.parametrize("name", SERVICES)
def test_service_post_installs_only_what_it_needs(name):
    d = definition(name)
    installs = pip_installs(d.sections["post"])
    assert not d.files(), f"{name}.def copies files; the base holds the package"
    if NEEDS_TENSORFLOW[name]:
        assert installs == ["/opt/ba3c/src[cpu]"], installs
        cpu = " ".join(PYPROJECT["project"]["optional-dependencies"]["cpu"])
        assert "tensorflow" in cpu
        assert "import tensorflow" in d.sections["test"]
    else:
        assert installs == [], f"{name} needs nothing beyond the base, installs {installs}"
        assert 'find_spec("tensorflow") is not None' in d.sections["test"]


@pytest.mark.parametrize("name", SERVICES)
def test_runscript_and_test_start_the_real_subcommand(name):
    d = definition(name)
    assert d.sections["runscript"].strip() == f'exec ba3c {name} "$@"'
    assert name in COMMANDS
    assert f"import services.{name}.main" in d.sections["test"]
    assert f"ba3c {name} --help" in d.sections["test"]


@pytest.mark.parametrize("name", ("base", "paramserver", "simulator"))
def test_runscript_help_runs_with_the_installed_package(name):
    """The %runscript, run as Apptainer would (sh, arguments after it), with `ba3c` on PATH.
    (learner and evaluator are left out: their --help only adds TensorFlow's import time.)"""
    d = definition(name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    done = subprocess.run(
        ["/bin/sh", "-ec", d.sections["runscript"], "runscript", "--help"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert ("usage: ba3c" if name == "base" else f"usage: ba3c {name}") in done.stdout


def test_build_script_knows_every_definition_and_hetjob_finds_its_images():
    build = (ROOT / "containers" / "build.sh").read_text()
    assert f"SERVICES=({' '.join(SERVICES)})" in build
    assert subprocess.run(["bash", "-n", str(ROOT / "containers" / "build.sh")]).returncode == 0
    hetjob = (ROOT / "slurm" / "hetjob.sh").read_text()
    assert "$BA3C_IMAGES/$role.sif" in hetjob
    assert "ROLES=(paramserver learner simulator evaluator)" in hetjob
