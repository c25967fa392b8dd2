"""The preparation process: alerts are parsed and covered in a child process, a hostile
one ends under its CPU budget as a guardrail, and the next message is served again."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator

import orjson
import pytest

from pipeline.adapters.preparation import PreparationProcess
from pipeline.entrypoints.wiring import make_preparer
from pipeline.errors import GuardrailExceeded, MalformedEvent, PolicyRejected
from pipeline.settings import MatchSettings, PolicySettings, Settings
from tests.conftest import TEST_SENDER
from tests.support.factories import make_alert_json

AUSTIN = [(30.20, -97.82), (30.21, -97.70), (30.30, -97.66), (30.26, -97.74), (30.34, -97.80)]
# A polygon from -89,-179.9 to 89,179.9: over 20 s of CPU to cover at resolution 10.
WORLD = [(-89.0, -179.9), (-89.0, 179.9), (89.0, 179.9), (89.0, -179.9)]


def settings(tmp: str) -> Settings:
    return Settings(
        policy=PolicySettings(allowed_senders=[TEST_SENDER]),
        match=MatchSettings(
            resolution=10, cover_cache_mb=0, cover_cache_dir=tmp, max_cells=50_000_000
        ),
    )


@pytest.fixture
def process(tmp_path: object) -> Iterator[Callable[..., PreparationProcess[Settings]]]:
    made: list[PreparationProcess[Settings]] = []

    def make(
        cpu_budget_s: float = 2.0, wall_budget_s: float = 60.0
    ) -> PreparationProcess[Settings]:
        proc = PreparationProcess(
            make_preparer,
            settings(str(tmp_path)),
            cpu_budget_s=cpu_budget_s,
            wall_budget_s=wall_budget_s,
        )
        made.append(proc)
        return proc

    yield make
    for proc in made:
        proc.close()


def alert(polygon: list[tuple[float, float]], **fields: object) -> bytes:
    return orjson.dumps(make_alert_json(polygons=[polygon], **fields))  # type: ignore[arg-type]


def test_a_valid_alert_comes_back_prepared_with_its_cover(
    process: Callable[..., PreparationProcess[Settings]],
) -> None:
    [item] = asyncio.run(process().prepare(alert(AUSTIN)))
    assert item.alert.sender == TEST_SENDER
    assert item.cover is not None and len(item.cover.cells) > 100


def test_bad_input_is_raised_as_itself(
    process: Callable[..., PreparationProcess[Settings]],
) -> None:
    proc = process()
    with pytest.raises(MalformedEvent, match="not CAP XML"):
        proc.prepare_blocking(b"garbage")
    with pytest.raises(PolicyRejected, match="allow-list"):
        proc.prepare_blocking(alert(AUSTIN, sender="someone@else.example"))


def test_a_hostile_alert_ends_under_its_cpu_budget_and_the_next_one_is_served(
    process: Callable[..., PreparationProcess[Settings]],
) -> None:
    proc = process(cpu_budget_s=2.0)
    with pytest.raises(GuardrailExceeded, match="CPU budget of 2s"):
        proc.prepare_blocking(alert(WORLD))
    [item] = proc.prepare_blocking(alert(AUSTIN))
    assert item.cover is not None


def test_a_starved_alert_ends_at_the_wall_budget(
    process: Callable[..., PreparationProcess[Settings]],
) -> None:
    proc = process(cpu_budget_s=60.0, wall_budget_s=1.0)
    with pytest.raises(GuardrailExceeded, match="longer than 1s"):
        proc.prepare_blocking(alert(WORLD))
    [item] = proc.prepare_blocking(alert(AUSTIN))
    assert item.cover is not None
