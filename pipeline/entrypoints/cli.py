"""The ``alertfeed`` command: one subcommand per entrypoint."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from pipeline.errors import AlertfeedError
from pipeline.settings import Settings, load_settings


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )


def _worker(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.entrypoints.worker import run_worker

    run_worker(settings)
    return 0


def _topics(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.adapters.kafka.tools import ensure_topics

    created = ensure_topics(settings)
    for name in settings.topics.by_logical_name().values():
        print(f"{name}{'  (created)' if name in created else ''}")
    return 0


def _publish(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.entrypoints.publish import publish_files

    count = publish_files(settings, args.topic, args.files)
    print(f"published {count} message(s) to {getattr(settings.topics, args.topic)}")
    return 0


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.entrypoints.demo import run_demo

    return run_demo(settings, users=args.users, seed=args.seed)


def _expand(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.entrypoints.expand import run_expand

    return run_expand(settings, args)


def _status(args: argparse.Namespace, settings: Settings) -> int:
    from pipeline.entrypoints.status import run_status

    return run_status(settings, as_json=args.json)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="alertfeed", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    sub.add_parser("worker", help="run the Faust worker").set_defaults(run=_worker)
    sub.add_parser("topics", help="create the topics that are missing").set_defaults(run=_topics)

    publish = sub.add_parser(
        "publish",
        help="publish files (CAP XML, NWS GeoJSON, alert JSON, JSON lines)",
        description="Publish alert files (one message each) or location JSON lines (one "
        "message per line). Every file is validated first: if one is malformed, nothing is "
        "published and the command names it and exits 1.",
    )
    publish.add_argument("topic", choices=["alerts", "locations"])
    publish.add_argument("files", nargs="+")
    publish.set_defaults(run=_publish)

    demo = sub.add_parser(
        "demo", help="publish a sample alert and a synthetic crowd; report the cards"
    )
    demo.add_argument("--users", type=int, default=2000)
    demo.add_argument("--seed", type=int, default=7)
    demo.set_defaults(run=_demo)

    expand = sub.add_parser("expand", help="show the H3 cover of alert files")
    expand.add_argument("files", nargs="+")
    expand.add_argument("--resolution", type=int, default=None)
    expand.add_argument("--json", action="store_true", help="one JSON object per alert on stdout")
    expand.add_argument("--png", default=None, help="draw the areas and the cover to this PNG")
    expand.add_argument("--geojson", default=None, help="write the cover as GeoJSON to this file")
    expand.set_defaults(run=_expand)

    status = sub.add_parser("status", help="per-alert reach: cards so far, last 5 and 60 minutes")
    status.add_argument("--json", action="store_true", help="print JSON instead of a table")
    status.set_defaults(run=_status)

    from pipeline.entrypoints import covers, record, replay, simulate

    for name, module, run, text in (
        ("covers", covers, covers.run_covers, "compute alert covers ahead of time (cache)"),
        ("record", record, record.run_record, "capture topic traffic into an event log"),
        ("replay", replay, replay.run_replay, "replay an event log, live or --offline"),
        ("simulate", simulate, simulate.run_simulate, "write a synthetic scenario log"),
    ):
        command = sub.add_parser(name, help=text)
        module.add_arguments(command)
        command.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        configure_logging(settings.log_level)
        return int(args.run(args, settings))
    except AlertfeedError as exc:
        print(f"alertfeed: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
