"""Make the README's screenshots of the console from a real run.

Run it from the repository root (it imports the test lab, `tests.support`, and bench/backfill.py)::

    python screenshots/make_screenshots.py            # writes the SVGs next to this script
    python screenshots/make_screenshots.py --out DIR

All on 127.0.0.1: a token realm, a real CNCF Distribution 2.8 primary and two secondaries (eu, us), a
workload pushed into the primary (bench/backfill.py's seeded layers in `bench/app-NN`, and three small
images in `shop/api`, `shop/web`, `ops/tools`), then the console with its embedded engine, headless at
120x36 (Textual's `run_test`), driven from the keyboard. Pictures, in order:

- main-backfill.svg: mid-backfill: progress bars, throughput, ETA, repositories running and synced;
- console-80x24.svg, console-160x48.svg: the main screen when the backfill is over, at both sizes;
- detail.svg: replication paused, `shop/api:v2` pushed to the primary only, its detail screen with the
  tag missing on both secondaries marked;
- help.svg: `?`;
- workers.svg: `W`, the workers sharing the tracking database: two registered beside the console's engine
  through the tracking layer (`LeaseClaims`), as other `geo-tui serve` hosts would be, one of them stale;
- failure.svg: secondary `us` stopped, a resync of everything: the card unhealthy, the failed repositories
  (`f`) with their errors, the event log.

Names, sizes and content are seeded; times, ports and throughput come from the run.
Exit status: 0 written; 1 the run did not reach a picture's state in time; 2 setup problem.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from textual.pilot import Pilot  # noqa: E402

from bench.backfill import load_primary  # noqa: E402
from geo_tui.config import load_config  # noqa: E402
from geo_tui.console.app import GeoTuiApp, make_app  # noqa: E402
from geo_tui.console.screens.confirm import ConfirmScreen  # noqa: E402
from geo_tui.console.screens.detail import RepositoryDetailScreen  # noqa: E402
from geo_tui.console.screens.help import HelpScreen  # noqa: E402
from geo_tui.console.screens.workers import WorkersScreen  # noqa: E402
from geo_tui.console.widgets.repository_table import RepositoryTable  # noqa: E402
from geo_tui.console.widgets.sites_pane import SitesPane  # noqa: E402
from geo_tui.engine import Engine, SyncState, Tracking  # noqa: E402
from tests.support.distribution import Distribution  # noqa: E402
from tests.support.geo import write_geo_config  # noqa: E402
from tests.support.inprocess import EngineInThread  # noqa: E402
from tests.support.keys import session_key_pair  # noqa: E402
from tests.support.oci import oci_image  # noqa: E402
from tests.support.push import RawPusher  # noqa: E402
from tests.support.token_server import TokenServer  # noqa: E402

SIZE = (120, 36)
SEED = 11
SMALL = ("shop/api", "shop/web", "ops/tools")


class NotReached(RuntimeError):
    """The console did not get to the state a picture needs."""


def log(message: str) -> None:
    print(f"screenshots: {message}", file=sys.stderr, flush=True)


async def until(pilot: Pilot[None], what: str, condition: Callable[[], bool], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise NotReached(f"timed out waiting for {what}")
        await pilot.pause(0.1)


def card_text(app: GeoTuiApp, site: str) -> str:
    card = app.query_one(SitesPane).cards.get(site)
    return card.text if card is not None else ""


def card_unhealthy(app: GeoTuiApp, site: str) -> bool:
    card = app.query_one(SitesPane).cards.get(site)
    return card is not None and card.has_class("-unhealthy")


def all_synced(app: GeoTuiApp, rows: int) -> bool:
    table = app.query_one(RepositoryTable)
    return table.total_count == rows and all(
        (row := table.row(key)) is not None and row.state is SyncState.SYNCED for key in table.visible_keys()
    )


async def type_filter(pilot: Pilot[None], text: str) -> None:
    await pilot.press("slash", "end", *["backspace"] * 40, *text, "enter")
    await pilot.pause()


async def shoot(app: GeoTuiApp, pilot: Pilot[None], out: Path, name: str) -> None:
    await pilot.pause(0.3)  # let the last change paint
    app.save_screenshot(filename=name, path=str(out))
    log(f"wrote {out / name}")


def register_workers(database: Path) -> None:
    """Two more workers on the console's tracking database, as two other serve hosts would register:
    one copying at 42.5 MiB/s with three repositories in hand, one whose heartbeat stopped 4 min ago."""
    tracking = Tracking(database)
    try:
        now = time.time()
        for host, pid, listen, beat, working, throughput in (
            ("geo-b.example.net", 4242, "10.0.0.2:5001", now, 3, 42.5 * 1024 * 1024),
            ("geo-c.example.net", 1187, "10.0.0.3:5001, /run/geo-tui/api.sock", now - 250, 2, 0.0),
        ):
            worker = f"{host}/{pid}/{now - 3600:.3f}"
            tracking.register_worker(worker, now - 3600, listen)
            tracking.worker_heartbeat(worker, beat, working, throughput=throughput)
    finally:
        tracking.close()


async def drive(
    app: GeoTuiApp, primary: Distribution, us: Distribution, out: Path, rows: int, database: Path
) -> None:
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, "a running backfill with an ETA", lambda: "ETA" in card_text(app, "eu"), 90)
        await until(pilot, "a few synced repositories", lambda: "✓ 0 " not in card_text(app, "us"), 30)
        await shoot(app, pilot, out, "main-backfill.svg")

        await until(pilot, "the end of the backfill", lambda: all_synced(app, rows), 180)
        for width, height in ((80, 24), (160, 48)):
            await pilot.resize_terminal(width, height)
            await shoot(app, pilot, out, f"console-{width}x{height}.svg")
        await pilot.resize_terminal(*SIZE)

        await pilot.press("p")
        await until(pilot, "replication paused", lambda: app.paused)
        with RawPusher.for_registry(primary) as pusher:
            pusher.push_tree("shop/api", oci_image(f"{SEED}/shop/api:v2"), "v2")
        await type_filter(pilot, "shop/api")
        await pilot.press("enter")
        await until(
            pilot,
            "the detail of shop/api",
            lambda: isinstance(app.screen, RepositoryDetailScreen) and app.screen.loaded,
        )
        await shoot(app, pilot, out, "detail.svg")
        await pilot.press("escape")

        await type_filter(pilot, "")
        await pilot.press("question_mark")
        await until(pilot, "the help screen", lambda: isinstance(app.screen, HelpScreen))
        await shoot(app, pilot, out, "help.svg")
        await pilot.press("escape")
        await until(pilot, "the main screen", lambda: not isinstance(app.screen, HelpScreen))

        register_workers(database)
        await pilot.press("W")
        await until(
            pilot,
            "the workers",
            lambda: (
                isinstance(app.screen, WorkersScreen)
                and app.screen.view is not None
                and len(app.screen.view.workers) >= 2
            ),
        )
        await shoot(app, pilot, out, "workers.svg")
        await pilot.press("escape")
        await until(pilot, "the main screen", lambda: not isinstance(app.screen, WorkersScreen))

        us.stop()
        await pilot.press("p")
        await until(pilot, "replication resumed", lambda: not app.paused)
        await pilot.press("R")
        await until(pilot, "the bulk confirmation", lambda: isinstance(app.screen, ConfirmScreen))
        await pilot.press("y")
        table = app.query_one(RepositoryTable)
        await until(pilot, "failed repositories on us", lambda: table.failed_count >= 3, 60)
        await pilot.press("f")
        await until(pilot, "us unreachable", lambda: card_unhealthy(app, "us"), 30)
        await shoot(app, pilot, out, "failure.svg")
        await pilot.press("q")
        await until(pilot, "the engine to stop", lambda: not app.is_running, 30)


def run(out: Path, workdir: Path) -> None:
    key_pair = session_key_pair()
    with contextlib.ExitStack() as stack:
        realm = stack.enter_context(TokenServer(key_pair))
        sites: list[Distribution] = []
        for name in ("primary", "eu", "us"):
            site = Distribution(
                workdir / f"registry-{name}", name=name, key_pair=key_pair, token_realm=realm.url
            )
            stack.callback(site.stop)
            sites.append(site.start())
        primary, eu, us = sites
        log("pushing the workload into the primary")
        content = load_primary(primary, repos=10, tags=2, scale=0.12, seed=SEED)
        with RawPusher.for_registry(primary) as pusher:
            for name in SMALL:
                pusher.push_tree(name, oci_image(f"{SEED}/{name}"), "v1")
        repositories = len(content.tags) + len(SMALL)
        config = load_config(
            write_geo_config(
                workdir / "geo", primary, [eu, us], key_pair, engine={"repository_concurrency": 3}
            )
        )
        # Health every second, so the failure picture need not wait the default 15 s.
        link = EngineInThread(config, lambda c: Engine(c, health_interval=1.0))
        app = make_app(config, link=link)
        log(f"console at {SIZE[0]}x{SIZE[1]} over {repositories} repositories on 2 secondaries")
        asyncio.run(drive(app, primary, us, out, repositories * 2, config.engine.database))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Make the console's SVG screenshots from a real run.")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent, help="where to write")
    args = parser.parse_args(argv)
    if shutil.which("docker-registry") is None:
        log("docker-registry is not installed (apt-get install docker-registry)")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    logging.getLogger("geo_tui").handlers[:] = [
        logging.NullHandler()
    ]  # the console shows them, as geo-tui does
    logging.getLogger("geo_tui").propagate = False
    workdir = Path(tempfile.mkdtemp(prefix="geo-tui-screenshots-"))
    try:
        run(args.out, workdir)
    except NotReached as exc:
        log(str(exc))
        return 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
