"""What each verification depth costs: requests and bytes per repository, on real CNCF Distribution 2.8.

Run it from the repository root (it imports the test lab, `tests.support`)::

    python bench/verify_depths.py               # 40 repositories x 3 tags
    python bench/verify_depths.py --repos 100 --tags 5 --json
    python bench/verify_depths.py --referrers   # lab registries with the OCI 1.1 referrers API

What it does, all on 127.0.0.1: starts a token realm and two Distribution instances (primary, secondary),
pushes `bench/app-NN` repositories whose tags share a base layer across every repository, a layer per
repository and a layer per tag (each tag: a manifest, a config and 3 layers; the base layer 256 KiB, the
others 128 and 64 KiB, times --scale), backfills the secondary with `geo-tui sync --once`, then runs
`geo-tui verify` at each depth (checksum, deep, content, content --sample 0.1) and counts, from both
registries' access logs, the requests each run made and the response bytes the secondary sent.

With --referrers, both registries are the lab registry with its referrers API (Distribution 2.8 has
none), and every tag carries an untagged signature (an OCI artifact with its own payload blob): no tag
reaches it, and a deep walk finds it through the secondary's API, a listing per manifest.

Requests grow linearly with what a repository holds (a tag list, a HEAD per tag, a GET per manifest, a HEAD
per blob, a GET per hashed blob, a referrers listing per manifest), so the per-1,000-repository figures are
the measured totals times 1,000 / --repos, for repositories shaped like these. The peer here is the data
itself: the bytes `--content` reads are compared with the bytes the secondary stores (a pull of everything
would read as much).
Exit status: 0 every verification passed; 1 one failed; 2 setup problem.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from geo_tui.lab.images import Blob, oci_artifact  # noqa: E402
from tests.support.distribution import Distribution  # noqa: E402
from tests.support.geo import image_with_layers, write_geo_config  # noqa: E402
from tests.support.keys import session_key_pair  # noqa: E402
from tests.support.lab import LabInstance  # noqa: E402
from tests.support.push import RawPusher  # noqa: E402
from tests.support.token_server import TokenServer  # noqa: E402

KiB = 1024
DEPTHS: list[tuple[str, list[str]]] = [
    ("checksum", []),
    ("deep", ["--deep"]),
    ("content", ["--content"]),
    ("content 10%", ["--content", "--sample", "0.1"]),
]


def layer(seed: str, size: int) -> Blob:
    data = b""
    block = seed.encode()
    counter = 0
    while len(data) < size:  # reproducible, incompressible enough for a registry that does not compress
        data += __import__("hashlib").sha256(block + counter.to_bytes(8, "big")).digest()
        counter += 1
    return Blob(data[:size], "application/vnd.oci.image.layer.v1.tar")


def geo_tui(config: Path, *args: str) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "geo_tui", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    if done.returncode not in (0, 1):
        sys.exit(f"geo-tui {' '.join(args)} exited {done.returncode}: {done.stderr[-2000:]}")
    return done.returncode, done.stdout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--repos", type=int, default=40)
    parser.add_argument("--tags", type=int, default=3)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--referrers", action="store_true", help="lab registries, a signature per tag")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    key_pair = session_key_pair()
    with tempfile.TemporaryDirectory(prefix="geo-tui-verify-bench-") as tmp, TokenServer(key_pair) as realm:
        root = Path(tmp)
        kind: type[Distribution] | type[LabInstance] = Distribution
        options: dict[str, Any] = {"key_pair": key_pair, "token_realm": realm.url}
        if args.referrers:
            kind, options["referrers"] = LabInstance, True
        primary = kind(root / "primary", name="primary", **options)
        secondary = kind(root / "secondary", name="secondary", **options)
        primary.start()
        secondary.start()
        try:
            rows, stored, failed = run(args, primary, secondary, key_pair, root)
        finally:
            primary.stop()
            secondary.stop()
    return report(args, rows, stored, failed)


def run(
    args: argparse.Namespace, primary: Any, secondary: Any, key_pair: Any, root: Path
) -> tuple[list[dict[str, Any]], int, bool]:
    with RawPusher.for_registry(primary) as pusher:
        base = layer("base", int(256 * KiB * args.scale))
        for r in range(args.repos):
            name = f"bench/app-{r:03d}"
            own = layer(f"repo-{r}", int(128 * KiB * args.scale))
            for t in range(args.tags):
                tag_layer = layer(f"tag-{r}-{t}", int(64 * KiB * args.scale))
                image = image_with_layers([base, own, tag_layer], seed=f"{r}-{t}")
                pusher.push_tree(name, image, f"v{t}")
                if args.referrers:  # untagged: pushed by digest
                    pusher.push_tree(name, oci_artifact(image, seed=f"sig-{r}-{t}"))
        config = write_geo_config(root / "geo", primary, [secondary], key_pair)
        code, _ = geo_tui(config, "sync", "--once", "--json")
        if code:
            sys.exit("the backfill failed")
        blobs_dir = secondary.root_dir / ("blobs" if args.referrers else "docker/registry/v2/blobs")
        stored = sum(p.stat().st_size for p in blobs_dir.rglob("*") if p.is_file())
        rows: list[dict[str, Any]] = []
        failed = False
        for label, flags in DEPTHS:
            marks = primary.settled_mark(), secondary.settled_mark()
            started = time.monotonic()
            code, out = geo_tui(config, "verify", "--json", *flags)
            seconds = time.monotonic() - started
            failed |= code != 0
            results = json.loads(out)
            on_primary = primary.requests(since_mark=marks[0])
            time.sleep(0.3)
            on_secondary = secondary.requests(since_mark=marks[1])
            by_method: dict[str, int] = {}
            for entry in on_secondary:
                path = entry.path
                what = "blob" if "/blobs/" in path else "manifest" if "/manifests/" in path else "listing"
                what = "referrers" if "/referrers/" in path else what
                kind = f"{entry.method} {what}"
                by_method[kind] = by_method.get(kind, 0) + 1
            blobs = [r["blobs"] for r in results if r["blobs"]]
            rows.append(
                {
                    "depth": label,
                    "ok": code == 0,
                    "seconds": round(seconds, 2),
                    "primary_requests": len(on_primary),
                    "secondary_requests": len(on_secondary),
                    "secondary_bytes": sum(e.size for e in on_secondary),
                    "by_kind": by_method,
                    "manifests": sum(b["manifests"] for b in blobs),
                    "blobs_checked": sum(b["checked"] for b in blobs),
                    "hashed_bytes": sum(b["hashed_bytes"] for b in blobs),
                }
            )
    return rows, stored, failed


def report(args: argparse.Namespace, rows: list[dict[str, Any]], stored: int, failed: bool) -> int:
    per = 1000 / args.repos
    if args.json:
        print(
            json.dumps(
                {"repos": args.repos, "tags": args.tags, "stored_bytes": stored, "runs": rows}, indent=2
            )
        )
        return 1 if failed else 0
    print(
        f"{args.repos} repositories x {args.tags} tags; the secondary stores {stored / 2**20:.1f} MiB "
        f"(blobs and manifests). Per 1,000 repositories = measured x {per:g}."
    )
    print(f"{'depth':<12} {'primary req':>12} {'secondary req':>14} {'sent MiB':>9} "
          f"{'per 1,000: req':>15} {'MiB':>9} {'x checksum req':>15}  seconds (shared machine)")  # fmt: skip
    base_requests = rows[0]["primary_requests"] + rows[0]["secondary_requests"]
    for row in rows:
        total = row["primary_requests"] + row["secondary_requests"]
        print(
            f"{row['depth']:<12} {row['primary_requests']:>12} {row['secondary_requests']:>14} "
            f"{row['secondary_bytes'] / 2**20:>9.2f} {total * per:>15,.0f} "
            f"{row['secondary_bytes'] * per / 2**20:>9,.1f} "
            f"{total / base_requests:>15.2f}  {row['seconds']}"
        )
        print(f"{'':<12} secondary: {row['by_kind']}")
    content = next(r for r in rows if r["depth"] == "content")
    print(f"content read / stored on the secondary: {content['secondary_bytes'] / stored:.2f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
