"""What a benchmark row measured, and bench/RESULTS.md written from it.

Kept free of I/O other than the final write, so tests can render fake figures.
"""

from __future__ import annotations

import dataclasses
import statistics
from collections.abc import Sequence
from pathlib import Path


@dataclasses.dataclass
class Series:
    """One quantity measured once per repetition (e.g. req/s of one server)."""

    label: str
    unit: str
    values: list[float] = dataclasses.field(default_factory=list)
    n: int | None = None  # repetitions behind VALUES when they are a (min, median, max) summary

    def spread(self) -> str:
        return spread(self.values, self.unit, self.n)


@dataclasses.dataclass
class Ratio:
    """A ratio computed per repetition from two series of the same run, with its goal."""

    label: str
    values: list[float] = dataclasses.field(default_factory=list)
    goal_op: str = ">="  # ">=" or "<="
    goal: float | None = None

    @property
    def median(self) -> float | None:
        return statistics.median(self.values) if self.values else None

    def met(self) -> bool | None:
        """Judged on the median over repetitions; None when there is no goal or no figure."""
        if self.goal is None or self.median is None:
            return None
        return self.median >= self.goal if self.goal_op == ">=" else self.median <= self.goal

    def goal_text(self) -> str:
        return (
            "—"
            if self.goal is None
            else f"{self.goal_op.replace('>=', '≥').replace('<=', '≤')} {self.goal:g}"
        )


@dataclasses.dataclass
class Row:
    key: str
    title: str
    ratios: list[Ratio] = dataclasses.field(default_factory=list)
    series: list[Series] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)
    commands: list[str] = dataclasses.field(default_factory=list)
    skipped: str | None = None  # why the row was not measured


def spread(values: Sequence[float], unit: str = "", n: int | None = None) -> str:
    """``median unit (min, max, n=N)``; a single value has no spread to show."""
    if not values:
        return "—"
    suffix = f" {unit}" if unit else ""
    if len(values) == 1:
        return f"{_num(values[0])}{suffix} (n={n or 1})"
    return (
        f"{_num(statistics.median(values))}{suffix} "
        f"(min {_num(min(values))}, max {_num(max(values))}, n={n or len(values)})"
    )


def _num(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    # Three places below 1: a ratio printed 0.80 must not be a 0.795 that misses a 0.8 goal.
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3f}"


def _verdict(ratio: Ratio) -> str:
    met = ratio.met()
    return "—" if met is None else ("**met**" if met else "not met")


def render(
    rows: Sequence[Row],
    facts: Sequence[tuple[str, str]],
    invocation: str,
    servers: Sequence[tuple[str, str]] = (),
) -> str:
    lines = [
        "# statsapi benchmark results",
        "",
        f"Written by `{invocation}`. Every ratio divides two figures taken side by side in the same run",
        "(the two servers run at the same time and are loaded in alternation, one repetition each turn),",
        "so machine noise hits both sides; the spread is min/median/max over the repetitions.",
        "Goals are judged on the median.",
        "",
        "## Summary",
        "",
        "| row | figure | ratio: median (min, max) | goal | verdict |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        if row.skipped:
            lines.append(f"| {row.key} | {row.title} | not measured: {row.skipped} | — | — |")
            continue
        for ratio in row.ratios:
            lines.append(
                f"| {row.key} | {ratio.label} | {spread(ratio.values, '×')} | {ratio.goal_text()} | {_verdict(ratio)} |"
            )
    lines += ["", "## Machine", "", *[f"- {name}: {value}" for name, value in facts], ""]
    for row in rows:
        lines += [f"## Row {row.key}: {row.title}", ""]
        if row.skipped:
            lines += [f"Not measured: {row.skipped}", ""]
            continue
        if row.series:
            lines += ["| measured | median (min, max) |", "|---|---|"]
            lines += [f"| {s.label} | {s.spread()} |" for s in row.series]
            lines.append("")
        lines += [f"- {note}" for note in row.notes]
        if row.notes:
            lines.append("")
        if row.commands:
            lines += ["Commands:", "", "```", *row.commands, "```", ""]
    if servers:
        lines += [
            "## Databases and servers",
            "",
            "Set up and started as below (ports, names and temporary directories differ per run):",
            "",
        ]
        for name, command in servers:
            lines += [f"{name}:", "", "```", command, "```", ""]
    return "\n".join(lines)


def write(
    path: Path,
    rows: Sequence[Row],
    facts: Sequence[tuple[str, str]],
    invocation: str,
    servers: Sequence[tuple[str, str]] = (),
) -> str:
    text = render(rows, facts, invocation, servers)
    path.write_text(text)
    return text
