"""The real ``alertfeed`` command in a child process, as a person runs it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pipeline.settings import KafkaSettings, MatchSettings, Settings, child_environment

# Nothing listens on port 1: a command that connected to Kafka would log librdkafka's
# connection failures to stderr and, for publish, wait out its delivery timeout.
UNREACHABLE_KAFKA = "kafka://127.0.0.1:1"


def offline_settings() -> Settings:
    """Settings for a command that must not need Kafka (nor write a cover cache)."""
    return Settings(
        kafka=KafkaSettings(url=UNREACHABLE_KAFKA),
        match=MatchSettings(cover_cache_mb=0),
        log_level="INFO",
    )


def run_alertfeed(
    *args: str, settings: Settings, cwd: Path, timeout_s: float = 60.0
) -> subprocess.CompletedProcess[str]:
    """``alertfeed ARGS...`` run in ``cwd`` with ``settings`` as its environment."""
    return subprocess.run(
        [sys.executable, "-m", "pipeline.entrypoints.cli", *args],
        cwd=cwd,
        env=child_environment(settings),
        capture_output=True,
        text=True,
        errors="replace",
        timeout=timeout_s,
        check=False,
    )


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single line a failed command printed on stderr, after checking that it failed
    with status 1, printed exactly one line in the ``alertfeed: `` style and no traceback."""
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("alertfeed: "), lines[0]
    return lines[0]
