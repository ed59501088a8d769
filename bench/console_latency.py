"""Console latency benchmark: keypress to repaint while the console's engine backfills at full speed.

Run it from the repository root (it imports the test lab, `tests.support`, and bench/backfill.py)::

    python bench/console_latency.py            # ~200 MiB in 40 repositories x 2 tags, two secondaries
    python bench/console_latency.py --json     # the figures as JSON on stdout (progress stays on stderr)

Options: --repos N, --tags N, --scale F, --seed S, --idle-keys N, --pin,
--tuning SETTING, --timeout SECONDS, --workdir DIR, --keep.

--tuning sets GEO_TUI_CONSOLE_TUNING for the console (geo_tui/console/tuning.py): "none" runs it without
its Textual and collector workarounds, "-NAME,-NAME" without the named ones, to see whether each still pays.

What it does, all on 127.0.0.1 with real CNCF Distribution 2.8:
1. Starts a token realm, a primary and two empty secondaries, and pushes the workload into the primary with
   bench/backfill.py's `load_primary` (seeded, incompressible layers of 2..40 MiB times --scale, a base
   shared by every repository).
2. Runs the real console (`geo-tui`'s app with its engine in a child process, as `geo-tui` runs it; the
   engine thread in the console's process it replaced is gone) inside a pseudo-terminal of 120x36:
   `bench/console_probe.py`, which records key events, frames and flushes. The engine starts
   backfilling both secondaries at once, at the product's default concurrency.
3. Types into the terminal like a person, a key every 60-120 ms (250 ms after escape, which the terminal
   parser has to tell from an escape sequence): cursor down/up, page down/up, `o` sort, `O` reverse, `/`
   and a filter typed letter by letter, enter to apply it, enter for a repository's detail and escape back.
   Like a person, it waits for the prompt to open (and close) and for the main screen to come back before
   typing on, so no key lands where it was not meant to go.
   It goes on until the backfill is over and --idle-keys more keys have been typed on the idle console,
   then presses `q`.
4. Latency of each key: from its event's `time` to the moment the first frame showing its effect was
   flushed to the tty (see console_probe.py). Keys typed during the backfill (between the first and the
   last copied byte) against keys typed on the idle console: count, p50/p90/p99/max and the ratio. Also
   the UI loop's lag (a 10 ms timer's overshoot), the copy throughput over the measured window, full
   garbage collections, the terminal-to-event delay (bytes written to the pty until the key event), the UI
   thread's CPU time from each key to its frame (what the console itself spent, whatever else runs on the
   machine), and the machine's load average, which on a shared 2-core machine decides much of the tail.
   The run takes about a minute; its disk use is the three registries' storage (~0.6 GiB), removed at exit.
With --pin the three registries and this bench run on the last CPU and the console with its engine on the
others (taskset), as if the registries were other machines, which they are in production; without it
they all share the cores, which on a 2-core machine makes the console wait for a CPU as much as it runs.
Target: p99 < 50 ms during the backfill. Exit status: 0 (a missed target is reported, never fatal);
1 the backfill did not finish or the console failed; 2 setup problem; 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import random
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.backfill import load_primary  # noqa: E402
from tests.support.distribution import Distribution  # noqa: E402
from tests.support.geo import write_geo_config  # noqa: E402
from tests.support.keys import session_key_pair  # noqa: E402
from tests.support.token_server import TokenServer  # noqa: E402

TUNING_ENV = "GEO_TUI_CONSOLE_TUNING"  # geo_tui.console.tuning.ENV, without importing Textual here

MiB = 1 << 20
SIZE = (120, 36)
TARGET_P99 = 0.050
PROBE = Path(__file__).with_name("console_probe.py")
KEY_BYTES = {
    "down": b"\x1b[B",
    "up": b"\x1b[A",
    "pagedown": b"\x1b[6~",
    "pageup": b"\x1b[5~",
    "enter": b"\r",
    "escape": b"\x1b",
    "backspace": b"\x7f",
    "slash": b"/",
}
# One round of typing; every key changes what is shown (the cursor drifts one row down per round). The
# filter's letters are bound to nothing outside the prompt, so a key typed early does no harm.
ROUND = [
    "down", "down", "down", "up", "up", "pagedown", "pageup", "o", "O",
    "slash", *"-eu", "enter", "slash", *["backspace"] * 3, "enter", "enter", "escape",
]  # fmt: skip
# A person waits to see the prompt open (or the detail screen) before typing on: so does the typist.
WAIT_AFTER = {"slash": ("focus", "Input"), "escape": ("screen", "Screen")}

_started = time.monotonic()
_quiet = False


def log(message: str) -> None:
    if not _quiet:
        print(f"[{time.monotonic() - _started:6.1f}s] {message}", file=sys.stderr, flush=True)


def percentiles(values: list[float]) -> dict[str, float | int]:
    """count, p50, p90, p99 and max (in ms) of `values` (seconds); nearest-rank percentiles."""
    if not values:
        return {"count": 0}
    ordered = sorted(values)

    def rank(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered) + 0.5) - 1))]

    ms = {"p50": rank(0.50), "p90": rank(0.90), "p99": rank(0.99), "max": ordered[-1]}
    return {"count": len(values), **{k: round(v * 1000, 1) for k, v in ms.items()}}


# The console in a pseudo-terminal ----------------------------------------------------------------------


class Terminal:
    """The probe running in a pty of SIZE; what it prints is read and dropped (the tail kept for errors)."""

    def __init__(self, command: list[str], env: dict[str, str]) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", SIZE[1], SIZE[0], 0, 0))
        self.master = master
        self.process = subprocess.Popen(
            command, stdin=slave, stdout=slave, stderr=slave, env=env, start_new_session=True, close_fds=True
        )
        os.close(slave)
        self.tail = b""
        self.sent: list[tuple[float, str]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.tail = (self.tail + data)[-8192:]

    def press(self, key: str) -> None:
        data = KEY_BYTES.get(key, key.encode())
        self.sent.append((time.monotonic(), key))
        os.write(self.master, data)

    def close(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        with contextlib.suppress(OSError):
            os.close(self.master)


def read_status(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def wait_for(path: Path, field: str, value: str, deadline: float, negate: bool = False) -> None:
    while time.monotonic() < deadline and (read_status(path).get(field) == value) is negate:
        time.sleep(0.01)


def drive(terminal: Terminal, status_path: Path, idle_keys: int, deadline: float, seed: int) -> bool:
    """Type rounds of keys until the backfill is over and `idle_keys` more were typed; then quit."""
    chance = random.Random(seed)
    while not read_status(status_path).get("frames"):
        if time.monotonic() > deadline or terminal.process.poll() is not None:
            return False
        time.sleep(0.05)
    typed_after_done = 0
    position = 0
    while time.monotonic() < deadline and terminal.process.poll() is None:
        key = ROUND[position % len(ROUND)]
        position += 1
        terminal.press(key)
        time.sleep(0.25 if key == "escape" else chance.uniform(0.06, 0.12))
        if key in WAIT_AFTER:
            field, value = WAIT_AFTER[key]
            wait_for(status_path, field, value, min(deadline, time.monotonic() + 3))
        elif key == "enter":  # the filter applied (focus back on the table), or the detail screen open
            wait_for(status_path, "focus", "Input", min(deadline, time.monotonic() + 3), negate=True)
        if read_status(status_path).get("done_at"):
            typed_after_done += 1
        if typed_after_done >= idle_keys and position % len(ROUND) == 0:
            # On a loaded machine a key can land before the prompt or screen it was meant for: close
            # whatever is open, so that `q` quits instead of going into the filter prompt.
            for _ in range(3):
                status = read_status(status_path)
                if status.get("focus") != "Input" and status.get("screen") == "Screen":
                    break
                terminal.press("escape")
                time.sleep(0.5)
            terminal.press("q")
            break
    try:
        terminal.process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return False
    return bool(read_status(status_path).get("done_at"))


# Working out the figures -------------------------------------------------------------------------------


def key_latencies(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each key with its latency (None: no frame showed its effect within a second)."""
    frames, flushes = results["frames"], results["flushes"]
    flush_times, flushed_chars = [t for t, _ in flushes], [n for _, n in flushes]
    measured = []
    frame_index = 0
    for key in results["keys"]:
        part, before, at = key["part"], key["before"], key["time"]
        latency = cpu = None
        if part is not None:
            while frame_index < len(frames) and frames[frame_index][0] < at:
                frame_index += 1
            for ended, chars, drawn in frames[frame_index:]:
                if ended - at > 1.0:
                    break
                if drawn.get(part) != before:
                    latency = first_flush_after(flush_times, flushed_chars, chars, ended) - at
                    cpu = drawn["cpu"] - key["cpu"]
                    break
        measured.append({**key, "latency": latency, "ui_cpu": cpu if latency is not None else None})
    return measured


