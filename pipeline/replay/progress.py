"""The progress bar of the long-running log tools (record, replay, simulate), on stderr."""

from __future__ import annotations

import sys
from typing import Protocol


class ProgressBar(Protocol):
    def update(self, n: int = 1, /) -> object: ...

    def close(self) -> object: ...


def progress_bar(desc: str, total: int | None, *, unit: str = "ev") -> ProgressBar:
    """A bar named ``desc`` counting ``unit`` up to ``total`` (None: unknown)."""
    from tqdm import tqdm  # type: ignore[import-untyped]  # only when a bar is shown

    bar: ProgressBar = tqdm(total=total, unit=unit, unit_scale=True, file=sys.stderr, desc=desc)
    return bar
