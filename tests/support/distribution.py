"""A real CNCF Distribution 2.8 (`docker-registry serve`) on a free 127.0.0.1 port, owned by a test.

Distribution writes two logs and both are kept, appended across restarts:
- stdout, `access.log`: one Apache combined line per request, written when the handler returns:
  `127.0.0.1 - - [29/Nov/2026:07:08:46 +0000] "HEAD /v2/foo/manifests/latest HTTP/1.1" 404 96 "" "curl"`
- stderr, `registry.log`: logrus lines, at info level one per request too
  (`msg="response completed"` or, for 4xx/5xx, `level=error msg="response completed with error"`, with
  `http.request.method=... http.request.uri=... http.response.status=...`).
Request counting reads the access log: every request has exactly one line there, whatever its outcome.
"""

from __future__ import annotations

import atexit
import json
import re
import socket
import ssl
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Self

import httpx

from geo_tui.setup.snippets import BACKOFF, THRESHOLD, TIMEOUT
from tests.support.binaries import find_binary
from tests.support.keys import DEFAULT_ISSUER, DEFAULT_SERVICE, TestKeyPair, repository_scope
from tests.support.tls import TLSFiles

START_TIMEOUT = 10.0

_ACCESS_LINE = re.compile(
    r'^(?P<remote>\S+) \S+ \S+ \[(?P<time>[^\]]+)\] "(?P<method>[A-Z]+) (?P<uri>\S+) (?P<proto>[^"]+)" '
    r'(?P<status>\d{3}) (?P<size>\d+|-) "(?P<referer>[^"]*)" "(?P<agent>[^"]*)"'
)

_live: set[Distribution] = set()


@atexit.register
def _kill_leftovers() -> None:
    # Last resort (an interrupted session): fixtures stop every instance in their teardown.
    for registry in list(_live):
        registry.stop()


class DistributionStartError(RuntimeError):
    """Distribution did not answer `GET /v2/` in time; the message carries its log tail."""


@dataclass(frozen=True)
class AccessLogLine:
    """One request as Distribution's access log recorded it."""

    method: str
    uri: str
    status: int
    size: int
    user_agent: str
    remote: str

    @property
    def path(self) -> str:
        return self.uri.split("?", 1)[0]


