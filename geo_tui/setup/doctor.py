"""`geo-tui doctor`: check a config against the live registries, one line per check, with a fix for each
failure. Nothing is left behind: the write probes open an upload session and cancel it.

Checks, per site: the registry answers; geo-tui's credentials work (for jwt, a minted token). On the
primary: the engine's pull-only credentials cannot start an upload. On each secondary: they can. Then the
notification receiver: the secret is set and `geo-tui serve` answers on ``[notifications] listen``.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Awaitable, Sequence
from dataclasses import asdict, dataclass
from typing import Final, Literal

import certifi
import httpx

from geo_tui.config import Config, SiteConfig
from geo_tui.config.rules import host_port
from geo_tui.engine.sites import build_authenticator, build_client
from geo_tui.registry import (
    Authenticator,
    NoAuth,
    RegistryAuthError,
    RegistryClient,
    RegistryError,
    RegistryUnavailable,
    Scope,
)

__all__ = ["PROBE_REPOSITORY", "CheckResult", "format_results", "run_doctor"]

# Clearly ours, and never more than an upload session that is cancelled at once.
PROBE_REPOSITORY: Final = "geo-tui-doctor/probe"
DEFAULT_TIMEOUT: Final = 5.0
HEALTH_PATH: Final = "/-/health"
EVENTS_PATH: Final = "/api/v4/container_registry_event/events"
EVENTS_TYPE: Final = "application/vnd.docker.distribution.events.v1+json"
_ASKS: Final = "(asks for credentials)"

Status = Literal["ok", "FAIL", "skip"]


@dataclass(frozen=True)
class CheckResult:
    """One check's outcome; `fix` says what to do when it failed."""

    check: str
    site: str | None
    status: Status
    detail: str
    fix: str | None = None

    def line(self) -> str:
        where = f"{self.site} " if self.site else ""
        text = f"{self.status:<4} {where}{self.check}: {self.detail}"
        return text + (f"; fix: {self.fix}" if self.fix else "")


def format_results(results: Sequence[CheckResult], *, as_json: bool) -> str:
    """The report: one line per check, or a JSON document."""
    passed = sum(r.status == "ok" for r in results)
    if as_json:
        document = {"ok": passed == len(results), "checks": [asdict(r) for r in results]}
        return json.dumps(document, indent=2)
    summary = "all checks passed" if passed == len(results) else f"{passed} of {len(results)} checks passed"
    return "\n".join([*(r.line() for r in results), summary])


async def run_doctor(config: Config, *, timeout: float = DEFAULT_TIMEOUT) -> list[CheckResult]:
    """Every check, the primary's first, then each secondary's, then the receiver's."""
    per_site = await asyncio.gather(*(_site_checks(config, site, timeout) for site in config.sites))
    return [*(r for results in per_site for r in results), *await _notification_checks(config, timeout)]


def _key(config: Config, site: SiteConfig) -> str:
    return "primary" if site.role == "primary" else f"secondaries[{config.secondaries.index(site)}]"


def _verify(site: SiteConfig) -> bool | str:
    return str(site.ca_file) if site.ca_file is not None else site.tls_verify


def _ssl_context(site: SiteConfig) -> ssl.SSLContext | bool:
    """TLS settings for doctor's own requests, as the registry client would use them."""
    if not site.tls_verify:
        return False
    return ssl.create_default_context(cafile=str(site.ca_file) if site.ca_file else certifi.where())


async def _within(timeout: float, call: Awaitable[object]) -> None:
    try:
        await asyncio.wait_for(call, timeout)
    except TimeoutError:
        raise TimeoutError(f"no answer within {timeout:g} s") from None


