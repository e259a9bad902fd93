"""The run directory's ``metrics.jsonl``: one JSON object per logged step or evaluation, appended by the main process.

Rows (contracts.md section 4): ``{"step", "epoch", "loss", "lr", "images_per_s", "nonfinite_total", "ema_decay"}``
at log steps, ``{"step", "heldout_loss"}`` and ``{"step", "fid", ...}`` at evaluations, and one
``{"step", "rank_fingerprints"}`` at the end. This module is the file's one writer and one reader: the plots, the
benchmarks and the GPU kit read it through :func:`read_metrics`, which skips a line a crash cut short.

Example::

    from training.metrics import latest_fid, read_metrics
    rows = read_metrics("runs/demo/metrics.jsonl")
    print(len(rows), latest_fid("runs/demo/metrics.jsonl"))
"""

from __future__ import annotations

import json
from pathlib import Path

from common.fileio import atomic_write

__all__ = ["append_metrics", "latest_fid", "read_metrics", "truncate_metrics"]


def read_metrics(path: str | Path) -> list[dict]:
    """The rows of a metrics.jsonl; a line cut short by a crash mid-write is skipped."""
    path = Path(path)
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line) if line.strip() else None
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def append_metrics(path: Path, row: dict) -> None:
    with path.open("a", encoding="utf-8") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")


def truncate_metrics(path: Path, step: int) -> None:
    """On resume, drop rows logged after the checkpoint so metrics.jsonl reads as one run."""
    if not path.is_file():
        return
    keep = [row for row in read_metrics(path) if row.get("step", 0) <= step]
    atomic_write(path, "".join(json.dumps(row, sort_keys=True) + "\n" for row in keep))


def latest_fid(metrics_path: Path) -> dict | None:
    rows = [r for r in read_metrics(metrics_path) if "fid" in r]
    return rows[-1] if rows else None
