"""Sample quality per compute (a proxy): Frechet distance against images seen, per training recipe and sampler.

It ranks recipes; it is **not a face FID**. The data are scikit-learn's bundled handwritten digits (``load_digits``:
1,797 real 8x8 scans, 17 grey levels, no download), written as a curated ``datasets`` folder (``image`` column,
``train``/``test`` splits, as ``ptt-curate`` writes) and trained on with our own trainer (``training.train.train``)
at a fixed budget of images seen, with every knob at the project's defaults (``training/config.py``) except the one
a variant changes. Only the UNet is shrunk (widths 32/64/64, one block per level, 8 px) and augmentation is off
(mirrored or rotated digits are other digits), so one variant trains in ~1-2 minutes on a 2-core CPU.

Score: a small CNN is trained here on the digits' own training split (fixed seed); its penultimate layer (64-d) is
the feature space. The Frechet distance (``evaluation.fid.frechet_distance``) of N generated images (fixed seeds,
EMA weights from each checkpoint) against all training images is reported with the **real-data floor**: the N
held-out test images against the same training images. FD at the floor means indistinguishable from real digits
in these features.

Stages (each writes under ``--out``, default ``bench_out/quality/``; a variant whose ``runs/<name>.json`` exists is
reused with ``--reuse``):

1. recipes: every variant in ``--variants`` (one change against the defaults), then ``combo`` (the best of each
   family that beats the defaults, see :func:`combine_winners`) and ``combo_third`` (the same recipe trained on a
   third of the image budget, schedule and all: the 3x target);
2. samplers: FD against steps for DDIM, DPM-Solver++ and UniPC against 1000-step DDPM on ``combo``'s final model.

Outputs: ``curves.csv`` and ``curves.png`` (FD against images seen, one line per variant and seed),
``samplers.csv`` / ``samplers.png``, ``table.md`` (the markdown tables), ``quality.json`` (everything + machine).

Example::

    python benchmarks/bench_quality.py --short                  # make bench: two recipes, two sampler step counts
    python benchmarks/bench_quality.py                          # every variant, then combo and the sampler sweep
    python benchmarks/bench_quality.py --variants defaults pred_v --images 9600 --no-samplers
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# -- the project's code this benchmark runs (one place, so a moved module is one edit) ---------------------------
from benchmarks._common import machine as _machine  # noqa: E402
from benchmarks._common import write_json  # noqa: E402
from evaluation.fid import feature_stats, frechet_distance  # noqa: E402
from evaluation.sample import generate  # noqa: E402
from training.config import load_train_config  # noqa: E402
from training.data import load_images  # noqa: E402
from training.train import train  # noqa: E402

log = logging.getLogger("bench_quality")

PROXY = "proxy FD (digits, 8x8, small-CNN features): ranks recipes; not a face FID"

# The benchmark's fixed frame: what every variant shares. Everything else is the trainer's default.
BENCH_OVERRIDES = [
    "augment.enabled=false",  # hflip/rotation make other digits; the recipes, not augmentation, are measured
    "model.block_out_channels=[32,64,64]",  # ~1.1 M parameters: 8 -> 4 -> 2 px
    "model.down_block_types=[DownBlock2D,DownBlock2D,DownBlock2D]",
    "model.up_block_types=[UpBlock2D,UpBlock2D,UpBlock2D]",
    "model.layers_per_block=1",
    "model.norm_num_groups=8",
    "train.log_with=none",
    "train.log_every_steps=50",
    "train.sample_every_steps=null",
    "eval.fid_every_steps=null",
    "eval.heldout_every_steps=null",
]

# One change against the defaults each, grouped in families; ``combine_winners`` takes the best of each family.
# The defaults (training/config.py): epsilon, linear betas, MSE, no min-SNR, lr 3e-4 cosine with 500 warm-up
# steps, EMA 0.998 with warm-up (power 3/4), batch 16, no dropout.
VARIANTS: dict[str, tuple[str, list[str]]] = {
    "defaults": ("defaults", []),
    "pred_v": ("prediction", ["noise.prediction_type=v_prediction"]),
    "pred_x0": ("prediction", ["noise.prediction_type=sample"]),
    "min_snr5": ("min_snr", ["loss.min_snr_gamma=5.0"]),
    "cosine": ("beta_schedule", ["noise.beta_schedule=cosine"]),
    "lr1e-3": ("lr", ["optim.lr=1.0e-3"]),
    "lr1e-4": ("lr", ["optim.lr=1.0e-4"]),
    "warmup50": ("warmup", ["optim.lr_warmup_steps=50"]),
    "ema0.999": ("ema", ["ema.decay=0.999"]),
    "ema0.99": ("ema", ["ema.decay=0.99"]),
    "ema_nowarmup": ("ema_warmup", ["ema.warmup=false"]),
    "batch32": ("batch", ["train.batch_size=32"]),  # same images seen: half the steps
    "batch64": ("batch", ["train.batch_size=64"]),
    "dropout0.1": ("dropout", ["model.dropout=0.1"]),
}
PRIORITY = list(VARIANTS)  # run order: prediction, min-SNR, schedule, LR, EMA first
# configs/train/fast.yaml's recipe, by variant name: x0 prediction, lr 1e-3, cosine betas, min-SNR 5, 50 warm-up steps
FAST_RECIPE = ("pred_x0", "lr1e-3", "cosine", "min_snr5", "warmup50")


def recipe_overrides(names: tuple[str, ...] = FAST_RECIPE) -> list[str]:
    """The trainer overrides of several variants together (the other benchmarks' recipe, e.g. fast.yaml's)."""
    return [o for name in names for o in VARIANTS[name][1]]


SHORT_VARIANTS = ["defaults", "pred_x0"]  # the largest single gain of the full run

SAMPLERS = ("ddim", "dpmsolver++", "unipc")
QUIET_LOGGERS = ("ptt.train", "training", "evaluation", "accelerate", "diffusers")  # one line per run, not per step


def setup_logging() -> None:
    """The quality benchmarks' logging: INFO, one line per run (not per step)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in QUIET_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)


