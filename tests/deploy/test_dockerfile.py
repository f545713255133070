"""The Dockerfile, checked as far as a machine without a Docker engine allows.

No image is built here. Instead the test parses the Dockerfile and runs its steps outside
Docker: the build context it COPYs (after .dockerignore) is staged, installed the way its RUN
line installs it (a fresh virtualenv, `pip install .`; dependencies come from this test
environment instead of the network), its ENTRYPOINT + CMD are started with `--help`, the
packaged mirror migrations run, and its HEALTHCHECK command is run against a real health
server that is ready, not ready, or absent.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import os
import shlex
import shutil
import site
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO
from tests.http.serving import report, serve_health
from tests.support import free_port
from toolwarden.http.app import HttpServer
from toolwarden.http.health import Readiness

DOCKERFILE = REPO / "Dockerfile"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    assert not pending, "Dockerfile ends inside a continued line"
    return result


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    return steps[last_from:]


def exec_form(args: str) -> list[str]:
    value = json.loads(args)
    assert isinstance(value, list) and all(isinstance(v, str) for v in value), args
    return value


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for keyword, args in final_stage():
        if keyword == "ENV":
            for item in shlex.split(args):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def test_base_image_user_and_ports() -> None:
    steps = instructions()
    args = {a.split("=", 1)[0]: a.split("=", 1)[1] for k, a in steps if k == "ARG" and "=" in a}
    froms = [a for k, a in steps if k == "FROM"]
    assert len(froms) == 2, "a build stage and a slim runtime stage"
    for base in froms:
        image = base.split()[0]
        assert args.get(image.strip("${}"), image) == "python:3.11-slim"
    final = final_stage()
    users = [a for k, a in final if k == "USER"]
    assert users and users[-1] not in ("root", "0"), "the worker must not run as root"
    assert any(k == "RUN" and "useradd" in a and users[-1] in a for k, a in final)
    assert ("EXPOSE", "9464") in final
    assert ("STOPSIGNAL", "SIGTERM") in final
    env = image_env()
    assert env["TOOLWARDEN_WORKER__HEALTH_ADDRESS"] == "0.0.0.0:9464"
    assert env["PATH"].startswith("/opt/toolwarden/bin:")


def test_entrypoint_is_toolwarden_worker() -> None:
    final = final_stage()
    entry = exec_form(next(a for k, a in final if k == "ENTRYPOINT"))
    cmd = exec_form(next(a for k, a in final if k == "CMD"))
    assert [*entry, *cmd][:2] == ["toolwarden", "worker"]


def copied_sources() -> list[str]:
    sources: list[str] = []
    for keyword, args in instructions():
        if keyword == "COPY" and not args.startswith("--from"):
            parts = args.split()
            sources += parts[:-1]
    return sources


def dockerignore_excludes(relative: str) -> bool:
    """Docker's rule: the last matching pattern wins; `!` re-includes."""
    excluded = False
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negate = pattern.startswith("!")
        pattern = pattern.lstrip("!").rstrip("/")
        candidates = [pattern, pattern.replace("**/", ""), f"{pattern}/*"]
        if pattern == "**" or any(
            fnmatch.fnmatch(relative, c) or relative.startswith(c + "/") for c in candidates
        ):
            excluded = not negate
    return excluded


def stage_context(target: Path) -> Path:
    """What `docker build` would send and the Dockerfile COPYs, in a fresh directory."""
    target.mkdir(parents=True, exist_ok=True)
    for source in copied_sources():
        path = REPO / source
        assert path.exists(), (
            f"the Dockerfile copies {source}, which does not exist (pip install . needs it)"
        )
        assert not dockerignore_excludes(source), f".dockerignore excludes {source}"
        if path.is_dir():
            for file in path.rglob("*"):
                relative = file.relative_to(REPO).as_posix()
                if file.is_file() and not dockerignore_excludes(relative):
                    (target / relative).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(file, target / relative)
        else:
            shutil.copy2(path, target / source)
    return target


