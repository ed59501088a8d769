"""``sync --once``: one backfill pass, or with ``--dry-run`` its plan; and how both are printed."""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any

from geo_tui.cli.common import EXIT_FAILED, EXIT_OK, require_primary
from geo_tui.config import Config
from geo_tui.engine import Engine, SyncSummary
from geo_tui.figures import size
from geo_tui.progress import ProgressReporter

if TYPE_CHECKING:
    from geo_tui.engine.plan import RepositoryPlan, SyncPlan


async def cmd_sync(config: Config, args: argparse.Namespace, sites: list[str] | None) -> int:
    if args.dry_run:
        from geo_tui.engine.plan import plan_sync

        plan = await plan_sync(config, sites=sites)
        _print_plan(plan, as_json=args.json)
        return EXIT_OK if plan.ok else EXIT_FAILED
    async with Engine(config, command="geo-tui sync --once") as engine:
        await require_primary(engine)
        with ProgressReporter(engine, sites or engine.secondary_names, sys.stderr):
            summary = await engine.sync_once(sites=sites)
    print_summary(summary, as_json=args.json)
    return EXIT_OK if summary.ok else EXIT_FAILED


def _summary_dict(summary: SyncSummary) -> dict[str, Any]:
    return {
        "ok": summary.ok,
        "seconds": round(summary.seconds, 3),
        "sites": {
            name: {
                "synced": s.synced,
                "failed": s.failed,
                "tags_pushed": s.stats.tags_pushed,
                "tags_deleted": s.stats.tags_deleted,
                "referrers_deleted": s.stats.referrers_deleted,
                "manifests_pushed": s.stats.manifests_pushed,
                "blobs_copied": s.stats.blobs_copied,
                "blobs_mounted": s.stats.blobs_mounted,
                "blobs_present": s.stats.blobs_present,
                "blobs_foreign": s.stats.blobs_foreign,
                "bytes": s.stats.bytes_copied,
                "failures": dict(sorted(s.failures.items())),
                "warnings": s.warnings,
            }
            for name, s in summary.sites.items()
        },
    }


def print_summary(summary: SyncSummary, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(_summary_dict(summary), indent=2))
        return
    for name, s in summary.sites.items():
        st = s.stats
        print(
            f"{name}: {s.synced} repositories synced, {s.failed} failed; "
            f"blobs {st.blobs_copied} copied, {st.blobs_mounted} mounted, {st.blobs_present} already present"
            + (f", {st.blobs_foreign} foreign skipped" if st.blobs_foreign else "")
            + f"; {st.tags_pushed} tags pushed, {st.tags_deleted} deleted; "
            f"{size(st.bytes_copied)} in {summary.seconds:.1f} s"
        )
        for repository, reason in sorted(s.failures.items()):
            print(f"  failed {repository}: {reason}")
        for warning in s.warnings:
            print(f"  warning: {warning}")


def _repository_plan_dict(plan: RepositoryPlan) -> dict[str, Any]:
    writes = plan.writes
    return {
        "tags": {
            "create": plan.tags_create,
            "move": {t: {"from": a, "to": b} for t, (a, b) in plan.tags_move.items()},
            "delete": plan.tags_delete,
        },
        "manifests": [w.digest for w in writes if w.kind == "manifest" and w.reference == w.digest],
        # untagged referrers gone from the primary (tags deleted are under "tags")
        "manifests_deleted": [w.digest for w in writes if w.kind == "delete" and w.reference == w.digest],
        "blobs": {
            "copy": [{"digest": w.digest, "size": w.size} for w in writes if w.kind == "upload"],
            "mount": [{"digest": w.digest, "from": w.source} for w in writes if w.kind == "mount"],
        },
        "bytes": plan.stats.bytes_copied,
        "requests": dict(sorted(plan.requests.items())),
        "errors": plan.errors,
        "warnings": plan.warnings,
    }


def _plan_dict(plan: SyncPlan) -> dict[str, Any]:
    sites: dict[str, Any] = {}
    for name, site in plan.sites.items():
        changing = {r: p for r, p in sorted(site.repositories.items()) if p.writes or p.errors}
        st = site.stats
        sites[name] = {
            "repositories_to_change": len(changing),
            "repositories_unchanged": len(site.repositories) - len(changing),
            "tags_create": sum(len(p.tags_create) for p in changing.values()),
            "tags_move": sum(len(p.tags_move) for p in changing.values()),
            "tags_delete": sum(len(p.tags_delete) for p in changing.values()),
            "manifests_pushed": st.manifests_pushed,
            "referrers_deleted": st.referrers_deleted,
            "blobs_copied": st.blobs_copied,
            "blobs_mounted": st.blobs_mounted,
            "bytes": st.bytes_copied,
            "requests": {m: site.requests.get(m, 0) for m in ("PUT", "POST", "PATCH", "DELETE")},
            "reads": site.reads,
            "repositories": {r: _repository_plan_dict(p) for r, p in changing.items()},
        }
    return {"dry_run": True, "ok": plan.ok, "primary_reads": plan.primary_reads, "sites": sites}


def _print_plan(plan: SyncPlan, *, as_json: bool) -> None:
    document = _plan_dict(plan)
    if as_json:
        print(json.dumps(document, indent=2))
        return
    print("dry run: nothing was written")
    for name, site in document["sites"].items():
        requests = ", ".join(f"{n} {m}" for m, n in site["requests"].items() if n) or "none"
        print(
            f"{name}: {site['repositories_to_change']} repositories to change, "
            f"{site['repositories_unchanged']} unchanged; tags {site['tags_create']} to create, "
            f"{site['tags_move']} to move, {site['tags_delete']} to delete; "
            f"blobs {site['blobs_copied']} to copy ({size(site['bytes'])}), "
            f"{site['blobs_mounted']} to mount; write requests: {requests} "
            f"(after {site['reads']} reads of the secondary)"
        )
        for repository, r in site["repositories"].items():
            parts = [f"create {t} {d}" for t, d in r["tags"]["create"].items()]
            parts += [f"move {t} {m['from']} -> {m['to']}" for t, m in r["tags"]["move"].items()]
            parts += [f"delete {t}" for t in r["tags"]["delete"]]
            blobs = r["blobs"]
            if blobs["copy"] or blobs["mount"]:
                parts.append(
                    f"{len(blobs['copy'])} blobs to copy ({size(r['bytes'])}), {len(blobs['mount'])} to mount"
                )
            if r["manifests"]:
                parts.append(f"{len(r['manifests'])} manifests by digest")
            if r["manifests_deleted"]:
                parts.append(f"delete {len(r['manifests_deleted'])} referrers gone from the primary")
            print(f"  {repository}: " + "; ".join(parts or ["no writes"]))
            for error in r["errors"]:
                print(f"    cannot plan: {error}")
            for warning in r["warnings"]:
                print(f"    warning: {warning}")