def first_flush_after(times: list[float], chars: list[int], needed: int, fallback: float) -> float:
    """When the writer thread had flushed at least `needed` characters to the tty."""
    for flushed_at, written in zip(times, chars, strict=True):
        if written >= needed:
            return flushed_at
    return fallback


def sched_share(samples: list[list[float]], low: float, high: float) -> dict[str, float]:
    """The UI thread between `low` and `high`: seconds on a CPU, and seconds it was runnable but waited
    for one (the machine's other processes had the cores)."""
    inside = [s for s in samples if low <= s[0] <= high]
    if len(inside) < 2:
        return {}
    (t0, ran0, waited0), (t1, ran1, waited1) = inside[0], inside[-1]
    return {
        "seconds": round(t1 - t0, 2),
        "ran": round(ran1 - ran0, 2),
        "waited_for_cpu": round(waited1 - waited0, 2),
    }


def summarise(results: dict[str, Any], terminal: Terminal, workload: dict[str, Any]) -> dict[str, Any]:
    copied = results["copied"]
    if not copied:
        raise RuntimeError("the console never reported a copied byte")
    start, end = copied[0][0], copied[-1][0]
    idle_from = (results["done_at"] or end) + 1.0
    keys = key_latencies(results)
    windows = {"backfill": (start, end), "idle": (idle_from, float("inf"))}
    summary: dict[str, Any] = {"workload": workload, "size": f"{SIZE[0]}x{SIZE[1]}"}
    for name, (low, high) in windows.items():
        chosen = [k for k in keys if low <= k["time"] <= high and k["part"] is not None]
        lags = [lag for t, lag in results["lag"] if low <= t <= high]
        gcs = [b - a for a, b, _ in results["full_gcs"] if low <= a <= high]
        gc_cpu = [cpu for a, _, cpu in results["full_gcs"] if low <= a <= high]
        latencies = [k["latency"] for k in chosen if k["latency"] is not None]
        slowest = sorted((k for k in chosen if k["latency"] is not None), key=lambda k: -k["latency"])[:5]
        summary[name] = {
            "keys": percentiles(latencies),
            # Where the tail comes from: the slowest keys, seconds into the window, latency and UI CPU in ms.
            "slowest": [
                [
                    round(k["time"] - low, 2),
                    k["key"],
                    round(k["latency"] * 1000, 1),
                    round(k["ui_cpu"] * 1000, 1),
                ]
                for k in slowest
            ],
            "ui_cpu": percentiles([k["ui_cpu"] for k in chosen if k["ui_cpu"] is not None]),
            "no_visible_effect": len(chosen) - len(latencies),
            "loop_lag": percentiles(lags),
            "ui_thread": sched_share(results.get("sched") or [], low, high),
            "full_gcs": len(gcs),
            "full_gc_cpu_max_ms": round(max(gc_cpu, default=0.0) * 1000, 1),
            "full_gc_max_ms": round(max(gcs, default=0.0) * 1000, 1),
            "by_key": {
                part: percentiles([k["latency"] for k in chosen if k["part"] == part and k["latency"]])
                for part in sorted({k["part"] for k in chosen})
            },
        }
    seconds = max(end - start, 1e-6)
    summary["backfill"]["seconds"] = round(seconds, 2)
    summary["backfill"]["copied_mib"] = round(sum(n for _, n in copied) / MiB, 1)
    # Bytes are reported per drain; the first drain's bytes were copied before the window opened.
    summary["backfill"]["throughput_mib_s"] = round(sum(n for _, n in copied[1:]) / MiB / seconds, 1)
    b, i = summary["backfill"]["keys"], summary["idle"]["keys"]
    if b.get("count") and i.get("count"):
        summary["ratio"] = {q: round(b[q] / max(i[q], 0.1), 2) for q in ("p50", "p90", "p99", "max")}
    summary["target_p99_ms"] = TARGET_P99 * 1000
    summary["ok"] = bool(b.get("count")) and b["p99"] < TARGET_P99 * 1000
    events = [k for k in results["keys"]]
    sent = [(t, k) for t, k in terminal.sent if k != "q"]
    delays = [e["time"] - t for (t, k), e in zip(sent, events, strict=False) if k != "escape"]
    summary["terminal_to_event"] = percentiles(delays)
    return summary


