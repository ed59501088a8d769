"""`geo-tui init`: from flags (``--non-interactive``) or prompts to a plan, then to files and snippets.

Exit status: 0 written, 2 a missing or bad answer, or a file that exists (nothing is written then).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TextIO, TypeVar

from geo_tui.config import resolve_config_path, rules

from .flags import InitFlag, add_init_arguments
from .keys import RSA_BITS, SetupError, write_new_file
from .plan import (
    DEFAULT_ISSUER,
    DEFAULT_LISTEN,
    DEFAULT_SERVICE,
    SetupPlan,
    SitePlan,
    WrittenSetup,
    check_auth,
    check_listen,
    check_registry_url,
    check_site_name,
    check_sites,
    execute_plan,
    name_used_twice,
)
from .prompts import Asker, ask_plan
from .snippets import Snippet, SnippetOptions, site_snippets

__all__ = ["add_init_arguments", "plan_from_flags", "run_init"]

EXIT_OK, EXIT_USAGE = 0, 2
T = TypeVar("T")


class _Errors:
    """Collects one line per bad or missing flag, so the operator sees them all at once."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def add(self, line: str) -> None:
        self.lines.append(line)

    def check(self, fn: Callable[..., T], *args: object) -> T | None:
        try:
            return fn(*args)
        except SetupError as exc:
            self.lines.append(str(exc))
            return None

    def pairs(self, values: list[str], flag: str) -> dict[str, str]:
        found: dict[str, str] = {}
        for raw in values:
            name, sep, value = raw.partition("=")
            if not sep or not name or not value:
                self.add(f"{flag} {raw!r}: expected NAME=VALUE")
            elif name in found:
                self.add(f"{flag} {name!r}: given twice")
            else:
                found[name] = value
        return found


def _sites_from_flags(args: argparse.Namespace, errors: _Errors) -> list[SitePlan]:
    """The primary then the secondaries, or as many as could be read (errors says what went wrong)."""
    if not args.primary:
        errors.add(
            "--primary: missing: the primary registry's URL, e.g. --primary https://registry.example.com"
        )
    primary_url = errors.check(check_registry_url, args.primary, "--primary") if args.primary else None
    primary_name = errors.check(check_site_name, args.primary_name or "primary", "--primary-name")
    if not args.secondary:
        errors.add("--secondary: missing: at least one secondary, e.g. --secondary eu=https://eu.example.com")
    urls: dict[str, str | None] = {primary_name or "primary": primary_url}
    for name, url in errors.pairs(args.secondary, "--secondary").items():
        if (twice := name_used_twice(name, urls)) is not None:
            errors.add(twice)
        elif errors.check(check_site_name, name, "--secondary") is not None:
            urls[name] = errors.check(check_registry_url, url, f"--secondary {name}")
    everyone = [a for a in args.auth if "=" not in a]
    default_auth = errors.check(check_auth, everyone[-1]) if everyone else "jwt"
    per_site = errors.pairs([a for a in args.auth if "=" in a], "--auth")
    usernames = errors.pairs(args.username, "--username")
    passwords = errors.pairs(args.password_file, "--password-file")
    have = ", ".join(sorted(urls))
    given = [
        ("--auth", list(per_site)),
        ("--username", list(usernames)),
        ("--password-file", list(passwords)),
    ]
    for flag, names in [*given, ("--gitlab", args.gitlab)]:
        errors.lines += [f"{flag} {n}: no site of that name (have: {have})" for n in names if n not in urls]
    sites = []
    for name, site_url in urls.items():
        wanted = per_site.get(name, default_auth or "jwt")
        method = errors.check(check_auth, wanted, f"--auth {name}")
        password = passwords.get(name)
        if site_url is not None and method is not None:
            sites.append(
                SitePlan(name, site_url, method, usernames.get(name), Path(password) if password else None)
            )
    return sites