# ----------------------------------------------------------------------------------------------------------------
# Pure helpers


def split_indices(n: int, test: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A fixed random (train, test) split of ``range(n)``; ``test`` indices held out."""
    if not 0 < test < n:
        raise ValueError(f"--test-images must be in 1..{n - 1}, got {test}")
    perm = np.random.default_rng(seed).permutation(n)
    return np.sort(perm[test:]), np.sort(perm[:test])


def digits_to_u8(images: np.ndarray) -> np.ndarray:
    """``load_digits().images`` (N, 8, 8) float in 0..16 -> (N, 8, 8) uint8 in 0..255."""
    return np.clip(np.rint(np.asarray(images, np.float64) * (255.0 / 16.0)), 0, 255).astype(np.uint8)


def budget_steps(images: int, batch_size: int, points: int) -> tuple[int, int]:
    """(total optimizer steps, steps between checkpoints) so that ``points`` checkpoints split ``images`` evenly."""
    every = max(1, math.ceil(images / batch_size / points))
    return every * points, every


def _batch(extra: list[str]) -> int:
    """The per-device batch a variant's overrides ask for (the trainer's default, 16, otherwise)."""
    for item in extra:
        if item.startswith("train.batch_size="):
            return int(item.split("=", 1)[1])
    return 16


def variant_overrides(
    name: str, extra: list[str], *, dataset_dir: Path, run_dir: Path, images: int, points: int, seed: int
) -> list[str]:
    """The trainer's ``key=value`` overrides for one variant at a budget of ``images`` images seen."""
    steps, every = budget_steps(images, _batch(extra), points)
    return [
        f"data.dataset_dir={dataset_dir}",
        "data.resolution=8",
        f"run_dir={run_dir}",
        *BENCH_OVERRIDES,
        f"train.max_steps={steps}",
        f"train.checkpoint_every_steps={every}",
        f"train.checkpoints_keep={points}",
        f"train.seed={seed}",
        *extra,
    ]


def relative(fd: float, ref: float) -> float:
    """FD as a ratio to a reference FD (< 1 is better)."""
    return fd / ref if ref > 0 else float("inf")


