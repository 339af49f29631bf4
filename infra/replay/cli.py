"""``python -m infra.replay``: serve a stream, generate a synthetic recording, record the live one.

python -m infra.replay serve [FILE] [--speed X | --fast | --rate N] [faults…]
python -m infra.replay generate --seed 7 --events 100000 --out FILE [stream options]
python -m infra.replay record [--minutes N | --events N] [--since TIME] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson

from app.config import ConfigError, load_settings
from infra.replay import record
from infra.replay.bursts import Burst, BurstKind
from infra.replay.server import ReplayOptions, ReplayServer
from infra.replay.sources import SyntheticEvents
from infra.replay.synthetic import StreamOptions, SyntheticStream

logger = logging.getLogger(__name__)


def parse_time(text: str) -> datetime:
    """An ISO-8601 time (naive means UTC)."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {text!r}") from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def parse_burst(text: str) -> Burst:
    """``wiki=dewiki,times=5,at=30,minutes=10`` (a wiki at 5× its rate from minute 30 for 10
    minutes; ``times=0``: silent), or ``wiki=enwiki,page=Some_page,editors=8,edits=20,at=30,
    minutes=10``."""
    items = [item.partition("=") for item in text.split(",")]
    malformed = [key for key, equals, _ in items if not equals]
    if malformed:
        raise argparse.ArgumentTypeError(f"--burst {text!r}: {malformed[0]!r} is not KEY=VALUE")
    fields = {key: value for key, _, value in items}

    def number(key: str, kind: type[float] = float, default: str | None = None) -> float:
        value = fields.pop(key) if default is None else fields.pop(key, default)
        try:
            return kind(value)
        except ValueError:
            raise ValueError(f"{key}={value!r} is not a number") from None

    try:
        at = timedelta(minutes=number("at", default="0"))
        duration = timedelta(minutes=number("minutes"))
        wiki = fields.pop("wiki")
        if "page" in fields:
            burst = Burst(
                BurstKind.PAGE, wiki, at, duration,
                title=fields.pop("page").replace("_", " "),
                editors=int(number("editors", int)),
                edits=int(number("edits", int)),
            )  # fmt: skip
        else:
            times = number("times")
            kind = BurstKind.SILENCE if times == 0 else BurstKind.WIKI
            burst = Burst(kind, wiki, at, duration, multiplier=times)
    except KeyError as missing:
        raise argparse.ArgumentTypeError(f"--burst {text!r}: {missing} is missing") from None
    except ValueError as error:
        raise argparse.ArgumentTypeError(f"--burst {text!r}: {error}") from None
    if fields:
        raise argparse.ArgumentTypeError(f"--burst {text!r}: unknown {', '.join(fields)}")
    return burst


def _stream_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("the synthetic stream")
    group.add_argument("--seed", type=int,
                       help="same seed, same events (default: 7; serve: random)")  # fmt: skip
    group.add_argument(
        "--event-rate", type=float, default=40.0, metavar="PER_S",
        help="events per second of event time (default 40, like the live stream)",
    )  # fmt: skip
    group.add_argument(
        "--start", type=parse_time, metavar="TIME",
        help="event time of the first event (default: now)",
    )  # fmt: skip
    group.add_argument("--legacy-share", type=float, default=0.0, metavar="SHARE",
                       help="share of events in the legacy (pre-2019) envelope")  # fmt: skip
    group.add_argument("--duplicate-rate", type=float, default=0.002, metavar="SHARE",
                       help="share of events that repeat an earlier meta.id")  # fmt: skip
    group.add_argument("--canary-every", type=float, default=600.0, metavar="SECONDS",
                       help="a canary event every this much event time (0: none)")  # fmt: skip
    group.add_argument("--burst", type=parse_burst, action="append", default=[], metavar="SPEC",
                       help=parse_burst.__doc__)  # fmt: skip


def stream_options(args: argparse.Namespace, *, default_seed: int) -> StreamOptions:
    return StreamOptions(
        seed=default_seed if args.seed is None else args.seed,
        rate=args.event_rate,
        start=args.start,
        legacy_share=args.legacy_share,
        duplicate_rate=args.duplicate_rate,
        canary_interval=timedelta(seconds=args.canary_every) if args.canary_every > 0 else None,
        bursts=tuple(args.burst),
    )


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {text}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive, not {text}")
    return value


