"""US state and county boundaries from the Census cartographic boundary files, offline.

The ``plotly-geo`` package ships the Census Bureau's 2016 1:500,000 files
``cb_2016_us_state_500k`` (56 records: 50 states, DC, AS, GU, MP, PR, VI) and
``cb_2016_us_county_500k`` (3,233 counties and equivalents, territories included) as
package data of ``_plotly_geo``. :class:`CensusGazetteer` reads them with ``pyshp``.

Loading is lazy and by record: the first lookup in a file reads its ``.dbf`` once to
index ``GEOID`` to record number; each boundary is then read alone through the ``.shx``
offset, converted, and kept in a small LRU cache. Measured on a laptop-class machine:
first state lookup about 15 ms (Texas, index included), Florida 20 ms, Alaska (588
parts, 116,599 vertices) about 130 ms; first county lookup about 15 ms with the index,
later counties about 2 ms; a cached lookup about 10 µs.

Geometry conventions of the files, and what this adapter makes of them:

* Points are ``[lon, lat]``; they become ``(lat, lon)``.
* Exterior rings are clockwise, holes counter-clockwise (the state file has no holes;
  the county file has 39, e.g. the City of Fairfax inside Fairfax County). Each hole is
  given to the smallest exterior that contains it. A counter-clockwise ring inside no
  exterior is kept as an exterior, so an odd ring can only widen a target, never
  silently shrink it.
* The antimeridian: no ring in these files crosses it. The Aleutians west of 180° (Attu
  to Amchitka) are separate parts with longitudes +172.46..+179.78; those east of it
  have -179.15..-130. So Alaska's polygons are all plain rings with longitudes in
  [-180, 180]. Should another vintage store a crossing ring with longitudes past ±180,
  they are wrapped into [-180, 180], which yields the >180° jump that the cover code
  reads as a crossing.
"""

from __future__ import annotations

import itertools
import logging
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any, Literal

import shapefile
from shapely.geometry import Polygon as ShapelyPolygon

from pipeline.domain.models import LatLon, Polygon
from pipeline.errors import ConfigurationError

logger = logging.getLogger(__name__)

STATE_FILE = "cb_2016_us_state_500k"
COUNTY_FILE = "cb_2016_us_county_500k"
_EXTENSIONS = (".shp", ".shx", ".dbf")

Ring = tuple[LatLon, ...]


class CensusGazetteer:
    """A ``Gazetteer`` over the Census 1:500k state and county shapefiles.

    ``package_data`` is the folder holding the files; by default the ``_plotly_geo``
    package data, found through ``importlib.resources``. The constructor checks that the
    files exist and raises :class:`ConfigurationError` if not; lookups raise it when a
    file cannot be read. Unknown or ill-formed codes give ``None``, never an error.
    Lookups are thread-safe; returned tuples are immutable and shared between callers.
    """

    def __init__(self, package_data: Traversable | None = None, cache_size: int = 64) -> None:
        folder = package_data if package_data is not None else _plotly_geo_package_data()
        self._states = _BoundaryFile(folder, STATE_FILE, cache_size)
        self._counties = _BoundaryFile(folder, COUNTY_FILE, cache_size)

    def state(self, state_fips: str) -> tuple[Polygon, ...] | None:
        """Polygons of a state or territory by 2-digit FIPS (``"48"``), or ``None``."""
        if len(state_fips) != 2 or not state_fips.isdigit():
            return None
        return self._states.boundary(state_fips)

    def county(self, county_fips5: str) -> tuple[Polygon, ...] | None:
        """Polygons of a county or equivalent by 5-digit FIPS (``"48453"``), or ``None``."""
        if len(county_fips5) != 5 or not county_fips5.isdigit():
            return None
        return self._counties.boundary(county_fips5)

    def state_codes(self) -> frozenset[str]:
        """The 2-digit FIPS codes the state file has a boundary for."""
        return self._states.keys()


def _plotly_geo_package_data() -> Traversable:
    try:
        return resources.files("_plotly_geo").joinpath("package_data")
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            "the plotly-geo package is not installed; it ships the Census boundary files"
        ) from exc


