"""Sample quality per compute against a second peer (a proxy): lucidrains' ``denoising-diffusion-pytorch`` beside ours.

Ours: the trainer's defaults (``defaults``) and the recommended recipe (``fast``: ``configs/train/fast.yaml``'s
noise, loss and LR settings, the combination that won ``bench_quality``), both on the benchmark's small UNet.

The peer is the library a course homework's ``GaussianDiffusion`` / ``sample()`` code comes from: its ``Unet``,
``GaussianDiffusion`` and ``Trainer``, run with **their own defaults** (pred-v objective, sigmoid betas, 1000 steps,
Adam lr 1e-4 betas (0.9, 0.99) at a constant rate, EMA 0.995 updated every 10 steps, grad-norm clip 1, batch 16,
``dim_mults`` (1, 2, 4, 8) with linear attention and full attention at the bottom) except three things: horizontal
flip off (digits are not mirror-symmetric), its own Inception FID off (it downloads weights; we score it like ours)
and no periodic sample grids. ``Unet(dim=...)`` has no default: ``--peer-dim 16`` (2.4 M parameters, the size class
of the benchmark's 1.1 M UNet; its README's ``dim=64`` is 35.7 M and ~3x slower per step here).

Same data, budget and score as ``bench_quality.py``, whose functions this script calls: scikit-learn's digits (8x8,
the same train/test split; the peer reads the train split as PNG files, since its ``Trainer`` takes an image folder),
the same images seen (``--images``) at the same batch (16), ``--points`` evenly spaced checkpoints, EMA weights,
the same sampler family and steps (the peer's own DDIM, ``sampling_timesteps``; ours DDIM via ``generate``), the same
sample seeds and count, the same small-CNN feature FD against the training images, with the real-data floor.
**A proxy: it ranks recipes on 8x8 digits; it is not a face FID.**

Reported: FD at equal images seen (every checkpoint) and at equal wall-clock (each trainer's FD at its latest
checkpoint reached within the faster trainer's total training time). Our checkpoint times are
``train_s x step / steps`` (``bench_quality.run_variant`` times the whole run, start-up included); the peer's are
measured (its ``Trainer.train`` runs checkpoint to checkpoint).

The peer is installed into the benchmark's environment only (never the project's dependencies): ``pip install
--target bench_out/peer_pkgs --no-deps`` of the pinned ``PEER_PACKAGES`` (the peer and the pure-Python packages it
imports that the project's environment lacks), put on ``sys.path`` by this script alone. The script installs it
itself when missing; ``--no-install`` turns that off.

Example::

    nice -n 10 python benchmarks/bench_peers_quality.py      # make bench: 9,600 images, 2 points (BENCHMARKS.md)
    python benchmarks/bench_peers_quality.py --images 64 --points 2 --num-images 40 --curve-steps 4 --peer-dim 8
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import subprocess
import sys
import time
import warnings
from argparse import Namespace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import bench_quality as bq  # noqa: E402
from benchmarks._common import machine as _machine  # noqa: E402
from benchmarks._common import write_json  # noqa: E402

log = logging.getLogger("bench_peers_quality")

# The peer and what it imports that the project's environment lacks (accelerate, numpy, pillow, scipy, torch,
# torchvision and tqdm, its other requirements, come from the project's environment; never install torch here).
PEER_PACKAGES = ("denoising-diffusion-pytorch==2.3.4", "einops==0.8.2", "ema-pytorch==0.8.3", "pytorch-fid==0.3.0")
DEFAULT_PEER_PKGS = ROOT / "bench_out" / "peer_pkgs"


# ----------------------------------------------------------------------------------------------------------------
# Pure helpers


def at_equal_wall_clock(curve: list[dict], seconds: float) -> dict | None:
    """The latest point of ``curve`` (dicts with ``train_s``) reached within ``seconds``; None if none was."""
    reached = [p for p in curve if p["train_s"] <= seconds + 1e-9]
    return max(reached, key=lambda p: p["train_s"]) if reached else None


def comparison_rows(results: list[dict]) -> list[dict]:
    """One row per trainer: final FD, FD at the faster trainer's total training time, seconds."""
    budget_s = min(r["train_s"] for r in results)
    rows = []
    for r in results:
        hit = at_equal_wall_clock(r["curve"], budget_s)
        rows.append(
            {
                "name": r["name"],
                "params_m": r["params_m"],
                "images": r["curve"][-1]["images_seen"],
                "final_fd": r["curve"][-1]["fd"],
                "train_s": r["train_s"],
                "equal_s": budget_s,
                "fd_at_equal_s": hit["fd"] if hit else None,
                "images_at_equal_s": hit["images_seen"] if hit else None,
            }
        )
    return rows


