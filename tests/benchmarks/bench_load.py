"""Load: a replay at 100× the live rate through the whole pipeline. Prints figures, asserts
nothing (machines are noisy).

The replay server serves the synthetic stream (infra/replay/synthetic.py) at ``--rate``
events/s (default 5,000: over 100× the ~40 events/s of the live stream; its event time runs at
the same rate, so times stay current) or, with ``--recording FILE``, that NDJSON file in a
loop with fresh ids and current times, to the worker; the Spark job aggregates into PostgreSQL,
for ``--minutes`` (default 10). Every ``--every`` seconds it samples the raw topic's growth, both
readers' lag (infra/lag.py: the normalizer's group, the Spark job's checkpoint) and the RSS of
the worker and the Spark job (their process trees). It reports whether the lag stayed bounded
(its maximum over the second half of the run against the first half's) and memory at start and
end.

    .venv/bin/python tests/benchmarks/bench_load.py [--rate 5000] [--minutes 10] [--every 10]
        [--recording FILE]

It runs its own stack (a temporary WIKIPULSE_HOME on free ports) and removes it after.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from app.config import load_settings  # noqa: E402
from infra.lag import NORMALIZER, SPARK, consumer_lag  # noqa: E402
from infra.replay_server import ReplayMode  # noqa: E402
from infra.stack import Stack  # noqa: E402
from tests.conftest import make_home, stack_environment  # noqa: E402


def tree_rss(pid: int | None) -> int:
    """Resident memory of a process and its descendants, bytes."""
    if pid is None:
        return 0
    children: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(
                line.split(":", 1) for line in status.read_text().splitlines() if ":" in line
            )
            children.setdefault(int(fields["PPid"]), []).append(int(fields["Pid"]))
        except (OSError, KeyError, ValueError):
            continue
    total, todo = 0, [pid]
    while todo:
        current = todo.pop()
        todo.extend(children.get(current, []))
        try:
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total


def mib(value: float) -> str:
    return f"{value / 2**20:,.0f} MiB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=5000.0, help="events/s served")
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--every", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--keep", action="store_true", help="leave the stack and its home")
    parser.add_argument(
        "--recording", type=Path, metavar="FILE",
        help="serve this NDJSON file in a loop instead of the synthetic stream",
    )  # fmt: skip
    args = parser.parse_args()
    rate = f"--rate={args.rate:g}"
    if args.recording is None:
        mode = ReplayMode.synthetic(options=(rate, f"--event-rate={args.rate:g}"))
    else:
        mode = ReplayMode.for_file(args.recording, speed=1.0, loop=True, options=(rate,))

    home = make_home("wikipulse-load-")
    # The components the stack spawns read their configuration from the environment.
    os.environ.update(stack_environment(home))
    settings = load_settings()
    stack = Stack(settings)
    try:
        print(f"starting the stack in {home}, serving {mode.describe()} …", flush=True)
        stack.up(replay=mode)
        pids = {state.name: state.pid for state in stack.status()}
        samples: list[dict[str, float]] = []
        started = time.monotonic()
        deadline = started + args.minutes * 60
        print(f"{'t (s)':>6} {'raw +ev/s':>10} {'norm lag':>9} {'spark lag':>10} "
              f"{'worker RSS':>11} {'spark RSS':>10}", flush=True)  # fmt: skip
        previous_raw: tuple[float, int] | None = None
        while time.monotonic() < deadline:
            lags = {lag.consumer: lag for lag in consumer_lag(settings)}
            for lag in lags.values():
                if not lag.known:
                    print(f"  {lag.consumer} lag unknown: {lag.error}", flush=True)
            raw_end = sum(p.end for p in lags[NORMALIZER].partitions)
            now = time.monotonic()
            rate = (raw_end - previous_raw[1]) / (now - previous_raw[0]) if previous_raw else 0.0
            previous_raw = (now, raw_end)
            sample = {
                "t": now - started,
                "raw_rate": rate,
                "raw_end": raw_end,
                "normalizer_lag": lags[NORMALIZER].total if lags[NORMALIZER].known else -1,
                "spark_lag": lags[SPARK].total if lags[SPARK].known else -1,
                "worker_rss": tree_rss(pids.get("worker")),
                "spark_rss": tree_rss(pids.get("spark")),
            }
            samples.append(sample)
            print(f"{sample['t']:>6.0f} {rate:>10,.0f} {sample['normalizer_lag']:>9,.0f} "
                  f"{sample['spark_lag']:>10,.0f} {mib(sample['worker_rss']):>11} "
                  f"{mib(sample['spark_rss']):>10}", flush=True)  # fmt: skip
            time.sleep(args.every)
        report(samples, args.rate)
        dead = [state.name for state in stack.status() if state.required and not state.healthy]
        print(f"components down at the end: {', '.join(dead) or 'none'}")
    finally:
        if args.keep:
            print(f"kept: WIKIPULSE_HOME={home}")
        else:
            stack.down(purge=True)
            shutil.rmtree(home, ignore_errors=True)


def report(samples: list[dict[str, float]], target: float) -> None:
    steady = samples[1:]
    if len(steady) < 4:
        print("too few samples for a report")
        return
    half = len(steady) // 2
    first, second = steady[:half], steady[half:]
    elapsed = steady[-1]["t"] - samples[0]["t"]
    ingested = (steady[-1]["raw_end"] - samples[0]["raw_end"]) / elapsed
    print(f"\nload: {elapsed / 60:.1f} min at a served rate of {target:,.0f} events/s")
    print(f"  ingested into raw      : {ingested:>10,.0f} events/s (mean)")
    for name, key in (("normalizer", "normalizer_lag"), ("spark job", "spark_lag")):
        a = max(s[key] for s in first)
        b = max(s[key] for s in second)
        verdict = "bounded" if b <= max(2 * a, 10_000) else "GROWING"
        print(f"  {name:<10} lag max   : first half {a:>9,.0f}, second half {b:>9,.0f}  "
              f"-> {verdict}")  # fmt: skip
    for name, key in (("worker", "worker_rss"), ("spark job", "spark_rss")):
        start, end = steady[0][key], steady[-1][key]
        middle = statistics.median(s[key] for s in steady)
        print(f"  {name:<10} RSS       : start {mib(start)}, median {mib(middle)}, "
              f"end {mib(end)} ({(end - start) / max(start, 1):+.0%})")  # fmt: skip


if __name__ == "__main__":
    main()