def render(summary: dict[str, Any]) -> str:
    w = summary["workload"]
    b, i = summary["backfill"], summary["idle"]
    lines = [
        f"geo-tui console latency: keypress to repaint, {summary['size']} pty, real Distribution"
        + (
            f", registries pinned to CPU {REGISTRY_CPU}"
            if summary.get("pinned")
            else ", all sharing the CPUs"
        )
        + f"; console workarounds: {summary.get('tuning', 'all')}",
        f"workload: {w['repositories']} repositories x {w['tags']} tags, {w['mib']:.0f} MiB unique, "
        f"into {w['secondaries']} secondaries",
        f"backfill: {b['copied_mib']:.0f} MiB copied in {b['seconds']:.1f} s"
        f" = {b['throughput_mib_s']:.1f} MiB/s",
        "",
        f"{'':<22}{'count':>7}{'p50':>9}{'p90':>9}{'p99':>9}{'max':>9}",
    ]

    def row(label: str, figures: dict[str, Any]) -> str:
        if not figures.get("count"):
            return f"{label:<22}{0:>7}"
        cells = "".join(f"{figures[q]:>7.1f}ms" for q in ("p50", "p90", "p99", "max"))
        return f"{label:<22}{figures['count']:>7}{cells}"

    lines.append(row("keys, idle", i["keys"]))
    lines.append(row("keys, backfill", b["keys"]))
    if "ratio" in summary:
        r = summary["ratio"]
        lines.append(f"{'ratio backfill/idle':<22}{'':>7}" + "".join(f"{r[q]:>8.2f}x" for q in r))
    lines.append(row("UI CPU per key, idle", i["ui_cpu"]))
    lines.append(row("UI CPU per key, fill", b["ui_cpu"]))
    lines.append(row("loop lag, idle", i["loop_lag"]))
    lines.append(row("loop lag, backfill", b["loop_lag"]))
    lines.append(row("tty to key event", summary["terminal_to_event"]))
    lines.append("")
    for name, phase in (("backfill", b), ("idle", i)):
        parts = ", ".join(
            f"{p} p99 {f['p99']:.0f} ms ({f['count']})" for p, f in phase["by_key"].items() if f.get("count")
        )
        lines.append(f"by key, {name}: {parts}")
        lines.append(
            f"  {phase['no_visible_effect']} keys without a visible effect; {phase['full_gcs']} full GCs "
            f"(longest {phase['full_gc_max_ms']:.0f} ms, at most {phase['full_gc_cpu_max_ms']:.0f} ms CPU)"
        )
        ui = phase.get("ui_thread") or {}
        if ui:
            lines.append(
                f"  UI thread over {ui['seconds']:.1f} s: {ui['ran']:.2f} s on a CPU, "
                f"{ui['waited_for_cpu']:.2f} s runnable but waiting for one"
            )
    verdict = "ok" if summary["ok"] else "MISSED"
    lines.append(
        f"machine load average {summary['load_before']:.1f} before, {summary['load_after']:.1f} after "
        f"({os.cpu_count()} CPUs); UI CPU per key: the UI thread's CPU time from the key to its frame"
    )
    lines.append("")
    lines.append(
        f"p99 during backfill {b['keys'].get('p99', float('nan')):.1f} ms"
        f" at {b['throughput_mib_s']:.1f} MiB/s (target < {summary['target_p99_ms']:.0f} ms): {verdict}"
    )
    return "\n".join(lines)


