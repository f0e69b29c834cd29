#!/usr/bin/env python3
"""Builds each Apptainer definition in containers/ the way `apptainer build` would, but in a
Debian root filesystem under bubblewrap, for machines where Apptainer cannot be installed.

    python3 containers/check.py [--work DIR] [NAME ...]      (or: make containers-check)

For every definition (base first, then the services that start From it) it copies the
parent's root filesystem, copies the `%files`, runs `%post` with /bin/sh -e, then runs
`%test` and `%runscript --help` with `%environment` sourced, and prints one line per image:
whether the recipe installs, whether the service starts, and how much the step added. Then
(unless --no-run) the four service images train CartPole together for a minute or so, each
in its own root filesystem, meeting in one bound run directory as under Slurm.

What stands in for what: `Bootstrap: docker / From: python:3.11-slim-bookworm` is emulated
by `debootstrap --variant=minbase bookworm` plus Debian's python3 (3.11) and pip, without
the EXTERNALLY-MANAGED marker (the python image has none); `Bootstrap: localimage` is a copy
of the parent's root filesystem. The host's pip configuration, package mirrors and CA
bundle (/etc/pip.conf, PIP_* variables, the folders they point at) are visible to pip
inside, as a site's would be. Needs root, debootstrap and bwrap (Debian packages); takes minutes and
downloads a few hundred MB the first time (kept under --work).

`parse()` is also what tests/containers uses to check the definition files.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Run as a script by the host's python3 (`make containers-check`), outside the virtual
# environment: ba3c.rundir needs only the standard library.
sys.path.insert(0, str(ROOT))
from ba3c.rundir import RunDir  # noqa: E402

CONTAINERS = ROOT / "containers"
SERVICES = ("paramserver", "learner", "simulator", "evaluator")
SECTION = re.compile(r"^%(\w+)\b(.*)$")
DEBIAN_MIRROR = "http://deb.debian.org/debian"
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"
PYTHON_PACKAGES = ("python3", "python3-pip", "python3-venv", "ca-certificates")


@dataclass
class Definition:
    """One Apptainer definition file: its header (Bootstrap, From, ...) and its sections."""

    name: str
    path: Path
    header: dict[str, str] = field(default_factory=dict)
    sections: dict[str, str] = field(default_factory=dict)

    def files(self) -> list[tuple[str, str]]:
        """(source, destination) pairs of %files; the destination defaults to the source."""
        pairs = []
        for line in self.sections.get("files", "").splitlines():
            words = line.split("#", 1)[0].split()
            if words:
                pairs.append((words[0], words[1] if len(words) > 1 else words[0]))
        return pairs


def parse(path: Path) -> Definition:
    """Splits a definition file into header keys and %sections (body text, dedented)."""
    definition = Definition(name=path.stem, path=path)
    current: str | None = None
    body: list[str] = []

    def close():
        if current is not None:
            definition.sections[current] = dedent("\n".join(body))

    for line in path.read_text().splitlines():
        match = SECTION.match(line)
        if match:
            close()
            current, body = match.group(1), []
        elif current is not None:
            body.append(line)
        elif line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition(":")
            if not sep:
                raise ValueError(f"{path}: header line without 'Key: value': {line!r}")
            definition.header[key.strip()] = value.strip()
    close()
    return definition


def dedent(text: str) -> str:
    lines = text.splitlines()
    indents = [len(x) - len(x.lstrip()) for x in lines if x.strip()]
    cut = min(indents, default=0)
    return "\n".join(x[cut:] for x in lines).strip("\n") + "\n"


def definitions() -> dict[str, Definition]:
    """base first, then the services, as they must be built."""
    return {name: parse(CONTAINERS / f"{name}.def") for name in ("base", *SERVICES)}


# ---------------------------------------------------------------------------------------
# Building under bubblewrap


def run(args: list[str], log, **kwargs) -> int:
    log.write(f"$ {' '.join(args)}\n".encode())
    log.flush()
    return subprocess.run(args, stdout=log, stderr=subprocess.STDOUT, **kwargs).returncode


def host_pip_binds() -> list[str]:
    """Read-only binds of the host's pip configuration and the local indexes it names."""
    binds: list[str] = []
    paths = {Path("/etc/pip.conf")}
    texts = [p.read_text() for p in paths if p.exists()]
    texts += [v for k, v in os.environ.items() if k.startswith("PIP_")]
    for text in texts:
        for found in re.findall(r"(?:file://)?(/[\w./-]+)", text):
            paths.add(Path(found))
    for p in sorted(paths):
        # CA certificates come from the root filesystem's own ca-certificates package.
        if p.exists() and not p.is_relative_to("/etc/ssl"):
            binds += ["--ro-bind", str(p), str(p)]
    return binds


