"""Computed covers on local disk: :class:`pipeline.domain.ports.CoverCache`.

One file per cover, ``<code>/<key>.cover``, where ``<code>`` is a digest of the cover
code's own source: a new version of the algorithm never reads an old version's covers,
even if nobody remembered to bump ``COVER_ALGORITHM``. Each file holds an 8-byte magic,
the cell count, the cells as little-endian uint64 and a SHA-256 of everything before it.
A file that is short, foreign or corrupt is a miss (and is removed), never a wrong cover.
Files are written to a temporary name and renamed into place, so concurrent workers
sharing the directory never read half a file. The directory is bounded: after a write,
the least recently used files go until it is under ``max_bytes``.

``alertfeed covers warm`` fills it ahead of time (the container image warms every state),
so the first state-wide alert of a fresh worker does not pay seconds of geometry.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import struct
import tempfile
from pathlib import Path

import numpy as np

from pipeline.domain.geo import cover, covercache, geometry

log = logging.getLogger(__name__)

_MAGIC = b"AFCOVER1"
_HEAD = struct.Struct("<8sQ")
_SUFFIX = ".cover"


def _code_digest() -> str:
    digest = hashlib.sha256()
    for module in (cover, covercache, geometry):
        digest.update(Path(module.__file__ or "").read_bytes())
    return digest.hexdigest()[:16]


class DiskCoverCache:
    def __init__(self, directory: Path, *, max_bytes: int) -> None:
        self.root = directory
        self.directory = directory / _code_digest()
        self._max_bytes = max_bytes

    def _path(self, key: str) -> Path:
        if not key.isalnum():
            raise ValueError(f"cover keys are hex digests, got {key!r}")
        return self.directory / f"{key}{_SUFFIX}"

    def get(self, key: str) -> frozenset[int] | None:
        path = self._path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            log.warning("cover cache unreadable path=%s error=%s", path, exc)
            return None
        cells = _decode(data)
        if cells is None:
            log.warning("cover cache entry corrupt, removed path=%s", path)
            path.unlink(missing_ok=True)
            return None
        with contextlib.suppress(OSError):
            os.utime(path)  # recently used: evicted last
        return cells

    def put(self, key: str, cells: frozenset[int]) -> None:
        path = self._path(key)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(_encode(cells))
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            self._evict()
        except OSError as exc:
            log.warning("cover cache write failed path=%s error=%s", path, exc)

    def _evict(self) -> None:
        entries = []
        for path in self.root.glob(f"*/*{_SUFFIX}"):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            entries.append((st.st_mtime, st.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self._max_bytes:
                break
            path.unlink(missing_ok=True)
            total -= size


def _encode(cells: frozenset[int]) -> bytes:
    body = _HEAD.pack(_MAGIC, len(cells)) + np.array(sorted(cells), dtype="<u8").tobytes()
    return body + hashlib.sha256(body).digest()


def _decode(data: bytes) -> frozenset[int] | None:
    if len(data) < _HEAD.size + 32:
        return None
    magic, count = _HEAD.unpack_from(data)
    body, checksum = data[:-32], data[-32:]
    if magic != _MAGIC or len(body) != _HEAD.size + 8 * count:
        return None
    if hashlib.sha256(body).digest() != checksum:
        return None
    return frozenset(np.frombuffer(body, dtype="<u8", offset=_HEAD.size).tolist())