def parse_access_line(line: str) -> AccessLogLine | None:
    """Parse one Apache combined access-log line; None for anything else."""
    match = _ACCESS_LINE.match(line.strip())
    if match is None:
        return None
    size = match["size"]
    return AccessLogLine(
        method=match["method"],
        uri=match["uri"],
        status=int(match["status"]),
        size=0 if size == "-" else int(size),
        user_agent=match["agent"],
        remote=match["remote"],
    )


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RegistryProbe:
    """Tokens for a registry under test (its issuer and service) and its access log, read the same way for
    Distribution and the lab registry (both write Apache combined lines)."""

    def __init__(
        self,
        workdir: Path | str,
        *,
        name: str = "registry",
        key_pair: TestKeyPair | None = None,
        token_realm: str | None = None,
        auth: str = "token",
        issuer: str = DEFAULT_ISSUER,
        service: str = DEFAULT_SERVICE,
        schema1: bool = False,
        delete_enabled: bool = True,
        notification_url: str | None = None,
        notification_secret: str | None = None,
        notify_pulls: bool = False,
        readonly: bool = False,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        """The options both kinds take; each reads them at start(), as Distribution reads its config."""
        if auth not in ("token", "none"):
            raise ValueError(f"auth must be 'token' or 'none', not {auth!r}")
        if auth == "token" and (key_pair is None or token_realm is None):
            raise ValueError("token auth needs key_pair and token_realm")
        self.name = name
        self.workdir = Path(workdir)
        self.key_pair = key_pair
        self.token_realm = token_realm
        self.auth = auth
        self.issuer = issuer
        self.service = service
        self.schema1 = schema1
        self.delete_enabled = delete_enabled
        self.notification_url = notification_url
        self.notification_secret = notification_secret
        # The endpoint ignores blob and pull events as `geo-tui init` writes it; True keeps the pull events
        # (a primary configured without the ignore: what PullBacklog paces itself by). Distribution only:
        # the lab registry sends every event.
        self.notify_pulls = notify_pulls
        # storage.maintenance.readonly: Distribution 2.8 then answers every write (blob upload POST,
        # manifest PUT, DELETE) with 405 "Method not allowed" (text/plain), reads as usual.
        self.readonly = readonly
        # Deep-merged over the config last, e.g. a snippet printed by `geo-tui init`.
        self.extra_config = extra_config
        self.root_dir = self.workdir / "storage"
        self.access_log_path = self.workdir / "access.log"

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def restart(self) -> Self:
        """Stop, then start again on the same port and storage."""
        self.stop()
        return self.start()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def mint(self, scopes: list[dict[str, Any]], ttl: int = 300) -> str:
        if self.key_pair is None:
            raise RuntimeError(f"{self.name} has no key pair (auth: {self.auth})")
        return self.key_pair.mint(scopes, issuer=self.issuer, service=self.service, ttl=ttl)

    def token(self, repository: str, *actions: str) -> str:
        return self.mint([repository_scope(repository, *actions)])

    def access_log_lines(self) -> list[AccessLogLine]:
        if not self.access_log_path.exists():
            return []
        with open(self.access_log_path, errors="replace") as handle:
            return [entry for entry in map(parse_access_line, handle) if entry is not None]

    def mark(self) -> int:
        """A point in the access log; pass it as `since_mark` to count only the requests after it."""
        return len(self.access_log_lines())

    def settled_mark(self, quiet: float = 0.3, timeout: float = 5.0) -> int:
        """A mark taken once no new access-log line has come for `quiet` seconds: both registries
        write a request's line after its reply, so a reply the client already has can log late."""
        deadline = time.monotonic() + timeout
        count = self.mark()
        while time.monotonic() < deadline:
            time.sleep(quiet)
            latest = self.mark()
            if latest == count:
                break
            count = latest
        return count

    def requests(
        self,
        method: str | None = None,
        path_contains: str | None = None,
        since_mark: int = 0,
        status: int | None = None,
    ) -> list[AccessLogLine]:
        return [
            entry
            for entry in self.access_log_lines()[since_mark:]
            if (method is None or entry.method == method.upper())
            and (path_contains is None or path_contains in entry.uri)
            and (status is None or entry.status == status)
        ]

    def count_requests(
        self,
        method: str | None = None,
        path_contains: str | None = None,
        since_mark: int = 0,
        status: int | None = None,
    ) -> int:
        return len(self.requests(method, path_contains, since_mark, status))

    def wait_for_requests(
        self,
        expected: int,
        method: str | None = None,
        path_contains: str | None = None,
        since_mark: int = 0,
        status: int | None = None,
        timeout: float = 2.0,
    ) -> int:
        """Count like `count_requests`, polling until `expected` is reached (lines land as replies go)."""
        deadline = time.monotonic() + timeout
        count = self.count_requests(method, path_contains, since_mark, status)
        while count < expected and time.monotonic() < deadline:
            time.sleep(0.02)
            count = self.count_requests(method, path_contains, since_mark, status)
        return count


class Distribution(RegistryProbe):
    """One Distribution instance with its own storage, config, logs and port (kept across stop/start)."""

    def __init__(
        self, workdir: Path | str, *, port: int | None = None, tls: TLSFiles | None = None, **options: Any
    ) -> None:
        """`options` are RegistryProbe's; with `tls` it serves HTTPS (http.tls) with that certificate."""
        super().__init__(workdir, **options)
        self.tls = tls
        self.port = port or free_port()
        self._port_is_ours = port is None  # a port we picked may be re-picked if another process took it
        self._started_once = False
        self.config_path = self.workdir / "config.json"
        self.log_path = self.workdir / "registry.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._log_files: list[IO[bytes]] = []

    def __repr__(self) -> str:
        return f"<Distribution {self.name} {self.url} {'running' if self.running else 'stopped'}>"

    @property
    def host(self) -> str:
        """`127.0.0.1:PORT`, as used in image references (`docker://HOST/REPO:TAG`)."""
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """What an httpx client needs to trust it: a context with its CA, or True for plain HTTP."""
        return ssl.create_default_context(cafile=str(self.tls.ca)) if self.tls else True

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def config(self) -> dict[str, Any]:
        """The Distribution config (written as JSON, which is valid YAML)."""
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "accesslog": {"disabled": False}, "formatter": "text"},
            "storage": {
                "filesystem": {"rootdirectory": str(self.root_dir)},
                "delete": {"enabled": self.delete_enabled},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": self.host, "secret": f"geo-tui-lab-{self.name}"},
        }
        if self.tls:
            config["http"]["tls"] = {"certificate": str(self.tls.certificate), "key": str(self.tls.key)}
        if self.readonly:
            config["storage"]["maintenance"]["readonly"] = {"enabled": True}
        if self.schema1:
            config["compatibility"] = {"schema1": {"enabled": True}}
        if self.auth == "token":
            assert self.key_pair is not None
            _, cert_path = self.key_pair.write(self.workdir / "auth")
            config["auth"] = {
                "token": {
                    "realm": self.token_realm,
                    "service": self.service,
                    "issuer": self.issuer,
                    "rootcertbundle": str(cert_path),
                }
            }
        if self.notification_url:
            endpoint: dict[str, Any] = {
                "name": "geo_event",
                "url": self.notification_url,
                "timeout": TIMEOUT,
                "threshold": THRESHOLD,
                "backoff": BACKOFF,
                # As `geo-tui init` writes it: geo-tui acts on no blob or pull event, and each is a delivery
                # ahead of the next push's. Distribution 2.8 applies `actions` only beside `mediatypes`.
                "ignore": {"mediatypes": ["application/octet-stream"]},
            }
            if not self.notify_pulls:
                endpoint["ignore"]["actions"] = ["pull"]
            if self.notification_secret:
                endpoint["headers"] = {"Authorization": [self.notification_secret]}
            config["notifications"] = {"endpoints": [endpoint]}
        return _deep_merge(config, self.extra_config or {})

    def start(self) -> Distribution:
        """Start (or restart, on the same port and storage) and wait until `GET /v2/` answers."""
        if self.running:
            return self
        try:
            self._spawn()
        except DistributionStartError as error:
            # free_port() races with other processes; before the first start the port is ours to change.
            if self._started_once or not self._port_is_ours or "address already in use" not in str(error):
                raise
            self.port = free_port()
            self._spawn()
        self._started_once = True
        return self

    def _spawn(self) -> None:
        binary = find_binary("docker-registry")
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.root_dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(json.dumps(self.config(), indent=2))
        access, log = open(self.access_log_path, "ab"), open(self.log_path, "ab")
        self._log_files = [access, log]
        self._process = subprocess.Popen(
            [binary, "serve", str(self.config_path)],
            stdin=subprocess.DEVNULL,
            stdout=access,
            stderr=log,
            start_new_session=True,  # a Ctrl-C to pytest does not orphan it half-way
        )
        _live.add(self)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise DistributionStartError(
                    f"{self.name}: docker-registry exited ({self._process.returncode}) on port {self.port}.\n"
                    f"{self.log_tail()}"
                )
            try:
                status = httpx.get(f"{self.url}/v2/", timeout=1.0, verify=self.verify).status_code
            except httpx.TransportError:
                time.sleep(0.05)
                continue
            if status in (200, 401):
                return
            raise DistributionStartError(f"{self.name}: GET /v2/ answered {status}.\n{self.log_tail()}")
        raise DistributionStartError(
            f"{self.name}: no answer on {self.url}/v2/ within {START_TIMEOUT:.0f} s.\n{self.log_tail()}"
        )

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 5 s). Storage, port and logs stay."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        for handle in self._log_files:
            handle.close()
        self._log_files = []
        _live.discard(self)

    def log_tail(self, lines: int = 30) -> str:
        """The last lines of both logs, for failure messages."""
        parts = []
        for path in (self.log_path, self.access_log_path):
            text = path.read_text(errors="replace").splitlines()[-lines:] if path.exists() else []
            parts.append(f"--- {path.name} (last {len(text)} lines) ---\n" + "\n".join(text))
        return "\n".join(parts)