def bwrap_args(rootfs: Path, env: dict[str, str] | None = None, binds: list[str] = ()) -> list[str]:
    """bwrap options that enter `rootfs` as /, sharing the host's network."""
    base_env = {
        "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/root",
        "LANG": "C.UTF-8",
        "DEBIAN_FRONTEND": "noninteractive",
    }
    base_env.update({k: v for k, v in os.environ.items() if k.startswith("PIP_")})
    ca_binds: list[str] = []
    if Path(HOST_CA).exists():
        # The site's CA bundle (a proxy may re-sign HTTPS), for pip only.
        ca_binds = ["--ro-bind", HOST_CA, "/etc/host-ca-certificates.crt"]
        base_env["PIP_CERT"] = "/etc/host-ca-certificates.crt"
    base_env.update(env or {})
    args = [
        "bwrap",
        "--bind",
        str(rootfs),
        "/",
        "--dev",
        "/dev",
        "--proc",
        "/proc",
        "--perms",
        "1777",
        "--tmpfs",
        "/tmp",
        "--ro-bind",
        "/etc/resolv.conf",
        "/etc/resolv.conf",
        *ca_binds,
        *host_pip_binds(),
        *binds,
        "--unshare-pid",
        "--die-with-parent",
        "--clearenv",
    ]
    for key, value in base_env.items():
        args += ["--setenv", key, value]
    return args


def bwrap(
    rootfs: Path, command: list[str], log, env: dict[str, str] | None = None, binds: list[str] = ()
) -> int:
    return run([*bwrap_args(rootfs, env, binds), *command], log)


def copy_tree(src: Path, dst: Path) -> None:
    if dst.exists():
        shutil.rmtree(dst)
    subprocess.run(["cp", "-a", "--reflink=auto", str(src), str(dst)], check=True)


def python_rootfs(work: Path, log) -> Path:
    """Debian bookworm with python3 (3.11) and pip: the stand-in for python:3.11-slim."""
    ready = work / "rootfs-python"
    if (ready / ".ready").exists():
        return ready
    debian = work / "rootfs-debootstrap"
    if not (debian / ".ready").exists():
        if debian.exists():
            shutil.rmtree(debian)
        if (
            run(["debootstrap", "--variant=minbase", "bookworm", str(debian), DEBIAN_MIRROR], log)
            != 0
        ):
            raise SystemExit(f"debootstrap failed; see {log.name}")
        (debian / ".ready").touch()
    copy_tree(debian, ready)
    script = (
        "apt-get update -qq && apt-get install -y -qq --no-install-recommends "
        + " ".join(PYTHON_PACKAGES)
        + " && rm -f /usr/lib/python3*/EXTERNALLY-MANAGED && apt-get clean"
    )
    if bwrap(ready, ["/bin/sh", "-ec", script], log) != 0:
        raise SystemExit(f"installing python3 in the root filesystem failed; see {log.name}")
    (ready / ".ready").touch()
    return ready


def size_mb(path: Path) -> float:
    out = subprocess.run(["du", "-sm", str(path)], capture_output=True, text=True).stdout
    return float(out.split()[0]) if out else 0.0


@dataclass
class Result:
    name: str
    post: str = "not run"
    test: str = "not run"
    runscript: str = "not run"
    added_mb: float = 0.0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.post == self.test == self.runscript == "ok"


def build(definition: Definition, parent: Path, work: Path, log) -> tuple[Result, Path]:
    """Copies `parent`, applies %files and %post, then runs %test and %runscript --help."""
    started = time.monotonic()
    result = Result(definition.name)
    rootfs = work / f"rootfs-{definition.name}"
    copy_tree(parent, rootfs)
    before = size_mb(rootfs)
    for src, dst in definition.files():
        target = rootfs / dst.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        source = ROOT / src
        if source.is_dir():
            shutil.copytree(
                source,
                target,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
            )
        else:
            shutil.copy2(source, target)
    environment = definition.sections.get("environment", "")
    (rootfs / ".ba3c-environment").write_text(environment)
    code = bwrap(rootfs, ["/bin/sh", "-ec", definition.sections.get("post", "true")], log)
    result.post = "ok" if code == 0 else f"failed ({code})"
    if code == 0:
        prelude = ". /.ba3c-environment\n"
        code = bwrap(rootfs, ["/bin/sh", "-ec", prelude + definition.sections.get("test", "")], log)
        result.test = "ok" if code == 0 else f"failed ({code})"
        runscript = definition.sections.get("runscript", "")
        code = bwrap(rootfs, ["/bin/sh", "-ec", prelude + runscript, "runscript", "--help"], log)
        result.runscript = "ok" if code == 0 else f"failed ({code})"
    result.added_mb = size_mb(rootfs) - before
    result.seconds = time.monotonic() - started
    return result, rootfs


SMOKE_FLAGS = [
    "--env",
    "CartPole-v1",
    "--ps",
    "1",
    "--learners",
    "1",
    "--pools",
    "1",
    "--no-record_node",
    "--eval_every",
    "5",
    "--eval_episodes",
    "1",
    "--simulator_procs",
    "2",
    "--batch_size",
    "32",
    "--save_every",
    "20",
]


def newest_version(run_dir: Path) -> int:
    version = RunDir(run_dir).newest_checkpoint_version(0)
    return -1 if version is None else version


