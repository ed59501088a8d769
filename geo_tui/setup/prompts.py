"""The interactive side of `geo-tui init`: one question at a time, defaults shown in brackets, each answer
checked on the spot and asked again until it is right. Flags already given become the defaults."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TextIO, TypeVar

from geo_tui.config import rules

from .flags import InitFlag
from .keys import SetupError, load_signing_key
from .plan import (
    DEFAULT_ISSUER,
    DEFAULT_LISTEN,
    DEFAULT_SERVICE,
    SetupPlan,
    SitePlan,
    check_auth,
    check_listen,
    check_registry_url,
    check_site_name,
    check_sites,
)
from .snippets import notification_url_for

__all__ = ["Asker", "ask_plan"]

T = TypeVar("T")


class Asker:
    """Asks on `output`, reads answers from `input_`; EOFError when the input ends."""

    def __init__(self, input_: TextIO, output: TextIO) -> None:
        self._in, self._out = input_, output

    def say(self, text: str) -> None:
        print(text, file=self._out, flush=True)

    def ask(self, question: str, check: Callable[[str], T], default: str | None = None) -> T:
        """Ask until `check` accepts the answer (an empty answer takes `default`)."""
        shown = f" [{default}]" if default else ""
        while True:
            self._out.write(f"{question}{shown}: ")
            self._out.flush()
            line = self._in.readline()
            if not line:
                raise EOFError
            answer = line.strip() or (default or "")
            try:
                return check(answer)
            except SetupError as exc:
                self.say(f"  {exc}")

    def confirm(self, question: str, default: bool = False) -> bool:
        def yes_no(answer: str) -> bool:
            if answer.lower() in ("y", "yes"):
                return True
            if answer.lower() in ("n", "no"):
                return False
            raise SetupError("answer y or n")

        return self.ask(f"{question} (y/n)", yes_no, "y" if default else "n")


def _required(flag: str, check: Callable[[str, str], T]) -> Callable[[str], T]:
    def run(answer: str) -> T:
        if not answer:
            raise SetupError(f"{flag}: an answer is needed")
        return check(answer, flag)

    return run


def _secondaries(asker: Asker, args: argparse.Namespace, primary: SitePlan) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    for raw in args.secondary:  # given as flags: checked, not asked
        name, _, url = raw.partition("=")
        found.append((check_site_name(name, "--secondary"), check_registry_url(url, f"--secondary {name}")))
    if found:
        return found
    asker.say("Secondaries: the registries that receive copies (at least one).")
    while True:
        taken = {primary.name, *(n for n, _ in found)}

        def new_name(answer: str, taken: set[str] = taken) -> str:
            if not answer:
                raise SetupError("a name is needed")
            check_site_name(answer, "name")
            if answer in taken:
                raise SetupError(f"name {answer!r}: already used by another site")
            return answer

        number = len(found) + 1
        name = asker.ask(f"Secondary {number} name", new_name, f"secondary-{number}")
        url = asker.ask(f"Secondary {name!r} registry URL", _required("URL", check_registry_url))
        try:
            check_sites(primary, (SitePlan(name, url),))
        except SetupError as exc:
            asker.say(f"  {exc}")
            continue
        found.append((name, url))
        if not asker.confirm("Add another secondary?"):
            return found


def _credentials(asker: Asker, site: SitePlan) -> SitePlan:
    if site.auth not in ("token", "basic"):
        return site

    def username(answer: str) -> str | None:
        if not answer and site.auth == "basic":
            raise SetupError("basic auth needs a username")
        return answer or None

    user = asker.ask(f"Username for {site.name!r}", username)
    if user is None:
        return site

    def password_file(answer: str) -> Path:
        if not answer:
            raise SetupError("a file holding the password is needed")
        path = Path(answer).expanduser()
        if not path.is_file():
            raise SetupError(f"{path}: no such file")
        return path

    return SitePlan(site.name, site.registry, site.auth, user, asker.ask("  password file", password_file))


def ask_plan(args: argparse.Namespace, config_path: Path, asker: Asker) -> SetupPlan:
    """Ask for what the flags did not say; the checked plan."""
    asker.say(f"geo-tui init: writes {config_path}, a key pair and the registry snippets.")
    url = asker.ask("Primary registry URL", _required("URL", check_registry_url), args.primary)
    name = asker.ask(
        "Primary site name", lambda a: check_site_name(a, "name"), args.primary_name or "primary"
    )
    primary = SitePlan(name, url)
    pairs = _secondaries(asker, args, primary)
    everyone = [a for a in args.auth if "=" not in a]
    method = asker.ask(
        "Auth for every site (jwt, token, basic, none)",
        lambda a: check_auth(a, "auth"),
        (everyone or ["jwt"])[-1],
    )
    sites = [_credentials(asker, SitePlan(n, u, method)) for n, u in [(name, url), *pairs]]
    key, issuer, service, realm = _token_settings(asker, args, method == "jwt")
    listen = asker.ask("Listen for notifications on (host:port)", check_listen, args.listen or DEFAULT_LISTEN)
    default_url = args.notification_url or notification_url_for(*listen)
    notify = asker.ask(
        "URL the primary posts notifications to", _required("URL", check_registry_url), default_url
    )
    names = {s.name for s in sites}

    def gitlab(answer: str) -> frozenset[str]:
        chosen = frozenset(n.strip() for n in answer.split(",") if n.strip())
        unknown = sorted(chosen - names)
        if unknown:
            raise SetupError(f"no site named {', '.join(unknown)} (have: {', '.join(sorted(names))})")
        return chosen

    gitlab_sites = asker.ask(
        "Sites run by GitLab, comma-separated (empty: none)", gitlab, ",".join(args.gitlab)
    )
    plan = SetupPlan(
        config_path=config_path,
        primary=sites[0],
        secondaries=tuple(sites[1:]),
        key=key,
        issuer=issuer,
        service=service,
        token_realm=realm,
        listen=listen,
        notification_url=notify,
        database=Path(args.database).expanduser() if args.database else None,
        gitlab_sites=gitlab_sites,
        force=args.force,
    )
    check_sites(plan.primary, plan.secondaries)
    return plan


def _token_settings(
    asker: Asker, args: argparse.Namespace, jwt: bool
) -> tuple[Path | None, str, str, str | None]:
    """The key to use (None: generate one), issuer, service and token realm."""
    issuer, service = args.issuer or DEFAULT_ISSUER, args.service or DEFAULT_SERVICE
    if not jwt:
        return None, issuer, service, args.token_realm
    key = asker.ask("Existing private key to use (empty: generate RSA 4096)", _existing_key, args.key)
    issuer = asker.ask("Token issuer", lambda a: rules.token_claim(a, InitFlag("issuer")), issuer)
    service = asker.ask(
        "Token service (audience)", lambda a: rules.token_claim(a, InitFlag("service")), service
    )
    realm = asker.ask(
        "Token realm: where registry clients get tokens (GitLab: https://GITLAB/jwt/auth)",
        _required("realm", check_registry_url),
        args.token_realm,
    )
    return key, issuer, service, realm


def _existing_key(answer: str) -> Path | None:
    if not answer:
        return None
    path = Path(answer).expanduser()
    load_signing_key(path)  # refuse an unreadable, encrypted or unsupported key now, not after the prompts
    return path
