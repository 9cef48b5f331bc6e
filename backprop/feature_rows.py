"""Rows of features as CSV (what `backprop predict` reads): numbers only, an optional header row first."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Iterator


class FeatureRowsError(ValueError):
    """A CSV that is not rows of numbers; the message names the line and column."""


def _number(cell: str) -> float | None:
    try:
        value = float(cell)
    except ValueError:
        return None
    return value


def read_feature_rows(lines: Iterable[str], *, source: str) -> Iterator[list[float]]:
    """The rows of a CSV of numbers, one list per line; a first line that is not all numbers is a header
    and skipped; empty lines are skipped. Every row must have as many fields as the first one."""
    reader = csv.reader(lines)
    width: int | None = None
    first = True
    for cells in reader:
        if not cells or all(not cell.strip() for cell in cells):
            continue
        values = [_number(cell.strip()) for cell in cells]
        if first and any(value is None for value in values):
            first = False
            width = len(cells)
            continue
        first = False
        if width is None:
            width = len(cells)
        if len(cells) != width:
            raise FeatureRowsError(f"{source}, line {reader.line_num}: {len(cells)} fields, expected {width}")
        row: list[float] = []
        for column, (cell, value) in enumerate(zip(cells, values, strict=True), start=1):
            if value is None or not math.isfinite(value):
                raise FeatureRowsError(
                    f"{source}, line {reader.line_num}, column {column}: {cell.strip()!r} is not a finite number"
                )
            row.append(value)
        yield row