def evaluated_versions(run_dir: Path) -> list[int]:
    return [record["version"] for record in RunDir(run_dir).evaluations()]


def smoke_run(rootfs: dict[str, Path], work: Path, log, timeout: float = 300) -> str:
    """The four images train CartPole together, each service in its own root filesystem,
    meeting in one bound run directory as under Slurm: "ok" once the shard checkpointed a
    trained version and the evaluator evaluated one, and every service stopped cleanly."""
    run_dir = work / "smoke-run"
    if run_dir.exists():
        shutil.rmtree(run_dir)
    run_dir.mkdir()
    binds = ["--bind", str(run_dir), str(run_dir)]
    if (
        bwrap(
            rootfs["paramserver"],
            ["ba3c", "init-run", "--run-dir", str(run_dir), *SMOKE_FLAGS],
            log,
            binds=binds,
        )
        != 0
    ):
        return "init-run failed"
    procs: dict[str, subprocess.Popen] = {}
    verdict = f"no trained checkpoint and evaluation within {timeout:.0f} s"
    try:
        for role in SERVICES:
            procs[role] = subprocess.Popen(
                [
                    *bwrap_args(rootfs[role], binds=binds),
                    "ba3c",
                    role,
                    "--run-dir",
                    str(run_dir),
                    "--index",
                    "0",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                # bwrap ignores SIGTERM (it would die and take the sandbox with it); the
                # service inside installs its own handler and stops cleanly.
                preexec_fn=lambda: signal.signal(signal.SIGTERM, signal.SIG_IGN),
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = [r for r, p in procs.items() if p.poll() is not None]
            if dead:
                verdict = f"{', '.join(dead)} exited early"
                break
            if newest_version(run_dir) > 0 and any(v > 0 for v in evaluated_versions(run_dir)):
                verdict = "ok"
                break
            time.sleep(1)
    finally:
        for role in reversed(SERVICES):  # the shard last: it writes a final checkpoint
            proc = procs.get(role)
            if proc is None or proc.poll() is not None:
                continue
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    codes = {role: p.returncode for role, p in procs.items()}
    if verdict == "ok" and any(codes.values()):
        verdict = f"stopped with exit codes {codes}"
    if verdict == "ok":
        verdict += (
            f" (shard version {newest_version(run_dir)}, "
            f"{len(evaluated_versions(run_dir))} evaluations)"
        )
    return verdict


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--work",
        type=Path,
        default=ROOT / "build" / "containers-check",
        help="Where root filesystems and the log go (kept between runs).",
    )
    parser.add_argument(
        "names",
        nargs="*",
        help="Definitions to check (default: all); the base is always built first.",
    )
    parser.add_argument(
        "--no-run",
        action="store_true",
        help="Skip the smoke run (the four images training CartPole).",
    )
    args = parser.parse_args(argv)
    for tool in ("bwrap", "debootstrap"):
        if shutil.which(tool) is None:
            parser.exit(
                2, f"check.py: {tool} is missing (apt-get install bubblewrap debootstrap)\n"
            )
    if os.geteuid() != 0:
        parser.exit(2, "check.py: needs root (debootstrap and bwrap --bind /)\n")
    wanted = set(args.names or SERVICES)
    unknown = wanted - set(SERVICES) - {"base"}
    if unknown:
        parser.exit(2, f"check.py: no definition named {', '.join(sorted(unknown))}\n")
    args.work.mkdir(parents=True, exist_ok=True)
    log_path = args.work / "check.log"
    results: list[Result] = []
    with open(log_path, "wb") as log:
        print(f"check.py: log in {log_path}", flush=True)
        python = python_rootfs(args.work, log)
        defs = definitions()
        base_result, base_rootfs = build(defs["base"], python, args.work, log)
        results.append(base_result)
        print(row(base_result), flush=True)
        built: dict[str, Path] = {}
        if base_result.ok:
            for name in SERVICES:
                if name not in wanted:
                    continue
                result, built[name] = build(defs[name], base_rootfs, args.work, log)
                results.append(result)
                print(row(result), flush=True)
        failed = [r.name for r in results if not r.ok]
        if not failed and set(built) == set(SERVICES) and not args.no_run:
            print("smoke run   the four images train CartPole together ...", flush=True)
            verdict = smoke_run(built, args.work, log)
            print(f"smoke run   {verdict}", flush=True)
            if not verdict.startswith("ok"):
                failed.append("smoke run")
        for rootfs in built.values():
            shutil.rmtree(rootfs)
    print(
        "check.py: "
        + (
            f"FAILED: {', '.join(failed)} (see {log_path})"
            if failed
            else "every recipe installs and its service starts"
        )
    )
    return 1 if failed else 0


def row(r: Result) -> str:
    return (
        f"{r.name:<12} %post {r.post:<12} %test {r.test:<12} runscript --help "
        f"{r.runscript:<12} +{r.added_mb:,.0f} MB  {r.seconds:.0f} s"
    )


if __name__ == "__main__":
    sys.exit(main())
