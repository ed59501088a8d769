"""``verify``: compare the primary and the secondaries at a depth, and say how to mend corrupt blobs."""

from __future__ import annotations

import argparse
import json
from typing import Any

from geo_tui.cli.common import EXIT_FAILED, EXIT_OK, UsageError, require_primary
from geo_tui.config import Config
from geo_tui.engine import Engine, VerificationDepth, VerificationResult


async def cmd_verify(config: Config, args: argparse.Namespace, sites: list[str] | None) -> int:
    depth = VerificationDepth(args.depth or "checksum")
    if args.sample != 1.0 and depth is not VerificationDepth.CONTENT:
        raise UsageError("verify: --sample goes with --content")
    async with Engine(config, command="geo-tui verify") as engine:
        await require_primary(engine)
        results = await engine.verify(
            sites=sites, repositories=args.repositories or None, depth=depth, sample=args.sample
        )
        corrupt = _corrupt_blobs(engine, results)
    if args.json:
        print(json.dumps([_verification_json(r) for r in results], indent=2))
    else:
        print(DEPTH_LINES[depth] + (f" ({args.sample:g} of the blobs hashed)" if args.sample < 1 else ""))
        for r in results:
            mark = "ok  " if r.ok else "FAIL"
            print(f"{mark} {r.site}  {r.repository}: {r.detail}")
        for (site, digest), users in sorted(corrupt.items()):
            print(_corrupt_advice(site, digest, users))
        bad = sum(not r.ok for r in results)
        print(f"{len(results) - bad} verified, {bad} failed")
    return EXIT_OK if all(r.ok for r in results) else EXIT_FAILED


DEPTH_LINES = {
    VerificationDepth.CHECKSUM: "depth: checksum (shallow: tags and manifest digests only, no blob checked; "
    "--deep checks every blob)",
    VerificationDepth.DEEP: "depth: deep (every manifest the tags reach read, each blob HEADed for its size)",
    VerificationDepth.CONTENT: "depth: content (every blob downloaded from the secondary and re-hashed)",
}


def _verification_json(r: VerificationResult) -> dict[str, Any]:
    report = r.blobs
    return {
        "site": r.site,
        "repository": r.repository,
        "ok": r.ok,
        "depth": str(r.depth),
        "primary_checksum": r.primary_checksum,
        "secondary_checksum": r.secondary_checksum,
        "detail": r.detail,
        "missing": [m.split(" ", 1)[1] for m in r.missing],
        "corrupt": list(r.corrupt),
        "blobs": None
        if report is None
        else {
            "manifests": report.manifests,
            "checked": report.blobs,
            "bytes": report.bytes,
            "hashed": report.hashed,
            "hashed_bytes": report.hashed_bytes,
            "foreign": report.foreign,
            "errors": report.errors,
        },
    }


def _corrupt_blobs(engine: Engine, results: list[VerificationResult]) -> dict[tuple[str, str], list[str]]:
    """(site, digest) of every corrupt blob -> the repositories there known to use it."""
    found: dict[tuple[str, str], set[str]] = {}
    for r in results:
        for digest in r.corrupt:
            users = found.setdefault((r.site, digest), set())
            users.add(r.repository)
            users.update(engine.tracking.blob_sources(r.site, digest, exclude="", limit=20))
    return {key: sorted(users) for key, users in found.items()}


def _corrupt_advice(site: str, digest: str, users: list[str]) -> str:
    algorithm, _, hex_digest = digest.partition(":")
    return (
        f"CORRUPT on {site}: blob {digest} does not hash to its digest; used by {', '.join(users)}.\n"
        f"  {site} believes it holds this blob, so it will not accept it again. Delete it from {site}'s "
        f"storage (Distribution's filesystem driver: docker/registry/v2/blobs/{algorithm}/{hex_digest[:2]}/"
        f"{hex_digest}/data) or let its garbage collection remove it, then put it back with:\n"
        f"  geo-tui resync --blobs --now --site {site} {' '.join(users)}"
    )
