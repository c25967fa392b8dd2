"""In-process twin of the Redis cell index (:mod:`pipeline.adapters.redis.index`).

Same contract (tests/contract/test_index_contract.py runs one suite against both), for the
offline replay and for pure unit tests. Single process only. It is also the in-process
replica every worker matches against (:mod:`pipeline.adapters.redis.replica`), which loads
it with :meth:`MemoryCellIndex.apply`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import compress

import h3.api.basic_int as h3i

from pipeline.domain.geo.cells import parent_mask, parents_of
from pipeline.domain.targeting.cards import ActiveAlert
from pipeline.errors import IndexNotBuilt


class MemoryCellIndex:
    """:class:`pipeline.domain.ports.CellIndex` in process memory."""

    def __init__(self, *, resolution: int, built: bool = True) -> None:
        self._resolution = resolution
        self._alerts: dict[str, ActiveAlert] = {}
        self._covers: dict[str, frozenset[int]] = {}
        # Cell -> the keys of the alerts covering it. Tuples of strings, which the garbage
        # collector stops tracking, rather than sets, which it would walk at every full
        # collection (a state-wide cover is some 90,000 cells).
        self._cells: dict[int, tuple[str, ...]] = {}
        # How many indexed cells each resolution has: alerts_at looks only at those levels.
        self._levels: dict[int, int] = {}
        self._tombs: dict[str, int] = {}
        self._owed: dict[str, tuple[int, bytes]] = {}
        self._built = built
        self._probe: _Probe | None = None  # rebuilt lazily after the cover changes

    async def put_alert(self, alert: ActiveAlert, cells: frozenset[int]) -> None:
        if any(h3i.get_resolution(c) > self._resolution for c in cells):
            raise ValueError(f"cover has cells finer than the index resolution {self._resolution}")
        self._install(alert, cells)

    def apply(
        self, installed: Iterable[tuple[ActiveAlert, frozenset[int]]], removed: Iterable[str]
    ) -> None:
        """Install each ``(alert, cover)`` of ``installed`` (replacing an earlier version)
        and drop each key of ``removed``, in one synchronous step: no ``alerts_at`` sees
        part of it. The covers are taken as valid (checked where they were written)."""
        for key in removed:
            self._drop(key)
        for alert, cells in installed:
            self._install(alert, cells)

    def versions(self) -> dict[str, int]:
        """Alert key → the version installed."""
        return {key: alert.version for key, alert in self._alerts.items()}

    def _install(self, alert: ActiveAlert, cells: frozenset[int]) -> None:
        self._drop(alert.key)
        self._alerts[alert.key] = alert
        self._covers[alert.key] = cells
        key, index = alert.key, self._cells
        for cell in cells:
            keys = index.get(cell)
            if keys is None:
                index[cell] = (key,)
                level = h3i.get_resolution(cell)
                self._levels[level] = self._levels.get(level, 0) + 1
            else:
                index[cell] = (*keys, key)

    async def remove_alert(self, key: str) -> bool:
        return self._drop(key)

    def _drop(self, key: str) -> bool:
        self._probe = None
        existed = self._alerts.pop(key, None) is not None
        index = self._cells
        for cell in self._covers.pop(key, frozenset()):
            keys = index.get(cell)
            if keys is not None:
                rest = tuple(k for k in keys if k != key)
                if rest:
                    index[cell] = rest
                else:
                    del index[cell]
                    self._levels[h3i.get_resolution(cell)] -= 1
        return existed

    async def tombstone(self, key: str, version: int, keep_until_ms: int) -> None:
        self._tombs[key] = max(version, self._tombs.get(key, version))

    async def cancelled_version(self, key: str) -> int | None:
        return self._tombs.get(key)

    async def owe(self, key: str, version: int, event: bytes, keep_until_ms: int) -> None:
        self._owed[key] = (version, event)

    async def owed(self, key: str) -> tuple[int, bytes] | None:
        return self._owed.get(key)

    async def paid(self, key: str, version: int) -> None:
        if key in self._owed and self._owed[key][0] == version:
            del self._owed[key]

    async def mark_built(self) -> None:
        self._built = True

    async def is_built(self) -> bool:
        return self._built

    async def get_alert(self, key: str) -> ActiveAlert | None:
        return self._alerts.get(key)

    async def active_alerts(self) -> list[ActiveAlert]:
        return [self._alerts[k] for k in sorted(self._alerts)]

    async def cover_of(self, key: str) -> frozenset[int] | None:
        return self._covers.get(key)

    async def installed(self) -> list[tuple[ActiveAlert, frozenset[int]]]:
        if not self._built:
            raise IndexNotBuilt("the in-process index was flushed")
        return [(self._alerts[k], self._covers[k]) for k in sorted(self._alerts)]

    async def alerts_at(self, cells: Sequence[int]) -> list[Sequence[ActiveAlert]]:
        if not self._built:
            raise IndexNotBuilt("the in-process index was flushed")
        if not self._cells:
            return [()] * len(cells)
        probe = self._probe or self._make_probe()
        index = self._cells
        out: list[Sequence[ActiveAlert]] = [()] * len(cells)  # nothing, shared
        # Most cells lie under nothing indexed, not even near: find the others in C.
        near = map(probe.occupied.__contains__, parents_of(cells, (probe.mask, probe.bits)))
        for i in compress(range(len(cells)), near):
            cell = cells[i]
            keys: set[str] | None = None
            for mask, bits in probe.levels:
                hit = index.get((cell & mask) | bits)
                if hit:
                    if keys is None:
                        keys = set(hit)
                    else:
                        keys.update(hit)
            if keys:
                out[i] = [self._alerts[k] for k in sorted(keys)]
        return out

    def _make_probe(self) -> _Probe:
        levels = sorted(r for r, n in self._levels.items() if n)
        # At the index resolution a cell is looked up as it is: (cell & -1) | 0.
        pairs = tuple((-1, 0) if r == self._resolution else parent_mask(r) for r in levels)
        mask, bits = pairs[0]
        self._probe = _Probe(
            mask=mask,
            bits=bits,
            occupied=frozenset((c & mask) | bits for c in self._cells),
            levels=pairs,
        )
        return self._probe


@dataclass(frozen=True, slots=True)
class _Probe:
    """How :meth:`MemoryCellIndex.alerts_at` looks a cell up, derived from the cover.

    A cell's parent at resolution r is ``(cell & mask) | bits`` with ``(mask, bits)`` from
    :func:`~pipeline.domain.geo.cells.parent_mask`. ``levels`` has one pair per
    resolution that has indexed cells, the coarsest first; ``mask`` and ``bits`` are its
    pair, and ``occupied`` holds the parents there of every indexed cell: a cell whose
    parent there is not in it lies under no indexed cell.
    """

    mask: int
    bits: int
    occupied: frozenset[int]
    levels: tuple[tuple[int, int], ...]
