"""FID against samplers and their step counts for one exported pipeline: ``sweep.csv``, ``sweep.md``, ``sweep.png``.

Each row samples ``num_images`` with fixed seeds (``evaluation.sample.generate``) with one sampler at one step
count, times it (after a one-step warm-up), and scores it with ``evaluation.fid.evaluate`` against the same
reference, whose features are computed once. Rows carry the UNet evaluations per image (a Heun step costs two),
and the plot draws one line per sampler against them, so samplers compare at equal cost. Example::

    ptt-fid sweep --model runs/demo/pipeline --ref demo_out/curated/dataset --steps 10,20,50 --substitute
    ptt-fid sweep --model runs/demo/pipeline --ref data/dataset --scheduler ddim,dpm2_sde,ddpm --steps 20,1000

Library::

    from evaluation.sweep import sweep
    rows = sweep("runs/demo/pipeline", "demo_out/curated/dataset", "sweep_out", steps=[10, 20], extractor="substitute",
                 scheduler=["ddim", "dpm2_sde"])
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

__all__ = ["sampler_steps", "sweep"]


def sampler_steps(schedulers: list[str], steps: list[int]) -> list[tuple[str, int]]:
    """(sampler, steps) pairs: ``name`` at every count in ``steps``, ``name:N`` at N only; FidError names a bad one."""
    from evaluation.samplers import SCHEDULERS

    if not schedulers:
        raise FidError(f"--scheduler: name at least one sampler (from: {', '.join(SCHEDULERS)})")
    pairs = []
    for entry in schedulers:
        name, _, own = entry.partition(":")
        if name not in SCHEDULERS:
            raise FidError(f"--scheduler {entry}: unknown sampler {name!r}; choose from {', '.join(SCHEDULERS)}")
        if own and not (own.isdigit() and int(own) >= 1):
            raise FidError(f"--scheduler {entry}: the steps after ':' must be a whole number >= 1, e.g. ddpm:1000")
        pairs += [(name, int(own))] if own else [(name, n) for n in steps]
    return pairs


def sweep(
    model: str,
    ref: str,
    out: str | os.PathLike,
    *,
    scheduler: str | list[str] = "ddim",
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
    """FID for every (sampler, steps) pair: writes sweep.csv, sweep.md and sweep.png into ``out``; returns the rows.

    ``scheduler``: one sampler name or a list of them (:data:`evaluation.samplers.SCHEDULERS`); each runs at every
    step count in ``steps``, or at its own with ``name:N`` (``ddpm:1000``, the reference, beside fast samplers)."""
    if not steps or min(steps) < 1:
        raise FidError(f"--steps {','.join(map(str, steps))}: give sampler step counts of at least 1, e.g. 10,20,50")
    from evaluation.sample import generate
    from evaluation.samplers import num_evaluations

    pairs = sampler_steps([scheduler] if isinstance(scheduler, str) else list(scheduler), steps)
    import torch

    from evaluation.features import build_extractor
    from evaluation.pipeline import load_pipeline

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    fn = build_extractor(extractor, inception_path=inception_path, device=device)
    unet, sched_cfg, source = load_pipeline(model, device=device)
    rows = []
    for scheduler, s in pairs:
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
            "evaluations": num_evaluations(scheduler, sched_cfg, s),
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
        "| scheduler | steps | UNet evaluations / image | s / image | FID | KID |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    md += [
        f"| {r['scheduler']} | {r['steps']} | {r['evaluations']} | {r['sec_per_image']:.4f} | {r['fid']:.3f} | "
        f"{r['kid']:.5f} |"
        for r in rows
    ]
    write_output(out / "sweep.md", "\n".join(md) + "\n")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    names = list(dict.fromkeys(r["scheduler"] for r in rows))
    for name in names:  # one line per sampler, so samplers compare at equal cost
        pts = sorted(
            (r["evaluations"], r["sec_per_image"], r["fid"], r["steps"]) for r in rows if r["scheduler"] == name
        )
        evals, secs, fids, steps = zip(*pts, strict=True)
        if len(pts) == 1:  # one step count (e.g. ddpm:1000): a reference line across the fast samplers
            ax1.axhline(fids[0], ls="--", lw=1, color="k", label=f"{name} {steps[0]}")
        ax1.plot(evals, fids, "o-", label=name)
        ax2.plot(secs, fids, "o-", label=name)
        for x, y, n in zip(secs, fids, steps, strict=True):
            ax2.annotate(str(n), (x, y), fontsize=7)
    ticks = sorted({r["evaluations"] for r in rows})
    ax1.set_xscale("log")
    ax1.set_xticks(ticks, [str(n) for n in ticks])
    ax1.minorticks_off()
    ax1.set_xlabel("UNet evaluations per image")
    ax1.set_ylabel("FID")
    ax1.legend(fontsize=8)
    ax2.set_xlabel("seconds per image (labels: steps)")
    ax2.set_ylabel("FID")
    title = f"{', '.join(names)}; {rows[0]['num_images']} images"
    if not rows[0]["comparable"]:
        title += f"\n{SUBSTITUTE_LABEL}"
    fig.suptitle(title)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    write_output(out / "sweep.png", buf.getvalue())
