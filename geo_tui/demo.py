"""`geo-tui demo`: live geo-replication on this machine, with nothing but the package installed.

A temporary directory holds everything: a fresh key pair, the config, the tracking database and three
lab registries (a primary and two secondaries, in a child process: `geo_tui.lab.site`). The primary
notifies the console's engine of every push, as a real primary would. Quitting the console stops the
registries and removes the directory; the child also exits on its own if this process dies.
"""

from __future__ import annotations

import collections
import contextlib
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric import ec

from geo_tui.config import Config, load_config, write_config
from geo_tui.lab.site import DemoSiteSpec, Outage
from geo_tui.setup.keys import (
    generate_notification_secret,
    private_key_pem,
    self_signed_certificate,
    write_new_file,
)
from geo_tui.setup.snippets import IGNORED_ACTION, IGNORED_MEDIA_TYPE

if TYPE_CHECKING:
    from textual.app import App

__all__ = ["DemoError", "DemoLab", "demo_lab"]

ISSUER = "geo-tui-demo"
SERVICE = "container_registry"
SITES = ("primary", "secondary-eu", "secondary-us")
READY_TIMEOUT = 60.0
EVENTS_PATH = "/api/v4/container_registry_event/events"


class DemoError(Exception):
    """The demo lab could not start; the message says why."""


class _ChildWatch:
    """Whether the lab child ended before it was told to stop, why, and who wants to know."""

    def __init__(self, log: Path) -> None:
        self.log = log
        self.stopping = threading.Event()
        self.failure: str | None = None
        self._listeners: list[Callable[[str], None]] = []
        self._lock = threading.Lock()

    def ended(self, status: int) -> None:
        if self.stopping.is_set():
            return
        with self._lock:
            how = f"exited with status {status}"
            if status < 0:
                names = {int(s): s.name for s in signal.Signals}  # not the real-time signals
                how = f"were killed by {names.get(-status, f'signal {-status}')}"
            self.failure = f"the demo's lab registries {how}" + _log_tail(self.log)
            listeners = list(self._listeners)
        for listener in listeners:
            listener(self.failure)

    def listen(self, listener: Callable[[str], None]) -> None:
        with self._lock:
            failure = self.failure
            if failure is None:
                self._listeners.append(listener)
        if failure is not None:
            listener(failure)


@dataclass
class DemoLab:
    """A running demo lab: its config (for the engine) and the child process serving the registries."""

    directory: Path
    config: Config
    process: subprocess.Popen[str]
    ports: dict[str, int]
    lines: collections.deque[str]  # the latest things the workload did
    watch: _ChildWatch

    @property
    def primary_url(self) -> str:
        return f"http://127.0.0.1:{self.ports[SITES[0]]}"

    @property
    def failure(self) -> str | None:
        """Why the lab registries ended on their own (they died), or None while they serve."""
        return self.watch.failure

    def end_console_on_failure(self, app: App[Any]) -> None:
        """Stop the console with status 1 if the lab registries die: the demo cannot go on without them."""

        def stop_app() -> None:
            deadline = time.monotonic() + READY_TIMEOUT
            while app.return_code is None and time.monotonic() < deadline:
                try:
                    app.call_from_thread(app.exit, return_code=1)
                    return
                except RuntimeError:  # not running yet (they died while the engine started): retry
                    time.sleep(0.1)

        def end(_reason: str) -> None:  # on the watching thread, or at once if they died already
            threading.Thread(target=stop_app, name="demo-lab-died", daemon=True).start()

        self.watch.listen(end)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_key_pair(directory: Path) -> tuple[Path, Path]:
    """A throwaway EC P-256 key (ES256 tokens; instant to make) and its self-signed certificate."""
    key = ec.generate_private_key(ec.SECP256R1())
    key_path, cert_path = directory / "registry.key", directory / "registry.crt"
    write_new_file(key_path, private_key_pem(key), 0o600, force=False, what="demo key")
    certificate = self_signed_certificate(key, common_name="geo-tui demo token signer", days=2)
    write_new_file(cert_path, certificate, 0o644, force=False, what="demo certificate")
    return key_path, cert_path


