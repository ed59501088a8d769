"""What users install: the sdist and the wheel built from it (`python -m build`, as pipx and packagers do),
installed with its dependencies from the package index into a fresh virtual environment outside the
source tree, and run from there without PYTHONPATH: `--version`, the demo in a real terminal, and
`init --non-interactive` then `doctor` against lab registries configured from init's snippets.

Needs the package index (PyPI or the configured mirror) and tmux; about two minutes on a quiet machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import geo_tui
from tests.support.distribution import free_port
from tests.support.lab import LabInstance
from tests.support.served import Served
from tests.support.terminal import Terminal, percents, processes_mentioning, terminals

SOURCE = Path(__file__).resolve().parents[2]
IGNORED = (".git", "build", "dist", "*.egg-info", "__pycache__", ".venv", ".*_cache", ".hypothesis")


@dataclass
class Installed:
    root: Path  # outside the source tree: the commands run here
    wheel: Path
    sdist: Path
    venv: Path

    @property
    def geo_tui(self) -> str:
        return str(self.venv / "bin" / "geo-tui")

    @property
    def env(self) -> dict[str, str]:
        """The test's environment without PYTHONPATH: the venv's geo_tui, never this checkout's."""
        return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [self.geo_tui, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.root,
            env=self.env,
            stdin=subprocess.DEVNULL,
        )


def _run(*command: str | Path, cwd: Path, env: dict[str, str], timeout: float) -> None:
    result = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout
    )
    assert result.returncode == 0, f"{command}:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Installed:
    root = tmp_path_factory.mktemp("installed")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    # A copy of the tree: a build writes build/ and *.egg-info next to the sources.
    source = root / "source"
    shutil.copytree(SOURCE, source, ignore=shutil.ignore_patterns(*IGNORED))
    builder = root / "builder"
    _run(sys.executable, "-m", "venv", builder, cwd=root, env=env, timeout=120)
    _run(builder / "bin" / "python", "-m", "pip", "install", "-q", "build", cwd=root, env=env, timeout=300)
    dist = root / "dist"
    # The sdist first, then the wheel built from the unpacked sdist: both must carry every file.
    _run(builder / "bin" / "python", "-m", "build", "--outdir", dist, source, cwd=root, env=env, timeout=600)
    (wheel,) = dist.glob("geo_tui-*.whl")
    (sdist,) = dist.glob("geo_tui-*.tar.gz")
    venv = root / "venv"
    _run(sys.executable, "-m", "venv", venv, cwd=root, env=env, timeout=120)
    _run(venv / "bin" / "python", "-m", "pip", "install", "-q", wheel, cwd=root, env=env, timeout=600)
    return Installed(root, wheel, sdist, venv)


def _package_files() -> set[str]:
    """Every file of geo_tui/ in this checkout that is not Python: what the package reads at run time."""
    package = Path(geo_tui.__file__).parent
    return {
        str(path.relative_to(package.parent))
        for path in package.rglob("*")
        if path.is_file() and path.suffix not in (".py", ".pyc") and "__pycache__" not in path.parts
    }


def test_the_wheel_and_the_sdist_carry_every_file_the_package_reads(installed: Installed) -> None:
    wanted = _package_files()
    assert "geo_tui/console/app.tcss" in wanted
    with zipfile.ZipFile(installed.wheel) as wheel:
        assert wanted <= set(wheel.namelist()), wanted - set(wheel.namelist())
    with tarfile.open(installed.sdist) as sdist:
        names = {name.split("/", 1)[1] for name in sdist.getnames() if "/" in name}
    assert wanted <= names, wanted - names


