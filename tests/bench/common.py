"""What every benchmark reports: a figure beside a baseline measured in the same run."""

from __future__ import annotations

from typing import Protocol


class Report(Protocol):
    def __call__(
        self, name: str, value: float, unit: str, baseline_name: str, baseline_value: float
    ) -> None: ...


def print_report(
    name: str, value: float, unit: str, baseline_name: str, baseline_value: float
) -> None:
    ratio = value / baseline_value if baseline_value else float("nan")
    fmt = ",.2f" if value < 100 else ",.0f"
    print(
        f"{name}: {value:{fmt}} {unit}\n"
        f"    baseline, same run: {baseline_name}: {baseline_value:{fmt}} {unit}\n"
        f"    ratio: {ratio:.2f}"
    )
