"""Architecture rules that code review would otherwise have to remember."""

import ast
import filecmp
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

SERVICES = sorted(
    p.name for p in (ROOT / "services").iterdir() if p.is_dir() and (p / "__init__.py").exists()
)


@pytest.mark.parametrize("service", ["paramserver", "simulator"])
def test_service_does_not_import_tensorflow(service):
    """Imports every module of the service in a fresh interpreter and checks sys.modules."""
    code = (
        "import importlib, pkgutil, sys\n"
        f"import services.{service} as pkg\n"
        "for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "    importlib.import_module(m.name)\n"
        "import ba3c.cli, ba3c.config, ba3c.rpc, ba3c.rundir, ba3c.tensors, ba3c.sharding\n"
        "bad = sorted(n for n in sys.modules if n.split('.')[0] in ('tensorflow', 'keras'))\n"
        "assert not bad, bad[:5]\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


@pytest.mark.parametrize("service", SERVICES)
def test_no_service_imports_another_service(service):
    others = {f"services.{s}" for s in SERVICES if s != service}
    for path in (ROOT / "services" / service).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not any(name == o or name.startswith(o + ".") for o in others), (
                    f"{path.relative_to(ROOT)} imports {name}"
                )


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_neither_services_nor_the_core_import_the_tools():
    """ba3c/tools/ (report, monitor) sits on top of the core; nothing below it uses it."""
    paths = [*(ROOT / "services").rglob("*.py"), *(ROOT / "ba3c").rglob("*.py")]
    for path in paths:
        if (ROOT / "ba3c" / "tools") in path.parents:
            continue
        for name in _imports(path):
            assert not name.startswith("ba3c.tools"), f"{path.relative_to(ROOT)} imports {name}"


def test_generated_protobuf_code_is_up_to_date(tmp_path):
    protos = sorted((ROOT / "protos" / "ba3c").rglob("*.proto"))  # grpc/health: shipped only
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{ROOT / 'protos'}",
            f"--python_out={tmp_path}",
            f"--pyi_out={tmp_path}",
            f"--grpc_python_out={tmp_path}",
            *map(str, protos),
        ],
        check=True,
    )
    generated = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*_pb2*"))
    assert generated, "protoc generated nothing"
    stale = [
        str(p)
        for p in generated
        if not (ROOT / p).exists() or not filecmp.cmp(tmp_path / p, ROOT / p, shallow=False)
    ]
    assert not stale, f"run `make protos` and commit: {stale}"


def test_every_module_says_what_it_is_for():
    missing = []
    for folder in ("ba3c", "services"):
        for path in (ROOT / folder).rglob("*.py"):
            if "_pb2" in path.name:
                continue
            if ast.get_docstring(ast.parse(path.read_text())) is None:
                missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"modules without a docstring: {missing}"


def test_the_ba3c_command_lists_every_service():
    out = subprocess.run(
        [sys.executable, "-m", "ba3c.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path("/"),
    ).stdout
    for name in ("paramserver", "learner", "simulator", "evaluator", "train"):
        assert f"  {name} " in out