# Main ---------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    key_pair = session_key_pair()
    with contextlib.ExitStack() as stack:
        realm = stack.enter_context(TokenServer(key_pair))
        sites = []
        for name in ("primary", "secondary-eu", "secondary-us"):
            site = Distribution(
                workdir / f"registry-{name}", name=name, key_pair=key_pair, token_realm=realm.url
            )
            stack.callback(site.stop)
            sites.append(site.start())
            if args.pin:
                pin(site.pid, {REGISTRY_CPU})
        primary, secondaries = sites[0], sites[1:]
        log(f"loading the primary: {args.repos} repositories x {args.tags} tags, scale {args.scale}")
        content = load_primary(primary, args.repos, args.tags, args.scale, args.seed)
        workload = {
            "repositories": args.repos,
            "tags": args.tags,
            "mib": round(content.unique_bytes / MiB, 1),
            "secondaries": len(secondaries),
        }
        log(f"primary holds {workload['mib']:.0f} MiB; starting the console in a {SIZE[0]}x{SIZE[1]} pty")
        config = write_geo_config(
            workdir / "geo",
            primary,
            secondaries,
            key_pair,
            engine={"repository_concurrency": 10, "blob_concurrency": 4},  # the product's defaults
        )
        results_path, status_path = workdir / "results.json", workdir / "status.json"
        path = os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(REPO_ROOT)]))
        env = {**os.environ, "TERM": "xterm-256color", "COLORTERM": "truecolor", "PYTHONPATH": path}
        if args.tuning is not None:
            env[TUNING_ENV] = args.tuning
        expected = args.repos * len(secondaries)
        command = [
            sys.executable,
            str(PROBE),
            str(config),
            str(results_path),
            str(status_path),
            str(expected),
        ]
        load_before = os.getloadavg()[0]
        if args.pin:
            pin(os.getpid(), {REGISTRY_CPU})  # the bench's own work goes with the registries
            command = ["taskset", "-c", ",".join(map(str, CONSOLE_CPUS)), *command]
        terminal = Terminal(command, env)
        stack.callback(terminal.close)
        finished = drive(terminal, status_path, args.idle_keys, time.monotonic() + args.timeout, args.seed)
        if not finished or not results_path.exists():
            tail = terminal.tail.decode(errors="replace")[-1500:]
            raise RuntimeError(
                f"the console did not finish the run (status {read_status(status_path)}):\n{tail}"
            )
        log("console quit; working out the figures")
        summary = summarise(json.loads(results_path.read_text()), terminal, workload)
        summary["load_before"], summary["load_after"] = load_before, os.getloadavg()[0]
        summary["pinned"] = args.pin
        summary["tuning"] = args.tuning or "all"
        return summary