class _BoundaryFile:
    """One shapefile: a GEOID index built on first use and an LRU cache of boundaries."""

    def __init__(self, folder: Traversable, stem: str, cache_size: int) -> None:
        self._files = {ext: folder.joinpath(stem + ext) for ext in _EXTENSIONS}
        missing = [str(path) for path in self._files.values() if not path.is_file()]
        if missing:
            raise ConfigurationError(f"Census boundary file(s) missing: {', '.join(missing)}")
        self._stem = stem
        self._cache_size = max(cache_size, 0)
        self._cache: OrderedDict[str, tuple[Polygon, ...]] = OrderedDict()
        self._index: dict[str, int] | None = None
        self._lock = threading.Lock()

    def keys(self) -> frozenset[str]:
        with self._lock:
            return frozenset(self._record_index())

    def boundary(self, geoid: str) -> tuple[Polygon, ...] | None:
        with self._lock:
            cached = self._cache.get(geoid)
            if cached is not None:
                self._cache.move_to_end(geoid)
                return cached
            record = self._record_index().get(geoid)
            if record is None:
                return None
            with self._reader("shp", "shx") as reader:
                shape = reader.shape(record)
            polygons = polygons_from_shape(shape.points, shape.parts)
            logger.debug(
                "census boundary loaded file=%s geoid=%s polygons=%d vertices=%d",
                self._stem,
                geoid,
                len(polygons),
                len(shape.points),
            )
            if self._cache_size:
                self._cache[geoid] = polygons
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
            return polygons

    def _record_index(self) -> dict[str, int]:
        if self._index is None:
            with self._reader("dbf") as reader:
                self._index = {
                    str(record[0]): number
                    for number, record in enumerate(reader.iterRecords(fields=["GEOID"]))
                }
            logger.debug("census index built file=%s records=%d", self._stem, len(self._index))
        return self._index

    @contextmanager
    def _reader(self, *parts: Literal["shp", "shx", "dbf"]) -> Iterator[Any]:
        try:
            with ExitStack() as stack:
                handles = {
                    part: stack.enter_context(self._files["." + part].open("rb")) for part in parts
                }
                yield stack.enter_context(shapefile.Reader(**handles))
        except (OSError, struct.error, shapefile.ShapefileException, ValueError) as exc:
            raise ConfigurationError(
                f"cannot read Census boundary file {self._stem}: {exc}"
            ) from exc


def polygons_from_shape(
    points: Sequence[Sequence[float]], parts: Sequence[int]
) -> tuple[Polygon, ...]:
    """Polygons from one shapefile polygon record: ``[lon, lat]`` points split at
    ``parts``; clockwise rings are exteriors, counter-clockwise ones holes.

    Each hole goes to the smallest exterior containing it; a hole inside none becomes an
    exterior. Rings with fewer than 4 points or no area are skipped. Longitudes are
    wrapped into [-180, 180]. Polygons keep the order of their exterior rings.
    """
    bounds = [*parts, len(points)]
    exteriors: list[Ring] = []
    holes: list[Ring] = []
    for start, end in itertools.pairwise(bounds):
        ring_lonlat = points[start:end]
        if len(ring_lonlat) < 4:
            continue
        area = _signed_area(ring_lonlat)
        if area == 0:
            continue
        ring = tuple((float(lat), _wrap_longitude(float(lon))) for lon, lat, *_ in ring_lonlat)
        (exteriors if area < 0 else holes).append(ring)
    if not holes:
        return tuple(Polygon(exterior) for exterior in exteriors)

    outlines = [ShapelyPolygon([(lon, lat) for lat, lon in ring]) for ring in exteriors]
    holes_of: list[list[Ring]] = [[] for _ in exteriors]
    for hole in holes:
        probe = ShapelyPolygon([(lon, lat) for lat, lon in hole]).representative_point()
        owners = [index for index, outline in enumerate(outlines) if outline.contains(probe)]
        if owners:
            owner = min(owners, key=lambda index: outlines[index].area)
            holes_of[owner].append(hole)
        else:
            exteriors.append(hole)
            holes_of.append([])
    return tuple(
        Polygon(exterior, tuple(ring_holes))
        for exterior, ring_holes in zip(exteriors, holes_of, strict=True)
    )


def _signed_area(ring: Sequence[Sequence[float]]) -> float:
    """Shoelace area in (lon, lat): negative for clockwise rings."""
    total = 0.0
    for (x0, y0, *_), (x1, y1, *_) in zip(ring, [*ring[1:], ring[0]], strict=True):
        total += x0 * y1 - x1 * y0
    return total / 2


def _wrap_longitude(lon: float) -> float:
    if -180.0 <= lon <= 180.0:
        return lon
    return (lon + 180.0) % 360.0 - 180.0
