"""Many-tags benchmark: peak RSS of `geo-tui sync --once` on one repository of many tags, on real CNCF
Distribution 2.8 next to `skopeo sync` of the same repository, and at 300k tags on the synthetic registry.

Run it from the repository root (it imports the test lab, `tests.support`, and bench/backfill.py)::

    python bench/many_tags.py                      # Distribution: 3000, 30000; synthetic: 3k, 30k, 300k
    python bench/many_tags.py --tags 2000 --synthetic ''   # one Distribution size, no synthetic run
    python bench/many_tags.py --peer-max 0 --json  # no skopeo; figures as JSON on stdout

What it does, all on 127.0.0.1:
1. Starts a token realm and two Distribution instances (primary, secondary), stopped at exit.
2. For each `--tags` size N: pushes one small OCI image as `bench/tags-N:build-0000000` into both, then
   writes the other N-1 tags straight into both registries' storage (tests/support/many_tags.py): tags are
   files there, so many tags cost seconds, not N pushes. `--missing F` (default 0.01) leaves that share of
   the tags off the secondary, so the copy path runs too.
3. Runs `geo-tui sync --once --json` limited to that repository (include filter) under bench/backfill.py's
   launcher, which reads the child's own peak RSS (ru_maxrss). Checks the run synced the repository and the
   secondary then holds all N tags, and counts the tag HEADs each registry answered.
4. For N <= --peer-max, `skopeo sync --all` of the same repository into another namespace of the
   secondary, under the same launcher, for its peak RSS.
5. For each `--synthetic` size: `python -m tests.support.synthetic N`, the real engine, client, httpx and
   tracking database in one process over an in-process registry (300k tags are 600k HEADs, hours for
   Distribution on a shared machine); its peak RSS (VmHWM), every tag looked at, the most tasks alive.
6. Prints peak RSS per size and the growth per tag between sizes, with RSS ratios against skopeo.
Wall-clock figures are printed but not judged: the machine is shared.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.backfill import (  # noqa: E402
    _child_env,
    compile_bytecode,
    geo_command,
    log,
    run_child,
    skopeo_command,
)
from tests.support.distribution import Distribution  # noqa: E402
from tests.support.geo import write_geo_config  # noqa: E402
from tests.support.keys import session_key_pair  # noqa: E402
from tests.support.many_tags import tag_names, write_tags  # noqa: E402
from tests.support.oci import oci_image  # noqa: E402
from tests.support.push import RawPusher  # noqa: E402
from tests.support.token_server import TokenServer  # noqa: E402

KiB = 1024


def tag_heads(registry: Distribution, repository: str, mark: int) -> int:
    """HEADs of a manifest by tag in `repository` since `mark`."""
    prefix = f"/v2/{repository}/manifests/"
    return sum(
        1
        for line in registry.requests(method="HEAD", since_mark=mark)
        if line.method == "HEAD" and line.path.startswith(prefix) and ":" not in line.path[len(prefix) :]
    )


def run_size(
    count: int, args: argparse.Namespace, sites: dict[str, Distribution], workdir: Path
) -> dict[str, Any]:
    primary, secondary = sites["primary"], sites["secondary"]
    repository = f"bench/tags-{count}"
    tags = tag_names(count)
    missing = set(tags[1:][:: max(1, round(1 / args.missing))]) if args.missing > 0 else set()
    with RawPusher.for_registry(primary) as pusher, RawPusher.for_registry(secondary) as copy:
        digest = pusher.push_tree(repository, oci_image(repository), tags[0])
        copy.push_tree(repository, oci_image(repository), tags[0])
    write_tags(primary, repository, digest, tags[1:])
    write_tags(secondary, repository, digest, (t for t in tags[1:] if t not in missing))
    log(f"{repository}: {count} tags on the primary, {count - len(missing)} on the secondary")
    config = write_geo_config(
        workdir / f"geo-{count}",
        primary,
        [secondary],
        session_key_pair(),
        secondary_options={secondary.name: {"include": [repository]}},
    )
    marks = (primary.settled_mark(), secondary.settled_mark())
    run = run_child(f"geo-{count}", geo_command(config), workdir / "logs", args.timeout)
    summary = run.summary() or {}
    site = summary.get("sites", {}).get(secondary.name, {})
    result: dict[str, Any] = {
        "tags": count,
        "missing_on_secondary": len(missing),
        "ok": run.ok and site.get("synced") == 1 and site.get("tags_pushed") == len(missing),
        "seconds": round(run.seconds, 1),
        "peak_rss_mib": round(run.rss_mib, 1),
        "primary_tag_heads": tag_heads(primary, repository, marks[0]),
        "secondary_tag_heads": tag_heads(secondary, repository, marks[1]),
    }
    with RawPusher.for_registry(secondary) as copy:
        result["secondary_tags_after"] = len(copy.list_tags(repository, page_size=10_000))
    result["ok"] = result["ok"] and result["secondary_tags_after"] == count
    if not result["ok"]:
        log(f"geo-{count} did not sync the repository whole; stderr tail:\n{run.stderr_tail()}")
    if count <= args.peer_max and shutil.which("skopeo"):
        sources = workdir / f"skopeo-{count}.yaml"
        images = {repository: tags}
        sources.write_text(json.dumps({primary.host: {"tls-verify": False, "images": images}}))
        command = skopeo_command(sources, secondary, namespace="peer")
        peer = run_child(f"skopeo-{count}", command, workdir / "logs", args.timeout)
        result["skopeo"] = {
            "ok": peer.ok,
            "seconds": round(peer.seconds, 1),
            "peak_rss_mib": round(peer.rss_mib, 1),
        }
    return result


def run_synthetic(count: int, args: argparse.Namespace) -> dict[str, Any]:
    log(f"synthetic: {count} tags")
    result = subprocess.run(
        [sys.executable, "-m", "tests.support.synthetic", str(count), "--missing", str(args.missing)],
        capture_output=True,
        text=True,
        timeout=args.timeout,
        cwd=REPO_ROOT,
        env=_child_env(),
    )
    try:
        figures: dict[str, Any] = json.loads(result.stdout)
    except ValueError:
        log(f"synthetic {count} failed:\n{result.stderr[-3000:]}")
        return {"tags": count, "ok": False}
    figures["ok"] = figures["ok"] and figures["primary_tags_looked_at"] == count
    figures["peak_rss_mib"] = round(figures["peak_rss_kib"] / KiB, 1)
    log(f"synthetic {count}: peak RSS {figures['peak_rss_mib']} MiB, {figures['max_tasks']} tasks at most")
    return figures


def render_synthetic(results: list[dict[str, Any]]) -> str:
    lines = [
        f"{'tags':>8} {'ok':>3} {'peak RSS':>12} {'growth/tag':>11} {'looked at':>10} {'most tasks':>11}"
    ]
    previous: dict[str, Any] | None = None
    for r in results:
        if not r.get("peak_rss_mib"):
            lines.append(f"{r['tags']:>8}  NO")
            continue
        growth = ""
        if previous is not None:
            added = (r["peak_rss_mib"] - previous["peak_rss_mib"]) * KiB * KiB
            growth = f"{added / (r['tags'] - previous['tags']):.0f} B"
        lines.append(
            f"{r['tags']:>8} {'yes' if r['ok'] else 'NO':>3} {r['peak_rss_mib']:>8.1f} MiB {growth:>11} "
            f"{r['primary_tags_looked_at']:>10} {r['max_tasks']:>11}"
        )
        previous = r
    return "\n".join(lines)


def render(results: list[dict[str, Any]]) -> str:
    lines = [
        f"{'tags':>8} {'ok':>3} {'geo-tui RSS':>12} {'growth/tag':>11} {'HEADs pri/sec':>14} {'seconds':>8} "
        f"{'skopeo RSS':>11} {'ratio':>6}"
    ]
    previous: dict[str, Any] | None = None
    for r in results:
        growth = ""
        if previous is not None:
            per_tag = (
                (r["peak_rss_mib"] - previous["peak_rss_mib"]) * KiB * KiB / (r["tags"] - previous["tags"])
            )
            growth = f"{per_tag:.0f} B"
        peer = r.get("skopeo")
        peer_rss = f"{peer['peak_rss_mib']:.1f} MiB" if peer else "-"
        ratio = f"{r['peak_rss_mib'] / peer['peak_rss_mib']:.2f}" if peer and peer["peak_rss_mib"] else "-"
        heads = f"{r['primary_tag_heads']}/{r['secondary_tag_heads']}"
        lines.append(
            f"{r['tags']:>8} {'yes' if r['ok'] else 'NO':>3} {r['peak_rss_mib']:>8.1f} MiB {growth:>11} "
            f"{heads:>14} {r['seconds']:>8.1f} {peer_rss:>11} {ratio:>6}"
        )
        previous = r
    lines.append(
        "ratio: geo-tui's peak RSS / skopeo sync's; growth/tag: RSS added per tag since the size above"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tags", default="3000,30000", help="comma-separated sizes on Distribution")
    parser.add_argument("--synthetic", default="3000,30000,300000", help="sizes on the synthetic registry")
    parser.add_argument("--missing", type=float, default=0.01, help="share of tags the secondary lacks")
    parser.add_argument("--peer-max", type=int, default=3000, help="run skopeo up to this many tags")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per child process")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON on stdout")
    args = parser.parse_args(argv)
    sizes = sorted(int(n) for n in args.tags.split(",") if n)
    synthetic_sizes = sorted(int(n) for n in args.synthetic.split(",") if n)
    if not shutil.which("docker-registry"):
        print("bench: `docker-registry` is not on PATH: apt-get install -y docker-registry", file=sys.stderr)
        return 2

    def on_sigterm(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # unwinds the ExitStack: registries stopped, temp dir removed

    signal.signal(signal.SIGTERM, on_sigterm)
    workdir = Path(tempfile.mkdtemp(prefix="geo-tui-many-tags-"))
    (workdir / "logs").mkdir()
    compile_bytecode(workdir / "pycache")
    results: list[dict[str, Any]] = []
    try:
        with contextlib.ExitStack() as stack:
            stack.callback(shutil.rmtree, workdir, True)
            realm = stack.enter_context(TokenServer(session_key_pair()))
            sites: dict[str, Distribution] = {}
            for name in ("primary", "secondary"):
                site = Distribution(
                    workdir / f"registry-{name}",
                    name=name,
                    key_pair=session_key_pair(),
                    token_realm=realm.url,
                )
                stack.callback(site.stop)
                sites[name] = site.start()
            for count in sizes:
                results.append(run_size(count, args, sites, workdir))
        synthetic = [run_synthetic(count, args) for count in synthetic_sizes]
    except KeyboardInterrupt:
        print("bench: interrupted; registries stopped", file=sys.stderr)
        return 130
    if args.json:
        print(json.dumps({"distribution": results, "synthetic": synthetic}, indent=2))
    else:
        if results:
            print("Real Distribution 2.8:\n" + render(results))
        if synthetic:
            print("Synthetic registry (real engine, client, httpx, SQLite):\n" + render_synthetic(synthetic))
    return 0 if all(r["ok"] for r in results + synthetic) else 1


if __name__ == "__main__":
    sys.exit(main())
