"""A synthetic registry for measuring geo-tui at listing sizes a real registry answers too slowly on a
shared machine (300k tags are 600k HEADs): an httpx transport that answers the OCI distribution API for
one repository whose tags (``build-0000000`` ...) all point at one small manifest, computed per request,
never stored. The engine, the registry client, httpx and the tracking database are the real ones.

    python -m tests.support.synthetic 300000 [--missing 0.01] [--trace]

runs `Engine.sync_once` from the primary into one secondary that lacks `--missing` of the tags, in this
process, and prints JSON: the tags, the tag HEADs each side answered, how many distinct tags were looked
at, the PUTs, the most asyncio tasks alive at once, this process's peak RSS (VmHWM), and the seconds the
sync took. `--trace`: also the peak of the memory Python allocated during the sync (tracemalloc; the
registries' own state is allocated before tracing starts), which slows the sync down.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import hashlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx

from geo_tui.config import load_config
from geo_tui.engine import Engine

__all__ = ["SyntheticRegistry", "synthetic_sync", "synthetic_sync_in_child"]

REPOSITORY = "bench/tags"
MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
_CONFIG = b"{}"
_LAYER = b"synthetic layer"


def _digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


MANIFEST = json.dumps(
    {
        "schemaVersion": 2,
        "mediaType": MEDIA_TYPE,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": _digest(_CONFIG),
            "size": len(_CONFIG),
        },
        "layers": [
            {
                "mediaType": "application/vnd.oci.image.layer.v1.tar",
                "digest": _digest(_LAYER),
                "size": len(_LAYER),
            }
        ],
    },
    separators=(",", ":"),
).encode()
MANIFEST_DIGEST = _digest(MANIFEST)


def tag_name(index: int) -> str:
    return f"build-{index:07d}"


class SyntheticRegistry(httpx.AsyncBaseTransport):
    """One repository of `count` tags; `present[i]` says whether tag i exists (a PUT sets it)."""

    def __init__(self, count: int, missing_every: int = 0) -> None:
        self.count = count
        self.present = bytearray(b"\1" * count)
        if missing_every:
            for index in range(1, count, missing_every):
                self.present[index] = 0
        self.looked = bytearray(count)  # HEADs per tag, saturating at 255
        self.tag_heads = 0
        self.puts = 0

    def _index(self, tag: str) -> int | None:
        if not tag.startswith("build-") or not tag[6:].isdigit():
            return None
        index = int(tag[6:])
        return index if index < self.count and self.present[index] else None

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(0)  # a real transport waits for the network: let the other requests run
        path, method = request.url.path, request.method
        prefix = f"/v2/{REPOSITORY}/"
        if path == "/v2/":
            return httpx.Response(200, json={})
        if path == "/v2/_catalog":
            return httpx.Response(200, json={"repositories": [REPOSITORY]})
        if path == prefix + "tags/list":
            return self._tags(request)
        if path.startswith(prefix + "manifests/"):
            reference = path[len(prefix + "manifests/") :]
            if method == "PUT":
                body = await request.aread()
                index = self._index_any(reference)
                if index is not None:
                    self.present[index] = 1
                self.puts += 1
                return httpx.Response(201, headers={"Docker-Content-Digest": _digest(body)})
            if reference == MANIFEST_DIGEST:
                found = True
            else:
                index = self._index(reference)
                found = index is not None
                if index is not None:
                    self.tag_heads += method == "HEAD"
                    self.looked[index] = min(255, self.looked[index] + 1)
            if not found:
                return httpx.Response(
                    404, json={"errors": [{"code": "MANIFEST_UNKNOWN", "message": "unknown"}]}
                )
            headers = {
                "Content-Type": MEDIA_TYPE,
                "Docker-Content-Digest": MANIFEST_DIGEST,
                "Content-Length": str(len(MANIFEST)),
            }
            return httpx.Response(200, headers=headers, content=b"" if method == "HEAD" else MANIFEST)
        if path.startswith(prefix + "blobs/"):
            data = _CONFIG if path.endswith(_digest(_CONFIG)) else _LAYER
            return httpx.Response(200, headers={"Content-Length": str(len(data))}, content=b"")
        return httpx.Response(404, json={"errors": [{"code": "NAME_UNKNOWN", "message": path}]})

    def _index_any(self, tag: str) -> int | None:
        if tag.startswith("build-") and tag[6:].isdigit() and int(tag[6:]) < self.count:
            return int(tag[6:])
        return None

    def _tags(self, request: httpx.Request) -> httpx.Response:
        query = parse_qs(request.url.query.decode())
        size = int(query.get("n", ["1000"])[0])
        last = query.get("last", [None])[0]
        start = int(last[6:]) + 1 if last else 0
        tags: list[str] = []
        index = start
        while index < self.count and len(tags) < size:
            if self.present[index]:
                tags.append(tag_name(index))
            index += 1
        headers = {}
        if index < self.count:
            headers["Link"] = f'</v2/{REPOSITORY}/tags/list?n={size}&last={tags[-1]}>; rel="next"'
        return httpx.Response(200, json={"name": REPOSITORY, "tags": tags}, headers=headers)


def peak_rss_kib() -> int:
    """This process's peak RSS: VmHWM, which starts afresh at exec (ru_maxrss carries the parent's peak
    over an exec, so a child of a big test process would report the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def write_config(directory: Path) -> Path:
    path = directory / "config.toml"
    path.write_text(
        f"""\
[engine]
database = "{directory / "tracking.db"}"

[primary]
name = "primary"
registry = "http://primary.synthetic:5000"

[[secondaries]]
name = "eu"
registry = "http://eu.synthetic:5000"
"""
    )
    return path