def table(results: list[dict], floor: float) -> str:
    """The markdown tables: FD at each checkpoint (equal images seen), then at equal wall-clock."""
    points = sorted({p["images_seen"] for r in results for p in r["curve"]})
    head = "| trainer | parameters | " + " | ".join(f"FD at {n:,} images" for n in points) + " | train s |"
    lines = [f"_{bq.PROXY}. Real-data floor: **{floor:.3f}**._", "", head, "|---|---:|" + "---:|" * (len(points) + 1)]
    for r in results:
        by = {p["images_seen"]: p for p in r["curve"]}
        cells = [f"{by[n]['fd']:.2f} ({by[n]['train_s']:.0f} s)" if n in by else "-" for n in points]
        lines.append(f"| {r['name']} | {r['params_m']:.2f} M | " + " | ".join(cells) + f" | {r['train_s']:.0f} |")
    rows = comparison_rows(results)
    lines += ["", f"At equal wall-clock ({rows[0]['equal_s']:.0f} s of training, the faster trainer's total):", ""]
    lines += ["| trainer | FD | at images seen |", "|---|---:|---:|"]
    for row in rows:
        fd = f"{row['fd_at_equal_s']:.2f}" if row["fd_at_equal_s"] is not None else "no checkpoint yet"
        lines.append(f"| {row['name']} | {fd} | {row['images_at_equal_s'] or '-'} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# The peer


def import_peer(pkgs: Path, *, install: bool):
    """``denoising_diffusion_pytorch`` from ``pkgs`` (or wherever it is importable), pip-installing it there first
    when missing and ``install``; a one-line SystemExit when it cannot be had."""
    if str(pkgs) not in sys.path:
        sys.path.insert(0, str(pkgs))
    try:
        return importlib.import_module("denoising_diffusion_pytorch")
    except ImportError as exc:
        missing = exc.name
    cmd = [sys.executable, "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-deps"]
    cmd += ["--target", str(pkgs), *PEER_PACKAGES]
    hint = f"install it by hand where the registry is reachable: {' '.join(cmd[2:])}"
    if not install:
        raise SystemExit(f"error: the peer is not installed ({missing} missing under {pkgs}); {hint}")
    log.info("installing the peer into %s (benchmark only): %s", pkgs, " ".join(PEER_PACKAGES))
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SystemExit(f"error: pip could not install the peer into {pkgs} (offline? {last}); {hint}")
    importlib.invalidate_caches()
    return importlib.import_module("denoising_diffusion_pytorch")


def write_png_folder(u8, folder: Path) -> Path:
    """uint8 (N, 3, H, W) images as ``folder/00000.png``...: the image folder the peer's ``Trainer`` reads."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(u8.permute(0, 2, 3, 1).numpy()):
        Image.fromarray(im).save(folder / f"{i:05d}.png")
    return folder


def run_peer(ddp, *, args, image_dir: Path, scorer, steps: int, every: int) -> dict:
    """Train the peer checkpoint to checkpoint (timed), score its EMA model at each; returns the curve."""
    import torch

    saved = args.out / "runs" / f"peer-dim{args.peer_dim}-s{args.seed}.json"
    if args.reuse and saved.is_file():
        r = json.loads(saved.read_text())
        if (r["steps"], r["curve"][0]["step"], r["num_images"]) == (steps, every, args.num_images):
            log.info("peer: reusing %s", saved)
            return r
    torch.manual_seed(args.seed)
    unet = ddp.Unet(dim=args.peer_dim)
    diffusion = ddp.GaussianDiffusion(unet, image_size=8, sampling_timesteps=args.curve_steps)  # DDIM for scoring
    results = args.out / "peer_results"
    results.parent.mkdir(parents=True, exist_ok=True)
    trainer = ddp.Trainer(
        diffusion,
        str(image_dir),
        train_batch_size=16,
        train_num_steps=steps,
        augment_horizontal_flip=False,  # digits are not mirror-symmetric
        calculate_fid=False,  # its Inception FID downloads weights; scored below like ours
        save_and_sample_every=10**9,  # no periodic grids or saves (ours runs without them too)
        results_folder=str(results),
    )
    curve, train_s = [], 0.0
    for target in range(every, steps + 1, every):
        trainer.train_num_steps = target
        t0 = time.perf_counter()
        trainer.train()
        train_s += time.perf_counter() - t0
        torch.manual_seed(args.sample_seed)
        with torch.inference_mode():
            x = trainer.ema.ema_model.eval().sample(batch_size=args.num_images)  # (N, 3, 8, 8) in [0, 1]
        u8 = x.mul(255).round().clamp(0, 255).to(torch.uint8)
        fd = scorer.fd(u8)
        curve.append({"step": target, "images_seen": target * 16, "fd": fd, "train_s": round(train_s, 1)})
        log.info("peer: step %d (%d images seen, %.0f s): FD %.3f", target, target * 16, train_s, fd)
    result = {
        "name": f"denoising-diffusion-pytorch (dim {args.peer_dim})",
        "params_m": sum(p.numel() for p in unet.parameters()) / 1e6,
        "steps": steps,
        "num_images": args.num_images,
        "train_s": round(train_s, 1),
        "curve": curve,
    }
    write_json(saved, result)
    return result


def ours_recipes() -> dict[str, list[str]]:
    """Our trainer's defaults and the recommended recipe (``configs/train/fast.yaml``'s: the combination that won
    ``bench_quality``), as overrides built from ``bench_quality.VARIANTS``."""
    return {"defaults": [], "fast": bq.recipe_overrides()}


def run_ours(name: str, *, args, dataset_dir: Path, scorer) -> dict:
    """One of our recipes through ``bench_quality.run_variant``; checkpoint times pro rata of its training time."""
    qargs = Namespace(
        out=args.out,
        reuse=args.reuse,
        num_images=args.num_images,
        sample_seed=args.sample_seed,
        curve_steps=args.curve_steps,
        curve_scheduler="ddim",
        keep_pipeline_of={name},
    )
    extra = ours_recipes()[name]
    r = bq.run_variant(
        name, extra, args=qargs, dataset_dir=dataset_dir, scorer=scorer, images=args.images, points=args.points,
        seed=args.seed,
    )  # fmt: skip
    from diffusers import UNet2DModel

    unet = UNet2DModel.from_pretrained(str(args.out / "runs" / f"{name}-s{args.seed}" / "pipeline"), subfolder="unet")
    curve = [{**p, "train_s": round(r["train_s"] * p["step"] / r["steps"], 1)} for p in r["curve"]]
    return {
        "name": f"ptt-faces ({name})",
        "overrides": extra,
        "params_m": sum(p.numel() for p in unet.parameters()) / 1e6,
        "steps": r["steps"],
        "train_s": r["train_s"],
        "curve": curve,
    }


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "bench_out" / "peers_quality")
    p.add_argument("--images", type=int, default=9_600, help="images seen per trainer (the budget), at batch 16")
    p.add_argument("--points", type=int, default=2, help="checkpoints scored per trainer (evenly spaced)")
    p.add_argument("--num-images", type=int, default=500, help="generated images per FD (= the test split's size)")
    p.add_argument("--curve-steps", type=int, default=50, help="DDIM steps for every FD (bench_quality's default)")
    p.add_argument("--sample-seed", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=0, help="training seed of both trainers")
    p.add_argument("--peer-dim", type=int, default=16, help="the peer Unet's base width (it has no default)")
    p.add_argument("--peer-pkgs", type=Path, default=DEFAULT_PEER_PKGS, help="where the peer is (pip --target)")
    p.add_argument("--no-install", action="store_true", help="fail instead of pip-installing a missing peer")
    p.add_argument("--ours", nargs="+", default=["defaults", "fast"], choices=["defaults", "fast"])
    p.add_argument("--reuse", action="store_true", help="reuse runs/*.json of an earlier run at the same settings")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    bq.setup_logging()
    warnings.filterwarnings("ignore", message=".*'pin_memory' argument is set")  # the peer's loader, no GPU
    ddp = import_peer(args.peer_pkgs, install=not args.no_install)
    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    machine = _machine(torch_threads=torch.get_num_threads(), torch=torch.__version__)  # the load at the start
    t_start = time.perf_counter()
    steps, every = bq.budget_steps(args.images, 16, args.points)

    proxy = bq.digits_proxy(args.out / "digits_dataset", test=args.num_images)
    dataset_dir, train_u8, test_u8, scorer, floor = (
        proxy.dataset_dir,
        proxy.train_u8,
        proxy.test_u8,
        proxy.scorer,
        proxy.floor(),
    )
    print(
        f"{bq.PROXY}\nreal-data floor (held-out {len(test_u8)} vs train {len(train_u8)}): FD {floor:.3f}", flush=True
    )
    image_dir = write_png_folder(train_u8, args.out / "digits_png")

    results = [run_ours(name, args=args, dataset_dir=dataset_dir, scorer=scorer) for name in args.ours]
    results.append(run_peer(ddp, args=args, image_dir=image_dir, scorer=scorer, steps=steps, every=every))

    md = table(results, floor)
    (args.out / "table.md").write_text(md)
    info = {
        **bq.result_header(machine),
        "peer_packages": list(PEER_PACKAGES),
        "floor": floor,
        "results": results,
        "comparison": comparison_rows(results),
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    write_json(args.out / "peers_quality.json", info)
    print(md + f"\nwrote {args.out / 'peers_quality.json'} ({info['wall_s']:.0f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