def combine_winners(finals: dict[str, float], *, families: dict[str, str], threshold: float = 0.05) -> list[str]:
    """Names of the best variant of each family whose final FD beats ``defaults`` by more than ``threshold``.

    ``finals`` maps variant name -> final FD (mean over seeds); ``families`` maps name -> family.
    """
    base = finals["defaults"]
    best: dict[str, tuple[float, str]] = {}
    for name, fd in finals.items():
        fam = families.get(name)
        if fam in (None, "defaults") or fd > base * (1.0 - threshold):
            continue
        if fam not in best or fd < best[fam][0]:
            best[fam] = (fd, name)
    return [name for _, name in sorted(best.values())]


def cheapest_within(rows: list[dict], ref_fd: float, tol: float = 0.10) -> dict | None:
    """The row with the fewest steps whose FD is within ``tol`` of ``ref_fd`` (ties: lower FD); None if none is."""
    ok = [r for r in rows if r["fd"] <= ref_fd * (1.0 + tol)]
    return min(ok, key=lambda r: (r["steps"], r["fd"])) if ok else None


def first_reaching(curve: list[tuple[int, float]], target: float) -> int | None:
    """Images seen at the first point of ``curve`` ((images, FD), sorted) with FD <= target; None if never."""
    for images, fd in sorted(curve):
        if fd <= target:
            return images
    return None


# ----------------------------------------------------------------------------------------------------------------
# Data and the feature network


def write_digits_dataset(path: Path, *, test: int, seed: int = 0) -> Path:
    """scikit-learn's 1,797 digits as a curated ``datasets`` folder: ``image`` (8x8 RGB), ``label``; train/test."""
    import datasets
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    u8 = digits_to_u8(digits.images)
    tr, te = split_indices(len(u8), test, seed)

    def split(idx):
        ims = [Image.fromarray(u8[i]).convert("RGB") for i in idx]
        ds = datasets.Dataset.from_dict({"image": ims, "label": [int(digits.target[i]) for i in idx]})
        return ds.cast_column("image", datasets.Image())

    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    datasets.DatasetDict({"train": split(tr), "test": split(te)}).save_to_disk(str(tmp))
    shutil.rmtree(path, ignore_errors=True)
    os.replace(tmp, path)
    return path


def _feature_net():
    import torch.nn as nn

    return nn.Sequential(  # (B, 3, 8, 8) in [-1, 1]
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),  # (B, 64, 4, 4)
        nn.Conv2d(64, 64, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(64, 64),
        nn.ReLU(),  # penultimate: the 64-d features
        nn.Linear(64, 10),
    )


def _to_input(u8):
    """uint8 (N, H, W, 3) numpy or (N, 3, H, W) torch -> float (N, 3, H, W) in [-1, 1]."""
    import torch

    x = torch.as_tensor(u8)
    if x.shape[-1] == 3:
        x = x.permute(0, 3, 1, 2)
    return x.float().div(127.5).sub(1.0)


def train_feature_net(train_u8, labels, *, epochs: int = 30, seed: int = 0):
    """The feature CNN trained on the training split (Adam, batch 64, fixed seed); returns it in eval mode."""
    import torch

    torch.manual_seed(seed)
    net = _feature_net()
    opt = torch.optim.Adam(net.parameters(), lr=2e-3)
    x, y = _to_input(train_u8), torch.as_tensor(labels)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for lo in range(0, len(x), 64):
            idx = perm[lo : lo + 64]
            loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return net.eval()


def features(net, u8) -> np.ndarray:
    """(N, 64) penultimate-layer features of uint8 images."""
    import torch

    with torch.inference_mode():
        return net[:-1](_to_input(u8)).double().numpy()


def accuracy(net, u8, labels) -> float:
    import torch

    with torch.inference_mode():
        return float((net(_to_input(u8)).argmax(1).numpy() == np.asarray(labels)).mean())


class Scorer:
    """FD of uint8 images against the training split, in the feature CNN's space."""

    def __init__(self, net, train_u8):
        self.net = net
        self.ref = feature_stats(features(net, train_u8))

    def fd(self, u8) -> float:
        mu, sigma = feature_stats(features(self.net, u8))
        return frechet_distance(mu, sigma, *self.ref)