async def synthetic_sync(count: int, missing: float = 0.01, *, trace: bool = False) -> dict[str, Any]:
    """Sync `count` synthetic tags (a share `missing` absent on the secondary) with the real engine;
    `trace`: measure the peak of the memory allocated during the sync with tracemalloc."""
    primary = SyntheticRegistry(count)
    secondary = SyntheticRegistry(count, missing_every=round(1 / missing) if missing > 0 else 0)
    lacking = count - sum(secondary.present)
    max_tasks = 0
    done = asyncio.Event()

    async def watch_tasks() -> None:
        nonlocal max_tasks
        while not done.is_set():
            max_tasks = max(max_tasks, len(asyncio.all_tasks()))
            await asyncio.sleep(0.005)

    with tempfile.TemporaryDirectory(prefix="geo-tui-synthetic-") as tmp:
        config = load_config(write_config(Path(tmp)))
        watcher = asyncio.ensure_future(watch_tasks())
        async with Engine(config, transports={"primary": primary, "eu": secondary}) as engine:
            if trace:
                gc.collect()  # garbage of whatever ran before in this process is not the sync's
                tracemalloc.start()
            started = time.perf_counter()
            summary = await engine.sync_once()
            seconds = time.perf_counter() - started
            traced_peak = tracemalloc.get_traced_memory()[1] if trace else None
            tracemalloc.stop()
        done.set()
        await watcher
    site = summary.sites["eu"]
    return {
        "tags": count,
        "missing_on_secondary": lacking,
        "ok": summary.ok and site.synced == 1 and site.stats.tags_pushed == lacking,
        "primary_tag_heads": primary.tag_heads,
        "secondary_tag_heads": secondary.tag_heads,
        "primary_tags_looked_at": sum(1 for n in primary.looked if n),
        "secondary_tags_held_after": sum(secondary.present),
        "puts": secondary.puts,
        "max_tasks": max_tasks,
        "peak_rss_kib": peak_rss_kib(),
        "seconds": round(seconds, 2),
        "traced_peak_bytes": traced_peak,
    }


def synthetic_sync_in_child(count: int, missing: float = 0.01, *, trace: bool = False) -> dict[str, Any]:
    """`synthetic_sync` in a fresh interpreter (this module's command line): what other tests left running
    in the calling process (threads, servers, captured logs) neither allocates during the measured sync
    nor shares its peak (a run inside a long pytest process peaked 266 KB higher at 6000 tags than at 2000;
    standalone, 27-35 KB)."""
    command = [sys.executable, "-m", "tests.support.synthetic", str(count), "--missing", str(missing)]
    root = str(Path(__file__).resolve().parents[2])
    result = subprocess.run(
        [*command, *(["--trace"] if trace else [])],
        capture_output=True,
        text=True,
        timeout=900,
        cwd=root,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures: dict[str, Any] = json.loads(result.stdout)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("count", type=int)
    parser.add_argument("--missing", type=float, default=0.01)
    parser.add_argument("--trace", action="store_true", help="peak traced memory of the sync (slower)")
    args = parser.parse_args(argv)
    result = asyncio.run(synthetic_sync(args.count, args.missing, trace=args.trace))
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