def plan_from_flags(args: argparse.Namespace, config_path: Path) -> SetupPlan:
    """The plan the flags describe. Every missing or bad flag is one line of the SetupError."""
    errors = _Errors()
    sites = _sites_from_flags(args, errors)
    listen = errors.check(check_listen, args.listen or DEFAULT_LISTEN)
    if args.notification_url:
        errors.check(check_registry_url, args.notification_url, "--notification-url")
    if args.token_realm:
        errors.check(check_registry_url, args.token_realm, "--token-realm")
    elif any(s.auth == "jwt" for s in sites) or not sites:
        errors.add(
            "--token-realm: missing: the URL registry clients get tokens from, signed with the same key "
            "(GitLab: https://GITLAB/jwt/auth)"
        )
    for value, flag in ((args.issuer, "--issuer"), (args.service, "--service")):
        if value is not None:
            errors.check(rules.token_claim, value, InitFlag(flag))
    if errors.lines:
        raise SetupError("\n".join(errors.lines))
    check_sites(sites[0], tuple(sites[1:]))
    return SetupPlan(
        config_path=config_path,
        primary=sites[0],
        secondaries=tuple(sites[1:]),
        key=Path(args.key).expanduser() if args.key else None,
        issuer=args.issuer or DEFAULT_ISSUER,
        service=args.service or DEFAULT_SERVICE,
        token_realm=args.token_realm,
        listen=listen or ("127.0.0.1", 5050),
        notification_url=args.notification_url,
        database=Path(args.database).expanduser() if args.database else None,
        gitlab_sites=frozenset(args.gitlab),
        force=args.force,
    )


def run_init(
    args: argparse.Namespace,
    *,
    stdin: TextIO | None = None,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    asker: Asker | None = None,
) -> int:
    """Run ``geo-tui init`` with parsed `args`; the exit status."""
    stdin, stdout, stderr = stdin or sys.stdin, stdout or sys.stdout, stderr or sys.stderr
    config_path = resolve_config_path(args.init_config or args.config)
    try:
        if args.non_interactive:
            plan = plan_from_flags(args, config_path)
        else:
            if asker is None and not stdin.isatty():
                raise SetupError(
                    "init: standard input is not a terminal: give the answers as flags with --non-interactive"
                )
            plan = ask_plan(args, config_path, asker or Asker(stdin, stdout))
        if args.snippets_dir and not plan.force:
            _refuse_existing_snippets(plan, Path(args.snippets_dir).expanduser())
        written = execute_plan(plan)
        _report(plan, written, args.snippets_dir, stdout)
    except SetupError as exc:
        for line in str(exc).splitlines():
            print(f"geo-tui: {line}", file=stderr)
        return EXIT_USAGE
    except (EOFError, KeyboardInterrupt):
        print("\ngeo-tui: init cancelled; nothing was written", file=stderr)
        return EXIT_USAGE
    return EXIT_OK


def _report(plan: SetupPlan, written: WrittenSetup, snippets_dir: str | None, out: TextIO) -> None:
    config = written.config
    print(f"wrote {config.path} (mode 0600)", file=out)
    if config.auth is not None:
        if written.key_generated:
            print(f"wrote a new RSA {RSA_BITS} private key {written.key_path} (mode 0600)", file=out)
        else:
            print(f"using the existing private key {written.key_path} (not copied)", file=out)
        print(
            f"wrote its certificate {written.certificate_path} (mode 0644): each registry's rootcertbundle",
            file=out,
        )
    print(f"generated the notification secret and stored it in {config.path.name}", file=out)
    options = SnippetOptions(
        certificate=written.certificate_path,
        token_realm=plan.token_realm,
        notification_url=plan.effective_notification_url,
        gitlab_sites=plan.gitlab_sites,
    )
    snippets = site_snippets(config, options)
    if snippets_dir:
        _write_snippets(Path(snippets_dir).expanduser(), snippets, plan.force, out)
    else:
        for snippet in snippets:
            where = "gitlab.rb" if snippet.kind == "gitlab" else "Distribution config.yml"
            print(f"\n--- {snippet.site}: {where} ---", file=out)
            out.write(snippet.text)
    flag = f"--config {config.path} "
    print(
        "\nnext: apply each snippet and restart the registries, start the receiver with "
        f"`geo-tui {flag}serve`, then check everything with `geo-tui {flag}doctor`",
        file=out,
    )


def _refuse_existing_snippets(plan: SetupPlan, directory: Path) -> None:
    for site in plan.sites:
        for name in (f"{site.name}.gitlab.rb", f"{site.name}.registry.yml"):
            if (directory / name).exists():
                raise SetupError(f"the snippet {directory / name} already exists; use --force to replace it")


def _write_snippets(directory: Path, snippets: list[Snippet], force: bool, out: TextIO) -> None:
    for snippet in snippets:
        path = directory / snippet.filename
        # 0600 for all: the primary's holds the secret, and the same rule for every file is easier to trust.
        write_new_file(path, snippet.text.encode(), 0o600, force=force, what="the snippet")
        print(f"wrote {path} (mode 0600): {snippet.kind} config for {snippet.site}", file=out)