async def _site_checks(config: Config, site: SiteConfig, timeout: float) -> list[CheckResult]:
    answers = await _check_answers(config, site, timeout)
    later = "push blocked" if site.role == "primary" else "push accepted"
    if answers.status != "ok":
        reason = "skipped: the registry does not answer"
        return [
            answers,
            CheckResult(_auth_name(site), site.name, "skip", reason),
            CheckResult(later, site.name, "skip", reason),
        ]
    auth = await _check_auth(config, site, timeout)
    if auth.status == "ok" and site.auth != "none" and not answers.detail.endswith(_ASKS):
        # The registry let an anonymous GET /v2/ through: it checks no credentials at all.
        auth = CheckResult(auth.check, site.name, "ok", "accepted, but the registry asks for no credentials")
    if auth.status != "ok":
        reason = "skipped: geo-tui cannot authenticate"
        return [answers, auth, CheckResult(later, site.name, "skip", reason)]
    probe = _check_pull_only if site.role == "primary" else _check_push
    return [answers, auth, await probe(config, site, timeout)]


async def _check_answers(config: Config, site: SiteConfig, timeout: float) -> CheckResult:
    client = RegistryClient(
        site.name, site.registry, NoAuth(), verify=_verify(site), timeout=timeout, retries=0
    )
    name = "answers"
    try:
        async with client:
            await _within(timeout, client.ping())
    except RegistryAuthError:
        return CheckResult(name, site.name, "ok", f"{site.registry} answers {_ASKS}")
    except (RegistryUnavailable, TimeoutError) as exc:
        key = _key(config, site)
        fix = f"start the registry at {site.registry}, or correct {key}.registry in {config.path}"
        if "CERTIFICATE_VERIFY_FAILED" in _reason(exc):
            fix = f"set {key}.ca_file in {config.path} to the CA certificate that signed the registry's"
        return CheckResult(name, site.name, "FAIL", f"{site.registry} does not answer: {_reason(exc)}", fix)
    except RegistryError as exc:
        fix = f"point {_key(config, site)}.registry in {config.path} at the registry (its /v2/ must answer)"
        return CheckResult(
            name, site.name, "FAIL", f"{site.registry} is not a registry API: {_reason(exc)}", fix
        )
    return CheckResult(name, site.name, "ok", f"{site.registry} answers")


def _auth_name(site: SiteConfig) -> str:
    return {"jwt": "token", "none": "anonymous access"}.get(site.auth, "credentials")


def _reason(exc: BaseException) -> str:
    if isinstance(exc, RegistryError):
        return " ".join(str(p) for p in (exc.status, exc.code, exc.detail) if p) or type(exc).__name__
    return str(exc) or type(exc).__name__


async def _check_auth(config: Config, site: SiteConfig, timeout: float) -> CheckResult:
    name = _auth_name(site)
    client = build_client(site, config)
    try:
        async with client:
            await _within(timeout, client.ping())
    except RegistryAuthError as exc:
        return CheckResult(name, site.name, "FAIL", f"refused: {_reason(exc)}", _auth_fix(config, site))
    except (RegistryError, TimeoutError) as exc:
        return CheckResult(
            name, site.name, "FAIL", f"GET /v2/ failed: {_reason(exc)}", "see the answers check"
        )
    what = {"jwt": "a token minted with the shared key is accepted", "none": "no credentials needed"}
    return CheckResult(name, site.name, "ok", what.get(site.auth, f"{site.auth} credentials accepted"))


def _auth_fix(config: Config, site: SiteConfig) -> str:
    key = _key(config, site)
    if site.auth == "jwt" and config.auth is not None:
        auth = config.auth
        return (
            "the registry does not trust geo-tui's key: set its auth.token rootcertbundle to the "
            f"certificate of {auth.private_key_path} (init wrote it beside the config), "
            f"issuer {auth.issuer!r} and service {auth.service!r}, restart it, and check the clocks agree"
        )
    if site.auth == "none":
        return f"the registry requires credentials: set {key}.auth in {config.path}"
    return f"check {key}.username and the password in {config.path}, and that the account may pull"