def since_time(text: str) -> str:
    try:
        return record.since_parameter(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _record_arguments(parser: argparse.ArgumentParser) -> None:
    limit = parser.add_mutually_exclusive_group()
    limit.add_argument("--minutes", type=positive_float, metavar="N",
                       help="stop after N minutes (fractions allowed)")  # fmt: skip
    limit.add_argument("--events", type=positive_int, metavar="N", help="stop after N events")
    parser.add_argument(
        "--since", type=since_time, metavar="TIME",
        help="start at TIME (ISO-8601 or epoch ms; EventStreams' ?since=) for a backfill",
    )  # fmt: skip
    parser.add_argument(
        "--out", type=Path, metavar="FILE",
        help="NDJSON file (default: recentchange-<UTC time>.ndjson here)",
    )  # fmt: skip
    parser.add_argument("--force", action="store_true", help="overwrite FILE if it exists")


def _parser(prog: str = "python -m infra.replay") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve", help="serve a recording, or the synthetic stream, as EventStreams"
    )
    serve.add_argument(
        "file", type=Path, nargs="?", help="NDJSON, one event per line (default: synthetic)"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8765, help="0 picks a free port")
    pace = serve.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, default=1.0, help="N× the event-time pace")
    pace.add_argument("--fast", action="store_true", help="as fast as possible")
    serve.add_argument("--rate", type=float, metavar="PER_S", help="events/s, evenly spaced")
    serve.add_argument(
        "--loop", action="store_true", help="replay a file forever, times made current"
    )
    serve.add_argument("--hold", action="store_true", help="keep streams open at the end")
    serve.add_argument(
        "--backlog", type=positive_float, metavar="MINUTES",
        default=SyntheticEvents.BACKLOG / timedelta(minutes=1),
        help="how far back a client may resume the live synthetic stream (default: an hour)",
    )  # fmt: skip
    serve.add_argument(
        "--events", type=positive_int, metavar="N", help="synthetic: stop after N events"
    )
    serve.add_argument(
        "--live", action="store_true",
        help="synthetic: send each event when its time comes even with --start (a restarted "
        "server going on with the stream that began then; the default without --start)",
    )  # fmt: skip
    serve.add_argument("--drop-every", type=int, metavar="N", help="cut after N frames")
    serve.add_argument("--malformed-every", type=int, metavar="N", help="every Nth frame bad")
    serve.add_argument("--fail-first", type=int, default=0, metavar="N")
    serve.add_argument("--fail-status", type=int, default=503, help="e.g. 429 or 503")
    serve.add_argument("--retry-after", type=int, metavar="SECONDS")
    serve.add_argument("--retry-ms", type=int, metavar="MS", help="send `retry:` first")
    _stream_arguments(serve)

    generate = commands.add_parser("generate", help="write the synthetic stream to NDJSON")
    generate.add_argument("--events", type=int, required=True, metavar="N")
    generate.add_argument("--out", type=Path, help="NDJSON file (default: standard output)")
    generate.add_argument(
        "--labels", type=Path, metavar="FILE",
        help="the bursts' side file (default: OUT with .bursts.json, when there are bursts)",
    )  # fmt: skip
    _stream_arguments(generate)

    capture = commands.add_parser(
        "record",
        help="record the stream at ingestion.wikimedia.url to NDJSON",
        description="Record the stream the worker follows (ingestion.wikimedia.url, with its "
        "User-Agent, resume and backoff) to NDJSON, one data: payload per line, byte for byte. "
        "Without --minutes or --events: until Ctrl-C.",
    )
    _record_arguments(capture)
    capture.set_defaults(parser=capture)  # its errors name `record`
    return parser  # fmt: skip


def _generate(args: argparse.Namespace) -> int:
    if args.events < 1:
        raise ValueError("--events must be at least 1")
    stream = SyntheticStream(stream_options(args, default_seed=7))
    out = sys.stdout.buffer if args.out is None else args.out.open("wb")
    try:
        for data in stream.events(args.events):
            out.write(data + b"\n")
    finally:
        if args.out is not None:
            out.close()
    labels = args.labels
    if labels is None and args.out is not None and args.burst:
        labels = args.out.with_suffix(".bursts.json")
    if labels is not None:
        labels.write_bytes(orjson.dumps(stream.burst_labels(), option=orjson.OPT_INDENT_2) + b"\n")
    return 0