def result_header(machine: dict | None = None) -> dict:
    """What every quality benchmark's JSON starts with: date, command, machine (torch's threads and version by
    default) and the proxy's description."""
    import torch

    if machine is None:
        machine = _machine(torch_threads=torch.get_num_threads(), torch=torch.__version__)
    return {"date": datetime.now(UTC).isoformat(timespec="seconds"), "command": " ".join(sys.argv),
            "machine": machine, "proxy": PROXY}  # fmt: skip


@dataclass
class DigitsProxy:
    """The proxy's data and judge: the digits folder, both splits as the trainer sees them (uint8, 8 px), the
    feature CNN trained on the training split, and its scorer against that split."""

    dataset_dir: Path
    train_u8: np.ndarray
    test_u8: np.ndarray
    net: object
    scorer: Scorer

    def floor(self, n: int | None = None) -> float:
        """The real-data floor: FD of the first ``n`` (all) held-out images against the training split."""
        return self.scorer.fd(self.test_u8[:n])

    def labels(self, split: str) -> list[int]:
        import datasets

        return datasets.load_from_disk(str(self.dataset_dir))[split]["label"]


def digits_proxy(dataset_dir: Path, *, test: int, write: bool = True) -> DigitsProxy:
    """Write the digits folder (``test`` held out; kept as it is when ``write`` is false and it exists), load
    both splits and train the feature CNN: what every quality benchmark starts with."""
    if write or not dataset_dir.is_dir():
        write_digits_dataset(dataset_dir, test=test)
    train_u8 = load_images(str(dataset_dir), split="train", resolution=8)  # (N, 3, 8, 8): what the trainer sees
    test_u8 = load_images(str(dataset_dir), split="test", resolution=8)
    proxy = DigitsProxy(dataset_dir, train_u8, test_u8, None, None)
    proxy.net = train_feature_net(train_u8, proxy.labels("train"))
    proxy.scorer = Scorer(proxy.net, train_u8)
    return proxy


# ----------------------------------------------------------------------------------------------------------------
# Runs


def _checkpoint_unets(run_dir: Path):
    """(step, UNet holding that checkpoint's EMA weights, or its raw weights when EMA was off) for each checkpoint."""
    import torch
    from diffusers import UNet2DModel
    from safetensors.torch import load_file

    pipe = run_dir / "pipeline"
    unet = UNet2DModel.from_pretrained(str(pipe), subfolder="unet").eval()
    for ckpt in sorted((run_dir / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1])):
        meta = json.loads((ckpt / "meta.json").read_text())
        names = meta.get("custom_objects", [])
        if "ema" in names:
            state = torch.load(ckpt / f"custom_checkpoint_{names.index('ema')}.pkl", weights_only=False)
            with torch.no_grad():
                for p, s in zip(unet.parameters(), state["shadow_params"], strict=True):
                    p.copy_(s)
        else:
            unet.load_state_dict(load_file(str(ckpt / "model.safetensors")))
        yield int(ckpt.name.split("-")[1]), unet


def run_variant(
    name: str, extra: list[str], *, args, dataset_dir: Path, scorer: Scorer, images: int, points: int, seed: int
) -> dict:
    """Train one variant with our trainer, score every checkpoint; returns the curve (images seen, FD)."""
    tag = f"{name}-s{seed}"
    run_dir = args.out / "runs" / tag
    result_path = args.out / "runs" / f"{tag}.json"
    if args.reuse and result_path.is_file():
        saved = json.loads(result_path.read_text())
        if saved["overrides"] == extra and saved["budget_images"] == budget_steps(images, _batch(extra), points)[
            0
        ] * _batch(extra):
            log.info("%s: reusing %s", tag, result_path)
            return saved
        log.info("%s: %s was another recipe or budget; training again", tag, result_path)
    shutil.rmtree(run_dir, ignore_errors=True)
    overrides = variant_overrides(
        name, extra, dataset_dir=dataset_dir, run_dir=run_dir, images=images, points=points, seed=seed
    )
    cfg = load_train_config(None, overrides)
    t0 = time.perf_counter()
    rc = train(cfg)
    train_s = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"{tag}: the trainer exited {rc}; see its log above")
    scheduler_config = json.loads((run_dir / "pipeline" / "scheduler" / "scheduler_config.json").read_text())
    batch = cfg.train.batch_size
    curve = []
    t1 = time.perf_counter()
    for step, unet in _checkpoint_unets(run_dir):
        imgs = generate(
            unet,
            scheduler_config,
            num_images=args.num_images,
            seed=args.sample_seed,
            batch_size=args.num_images,
            steps=args.curve_steps,
            scheduler=args.curve_scheduler,
        )
        fd = scorer.fd(imgs)
        curve.append({"step": step, "images_seen": step * batch, "fd": fd})
        log.info("%s: step %d (%d images seen): %s %.3f", tag, step, step * batch, "FD", fd)
    result = {
        "name": name,
        "seed": seed,
        "overrides": extra,
        "budget_images": cfg.train.max_steps * batch,
        "steps": cfg.train.max_steps,
        "batch_size": batch,
        "train_s": round(train_s, 1),
        "eval_s": round(time.perf_counter() - t1, 1),
        "curve": curve,
        "final_fd": curve[-1]["fd"],
        "trainer_overrides": overrides,
    }
    write_json(result_path, result)
    keep = args.keep_pipeline_of or set()
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # ~10 MB each; the curve is in the JSON
    if name not in keep:
        shutil.rmtree(run_dir, ignore_errors=True)
    return result


