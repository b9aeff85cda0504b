"""The ``ticklet`` command line.

``ticklet backtest PATH... [--out DIR] [--json] [--workers N] [--report]
[--save-models DIR] [--warm-start DIR]`` runs the forecasting dataflow
(:mod:`dataflows.forecast`) on the given recordings or archives
(:func:`ticklet.backtest.run_backtest`) and summarizes the run;
``--save-models`` saves its learners as a model bundle, ``--warm-start``
starts them from one (``ticklet train PATH...
--save-models DIR`` is the same command). With ``--json`` exactly one JSON object is
printed on stdout (schema in docs/reference/outputs.md); logs go to stderr. ``--report``
also writes the run's HTML report (``DIR/report.html``).

``ticklet report OUT_DIR [-o FILE] [--window N]`` writes the HTML report of a
finished run (:mod:`ticklet.report`) and prints its path.

``ticklet serve [--address A] [--port P]`` serves the latest records of the
output topic over HTTP, a live WebSocket stream and a live page
(:mod:`ticklet.serve.app`).

``ticklet --version`` (``-V``) prints the installed version; ``ticklet
--help`` says what ticklet is and shows the main job.

``ticklet config`` prints the settings a run would use (environment and
``.env`` over the defaults; ``--defaults``: the table of docs/reference/settings.md).

A usage or configuration error (a bad argument or ``TICKLET_*`` variable, an
input that is missing, unreadable or not a known format, an output directory
that cannot be made or whose files cannot be replaced, brokers that do not
answer at start) is one plain line on stderr naming the argument, setting or
file, and exit status 2; never a traceback. A backtest whose output cannot be
written during the run stops with one line naming the file and the OS error,
exit status 74 and no summary (:mod:`sinks.fatal`), and so does ``ticklet
collect`` whose capture cannot be written (after flushing Kafka). With
``--save-models``, learners whose states a bundle may not hold (a ticklet
bug) stop the command with one line saying what to report, exit status 70
and no summary (the summary is printed once the bundle is saved).
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any, NoReturn, Optional

log = logging.getLogger("ticklet")

#: The exit status of a command stopped on request (Ctrl-C, SIGINT): 128 + 2, as a shell reports it.
EXIT_INTERRUPTED = 130

__all__ = ["main"]

#: ``ticklet --help``: plain text (a terminal shows it as it is), the main job first, as in the README.
_ABOUT = """\
ticklet forecasts crypto market ticks with a Bytewax dataflow: Binance ticks become
bars and features, online learners forecast the return over several horizons, each
forecast is scored when its target time comes, and simulated books trade on them.

The main job runs the dataflow on the bundled sample (11 minutes of Binance spot
BTCUSDT) and ends with a summary on stderr:
  python -m bytewax.run dataflows.forecast
The same on the recordings or archives you name, with the HTML report of the run:
  ticklet backtest data/sample --out out/sample --report"""
_MORE = """\
Settings are TICKLET_* environment variables ('ticklet config' lists them all). A
bad setting, argument or input is one line on stderr and exit status 2. 'ticklet
COMMAND --help' shows a command's options; the documentation is the site in docs/."""


class _Parser(argparse.ArgumentParser):
    """argparse, with errors in one line (usage is one ``--help`` away)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a {'whole ' if kind is int else ''}number: {text!r}") from None
        if not v > 0 or v != v or v == float("inf"):
            raise argparse.ArgumentTypeError(f"must be a positive number, not {text}")
        return v
    parse.__name__ = f"positive {kind.__name__}"
    return parse


def _speed(text: str) -> Optional[float]:
    return None if text == "max" else _positive(float)(text)


def _max_gap(text: str) -> Optional[float]:
    return None if text == "none" else _positive(float)(text)


def _override(model: Any, options: dict[str, tuple[str, Any]]) -> Any:
    """``model`` (settings) with command-line options over some fields, validated like the settings.

    The options are ``{field: (option, value)}``; a bad value is a
    :class:`~core.config.ConfigError` naming the option.
    """
    from pydantic import ValidationError

    from core.config import ConfigError

    try:
        return type(model).model_validate({**model.model_dump(), **{f: v for f, (_, v) in options.items()}})
    except ValidationError as ex:
        e = ex.errors()[0]
        field = str(e["loc"][0]) if e["loc"] else ""
        name = options[field][0] if field in options else "TICKLET_" + field.upper()
        raise ConfigError(f"{name}: {e['msg'].removeprefix('Value error, ')}") from None