REGISTRY_CPU = (os.cpu_count() or 2) - 1
CONSOLE_CPUS = tuple(range(REGISTRY_CPU)) or (0,)


def pin(pid: int, cpus: set[int]) -> None:
    """Every thread of `pid` onto `cpus` (the registries' Go runtime threads included)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(tid), cpus)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Time keypress-to-repaint in the console during a backfill.")
    parser.add_argument("--repos", type=int, default=40, help="repositories (40)")
    parser.add_argument("--tags", type=int, default=2, help="tags per repository (2)")
    parser.add_argument("--scale", type=float, default=0.11, help="layer size factor (0.11: ~200 MiB)")
    parser.add_argument("--seed", type=int, default=7, help="content and typing seed (7)")
    parser.add_argument("--idle-keys", type=int, default=150, help="keys typed after the backfill (150)")
    parser.add_argument("--timeout", type=float, default=100.0, help="seconds for the console run (100)")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="registries (and this bench) on the last CPU, the console and its engine on the others: "
        "the registries stand in for other machines, as in production",
    )
    parser.add_argument(
        "--tuning",
        help='the console\'s tuning: "none", or "-NAME,..." to turn the named pieces off (default: all on)',
    )
    parser.add_argument("--workdir", type=Path, help="parent of the temp dir")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress on stderr")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    global _quiet
    args = parse_args(argv)
    _quiet = args.quiet
    for binary in ("docker-registry",):
        if shutil.which(binary) is None:
            print(f"bench: {binary} is not installed (apt-get install docker-registry)", file=sys.stderr)
            return 2
    workdir = Path(tempfile.mkdtemp(prefix="geo-tui-console-latency-", dir=args.workdir))
    try:
        summary = run(args, workdir)
    except KeyboardInterrupt:
        print("bench: interrupted", file=sys.stderr)
        return 130
    except RuntimeError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    finally:
        if args.keep:
            log(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(json.dumps(summary, indent=2) if args.json else render(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
