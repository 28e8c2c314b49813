"""history.csv's format: one row per finished epoch, an "epoch" column and one per logged metric."""

from __future__ import annotations

import csv
import io
import math


def parse_history(text: str) -> list[dict[str, float]]:
    """history.csv rows: {"epoch": 0.0, "loss": ..., ...}; empty cells become NaN."""
    rows = list(csv.DictReader(io.StringIO(text)))
    parsed = []
    for number, row in enumerate(rows, start=1):
        if None in row:
            raise ValueError(f"row {number} has more cells than the header")
        parsed.append({k: float(v) if v not in (None, "") else math.nan for k, v in row.items()})
    return parsed


def format_history(rows: list[dict[str, float]]) -> str:
    keys = list(dict.fromkeys(k for row in rows for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: (int(v) if k == "epoch" else v) for k, v in row.items()} for row in rows)
    return buffer.getvalue()


def history_columns(rows: list[dict[str, float]]) -> dict[str, list[float]]:
    """Metric name -> values over epochs (the epoch column left out)."""
    keys = [k for k in dict.fromkeys(k for row in rows for k in row) if k != "epoch"]
    return {k: [row.get(k, math.nan) for row in rows] for k in keys}