def sampler_sweep(run_dir: Path, *, scorer: Scorer, args) -> list[dict]:
    """FD per (sampler, steps) on an exported pipeline, plus the 1000-step DDPM reference; fixed seeds."""
    from diffusers import UNet2DModel

    pipe = run_dir / "pipeline"
    unet = UNet2DModel.from_pretrained(str(pipe), subfolder="unet").eval()
    scheduler_config = json.loads((pipe / "scheduler" / "scheduler_config.json").read_text())
    rows = []
    for sched, steps in [("ddpm", args.ddpm_steps)] + [(s, n) for s in SAMPLERS for n in args.sampler_steps]:
        t0 = time.perf_counter()
        imgs = generate(
            unet,
            scheduler_config,
            num_images=args.num_images,
            seed=args.sample_seed,
            batch_size=args.num_images,
            steps=steps,
            scheduler=sched,
        )
        rows.append({"scheduler": sched, "steps": steps, "fd": scorer.fd(imgs), "sample_s": time.perf_counter() - t0})
        log.info("sampler %s %d steps: FD %.3f (%.1f s)", sched, steps, rows[-1]["fd"], rows[-1]["sample_s"])
    return rows


# ----------------------------------------------------------------------------------------------------------------
# Outputs


def write_curves(out: Path, results: list[dict], floor: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with (out / "curves.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["variant", "seed", "budget_images", "step", "images_seen", "fd", "floor"])
        for r in results:
            for p in r["curve"]:
                w.writerow(
                    [
                        r["name"],
                        r["seed"],
                        r["budget_images"],
                        p["step"],
                        p["images_seen"],
                        f"{p['fd']:.4f}",
                        f"{floor:.4f}",
                    ]
                )
    fig, ax = plt.subplots(figsize=(11, 5.5))
    colors = plt.cm.tab20(np.linspace(0, 1, 20))
    names = list(dict.fromkeys(r["name"] for r in results))
    for r in results:
        xs = [p["images_seen"] for p in r["curve"]]
        ys = [p["fd"] for p in r["curve"]]
        style = "-" if r["name"] in ("defaults", "combo", "combo_third") else "--"
        color = colors[names.index(r["name"]) % 20]  # one colour per variant; seed 1 dotted
        style = ":" if r["seed"] else style
        ax.plot(xs, ys, style, color=color, marker="o", ms=3, label=f"{r['name']} s{r['seed']}")
    ax.axhline(floor, color="k", lw=1, ls="-.", label="real-data floor")
    ax.set(xlabel="images seen", ylabel="FD (proxy)", yscale="log", title=PROXY)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=110)
    plt.close(fig)


def write_sampler_plot(out: Path, rows: list[dict], floor: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with (out / "samplers.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["scheduler", "steps", "fd", "sample_s", "floor"])
        for r in rows:
            w.writerow([r["scheduler"], r["steps"], f"{r['fd']:.4f}", f"{r['sample_s']:.2f}", f"{floor:.4f}"])
    ref = next(r for r in rows if r["scheduler"] == "ddpm")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for s in SAMPLERS:
        pts = [r for r in rows if r["scheduler"] == s]
        ax.plot([r["steps"] for r in pts], [r["fd"] for r in pts], marker="o", label=s)
    ax.axhline(ref["fd"], color="r", lw=1, label=f"ddpm {ref['steps']} steps")
    ax.axhline(ref["fd"] * 1.1, color="r", lw=1, ls="--", label="ddpm + 10%")
    ax.axhline(floor, color="k", lw=1, ls=":", label="real-data floor")
    ax.set(xlabel="sampler steps", ylabel="FD (proxy)", xscale="log", yscale="log", title=PROXY)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "samplers.png", dpi=110)
    plt.close(fig)


def _mean_final(results: list[dict], name: str) -> float:
    vals = [r["final_fd"] for r in results if r["name"] == name]
    return float(np.mean(vals))


def tables(results: list[dict], floor: float, sampler_rows: list[dict] | None, third: dict | None) -> str:
    """The markdown tables (recipes, 3x check, samplers)."""
    base = _mean_final(results, "defaults") if any(r["name"] == "defaults" for r in results) else float("nan")
    lines = [f"_{PROXY}. Real-data floor (held-out vs train, same count): **{floor:.3f}**._", ""]
    lines += [
        "| variant | overrides | seeds | images seen | final FD (per seed) | mean | vs defaults | "
        "FD at 1/3 of the images | train s |",
        "|---|---|---:|---:|---|---:|---:|---:|---:|",
    ]
    names = list(dict.fromkeys(r["name"] for r in results))
    for name in names:
        rs = [r for r in results if r["name"] == name]
        mean = _mean_final(results, name)
        third_pts = []
        for r in rs:
            target = r["budget_images"] / 3
            pts = [p for p in r["curve"] if p["images_seen"] <= target * 1.001]
            third_pts.append(f"{pts[-1]['fd']:.2f}" if pts else "-")
        finals = [f"{r['final_fd']:.2f}" for r in rs]
        secs = [f"{r['train_s']:.0f}" for r in rs]
        lines.append(
            f"| {name} | `{' '.join(rs[0]['overrides']) or '-'}` | {len(rs)} | {rs[0]['budget_images']:,} | "
            f"{' / '.join(finals)} | {mean:.2f} | {relative(mean, base):.2f}x | "
            f"{' / '.join(third_pts)} | {' / '.join(secs)} |"
        )
    if third is not None:
        lines += [
            "",
            f"3x target: defaults' final FD {third['defaults_final']:.2f} at {third['defaults_images']:,} "
            f"images; combo on a third of the budget ({third['third_images']:,} images, its own schedule): "
            f"{third['third_final']:.2f} -> **{'met' if third['met'] else 'not met'}**; combo's own curve "
            f"first reaches it at {third['combo_reaches'] or 'never'} images.",
        ]
    if sampler_rows:
        ref = next(r for r in sampler_rows if r["scheduler"] == "ddpm")
        best = cheapest_within([r for r in sampler_rows if r["scheduler"] != "ddpm"], ref["fd"])
        steps = sorted({r["steps"] for r in sampler_rows if r["scheduler"] != "ddpm"})
        lines += [
            "",
            f"Samplers on {sampler_rows[0].get('model', '?')}-s0's final model (EMA), "
            f"{sampler_rows[0].get('num_images', '')} images, seeds fixed: "
            f"DDPM {ref['steps']} steps FD **{ref['fd']:.3f}** (+10%: {ref['fd'] * 1.1:.3f}).",
            "",
            "| sampler | " + " | ".join(f"{n} steps" for n in steps) + " |",
            "|---|" + "---:|" * len(steps),
        ]
        for s in SAMPLERS:
            by = {r["steps"]: r["fd"] for r in sampler_rows if r["scheduler"] == s}
            cells = [
                f"**{by[n]:.2f}**" if n in by and by[n] <= ref["fd"] * 1.1 else (f"{by[n]:.2f}" if n in by else "-")
                for n in steps
            ]
            lines.append(f"| {s} | " + " | ".join(cells) + " |")
        lines += [
            "",
            f"Bold: within 10% of DDPM-{ref['steps']}. Cheapest within 10%: "
            + (f"**{best['scheduler']} {best['steps']} steps** (FD {best['fd']:.3f})" if best else "none"),
        ]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------------------------
# Entry point


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--short",
        action="store_true",
        help="make bench: defaults and pred_x0 at 9,600 images, samplers at 10 and 25 steps, one seed",
    )
    p.add_argument("--out", type=Path, default=None, help="default bench_out/quality (--short: .../quality/short)")
    p.add_argument("--variants", nargs="+", default=None, help=f"from: {', '.join(VARIANTS)} (default: all)")
    p.add_argument("--images", type=int, default=28_800, help="images seen per run (the budget)")
    p.add_argument("--points", type=int, default=6, help="checkpoints scored per run (evenly spaced)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds for every variant")
    p.add_argument(
        "--second-seed-within",
        type=float,
        default=0.10,
        help="rerun with seed 1 any variant whose final FD is within this of the defaults'",
    )
    p.add_argument(
        "--combo",
        nargs="*",
        default=None,
        help="variant names to combine (default: the best of each family beating defaults by 5%%)",
    )
    p.add_argument("--no-combo", action="store_true")
    p.add_argument("--no-samplers", action="store_true")
    p.add_argument("--num-images", type=int, default=500, help="generated images per FD (= the test split's size)")
    p.add_argument("--curve-scheduler", default="ddim")
    p.add_argument("--curve-steps", type=int, default=50, help="the trainer's periodic-FID default: DDIM 50")
    p.add_argument("--sampler-steps", type=int, nargs="+", default=[5, 10, 20, 25, 50])
    p.add_argument("--ddpm-steps", type=int, default=1000)
    p.add_argument("--sample-seed", type=int, default=10_000)
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1: on this shared 2-core machine 2 threads ran 2-7x slower than 1)",
    )
    p.add_argument("--reuse", action="store_true", help="reuse runs/<variant>-s<seed>.json from an earlier run")
    args = p.parse_args(argv)
    if args.short:
        args.variants = args.variants or SHORT_VARIANTS
        args.images, args.points = 9_600, 3
        args.sampler_steps, args.no_combo = [10, 25], True
        args.second_seed_within = 0.0
    args.out = args.out or ROOT / "bench_out" / "quality" / ("short" if args.short else "")
    args.variants = args.variants or PRIORITY
    unknown = [v for v in args.variants if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant {unknown[0]!r}; choose from {', '.join(VARIANTS)}")
    if "defaults" not in args.variants and not (args.no_combo and args.second_seed_within == 0):
        args.variants = ["defaults", *args.variants]  # the combo and the second-seed rule compare against it
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    setup_logging()
    import torch

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    info = result_header()
    t_start = time.perf_counter()

    # -- data, feature network, floor --
    proxy = digits_proxy(args.out / "digits_dataset", test=args.num_images)
    dataset_dir, scorer, floor = proxy.dataset_dir, proxy.scorer, proxy.floor()
    info.update(
        train_images=len(proxy.train_u8),
        test_images=len(proxy.test_u8),
        feature_net_test_accuracy=accuracy(proxy.net, proxy.test_u8, proxy.labels("test")),
        floor=floor,
    )
    print(
        f"{PROXY}\nreal-data floor (held-out {len(proxy.test_u8)} vs train {len(proxy.train_u8)}): FD {floor:.3f}; "
        f"feature CNN test accuracy {info['feature_net_test_accuracy']:.3f}",
        flush=True,
    )

    # -- recipes, one change at a time, then the second seed where it is close --
    args.keep_pipeline_of = {"combo"} if args.no_combo is False else {"defaults"}
    results = []
    common = {"args": args, "dataset_dir": dataset_dir, "scorer": scorer, "points": args.points}
    for name in args.variants:
        for seed in args.seeds:
            results.append(run_variant(name, VARIANTS[name][1], images=args.images, seed=seed, **common))
            print(
                f"{name} s{seed}: final FD {results[-1]['final_fd']:.3f} ({results[-1]['train_s']:.0f} s train, "
                f"{results[-1]['eval_s']:.0f} s eval)",
                flush=True,
            )
    if args.second_seed_within > 0 and args.seeds == [0]:
        base = _mean_final(results, "defaults")
        # a variant with the defaults' exact FD trained the same weights (e.g. an EMA decay cap that the EMA
        # warm-up never reaches in this budget): a second seed would repeat the defaults' run
        close = ["defaults"] + [
            n
            for n in args.variants
            if n != "defaults"
            and _mean_final(results, n) != base
            and abs(relative(_mean_final(results, n), base) - 1) < args.second_seed_within
        ]
        for name in close:
            results.append(run_variant(name, VARIANTS[name][1], images=args.images, seed=1, **common))
            print(f"{name} s1: final FD {results[-1]['final_fd']:.3f}", flush=True)

    # -- the best combination, and the same recipe on a third of the budget --
    third = None
    if not args.no_combo:
        finals = {n: _mean_final(results, n) for n in args.variants}
        chosen = (
            args.combo
            if args.combo is not None
            else combine_winners(finals, families={n: f for n, (f, _) in VARIANTS.items()})
        )
        extra = [o for n in chosen for o in VARIANTS[n][1]]
        info["combo"] = chosen
        print(f"combo = {chosen or 'defaults (no variant beat them by 5%)'}: {' '.join(extra)}", flush=True)
        VARIANTS["combo"] = ("combo", extra)
        VARIANTS["combo_third"] = ("combo", extra)
        for seed in args.seeds:  # one seed unless asked: it is compared where it differs by far more than 10%
            results.append(run_variant("combo", extra, images=args.images, seed=seed, **common))
        third_images = args.images // 3
        for seed in args.seeds if len(args.seeds) > 1 else [0, 1]:
            results.append(run_variant("combo_third", extra, images=third_images, seed=seed, **common))
        combo_curve = [
            (p["images_seen"], p["fd"]) for r in results if r["name"] == "combo" and r["seed"] == 0 for p in r["curve"]
        ]
        base = _mean_final(results, "defaults")
        third = {
            "defaults_final": base,
            "defaults_images": args.images,
            "third_images": next(r["budget_images"] for r in results if r["name"] == "combo_third"),
            "third_final": _mean_final(results, "combo_third"),
            "combo_reaches": first_reaching(combo_curve, base),
        }
        third["met"] = third["third_final"] <= base
        info["three_x"] = third

    # -- samplers on the best recipe's final model --
    sampler_rows = None
    if not args.no_samplers:
        which = "combo" if not args.no_combo else "defaults"
        key = {
            "model": which,
            "overrides": VARIANTS[which][1],
            "num_images": args.num_images,
            "sample_seed": args.sample_seed,
            "steps": args.sampler_steps,
            "ddpm_steps": args.ddpm_steps,
        }
        cache = args.out / "runs" / f"samplers-{which}.json"
        saved = json.loads(cache.read_text()) if args.reuse and cache.is_file() else None
        if saved is not None and saved["key"] == key:
            log.info("samplers: reusing %s", cache)
            sampler_rows = saved["rows"]
        else:
            sampler_rows = sampler_sweep(args.out / "runs" / f"{which}-s0", scorer=scorer, args=args)
            for r in sampler_rows:
                r["num_images"], r["model"] = args.num_images, which
            write_json(cache, {"key": key, "rows": sampler_rows})
        write_sampler_plot(args.out, sampler_rows, floor)
        ref = next(r for r in sampler_rows if r["scheduler"] == "ddpm")
        info["sampler_cheapest_within_10pct"] = cheapest_within(
            [r for r in sampler_rows if r["scheduler"] != "ddpm"], ref["fd"]
        )

    write_curves(args.out, results, floor)
    md = tables(results, floor, sampler_rows, third)
    (args.out / "table.md").write_text(md, encoding="utf-8")
    info.update(
        results=results,
        samplers=sampler_rows,
        wall_s=round(time.perf_counter() - t_start, 1),
        load_avg_1m_at_end=round(os.getloadavg()[0], 2),
    )
    write_json(args.out / "quality.json", info)
    print(md)
    print(f"wrote {args.out}/table.md, curves.csv/png, samplers.csv/png, quality.json in {info['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
