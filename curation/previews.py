"""Pictures of what curation did: contact sheets (kept faces, one per reject reason) and histograms.

Writes under ``<out>/previews/``: ``kept.png``, ``rejected_<reason>.png`` (photo thumbnails for
``no_face``), and ``histograms.png`` (blur, yaw, face size, eye brightness, eye distance over every detected
face, kept and rejected stacked, with the thresholds drawn). matplotlib runs with the Agg backend.

Example::

    from curation.previews import contact_sheet
    import numpy as np
    sheet = contact_sheet([np.zeros((64, 64, 3), np.uint8)] * 10, cols=5, labels=["a"] * 10)
    print(sheet.shape)   # (2 * 76, 5 * 64, 3): each tile has a caption strip
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from common.fileio import atomic_write, atomic_write_png

__all__ = ["contact_sheet", "write_previews"]

_CAPTION_PX = 12


def contact_sheet(tiles: list[np.ndarray], *, cols: int = 10, labels: list[str] | None = None) -> np.ndarray:
    """Grid of equal-size RGB tiles with an optional caption under each; white background."""
    if not tiles:
        return np.full((64, 64, 3), 255, np.uint8)
    th, tw = tiles[0].shape[:2]
    cap = _CAPTION_PX if labels else 0
    cols = max(1, min(cols, len(tiles)))
    rows = -(-len(tiles) // cols)
    sheet = Image.new("RGB", (cols * tw, rows * (th + cap)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, tile in enumerate(tiles):
        x, y = (i % cols) * tw, (i // cols) * (th + cap)
        sheet.paste(Image.fromarray(tile), (x, y))
        if labels:
            draw.text((x + 1, y + th), labels[i][: max(4, tw // 6)], fill=(0, 0, 0))
    return np.asarray(sheet)


def _decode(png: bytes, scale: int = 2) -> np.ndarray:
    """Tile for a sheet, enlarged ``scale`` x (nearest) so a person can judge a 64x64 face on screen."""
    im = Image.open(io.BytesIO(png)).convert("RGB")
    return np.asarray(im.resize((im.width * scale, im.height * scale), Image.NEAREST))


def _label(r: dict) -> str:
    reason = r.get("reason")
    if reason == "blur":
        return f"b{r['blur_var']:.0f}"
    if reason == "eye_distance":
        return f"e{r['eye_distance']:.0f}px"
    if reason == "eye_brightness":
        return f"br{r['eye_brightness']:.0f}"
    if reason == "small_face":
        return f"{100 * r['face_area_ratio']:.1f}%"
    if reason == "pose" or reason is None:
        return f"{r['pose'][0]}{r['yaw']:+.0f}"
    return r["face_id"][:8]


def write_histograms(path: Path, rows: list[dict], cfg: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    t = cfg.filters
    panels = [
        ("blur_var", "Laplacian variance (64x64 face)", [t.min_blur_var], True),
        (
            "yaw",
            "yaw (deg)",
            [-t.frontal_yaw_deg, t.frontal_yaw_deg]
            + ([-t.max_abs_yaw_deg, t.max_abs_yaw_deg] if t.max_abs_yaw_deg is not None else []),
            False,
        ),
        ("face_area_ratio", "face box / photo area", [t.min_face_area_ratio], True),
        ("eye_brightness", "eye patch brightness (0..255)", [t.min_eye_brightness], False),
        ("eye_distance", "eye distance (px, source photo)", [t.min_eye_distance_px], True),
        ("face_score", "detector score", [cfg.detector.score_threshold], False),
    ]
    fig, axes = plt.subplots(2, 3, figsize=(12, 6.4))
    axes = axes.ravel()
    kept = [r for r in rows if r["reason"] is None]
    rej = [r for r in rows if r["reason"] is not None]
    for ax, (key, title, lines, log) in zip(axes, panels, strict=True):
        vals_k = np.array([r[key] for r in kept], np.float64)
        vals_r = np.array([r[key] for r in rej], np.float64)
        allv = np.concatenate([vals_k, vals_r, np.array(lines, np.float64)])
        if log:
            allv = allv[allv > 0]
        if allv.size:
            lo, hi = float(allv.min()), float(allv.max())
            if hi <= lo:
                hi = lo + 1.0
            bins = np.geomspace(lo, hi, 30) if log else np.linspace(lo, hi, 30)
            data = [np.clip(v, lo, hi) for v in (vals_k, vals_r)]
            ax.hist(data, bins=bins, stacked=True, color=["tab:green", "tab:red"], label=["kept", "rejected"])
            if log:
                ax.set_xscale("log")
                ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
                ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
                ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        for x in lines:
            ax.axvline(x, color="black", linestyle="--", linewidth=1)
        ax.set_title(title, fontsize=9)
    axes[0].legend(fontsize=8)
    for ax in axes:
        ax.tick_params(labelsize=7)
    fig.suptitle(
        f"{len(rows)} detected faces: {len(kept)} kept, {len(rej)} rejected (dashed: thresholds)", fontsize=10
    )
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    plt.close(fig)
    atomic_write(path, buf.getvalue())


def write_previews(
    folder: Path, rows: list[dict], photo_thumbs: dict[str, list[bytes]], cfg: Any, *, shown_as: Path | None = None
) -> dict[str, str]:
    """Write the sheets and histograms into ``folder``; returns ``{name: path}`` for the report, each path under
    ``shown_as`` (the folder's documented name, ``<out>/previews``) when given."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("rejected_*.png"):
        old.unlink()  # a reason with no faces this run must not keep last run's sheet
    n = cfg.contact_sheet_max
    written: dict[str, str] = {}
    groups: dict[str, list[dict]] = {"kept": []}
    for r in rows:
        groups.setdefault("kept" if r["reason"] is None else f"rejected_{r['reason']}", []).append(r)
    for name, group in groups.items():
        if not group and name != "kept":
            continue
        tiles = [_decode(r["image"]) for r in group[:n]]
        sheet = contact_sheet(tiles, cols=10, labels=[_label(r) for r in group[:n]])
        atomic_write_png(folder / f"{name}.png", sheet)
        written[name] = str(folder / f"{name}.png")
    for reason, thumbs in photo_thumbs.items():
        name = f"rejected_{reason}"
        atomic_write_png(folder / f"{name}.png", contact_sheet([_decode(b) for b in thumbs[:n]], cols=10))
        written[name] = str(folder / f"{name}.png")
    if rows:
        write_histograms(folder / "histograms.png", rows, cfg)
        written["histograms"] = str(folder / "histograms.png")
    if shown_as is not None:
        written = {name: str(shown_as / Path(path).name) for name, path in written.items()}
    return written
