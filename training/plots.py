"""Run-directory pictures: sample grids, samples over time, and the loss / FID curves from ``metrics.jsonl``.

Example::

    from training.plots import plot_curves, samples_over_time
    plot_curves("runs/demo/metrics.jsonl", "runs/demo/curves.png")
    samples_over_time("runs/demo/samples", "runs/demo/samples_over_time.png")
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np

from common.fileio import atomic_write, atomic_write_png

__all__ = ["save_png", "save_grid", "samples_over_time", "plot_curves"]

_STEP = re.compile(r"^step-(\d+)\.png$")


def save_png(img: np.ndarray, path: str | Path) -> Path:
    """Write a uint8 (H, W, 3) array as PNG atomically."""
    path = Path(path)
    atomic_write_png(path, img)
    return path


def save_grid(images: np.ndarray, path: str | Path, ncols: int | None = None) -> Path:
    from evaluation.sample import image_grid

    return save_png(image_grid(images, ncols), path)


def samples_over_time(samples_dir: str | Path, out_png: str | Path, *, max_frames: int = 8) -> Path | None:
    """Stack up to ``max_frames`` evenly spaced ``step-<N>.png`` grids top to bottom, each labelled with its step."""
    from PIL import Image, ImageDraw

    frames = sorted((int(m.group(1)), p) for p in Path(samples_dir).glob("step-*.png") if (m := _STEP.match(p.name)))
    if not frames:
        return None
    if len(frames) > max_frames:
        picks = np.linspace(0, len(frames) - 1, max_frames).round().astype(int)
        frames = [frames[i] for i in sorted(set(picks.tolist()))]
    imgs = [(step, Image.open(p).convert("RGB")) for step, p in frames]
    label_h = 14
    width = max(im.width for _, im in imgs)
    canvas = Image.new("RGB", (width, sum(im.height + label_h for _, im in imgs)), "white")
    draw = ImageDraw.Draw(canvas)
    y = 0
    for step, im in imgs:
        draw.text((2, y + 1), f"step {step}", fill="black")
        canvas.paste(im, (0, y + label_h))
        y += im.height + label_h
    return save_png(np.asarray(canvas), out_png)


def plot_curves(metrics_jsonl: str | Path, out_png: str | Path) -> Path | None:
    """Training loss (and held-out EMA loss) against step, and FID against step when logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from training.metrics import read_metrics

    rows = read_metrics(metrics_jsonl)
    series = {k: [(r["step"], r[k]) for r in rows if r.get(k) is not None] for k in ("loss", "heldout_loss", "fid")}
    if not any(series.values()):
        return None
    has_fid = bool(series["fid"])
    fig, axes = plt.subplots(1, 2 if has_fid else 1, figsize=(10 if has_fid else 5, 3.5), squeeze=False)
    ax = axes[0, 0]
    for key, label in (("loss", "train loss"), ("heldout_loss", "held-out EMA loss")):
        if series[key]:
            xs, ys = zip(*series[key], strict=True)
            ax.plot(xs, ys, label=label, marker="." if len(xs) < 50 else None)
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_yscale("log")
    ax.legend()
    if has_fid:
        xs, ys = zip(*series["fid"], strict=True)
        axes[0, 1].plot(xs, ys, marker="o")
        axes[0, 1].set_xlabel("step")
        axes[0, 1].set_ylabel("FID")
    fig.tight_layout()
    out_png = Path(out_png)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(out_png, buf.getvalue())
    return out_png