def _serve_server(args: argparse.Namespace) -> ReplayServer:
    options = ReplayOptions(
        speed=None if args.fast else args.speed,
        rate=args.rate,
        loop=args.loop,
        drop_every=args.drop_every,
        malformed_every=args.malformed_every,
        fail_first=args.fail_first,
        fail_status=args.fail_status,
        retry_after=args.retry_after,
        retry_ms=args.retry_ms,
        hold_open=args.hold,
    )
    if args.file is not None:
        if args.live:
            raise ValueError("--live is for the synthetic stream (a recording has its own times)")
        if args.events is not None:
            raise ValueError("--events is for the synthetic stream (a recording is served whole)")
        return ReplayServer.from_ndjson(args.file, options)
    import random

    seed = random.SystemRandom().randrange(1 << 31)  # fresh ids on every new stream
    stream = SyntheticStream(stream_options(args, default_seed=seed))
    clock_paced = not args.fast and args.rate is None and args.speed == 1.0
    if args.live and not clock_paced:
        raise ValueError("--live paces by the clock: not with --fast, --rate or --speed")
    live = clock_paced and (args.live or args.start is None)
    pace = "live" if live else "paced by event time"
    logger.info("synthetic stream: seed %d, position 0 at %s, %s", stream.options.seed,
                stream.start.isoformat(), pace)  # fmt: skip
    backlog = timedelta(minutes=args.backlog)
    events = SyntheticEvents(stream, count=args.events, live=live, backlog=backlog)
    return ReplayServer(events, options)


async def _serve(server: ReplayServer, host: str, port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    url = await server.start(host, port)
    count = server.event_count
    logger.info("serving %s at %s", "without end" if count is None else f"{count} events", url)
    try:
        await stop.wait()
    finally:
        logger.info("stopping after %d frames sent", server.events_sent)
        await server.stop()


def _record(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """Open the file (never over an existing one without --force), record, say what was kept."""
    tty = sys.stderr.isatty()
    # On a terminal the progress line is redrawn in place; a log line clears it first.
    clear = "\r\x1b[K" if tty else ""
    logging.basicConfig(
        level=logging.WARNING, format=clear + "%(asctime)s %(levelname)s %(message)s", force=True
    )
    try:
        stream = record.StreamSettings.from_settings(load_settings())
    except ConfigError as error:
        sys.stderr.write(f"{parser.prog}: {error}\n")
        return 2
    out_path = args.out or record.default_out()
    try:
        out = out_path.open("wb" if args.force else "xb")
    except FileExistsError:
        parser.error(f"--out {out_path}: the file exists; choose another or add --force")
    except OSError as error:
        parser.error(f"--out {out_path}: {error.strerror}")

    def show(progress: record.Progress) -> None:
        sys.stderr.write(clear + progress.line() + ("" if tty else "\n"))
        sys.stderr.flush()

    async def run() -> record.Progress:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            loop.add_signal_handler(signum, stop.set)
        sys.stderr.write(f"recording {stream.url} to {out_path} (Ctrl-C ends it)\n")
        return await record.record(
            out, stream, since=args.since, events=args.events,
            seconds=None if args.minutes is None else args.minutes * 60,
            stop=stop, on_progress=show, progress_interval=1.0 if tty else 10.0,
        )  # fmt: skip

    with out:
        progress = asyncio.run(run())
    sys.stderr.write(clear + record.summary(progress, out_path) + "\n")
    if progress.written == 0:
        out_path.unlink(missing_ok=True)  # nothing to keep: no empty file left in the way
        sys.stderr.write(f"{parser.prog}: no events received from {stream.url}\n")
        return 1
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "python -m infra.replay") -> int:
    parser = _parser(prog)
    args, unknown = parser.parse_known_args(argv)
    if unknown:  # reported by the subcommand's parser, whose usage is the one that helps
        getattr(args, "parser", parser).error(f"unrecognized arguments: {' '.join(unknown)}")
    if args.command == "record":
        return _record(args, args.parser)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        if args.command == "generate":
            return _generate(args)
        server = _serve_server(args)
    except (OSError, ValueError) as error:
        parser.error(str(error))
    asyncio.run(_serve(server, args.host, args.port))
    return 0