def _write_config(directory: Path, key_path: Path, ports: dict[str, int], listen: int, secret: str) -> Path:
    primary, *secondaries = SITES
    path = directory / "config.toml"
    write_config(
        path,
        {
            "engine": {"database": str(directory / "tracking.db"), "reconcile_interval": 60},
            "auth": {"private_key": str(key_path), "issuer": ISSUER, "service": SERVICE, "token_ttl": 300},
            "notifications": {"listen": f"127.0.0.1:{listen}", "secret": secret},
            "primary": {"name": primary, "registry": f"http://127.0.0.1:{ports[primary]}", "auth": "jwt"},
            "secondaries": [
                {"name": name, "registry": f"http://127.0.0.1:{ports[name]}", "auth": "jwt"}
                for name in secondaries
            ],
        },
    )
    return path


def _log_tail(log: Path) -> str:
    tail = log.read_text(errors="replace").strip().splitlines()[-5:] if log.exists() else []
    return (": " + " / ".join(tail)) if tail else ""


def _start_site(
    directory: Path, spec: DemoSiteSpec, on_seeded: Callable[[int], None] | None
) -> tuple[subprocess.Popen[str], collections.deque[str], _ChildWatch]:
    spec_path = directory / "site.json"
    spec.write(spec_path)
    log = (directory / "site.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "geo_tui.lab.site", str(spec_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=log,
        text=True,
        start_new_session=True,  # the terminal's signals are for the console; the child stops on stdin EOF
    )
    log.close()
    lines: collections.deque[str] = collections.deque(maxlen=200)
    ready = threading.Event()
    watch = _ChildWatch(directory / "site.log")

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            if line.strip() == "ready":
                ready.set()
            else:
                lines.append(line.rstrip("\n"))
        ready.set()  # the child ended: start() checks whether it is alive
        watch.ended(process.wait())

    threading.Thread(target=read, name="demo-site-output", daemon=True).start()
    deadline = time.monotonic() + READY_TIMEOUT
    while not ready.wait(0.25) and time.monotonic() < deadline:
        if on_seeded is not None:
            on_seeded(sum(line.startswith("seeded: ") for line in lines))
    if not ready.is_set() or process.poll() is not None:
        _stop_site(process, watch)
        tail = (directory / "site.log").read_text(errors="replace").strip().splitlines()[-5:]
        raise DemoError("the demo registries did not start: " + (" / ".join(tail) or "no output"))
    return process, lines, watch


def _stop_site(process: subprocess.Popen[str], watch: _ChildWatch) -> None:
    watch.stopping.set()
    if process.stdin is not None:
        with contextlib.suppress(OSError):
            process.stdin.close()  # the child's cue to stop
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


@contextlib.contextmanager
def demo_lab(
    *,
    seed: int = 1,
    speed: float = 1.0,
    scale: float = 1.0,
    on_seeded: Callable[[int], None] | None = None,
) -> Iterator[DemoLab]:
    """Start the demo's registries and config in a temporary directory; remove everything on exit.
    `on_seeded(n)` hears how many initial pushes the primary holds while it is being filled."""
    if speed <= 0:
        raise DemoError(f"--speed must be above 0, not {speed}")
    directory = Path(tempfile.mkdtemp(prefix="geo-tui-demo-"))
    process: subprocess.Popen[str] | None = None
    watch: _ChildWatch | None = None
    try:
        key_path, cert_path = _write_key_pair(directory)
        ports = {name: _free_port() for name in SITES}
        listen, secret = _free_port(), generate_notification_secret()
        config = load_config(_write_config(directory, key_path, ports, listen, secret))
        spec = DemoSiteSpec(
            root=str(directory / "registries"),
            private_key_path=str(key_path),
            certificate_path=str(cert_path),
            issuer=ISSUER,
            service=SERVICE,
            ports=ports,
            notification_url=f"http://127.0.0.1:{listen}{EVENTS_PATH}",
            notification_secret=secret,
            seed=seed,
            speed=speed,
            scale=scale,
            outage=Outage(site=SITES[2]),
            # as `geo-tui init`'s Distribution snippet has it: no events for geo-tui's own reads, nor blobs
            ignore_actions=(IGNORED_ACTION,),
            ignore_media_types=(IGNORED_MEDIA_TYPE,),
            remove_on_exit=str(directory),
        )
        process, lines, watch = _start_site(directory, spec, on_seeded)
        yield DemoLab(directory, config, process, ports, lines, watch)
    finally:
        if process is not None and watch is not None:
            _stop_site(process, watch)
        shutil.rmtree(directory, ignore_errors=True)
