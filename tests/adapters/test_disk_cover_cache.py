"""The on-disk cover cache: what it returns is what it was given, or nothing."""

from __future__ import annotations

import os
from pathlib import Path

import h3.api.basic_int as h3i
import pytest

from pipeline.adapters.census import CensusGazetteer
from pipeline.adapters.disk_cover_cache import DiskCoverCache
from pipeline.domain.alerts.formats import parse_alert_message
from pipeline.domain.geo.cover import CoverLimits, cover_shapes
from pipeline.domain.geo.covercache import cached_cover, cover_key
from pipeline.domain.models import Circle, Polygon
from pipeline.entrypoints.wiring import make_coverer
from pipeline.settings import MatchSettings, Settings
from tests.support.cli import run_alertfeed
from tests.support.factories import make_cap_xml

AUSTIN = h3i.latlng_to_cell(30.2672, -97.7431, 6)
COVER = frozenset({AUSTIN, *h3i.cell_to_children(h3i.latlng_to_cell(29.76, -95.37, 6), 8)})
SQUARE = Polygon(((30.0, -98.0), (30.0, -97.5), (30.5, -97.5), (30.5, -98.0), (30.0, -98.0)))


def test_a_stored_cover_comes_back_unchanged_and_a_missing_one_is_none(tmp_path: Path) -> None:
    cache = DiskCoverCache(tmp_path, max_bytes=10_000_000)
    assert cache.get("ab12") is None
    cache.put("ab12", COVER)
    assert cache.get("ab12") == COVER
    assert DiskCoverCache(tmp_path, max_bytes=10_000_000).get("ab12") == COVER  # new process
    cache.put("cd34", frozenset())
    assert cache.get("cd34") == frozenset()


@pytest.mark.parametrize("damage", ["truncate", "flip", "foreign"])
def test_a_damaged_entry_is_a_miss_and_is_removed(tmp_path: Path, damage: str) -> None:
    cache = DiskCoverCache(tmp_path, max_bytes=10_000_000)
    cache.put("ab12", COVER)
    [path] = list(tmp_path.rglob("*.cover"))
    data = path.read_bytes()
    if damage == "truncate":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 1]) + data[middle + 1 :])
    else:
        path.write_bytes(b"not a cover at all, but long enough to have a header and a sum")
    assert cache.get("ab12") is None
    assert not path.exists()


def test_the_directory_stays_under_its_bound_and_keeps_what_was_used_last(
    tmp_path: Path,
) -> None:
    one_entry = 16 + 8 * len(COVER) + 32
    cache = DiskCoverCache(tmp_path, max_bytes=3 * one_entry)
    for i, key in enumerate(["aa", "bb", "cc"]):
        cache.put(key, COVER)
        for path in tmp_path.rglob(f"{key}.cover"):
            os.utime(path, (1_000_000 + i, 1_000_000 + i))  # distinct ages, oldest first
    assert cache.get("aa") == COVER  # read: now the most recently used
    cache.put("dd", COVER)
    assert sum(p.stat().st_size for p in tmp_path.rglob("*.cover")) <= 3 * one_entry
    assert cache.get("bb") is None  # the least recently used went
    assert cache.get("aa") == cache.get("cc") == cache.get("dd") == COVER


def test_keys_are_digests_so_a_path_cannot_escape_the_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        DiskCoverCache(tmp_path, max_bytes=1000).put("../evil", COVER)


def test_a_cached_cover_is_the_computed_one_and_shapes_change_the_key(tmp_path: Path) -> None:
    cache = DiskCoverCache(tmp_path, max_bytes=10_000_000)
    limits = CoverLimits()
    computed = cover_shapes([SQUARE], [], 8, limits)
    assert cached_cover(cache, [SQUARE], [], 8, limits) == computed  # miss: computed, stored
    assert cached_cover(cache, [SQUARE], [], 8, limits) == computed  # hit
    assert len(list(tmp_path.rglob("*.cover"))) == 1
    moved = Polygon(tuple((lat, lon + 1e-9) for lat, lon in SQUARE.exterior))
    keys = {
        cover_key([SQUARE], [], 8, limits),
        cover_key([moved], [], 8, limits),
        cover_key([SQUARE], [], 9, limits),
        cover_key([SQUARE], [], 8, CoverLimits(max_cells=10)),
        cover_key([SQUARE], [Circle(30.0, -97.0, 1.0)], 8, limits),
    }
    assert len(keys) == 5


def test_covers_warm_fills_the_cache_the_alert_path_reads(tmp_path: Path) -> None:
    settings = Settings(match=MatchSettings(cover_cache_dir=tmp_path))
    warmed = run_alertfeed("covers", "warm", "011000", "044000", settings=settings, cwd=tmp_path)
    assert warmed.returncode == 0, warmed.stderr  # DC, Rhode Island
    assert "044000" in warmed.stdout
    assert len(list(tmp_path.rglob("*.cover"))) == 2
    unknown = run_alertfeed("covers", "warm", "099000", settings=settings, cwd=tmp_path)
    assert unknown.returncode == 1, unknown.stderr  # no such state: reported, not cached
    assert len(list(tmp_path.rglob("*.cover"))) == 2
    # An alert naming Rhode Island finds the warmed cover: same key, nothing new stored.
    [alert] = parse_alert_message(
        make_cap_xml(sender="ri@example.org", geocodes=[("SAME", "044000")])
    )
    cover = make_coverer(settings)(alert)
    assert len(list(tmp_path.rglob("*.cover"))) == 2
    polygons = CensusGazetteer().state("44")
    assert polygons is not None
    assert cover.cells == cover_shapes(polygons, [], settings.match.resolution, CoverLimits())