def test_the_installed_command_runs_the_installed_package_and_names_its_version(
    installed: Installed,
) -> None:
    where = subprocess.run(
        [installed.venv / "bin" / "python", "-c", "import geo_tui; print(geo_tui.__file__)"],
        capture_output=True,
        text=True,
        cwd=installed.root,
        env=installed.env,
        check=True,
    )
    assert where.stdout.startswith(str(installed.venv)), where.stdout
    version = installed.run("--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"geo-tui {geo_tui.__version__}"
    assert installed.wheel.name.startswith(f"geo_tui-{geo_tui.__version__}-")
    module = subprocess.run(
        [installed.venv / "bin" / "python", "-m", "geo_tui", "--version"],
        capture_output=True,
        text=True,
        cwd=installed.root,
        env=installed.env,
    )
    assert (module.returncode, module.stdout) == (0, version.stdout)


@pytest.fixture
def terminal(tmp_path: Path) -> Iterator[Callable[..., Terminal]]:
    with terminals(tmp_path) as open_terminal:
        yield open_terminal


def test_the_installed_demo_shows_progress_quits_with_0_and_leaves_nothing(
    installed: Installed, terminal: Callable[..., Terminal], tmp_path: Path
) -> None:
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    term = terminal(
        "demo",
        "--speed",
        "4",
        tmpdir=tmpdir,
        command=[installed.geo_tui],
        unset=["PYTHONPATH"],
        cwd=installed.root,
        keep_screen=True,
    )
    term.wait_for(
        lambda s: all(name in s for name in ("primary", "secondary-eu", "secondary-us")), 90, "the site cards"
    )
    term.wait_for(lambda s: any(0 < p for p in percents(s)), 90, "replication progress")
    (lab,) = tmpdir.iterdir()
    assert processes_mentioning(str(lab)), "the lab registries run in a child process"
    term.press("q")
    assert term.wait_exit(60) == 0, term.last_screen()
    assert list(tmpdir.iterdir()) == [], "the demo left files behind"
    assert processes_mentioning(str(lab)) == [], "the demo left processes running"


def test_the_installed_init_and_doctor_set_up_lab_registries(installed: Installed, tmp_path: Path) -> None:
    registries = {
        name: LabInstance(tmp_path / name, name=name, auth="none").start() for name in ("primary", "eu")
    }
    try:
        listen = free_port()
        geo = tmp_path / "geo"
        init = installed.run(
            "init",
            "--non-interactive",
            "--config",
            str(geo / "config.toml"),
            "--primary",
            registries["primary"].url,
            "--secondary",
            f"eu={registries['eu'].url}",
            "--token-realm",
            "http://127.0.0.1:9/jwt/auth",
            "--listen",
            f"127.0.0.1:{listen}",
            "--database",
            str(geo / "tracking.db"),
            "--snippets-dir",
            str(tmp_path / "snippets"),
        )
        assert init.returncode == 0, init.stderr
        for name, registry in registries.items():  # each registry as its snippet says
            registry.stop()
            snippet = tmp_path / "snippets" / f"{name}.registry.yml"
            registry.extra_config = yaml.safe_load(snippet.read_text())
            registry.start()
        served = Served(geo / "config.toml", listen, tmp_path / "serve.log")
        served.command, served.env = (installed.geo_tui,), installed.env
        served.start(timeout=60)
        try:
            doctor = installed.run("--config", str(geo / "config.toml"), "doctor")
        finally:
            assert served.stop(signal.SIGTERM) == 0
        lines = doctor.stdout.splitlines()
        assert doctor.returncode == 0, doctor.stdout + doctor.stderr
        checks = [line for line in lines if not line.endswith("checks passed")]
        assert len(checks) == 8 and all(line.startswith("ok ") for line in checks), doctor.stdout

        # and a failing check fails the command
        registries["eu"].stop()
        started = time.monotonic()
        failing = installed.run("--config", str(geo / "config.toml"), "doctor")
        assert failing.returncode == 1, failing.stdout + failing.stderr
        assert any(line.startswith("FAIL eu answers:") for line in failing.stdout.splitlines())
        assert time.monotonic() - started < 60
    finally:
        for registry in registries.values():
            registry.stop()