def test_dockerignore_keeps_the_context_small() -> None:
    assert not dockerignore_excludes("pyproject.toml")
    assert not dockerignore_excludes("src/toolwarden/metrics.py")
    for junk in (".venv/bin/python", ".git/config", "tests/deploy/test_dockerfile.py", "x.db",
                 "src/toolwarden/__pycache__/metrics.cpython-311.pyc"):
        assert dockerignore_excludes(junk), junk


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Dockerfile's install step, outside Docker: a venv with `pip install .` of the context.

    Only the dependencies differ: instead of downloading them, the venv sees this test
    environment's site-packages (added after its own, so toolwarden itself comes from the
    freshly built package, not from the editable checkout).
    """
    root = tmp_path_factory.mktemp("image")
    context = stage_context(root / "src-context")
    venv = root / "opt-toolwarden"
    build_run = next(a for k, a in instructions() if k == "RUN" and "pip install" in a)
    assert build_run == "python -m venv /opt/toolwarden && /opt/toolwarden/bin/pip install ."
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    deps = [p for p in site.getsitepackages() if Path(p).is_dir()]
    purelib = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        capture_output=True, text=True, check=True, timeout=60,
    ).stdout.strip()
    (Path(purelib) / "test-deps.pth").write_text("\n".join(deps) + "\n")
    result = subprocess.run(
        [str(venv / "bin" / "pip"), "install", "--no-deps", "--disable-pip-version-check",
         str(context)],
        capture_output=True, text=True, timeout=600, cwd=context,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return venv


def run_in_image(venv: Path, argv: list[str], **env: str) -> subprocess.CompletedProcess[str]:
    image_env_vars = {k: v for k, v in image_env().items() if k != "PATH"}
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TOOLWARDEN_")}
    return subprocess.run(
        argv,
        capture_output=True, text=True, timeout=120, check=False,
        env={**clean, **image_env_vars, **env,
             "PATH": f"{venv / 'bin'}:{os.environ.get('PATH', '')}"},
    )


def test_installed_package_is_the_built_one(installed: Path) -> None:
    result = run_in_image(
        installed, [str(installed / "bin" / "python"), "-c",
                    "import toolwarden; print(toolwarden.__file__)"],
    )
    assert result.returncode == 0, result.stderr
    assert str(installed) in result.stdout, "toolwarden was not imported from the built package"


def test_entrypoint_and_cmd_start(installed: Path, tmp_path: Path) -> None:
    final = final_stage()
    argv = [*exec_form(next(a for k, a in final if k == "ENTRYPOINT")),
            *exec_form(next(a for k, a in final if k == "CMD"))]
    executable = installed / "bin" / argv[0]
    assert executable.exists(), f"pip install . created no {argv[0]} script"
    result = run_in_image(
        installed, [str(executable), *argv[1:], "--help"], TOOLWARDEN_HOME=str(tmp_path)
    )
    assert result.returncode == 0, result.stderr
    assert "Usage: toolwarden worker" in result.stdout


def test_packaged_migrations_run(installed: Path, tmp_path: Path) -> None:
    """What the compose file's mirror-migrate service runs, against SQLite here."""
    url = f"sqlite:///{tmp_path / 'mirror.db'}"
    result = run_in_image(
        installed, [str(installed / "bin" / "toolwarden"), "db", "upgrade"],
        TOOLWARDEN_HOME=str(tmp_path), TOOLWARDEN_MIRROR__URL=url,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "mirror.db").exists()


class Probe:
    ready = True

    async def __call__(self) -> Readiness:
        return report(temporal="connected", polling=self.ready, task_queue="q")


@pytest.fixture
async def image_health() -> AsyncIterator[tuple[HttpServer, Probe]]:
    probe = Probe()
    async with serve_health(probe, "0.0.0.0:0") as srv:
        yield srv, probe


def healthcheck_argv() -> list[str]:
    args = next(a for k, a in final_stage() if k == "HEALTHCHECK")
    options, sep, command = args.partition(" CMD ")
    assert sep, "HEALTHCHECK must use CMD"
    assert "--start-period=" in options and "--interval=" in options
    argv = exec_form(command.strip())
    assert argv[:2] == ["python", "-c"]
    return argv


async def test_healthcheck_follows_readyz(image_health: tuple[HttpServer, Probe]) -> None:
    server, probe = image_health
    argv = [sys.executable, *healthcheck_argv()[1:]]
    env = {**os.environ, "TOOLWARDEN_WORKER__HEALTH_ADDRESS": f"0.0.0.0:{server.port}"}

    async def check() -> int:
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        return await asyncio.wait_for(proc.wait(), timeout=30)

    assert await check() == 0
    probe.ready = False
    assert await check() != 0
    probe.ready = True
    assert await check() == 0
    env["TOOLWARDEN_WORKER__HEALTH_ADDRESS"] = f"0.0.0.0:{free_port()}"
    assert await check() != 0
