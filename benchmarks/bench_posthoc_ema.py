"""Post-hoc EMA on the quality benchmark (a proxy: 8x8 digits, small-CNN features; not a face FID).

One run of ``bench_quality``'s ``defaults`` recipe (same data, UNet, budget, feature CNN, sampler and seeds) with
``ema.posthoc.enabled=true``; post-hoc EMA does not change the training (it reads the weights, draws no random
numbers), so the run's own EMA (``ema.decay`` 0.998 with warm-up) is the defaults' fixed decay at equal images
seen. The final step's EMA is reconstructed at each width of a grid (``training.posthoc_ema``) and scored like
``bench_quality``'s curves (DDIM 50, 500 images, seeds 10000..10499, FD against the training split). Disk cost:
the snapshot files' sizes beside one checkpoint's.

    python benchmarks/bench_posthoc_ema.py                       # 28,800 images, a snapshot every 100 steps
    python benchmarks/bench_posthoc_ema.py --images 3200 --num-images 100 --snapshot-every 20   # quick look

Outputs under ``--out`` (default ``bench_out/posthoc_ema``): ``posthoc_ema.json`` (every figure + machine),
``table.md``, ``fd_vs_width.png``.
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import bench_quality as bq  # noqa: E402
from benchmarks._common import write_json  # noqa: E402
from common.fileio import atomic_write  # noqa: E402
from training.posthoc_ema import check_snapshots, plan, reconstruct, reconstructable_range  # noqa: E402

log = logging.getLogger("bench_posthoc_ema")

WIDTHS = (0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.10, 0.12, 0.15, 0.20, 0.25)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "bench_out" / "posthoc_ema")
    p.add_argument("--images", type=int, default=28_800, help="images seen (bench_quality's budget)")
    p.add_argument("--snapshot-every", type=int, default=100, help="ema.posthoc.snapshot_every_steps")
    p.add_argument("--num-images", type=int, default=500)
    p.add_argument("--steps", type=int, default=50, help="DDIM steps (bench_quality's curves: 50)")
    p.add_argument("--sample-seed", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    bq.setup_logging()
    import torch
    from diffusers import UNet2DModel

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    proxy = bq.digits_proxy(args.out / "digits_dataset", test=args.num_images)
    dataset_dir, scorer, floor = proxy.dataset_dir, proxy.scorer, proxy.floor()

    run_dir = args.out / "run"
    import shutil

    shutil.rmtree(run_dir, ignore_errors=True)
    extra = ["ema.posthoc.enabled=true", f"ema.posthoc.snapshot_every_steps={args.snapshot_every}"]
    overrides = bq.variant_overrides("defaults", extra, dataset_dir=dataset_dir, run_dir=run_dir,
                                     images=args.images, points=1, seed=args.seed)  # fmt: skip
    cfg = bq.load_train_config(None, overrides)
    t0 = time.perf_counter()
    if bq.train(cfg) != 0:
        raise RuntimeError("the trainer failed; see its log above")
    train_s = time.perf_counter() - t0
    scheduler_config = json.loads((run_dir / "pipeline" / "scheduler" / "scheduler_config.json").read_text())
    unet = UNet2DModel.from_pretrained(str(run_dir / "pipeline"), subfolder="unet").eval()  # the fixed-decay EMA

    def fd_of(model) -> float:
        imgs = bq.generate(model, scheduler_config, num_images=args.num_images, seed=args.sample_seed,
                           batch_size=args.num_images, steps=args.steps, scheduler="ddim")  # fmt: skip
        return scorer.fd(imgs)

    fixed_fd = fd_of(unet)
    print(f"fixed EMA (ema.decay={cfg.ema.decay}, warm-up {cfg.ema.warmup}): FD {fixed_fd:.3f}", flush=True)
    snaps = check_snapshots(run_dir, cfg.ema.posthoc)
    step = snaps[-1].step
    lo, hi = reconstructable_range(snaps, step)
    names = [n for n, _ in unet.named_parameters()]
    rows = []
    for width in [w for w in WIDTHS if lo is not None and lo <= w <= hi]:
        target = plan(snaps, width, step, run_dir=run_dir)
        weights = reconstruct(target, names)
        with torch.no_grad():
            for n, p in unet.named_parameters():
                p.copy_(weights[n])
        rows.append({"sigma_rel": width, "profile_error": target["profile_error"], "fd": fd_of(unet)})
        print(f"sigma_rel {width:g}: FD {rows[-1]['fd']:.3f} (profile error {target['profile_error']:.2%})",
              flush=True)  # fmt: skip
    best = min(rows, key=lambda r: r["fd"])
    snap_bytes = [s.path.stat().st_size for s in snaps]
    ckpt = sorted((run_dir / "checkpoints").glob("checkpoint-*"))[-1]
    ckpt_bytes = sum(f.stat().st_size for f in ckpt.iterdir() if f.is_file())
    result = {
        **bq.result_header(),
        "floor": floor,
        "images_seen": cfg.train.max_steps * cfg.train.batch_size,
        "steps": cfg.train.max_steps,
        "snapshot_every_steps": args.snapshot_every,
        "reconstructable": [lo, hi],
        "fixed_ema": {"decay": cfg.ema.decay, "warmup": cfg.ema.warmup, "fd": fixed_fd},
        "widths": rows,
        "best": best,
        "snapshots": len(snaps),
        "snapshot_bytes": snap_bytes[-1],
        "snapshots_total_bytes": sum(snap_bytes),
        "checkpoint_bytes": ckpt_bytes,
        "train_s": round(train_s, 1),
        "total_s": round(time.perf_counter() - t_start, 1),
    }
    write_json(args.out / "posthoc_ema.json", result)
    lines = [
        f"Real-data floor FD {floor:.3f}; fixed EMA (decay {cfg.ema.decay}, warm-up) FD {fixed_fd:.3f}; "
        f"{result['images_seen']:,} images seen.",
        "",
        "| sigma_rel | profile error | FD | vs fixed EMA |",
        "|---:|---:|---:|---:|",
        *(
            f"| {r['sigma_rel']:g} | {r['profile_error']:.2%} | {r['fd']:.2f} | {r['fd'] / fixed_fd:.2f}x |"
            for r in rows
        ),  # fmt: skip
        "",
        f"Disk: {len(snaps)} snapshots x {snap_bytes[-1] / 2**20:.2f} MiB = {sum(snap_bytes) / 2**20:.1f} MiB; "
        f"one checkpoint {ckpt_bytes / 2**20:.1f} MiB.",
    ]
    atomic_write(args.out / "table.md", "\n".join(lines) + "\n")
    _plot(rows, fixed_fd, floor, args.out / "fd_vs_width.png")
    print("\n".join(lines), flush=True)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return 0


def _plot(rows, fixed_fd: float, floor: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot([r["sigma_rel"] for r in rows], [r["fd"] for r in rows], marker="o", label="post-hoc EMA")
    ax.axhline(fixed_fd, color="C1", linestyle="--", label="fixed EMA 0.998 (warm-up)")
    ax.axhline(floor, color="grey", linestyle=":", label="real-data floor")
    ax.set_xlabel("EMA relative width sigma_rel")
    ax.set_ylabel("proxy FD (digits)")
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    plt.close(fig)
    atomic_write(path, buf.getvalue())


if __name__ == "__main__":
    raise SystemExit(main())
