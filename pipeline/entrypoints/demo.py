"""``alertfeed demo``: the whole pipeline on a simulated scenario, against running Kafka and
Redis.

1. ``simulate`` writes ten minutes of a synthetic city scenario: a crowd of users moving
   around real US cities (some never moving) and AMBER Alerts issued, grown by an Update
   and cancelled, as CAP XML.
2. A real worker process is started, and the log is replayed to the live topics at 40x,
   keeping its order and relative timing.
3. The same log goes through the offline replay (the worker's own code in one process).
4. The demo reports what happened live, and whether the live pipeline and the offline
   replay agree on who got which card.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from pipeline.adapters.kafka.consumer import TopicReader
from pipeline.adapters.kafka.tools import ensure_topics
from pipeline.entrypoints.replay import replay_live, replay_offline
from pipeline.replay.eventlog import read_log
from pipeline.replay.simulate import simulate_to
from pipeline.settings import PolicySettings, Settings, child_environment

DEMO_SENDER = "amber@demo.alertfeed.example"
DURATION_S = 600.0
SPEED = 40.0


def run_demo(settings: Settings, *, users: int, seed: int) -> int:
    ensure_topics(settings)
    policy = PolicySettings(
        allowed_senders=[*settings.policy.allowed_senders, DEMO_SENDER],
        test_users=settings.policy.test_users,
    )
    settings = settings.model_copy(
        update={"app_id": f"alertfeed-demo-{int(time.time())}", "policy": policy}
    )
    with tempfile.TemporaryDirectory(prefix="alertfeed-demo-") as tmp:
        log = Path(tmp) / "scenario.jsonl.gz"
        # The scenario ends now: every location is in the past and within the freshness
        # window, as a live feed's would be.
        start_ms = time.time_ns() // 1_000_000 - int(DURATION_S * 1000)
        sim = simulate_to(log, users, DURATION_S, 2, seed, start_ms, DEMO_SENDER, report_every_s=60)
        print(
            f"simulated {DURATION_S / 60:.0f} minutes: {users} users, "
            f"{sim.locations} location events, {sim.alert_messages} CAP alert messages"
        )
        expected = _offline_pairs(settings, log, Path(tmp) / "offline.jsonl")
        worker = _start_worker(settings)
        try:
            live = replay_live(settings, log, speed=SPEED, progress=False)
            print(
                f"replayed {live.sent} events to the live topics at {SPEED:.0f}x "
                f"in {live.duration_s:.1f} s"
            )
            run = f"SIM-{start_ms // 1000}-{seed}-"  # the alert ids of this run's scenario
            cards = _collect(settings, settings.topics.interstitials, run, len(expected))
            lifecycle = _collect(settings, settings.topics.lifecycle, run, 0, quiet_s=2)
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(30)
            print("worker stopped")
    return _report(cards, lifecycle, expected)


def _offline_pairs(settings: Settings, log: Path, out: Path) -> set[tuple[str, str]]:
    quiet = logging.getLogger("pipeline")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # the offline pass would log every alert change again
    try:
        replay_offline(settings, log, out)
    finally:
        quiet.setLevel(level)
    cards = (orjson.loads(r.value) for r in read_log(out) if r.topic == "interstitials" and r.value)
    return {(card["user_id"], card["alert_id"]) for card in cards}


def _report(
    cards: list[dict[str, Any]], lifecycle: list[dict[str, Any]], expected: set[tuple[str, str]]
) -> int:
    states = Counter(e["state"] for e in lifecycle)
    print("alert lifecycle: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())))
    per_pair = Counter((c["user_id"], c["alert_id"]) for c in cards)
    users = {u for u, _ in per_pair}
    print(
        f"interstitials emitted live: {len(cards)} to {len(users)} users "
        f"(most cards for one (user, alert): {max(per_pair.values(), default=0)})"
    )
    live = set(per_pair)
    agree = len(live & expected)
    print(
        f"offline replay of the same log expects {len(expected)} (user, alert) pairs; "
        f"live and offline agree on {agree}, live only {len(live - expected)}, "
        f"offline only {len(expected - live)}"
    )
    print(
        f"  (offline follows event time exactly; live at {SPEED:.0f}x, later locations are "
        "matched while an Update or Cancel is still being applied)"
    )
    for card in cards[:3]:
        print(
            f"  sample: event_id={card['event_id']} priority={card['priority']} "
            f"headline={card['card']['headline']!r}"
        )
    return 0 if cards and max(per_pair.values()) == 1 else 1


def _start_worker(settings: Settings) -> subprocess.Popen[bytes]:
    env = child_environment(settings.model_copy(update={"log_level": "WARNING"}))
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.entrypoints.cli", "worker"],
        env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{settings.metrics.port}/ready"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"worker exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=1) as resp:
                if json.load(resp).get("ready"):
                    print(f"worker ready (metrics on {url.rsplit('/', 1)[0]}/metrics)")
                    return proc
        except OSError:
            pass
        time.sleep(0.3)
    raise SystemExit("worker not ready within 90 s")


def _collect(
    settings: Settings,
    topic: str,
    alert_prefix: str,
    expected: int,
    *,
    timeout_s: float = 60.0,
    quiet_s: float = 4.0,
) -> list[dict[str, Any]]:
    """Records on ``topic`` of the alerts whose id starts with ``alert_prefix``: until
    ``expected`` arrived and nothing new came for ``quiet_s``, or ``timeout_s``."""
    found: list[dict[str, Any]] = []
    with TopicReader(settings, topic, group_prefix="demo") as reader:
        deadline = time.monotonic() + timeout_s
        last = time.monotonic()
        while time.monotonic() < deadline:
            consumed = reader.poll(0.3)
            if consumed is None:
                if len(found) >= expected and time.monotonic() - last > quiet_s:
                    break
                continue
            record = orjson.loads(consumed.value or b"null")
            if isinstance(record, dict) and str(record.get("alert_id")).startswith(alert_prefix):
                found.append(record)
                last = time.monotonic()
    return found