async def _start_upload(
    site: SiteConfig, auth: Authenticator, http: httpx.AsyncClient
) -> tuple[int, str | None]:
    """``POST /v2/<probe>/blobs/uploads/`` with the engine's credentials; the status and the absolute
    upload URL if a session was opened. A 401 is answered once, as the engine's client does."""
    scopes = [Scope.repository(PROBE_REPOSITORY, "pull", "push")]
    url = f"{site.registry}/v2/{PROBE_REPOSITORY}/blobs/uploads/"
    response = await http.post(url, headers=await auth.headers(scopes))
    if response.status_code == 401 and await auth.on_unauthorized(scopes, response, http):
        response = await http.post(url, headers=await auth.headers(scopes))
    if response.status_code != 202:
        return response.status_code, None
    return 202, str(response.url.join(response.headers.get("location", "")))


async def _cancel_upload(auth: Authenticator, http: httpx.AsyncClient, location: str) -> int:
    # Distribution asks for the "delete" action on every DELETE, an upload's cancellation included.
    scopes = [Scope.repository(PROBE_REPOSITORY, "delete")]
    response = await http.delete(location, headers=await auth.headers(scopes))
    if response.status_code == 401 and await auth.on_unauthorized(scopes, response, http):
        response = await http.delete(location, headers=await auth.headers(scopes))
    return response.status_code


async def _probe(
    config: Config, site: SiteConfig, timeout: float
) -> tuple[int | None, int | None, str | None]:
    """(upload status, cancel status, transport error)."""
    auth = build_authenticator(site, config)
    async with httpx.AsyncClient(timeout=timeout, verify=_ssl_context(site)) as http:
        try:
            status, location = await asyncio.wait_for(_start_upload(site, auth, http), timeout)
            cancelled = (
                await asyncio.wait_for(_cancel_upload(auth, http, location), timeout) if location else None
            )
        except (httpx.HTTPError, TimeoutError) as exc:
            return None, None, type(exc).__name__
        except (
            Exception
        ) as exc:  # the token realm failing (its messages are safe to show): a line, not a traceback
            return None, None, f"{type(exc).__name__}: {exc}"[:200]
    return status, cancelled, None


async def _check_pull_only(config: Config, site: SiteConfig, timeout: float) -> CheckResult:
    name = "push blocked"
    status, cancelled, error = await _probe(config, site, timeout)
    if error is not None:
        return CheckResult(
            name, site.name, "FAIL", f"the upload probe failed: {error}", "see the answers check"
        )
    if status in (401, 403):
        return CheckResult(name, site.name, "ok", f"geo-tui's credentials cannot push (upload -> {status})")
    if status == 405:
        return CheckResult(name, site.name, "ok", "the registry is read-only (upload -> 405)")
    if status == 202:
        left = "cancelled" if cancelled in (200, 204) else f"NOT cancelled ({cancelled})"
        who = {"none": "anyone, without credentials,", "jwt": "geo-tui's pull-only token"}.get(
            site.auth, "geo-tui's account"
        )
        fix = (
            "turn on token auth on the primary (the auth.token snippet from `geo-tui init`) so it checks "
            "what each token allows"
        )
        if site.auth in ("token", "basic"):
            fix = f"give geo-tui an account that may only pull on the primary ({_key(config, site)}.username)"
        detail = f"THE PRIMARY ACCEPTS PUSHES: {who} opened an upload"
        return CheckResult(name, site.name, "FAIL", f"{detail} (probe session {left})", fix)
    return CheckResult(name, site.name, "FAIL", f"unexpected answer to the upload probe: {status}", None)


