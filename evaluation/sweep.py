"""FID against sampler steps for one exported pipeline: ``sweep.csv``, ``sweep.md`` and ``sweep.png``.

Each row samples ``num_images`` with fixed seeds (``evaluation.sample.generate``) at one step count, times it
(after a one-step warm-up), and scores it with ``evaluation.fid.evaluate`` against the same reference, whose
features are computed once. Example::

    ptt-fid sweep --model runs/demo/pipeline --ref demo_out/curated/dataset --steps 10,20,50 --substitute

Library::

    from evaluation.sweep import sweep
    rows = sweep("runs/demo/pipeline", "demo_out/curated/dataset", "sweep_out", steps=[10, 20], extractor="substitute")
"""

from __future__ import annotations

import csv
import io
import logging
import os
import time
from pathlib import Path

from evaluation.features import SUBSTITUTE_LABEL
from evaluation.fid import FidError, evaluate, format_result, write_output

log = logging.getLogger(__name__)

__all__ = ["sweep"]


def sweep(
    model: str,
    ref: str,
    out: str | os.PathLike,
    *,
    scheduler: str = "ddim",
    steps: list[int],
    num_images: int = 1000,
    batch_size: int = 64,
    seed: int = 0,
    extractor: str = "inception",
    inception_path=None,
    cache_dir=None,
    device=None,
    dtype=None,
) -> list[dict]:
    """FID against sampler steps: writes sweep.csv, sweep.md and sweep.png into ``out``; returns the rows."""
    if not steps or min(steps) < 1:
        raise FidError(f"--steps {','.join(map(str, steps))}: give sampler step counts of at least 1, e.g. 10,20,50")
    import torch

    from evaluation.features import build_extractor
    from evaluation.pipeline import load_pipeline
    from evaluation.sample import generate

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    fn = build_extractor(extractor, inception_path=inception_path, device=device)
    unet, sched_cfg, source = load_pipeline(model, device=device)
    rows = []
    for s in steps:
        generate(
            unet,
            sched_cfg,
            num_images=min(2, num_images),
            seed=seed,
            batch_size=batch_size,
            steps=1,
            scheduler=scheduler,
            device=device,
            dtype=dtype,
        )  # warm-up, so the first row's time is fair
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        imgs = generate(
            unet,
            sched_cfg,
            num_images=num_images,
            seed=seed,
            batch_size=batch_size,
            steps=s,
            scheduler=scheduler,
            device=device,
            dtype=dtype,
        )
        sec = (time.perf_counter() - t0) / num_images
        res = evaluate(imgs, ref, extractor=extractor, cache_dir=cache_dir, device=device, _fn=fn)
        row = {
            "scheduler": scheduler,
            "steps": s,
            "num_images": num_images,
            "sec_per_image": sec,
            "fid": res["fid"],
            "kid": res["kid"],
            "feature_extractor": res["feature_extractor"],
            "comparable": res["comparable"],
            "ref": res["ref"],
            "model": source,
        }
        log.info("%s %d steps: %.4f s/img, %s", scheduler, s, sec, format_result(res))
        rows.append(row)
    _write_sweep(Path(out), rows)
    return rows


def _write_sweep(out: Path, rows: list[dict]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    write_output(out / "sweep.csv", buf.getvalue())
    label = "" if rows[0]["comparable"] else f"\n\n**{SUBSTITUTE_LABEL}** ({rows[0]['feature_extractor']})."
    md = [
        f"FID sweep of `{rows[0]['model']}` against `{rows[0]['ref']}`, {rows[0]['num_images']} images, "
        f"clean-fid clean protocol, {rows[0]['feature_extractor']}.{label}",
        "",
        "| scheduler | steps | s / image | FID | KID |",
        "|---|---:|---:|---:|---:|",
    ]
    md += [
        f"| {r['scheduler']} | {r['steps']} | {r['sec_per_image']:.4f} | {r['fid']:.3f} | {r['kid']:.5f} |"
        for r in rows
    ]
    write_output(out / "sweep.md", "\n".join(md) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    steps = [r["steps"] for r in rows]
    fids = [r["fid"] for r in rows]
    ax1.plot(steps, fids, "o-")
    ax1.set_xscale("log")
    ax1.set_xticks(steps, [str(n) for n in steps])
    ax1.minorticks_off()
    ax1.set_xlabel("sampler steps")
    ax1.set_ylabel("FID")
    ax2.plot([r["sec_per_image"] for r in rows], fids, "o-")
    for r in rows:
        ax2.annotate(str(r["steps"]), (r["sec_per_image"], r["fid"]))
    ax2.set_xlabel("seconds per image")
    ax2.set_ylabel("FID")
    title = f"{rows[0]['scheduler']}, {rows[0]['num_images']} images"
    if not rows[0]["comparable"]:
        title += f"\n{SUBSTITUTE_LABEL}"
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_output(out / "sweep.png", buf.getvalue())