def _download(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``ticklet download``: fetch and verify archives, print a JSON summary.

    A failure (an archive not published, a checksum mismatch, a server that
    keeps failing) is logged as one error line naming the archive and URL and
    exits 1; with ``--skip-missing`` unpublished archives are listed in the
    summary's ``missing`` instead and the exit status is 0. Bad arguments
    (dates, symbol, interval) exit 2.
    """
    from core.config import check_dir
    from dataflows.settings import read_settings
    from sources.download import plan
    from sources.download_io import DownloadError, download

    cfg = read_settings().download
    try:
        archives = plan(args.symbol, args.kind, args.start, args.end, args.market,
                        args.interval if args.kind == "klines" else None)
    except ValueError as ex:
        parser.error(str(ex))
    out = args.out if args.out is not None else cfg.dir
    check_dir(out, "--out" if args.out is not None else "TICKLET_DOWNLOAD__DIR")
    progress = not args.quiet and sys.stderr.isatty()
    try:
        report = download(archives, out, args.base_url or cfg.base_url, skip_missing=args.skip_missing,
                          progress=progress, retries=cfg.retries, backoff_s=cfg.backoff_s, timeout_s=cfg.timeout_s)
    except DownloadError as ex:
        log.error("download failed: %s", ex)
        return 1
    sys.stdout.write(json.dumps(report.as_dict()) + "\n")
    return 0


def _collect(args: argparse.Namespace) -> int:
    """Run the live collector until interrupted; print its counters as JSON."""
    import asyncio

    from core.config import check_dir
    from dataflows.settings import read_settings
    from ticklet.collector import Collector

    logging.getLogger("ticklet").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    s = read_settings()
    update: dict[str, tuple[str, Any]] = {}
    if args.symbols is not None:
        update["symbols"] = ("--symbols", [x.strip().upper() for x in args.symbols.split(",") if x.strip()])
    if args.market:
        update["market"] = ("--market", args.market)
    if args.capture:
        update["capture_dir"] = ("--capture", args.capture)
    cfg = _override(s.collect, update)
    if cfg.capture_dir is not None:
        check_dir(cfg.capture_dir, "--capture" if args.capture else "TICKLET_COLLECT__CAPTURE_DIR")
    collector = Collector(cfg, s.kafka)

    async def run() -> dict[str, int]:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):  # stop cleanly: flush Kafka, close the capture
            loop.add_signal_handler(sig, collector.stop)
        return await collector.run(args.duration, args.exit_when_idle)

    counts = asyncio.run(run())
    sys.stdout.write(json.dumps(counts, sort_keys=True) + "\n")
    return 1 if counts.get("kafka_failed") or counts.get("kafka_undelivered") else 0


def _serve(args: argparse.Namespace) -> int:
    """``ticklet serve``: the HTTP/WebSocket API and the live page over the output topic.

    It serves :mod:`ticklet.serve.app` until SIGINT or SIGTERM. Ctrl-C
    (SIGINT) is one line and exit status 130 once the server has shut down
    (uvicorn raises it again when it is done), never a traceback.
    """
    from dataflows.settings import read_settings
    from ticklet.serve.app import serve

    logging.getLogger("ticklet").setLevel(logging.DEBUG if args.verbose else logging.INFO)
    s = read_settings()
    update = {f: (o, v) for f, (o, v) in {"address": ("--address", args.address),
                                           "port": ("--port", args.port)}.items() if v is not None}
    try:
        return serve(_override(s.serve, update) if update else s.serve, s.kafka)
    except KeyboardInterrupt:
        sys.stderr.write("ticklet: serve stopped on request (SIGINT): its connections closed\n")
        return EXIT_INTERRUPTED


def _report(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """``ticklet report``: write the run's HTML report, print its path.

    An OUT_DIR that is not a run's output directory, or whose files cannot
    be read, gets one line on stderr and exit status 2.
    """
    from ticklet.report import DEFAULT_WINDOW, NoRunError, build_report

    window = DEFAULT_WINDOW if args.window is None else args.window
    if window < 0:
        parser.error("--window must be 0 (all bars) or a positive number of bars")
    try:
        path = build_report(args.out_dir, args.output, window=window)
    except NoRunError as ex:
        sys.stderr.write(f"ticklet: {ex}\n")
        return 2
    except (ValueError, KeyError, OSError) as ex:  # a run's files that are damaged; a FILE that cannot be written
        if isinstance(ex, OSError) and ex.filename:
            why = f"{ex.filename}: {ex.strerror or ex}"
        else:
            why = (str(ex).strip().splitlines() or [type(ex).__name__])[0]
        sys.stderr.write(f"ticklet: no report of {args.out_dir}: {why}\n")
        return 2
    sys.stdout.write(f"{path}\n")
    return 0


def main(argv: Optional[list[str]] = None) -> int:
    """The ``ticklet`` command; returns its exit status.

    Usage and configuration errors are one line on stderr and status 2.
    """
    from core.config import ConfigError
    from sources.files import InputFormatError

    try:
        return _main(argv)
    except (ConfigError, InputFormatError) as ex:
        sys.stderr.write(f"ticklet: {ex}\n")
        return 2


def _main(argv: Optional[list[str]]) -> int:
    from core.version import ticklet_version

    parser = _Parser(prog="ticklet", description=_ABOUT, epilog=_MORE,
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-V", "--version", action="version", version=f"ticklet {ticklet_version()}",
                        help="print the version of ticklet and exit")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, what: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=what, description=f"ticklet {name}: {what}.")
    bt = command("backtest", "run the forecasting dataflow on recordings or archives")
    bt.add_argument("paths", nargs="+", help="recordings, Binance CSV/zip archives, Feather klines, or directories")
    bt.add_argument("--out", type=Path, default=Path("out/backtest"), help="output directory (default: out/backtest)")
    bt.add_argument("--json", action="store_true", help="print one JSON summary object on stdout")
    bt.add_argument("--workers", type=_positive(int), default=1,
                    help="processes of the run on this machine, one Bytewax worker each (default 1)")
    bt.add_argument("--report", action="store_true", help="also write the HTML report of the run (DIR/report.html)")
    bt.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    tr = command("train", "the same as backtest, saving the learners as a model bundle (--save-models)")
    for p in (bt, tr):
        p.add_argument("--save-models", type=Path, metavar="DIR", required=p is tr,
                       help="save the learners and feature scalers at the end as a model bundle in DIR")
        p.add_argument("--warm-start", type=Path, metavar="DIR",
                       help="start the learners from the model bundle in DIR (TICKLET_FORECAST__WARM_START), "
                       "verified first (and signed with TICKLET_BUNDLE__KEY, if set)")
    for a in bt._actions:
        if a.dest not in ("help", "save_models", "warm_start"):
            tr._add_action(a)
    rep = command("report", "write the self-contained HTML report of a finished run")
    rep.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="the run's output directory")
    rep.add_argument("-o", "--output", type=Path, metavar="FILE", help="HTML file (default: OUT_DIR/report.html)")
    rep.add_argument("--window", type=int, default=None, metavar="N",
                     help="bars of the price plot, the last ones (default 300; 0: all)")
    rep.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    rp = command("replay", "publish recordings to Kafka in receive-time order")
    rp.add_argument("paths", nargs="+", help="websocket recordings or directories")
    rp.add_argument("--to", choices=["kafka"], default="kafka", help="destination (kafka)")
    rp.add_argument("--speed", type=_speed, default=None,
                    help="'max' (as fast as possible, the default) or a factor X: gaps between messages are "
                    "divided by X")
    rp.add_argument("--max-gap-s", type=_max_gap, default=60.0, metavar="S",
                    help="with --speed, skip a gap in event time longer than S seconds (recordings of different "
                    "days), with a line saying so (default 60; 'none': wait through every gap)")
    rp.add_argument("--topic", help="topic (default: TICKLET_KAFKA__TICKS_TOPIC)")
    rp.add_argument("--bootstrap-servers", help="brokers (default: TICKLET_KAFKA__BOOTSTRAP_SERVERS)")
    rp.add_argument("--partitions", type=_positive(int), default=4,
                    help="partitions if the topic is created (default 4)")
    rp.add_argument("-v", "--verbose", action="store_true", help="debug logging (librdkafka's lines included)")
    cf = command("config", "print every setting (TICKLET_* variables) as a Markdown table: the values a "
                 "run would use, and where each comes from")
    cf.add_argument("--defaults", action="store_true",
                    help="the defaults instead (the table of the Settings page of the docs)")
    co = command("collect", "collect live Binance streams into Kafka and a raw capture")
    co.add_argument("--symbols", help="comma-separated symbols (default: TICKLET_COLLECT__SYMBOLS)")
    co.add_argument("--market", choices=["spot", "usdm"],
                    help="spot or USD-M futures (default: TICKLET_COLLECT__MARKET)")
    co.add_argument("--capture", type=Path, help="raw capture directory (default: TICKLET_COLLECT__CAPTURE_DIR)")
    co.add_argument("--duration", type=_positive(float),
                    help="stop after this many seconds (default: run until interrupted)")
    co.add_argument("--exit-when-idle", type=_positive(float), metavar="S",
                    help="stop after S seconds without a message (for bounded captures)")
    co.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sv = command("serve", "serve the latest forecasts, metrics and signals over HTTP, a live "
                 "WebSocket stream of the output topic, and a live page")
    sv.add_argument("--address", help="address to listen on (default: TICKLET_SERVE__ADDRESS, 127.0.0.1)")
    sv.add_argument("--port", type=int, help="port (default: TICKLET_SERVE__PORT, 8000; 0: any free port)")
    sv.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    dl = command("download", "download and verify Binance public-data archives (data.binance.vision)")
    dl.add_argument("--symbol", required=True, help="symbol, e.g. BTCUSDT")
    dl.add_argument("--kind", required=True, choices=["trades", "aggTrades", "klines"], help="archive kind")
    dl.add_argument("--interval", default="1m", help="kline interval (klines only; default 1m)")
    dl.add_argument("--start", required=True, help="first day, YYYY-MM-DD")
    dl.add_argument("--end", required=True, help="last day (inclusive), YYYY-MM-DD")
    dl.add_argument("--market", choices=["spot", "usdm", "coinm"], default="spot",
                    help="spot, USD-M or COIN-M futures (default spot)")
    dl.add_argument("--out", type=Path, help="directory (default: TICKLET_DOWNLOAD__DIR)")
    dl.add_argument("--base-url", help="archive server (default: TICKLET_DOWNLOAD__BASE_URL)")
    dl.add_argument("--skip-missing", action="store_true",
                    help="report archives that are not published (HTTP 404) instead of stopping at the first")
    dl.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    dl.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args(argv)
    if args.command == "config":
        from dataflows.settings import read_settings
        from ticklet.settings_tables import config_table, settings_table

        sys.stdout.write(settings_table() if args.defaults else config_table(read_settings()))
        return 0
    logging.basicConfig(level=logging.DEBUG if getattr(args, "verbose", False) else logging.WARNING,
                        stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "replay":
        from dataflows.settings import read_settings
        from ticklet.publish import publish

        k = read_settings().kafka
        options = {"bootstrap_servers": ("--bootstrap-servers", args.bootstrap_servers),
                   "ticks_topic": ("--topic", args.topic)}
        k = _override(k, {f: o for f, o in options.items() if o[1] is not None})
        summary = publish(args.paths, k.brokers, k.ticks_topic, speed=args.speed, client_config=k.client_config(),
                          partitions=args.partitions, delivery_timeout_s=k.delivery_timeout_s,
                          connect_timeout_s=k.connect_timeout_s, max_gap_s=args.max_gap_s)
        sys.stdout.write(json.dumps(summary) + "\n")
        if summary["interrupted"]:  # Ctrl-C: the summary of what was replayed, then the shell's status
            return EXIT_INTERRUPTED
        return 0 if not summary["failed"] and not summary["undelivered"] else 1
    if args.command == "download":
        return _download(args, dl)
    if args.command == "collect":
        return _collect(args)
    if args.command == "report":
        return _report(args, rep)
    if args.command == "serve":
        return _serve(args)
    if args.command in ("backtest", "train"):
        from ticklet.cluster import start

        helpers = start(args.workers)  # the other processes import while this one does
        from ticklet.backtest import run_backtest

        summary = run_backtest(args.paths, args.out, args.workers, save_models=args.save_models,
                               warm_start=args.warm_start, helpers=helpers)
        if args.report:
            from ticklet.report import NoRunError, build_report

            try:
                path = build_report(args.out, args.out / "report.html")
            except NoRunError as ex:  # TICKLET_OUTPUT__FILES=false: nothing to report on
                sys.stderr.write(f"ticklet: no report: {ex}\n")
                return 2
            summary["report"] = str(path)
            sys.stderr.write(f"ticklet: report {path}\n")  # stdout holds the JSON summary, if anything
        if args.json:
            sys.stdout.write(json.dumps(summary) + "\n")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