async def _check_push(config: Config, site: SiteConfig, timeout: float) -> CheckResult:
    name = "push accepted"
    status, cancelled, error = await _probe(config, site, timeout)
    if error is not None:
        return CheckResult(
            name, site.name, "FAIL", f"the upload probe failed: {error}", "see the answers check"
        )
    if status == 202:
        left = "cancelled" if cancelled in (200, 204) else f"could not be cancelled ({cancelled}); it expires"
        return CheckResult(name, site.name, "ok", f"an upload to {PROBE_REPOSITORY} was accepted and {left}")
    if status in (401, 403):
        fix = _auth_fix(config, site) if site.auth == "jwt" else "give the account push and delete rights"
        return CheckResult(name, site.name, "FAIL", f"geo-tui may not push (upload -> {status})", fix)
    if status == 405:
        fix = "turn off storage.maintenance.readonly in the registry's config.yml and restart it"
        return CheckResult(name, site.name, "FAIL", "the registry is read-only (upload -> 405)", fix)
    return CheckResult(name, site.name, "FAIL", f"unexpected answer to the upload probe: {status}", None)


async def _notification_checks(config: Config, timeout: float) -> list[CheckResult]:
    name = "notifications"
    settings = config.notifications
    if settings is None:
        fix = (
            f"add [notifications] listen and secret to {config.path} (init writes them) and the primary's "
            "notifications endpoint"
        )
        detail = "no [notifications] section: pushes wait for the reconcile"
        return [CheckResult(name, None, "FAIL", detail, fix)]
    length = len(settings.secret.reveal())
    results = [CheckResult("notification secret", None, "ok", f"set ({length} characters)")]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(settings.listen_host, settings.listen_host)
    base = f"http://{host_port(host, settings.listen_port)}"
    where = host_port(settings.listen_host, settings.listen_port)
    try:
        async with httpx.AsyncClient(timeout=timeout) as http:
            health = await http.get(base + HEALTH_PATH)
            down = _tasks_down(health)
            if down:
                detail = f"geo-tui serve on {where} has a background task down: {', '.join(down)}"
                fix = "its log says why; it restarts the task by itself, and /-/health is 200 once it is back"
                return [*results, CheckResult(name, None, "FAIL", detail, fix)]
            if health.status_code != 200 or not _is_health(health):
                return [*results, _stranger(config, where, health.status_code)]
            # An empty envelope with the secret, as the primary sends it: proves serve runs with this secret.
            accepted = await http.post(
                base + EVENTS_PATH,
                content=b'{"events": []}',
                headers={"Authorization": settings.secret.reveal(), "Content-Type": EVENTS_TYPE},
            )
    except httpx.ConnectError:
        fix = f"start it: geo-tui --config {config.path} serve (or the systemd unit in the README)"
        return [*results, CheckResult(name, None, "FAIL", f"geo-tui serve is not running on {where}", fix)]
    except httpx.HTTPError as exc:
        fix = f"check what listens on {where}"
        return [*results, CheckResult(name, None, "FAIL", f"{where}: {type(exc).__name__}", fix)]
    if accepted.status_code != 200:
        detail = f"geo-tui serve on {where} refuses this config's secret (events -> {accepted.status_code})"
        fix = f"it runs with another config: restart it with --config {config.path}"
        return [*results, CheckResult(name, None, "FAIL", detail, fix)]
    return [
        *results,
        CheckResult(name, None, "ok", f"geo-tui serve answers on {where} and accepts the secret"),
    ]


def _stranger(config: Config, where: str, status: int) -> CheckResult:
    fix = f"free {where}, or set notifications.listen in {config.path} and the primary's endpoint URL"
    detail = f"something other than geo-tui serve answers on {where} ({HEALTH_PATH} -> {status})"
    return CheckResult("notifications", None, "FAIL", detail, fix)


def _tasks_down(response: httpx.Response) -> list[str]:
    """The tasks a geo-tui /-/health answer (503) names as down; none from anything else."""
    try:
        document = response.json()
    except ValueError:
        return []
    down = document.get("tasks_down") if isinstance(document, dict) else None
    return [str(task) for task in down] if isinstance(down, list) and response.status_code == 503 else []


def _is_health(response: httpx.Response) -> bool:
    try:
        document = response.json()
    except ValueError:
        return False
    return isinstance(document, dict) and document.get("status") == "ok"
