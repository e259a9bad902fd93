"""Fast samplers against 1000-step DDPM on the quality benchmark (a proxy FD on digits; not a face FID).

It reuses ``bench_quality``'s frame (the digits data set, the trainer at 8x8 with the small UNet, the feature CNN
and its Frechet distance): those functions are called here, not copied. Three models are trained once with our
trainer (``--reuse`` keeps them):

- ``x0``: the recommended recipe (``configs/train/fast.yaml``'s: x0 prediction, cosine betas, min-SNR-5, lr 1e-3,
  50 warm-up steps) at 28,800 images seen, its final EMA weights;
- ``x0_early``: the same run's checkpoint at a third of the images;
- ``eps``: the same recipe with epsilon prediction.

Every sampler in :data:`evaluation.samplers.SAMPLERS` (or ``--samplers``) is scored at each number of UNet
evaluations per image in ``--evals`` (a two-evaluation Heun step counts two) against DDPM with 1000 steps, on
``--num-images`` images with fixed seeds; then the checkpoints of the ``x0`` run are scored with DDPM-1000 and with
the chosen default, and the Spearman rank correlation of the two FD orders is reported.

Outputs under ``--out`` (default ``bench_out/samplers``): ``samplers.json`` (every row, the floor, the machine),
``samplers.md`` (the tables), ``samplers.png`` (FD against evaluations, one panel per model).

Example::

    nice -n 10 python benchmarks/bench_samplers.py                        # train (once), sweep, rank check
    python benchmarks/bench_samplers.py --reuse --samplers ddim dpm2_sde --evals 10 20 --num-images 500
    python benchmarks/bench_samplers.py --reuse --cached-only             # report what is scored so far
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import bench_quality as bq  # noqa: E402
from benchmarks._common import write_json  # noqa: E402
from evaluation.sample import SCHEDULERS, generate, num_evaluations, steps_for_evaluations  # noqa: E402
from training.config import load_train_config  # noqa: E402
from training.train import train  # noqa: E402

log = logging.getLogger("bench_samplers")

# The recommended recipe (configs/train/fast.yaml; bench_quality's "combo"), and the same with epsilon prediction.
RECIPE = bq.recipe_overrides()  # noise.prediction_type first: "eps" swaps it
RUNS = {"x0": RECIPE, "eps": [*RECIPE[1:], "noise.prediction_type=epsilon"]}


def train_run(name: str, *, out: Path, dataset_dir: Path, images: int, points: int, reuse: bool) -> Path:
    """Train one recipe with our trainer (bench_quality's frame), keeping every checkpoint; returns its run dir."""
    run_dir = out / "runs" / name
    done = run_dir / "trained.json"
    if reuse and done.is_file() and json.loads(done.read_text())["overrides"] == RUNS[name]:
        log.info("%s: reusing %s", name, run_dir)
        return run_dir
    shutil.rmtree(run_dir, ignore_errors=True)
    overrides = bq.variant_overrides(
        name, RUNS[name], dataset_dir=dataset_dir, run_dir=run_dir, images=images, points=points, seed=0
    )
    t0 = time.perf_counter()
    rc = train(load_train_config(None, overrides))
    if rc != 0:
        raise RuntimeError(f"{name}: the trainer exited {rc}; see its log above")
    write_json(done, {"overrides": RUNS[name], "images": images, "train_s": round(time.perf_counter() - t0, 1)})
    return run_dir


def load_models(out: Path, *, early_fraction: float = 1 / 3):
    """{"x0": unet, "x0_early": unet, "eps": unet} (EMA weights) and the x0 run's (step, unet) checkpoints' steps."""
    import copy

    models = {}
    steps = [int(p.name.split("-")[1]) for p in (out / "runs" / "x0" / "checkpoints").glob("checkpoint-*")]
    early = min(steps, key=lambda s: abs(s - max(steps) * early_fraction))
    for step, unet in bq._checkpoint_unets(out / "runs" / "x0"):
        if step == early:
            models["x0_early"] = copy.deepcopy(unet)
        if step == max(steps):
            models["x0"] = copy.deepcopy(unet)
    for step, unet in bq._checkpoint_unets(out / "runs" / "eps"):
        if step == max(steps):
            models["eps"] = copy.deepcopy(unet)
    return {k: models[k] for k in ("x0", "x0_early", "eps")}, {"x0_early_step": early, "final_step": max(steps)}


def scheduler_config(out: Path, run: str) -> dict:
    return json.loads((out / "runs" / run / "pipeline" / "scheduler" / "scheduler_config.json").read_text())


def score(unet, sched_cfg: dict, scorer, *, sampler: str, steps: int, args) -> dict:
    """One row: FD of ``--num-images`` images (seeds fixed) from ``sampler`` at ``steps`` steps."""
    t0 = time.perf_counter()
    imgs = generate(
        unet, sched_cfg, num_images=args.num_images, seed=args.sample_seed, batch_size=args.batch_size,
        steps=steps, scheduler=sampler,
    )  # fmt: skip
    return {
        "sampler": sampler,
        "steps": steps,
        "evaluations": num_evaluations(sampler, sched_cfg, steps),
        "fd": scorer.fd(imgs),
        "sample_s": round(time.perf_counter() - t0, 2),
    }


def sweep_model(name: str, unet, sched_cfg: dict, scorer, *, args) -> list[dict]:
    """DDPM-1000 and every sampler at every evaluation budget on one model; rows cached in ``rows-<name>.json``."""
    cache = args.out / f"rows-{name}.json"
    key = {"num_images": args.num_images, "sample_seed": args.sample_seed}
    saved = json.loads(cache.read_text()) if args.reuse and cache.is_file() else {}
    rows = saved.get("rows", []) if saved.get("key") == key else []
    have = {(r["sampler"], r["steps"]) for r in rows}
    todo = [("ddpm", args.ddpm_steps)]
    for sampler in args.samplers:
        for e in args.evals:
            todo.append((sampler, steps_for_evaluations(sampler, sched_cfg, e)))
    for sampler, steps in dict.fromkeys(todo):
        if (sampler, steps) in have or args.cached_only:
            continue
        row = {"model": name, **score(unet, sched_cfg, scorer, sampler=sampler, steps=steps, args=args)}
        rows.append(row)
        log.info("%s %s %d steps (%d evals): FD %.3f (%.0f s)", name, sampler, steps, row["evaluations"],
                 row["fd"], row["sample_s"])  # fmt: skip
        write_json(cache, {"key": key, "rows": rows})  # resumable: a cut-off sweep keeps what it scored
    wanted = set(dict.fromkeys(todo))
    for r in rows:  # the reference: DDPM at its full step count (DDPM at 10-50 steps is a candidate like any)
        r["reference"] = (r["sampler"], r["steps"]) == ("ddpm", args.ddpm_steps)
    return [r for r in rows if (r["sampler"], r["steps"]) in wanted]


def pick_default(rows: list[dict], *, tol: float = 0.05, max_evaluations: int = 50) -> dict | None:
    """The cheapest (sampler, steps) within ``tol`` of DDPM-1000's FD (or better) on every model, at most
    ``max_evaluations`` per image; if none is, the one with the smallest worst-model ratio. Returns
    {"sampler", "steps", "evaluations", "worst_ratio", "met"}."""
    models = sorted({r["model"] for r in rows})
    ref = {m: next(r["fd"] for r in rows if r["model"] == m and r["reference"]) for m in models}
    cands = {}
    for r in rows:
        if r["reference"] or r["evaluations"] > max_evaluations:
            continue
        cands.setdefault((r["sampler"], r["steps"]), {})[r["model"]] = r
    scored = []
    for (sampler, steps), by in cands.items():
        if set(by) != set(models):
            continue
        worst = max(by[m]["fd"] / ref[m] for m in models)
        scored.append({"sampler": sampler, "steps": steps, "evaluations": by[models[0]]["evaluations"],
                       "worst_ratio": worst, "met": worst <= 1.0 + tol})  # fmt: skip
    if not scored:
        return None  # no sampler scored on every model yet
    ok = [c for c in scored if c["met"]]
    if ok:
        return min(ok, key=lambda c: (c["evaluations"], c["worst_ratio"]))
    return min(scored, key=lambda c: (c["worst_ratio"], c["evaluations"]))


def spearman(a: list[float], b: list[float]) -> float:
    """Spearman's rank correlation of two equally long lists (no ties expected in FDs)."""
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    ra -= ra.mean()
    rb -= rb.mean()
    return float((ra * rb).sum() / math.sqrt((ra * ra).sum() * (rb * rb).sum()))


def _sweep_row(args, model: str, sampler: str, steps: int) -> dict | None:
    """The sweep's row for (model, sampler, steps) if ``rows-<model>.json`` holds it for these images and seeds."""
    cache = args.out / f"rows-{model}.json"
    if not cache.is_file():
        return None
    saved = json.loads(cache.read_text())
    if saved.get("key") != {"num_images": args.num_images, "sample_seed": args.sample_seed}:
        return None
    return next((r for r in saved["rows"] if r["sampler"] == sampler and r["steps"] == steps), None)


def rank_check(out: Path, scorer, default: dict | None, *, args) -> dict | None:
    """FD of every checkpoint of the x0 run with DDPM-1000 and with the default; Spearman rank correlation.

    DDPM rows are cached per checkpoint in ``rank.json`` (``default=None`` scores only those, so they can run
    while the sweep does); the sweep's own rows stand in for the checkpoints it scored (x0, x0_early) when
    ``--rank-images`` equals ``--num-images``."""
    cache = args.out / "rank.json"
    key = {"num_images": args.rank_images, "sample_seed": args.sample_seed, "ddpm_steps": args.ddpm_steps}
    saved = json.loads(cache.read_text()) if cache.is_file() else {}
    points = {p["step"]: p for p in saved.get("points", [])} if saved.get("key") == key else {}
    sched_cfg = scheduler_config(out, "x0")
    rank_args = argparse.Namespace(**{**vars(args), "num_images": args.rank_images})
    steps = sorted(int(p.name.split("-")[1]) for p in (out / "runs" / "x0" / "checkpoints").glob("checkpoint-*"))
    early = min(steps, key=lambda s: abs(s - max(steps) / 3))
    same = args.rank_images == args.num_images
    tag = f"{default['sampler']} {default['steps']}" if default else None
    for step, unet in bq._checkpoint_unets(out / "runs" / "x0"):
        point = points.setdefault(step, {"step": step})
        if point.get("default") != tag:  # scored with another default (or none yet)
            point.pop("default_fd", None)
        model = {max(steps): "x0", early: "x0_early"}.get(step) if same else None
        wanted = [("ddpm_fd", "ddpm", args.ddpm_steps)]
        if default is not None:
            wanted.append(("default_fd", default["sampler"], default["steps"]))
        for field, sampler, n in wanted:
            if point.get(field) is not None:
                continue
            row = _sweep_row(args, model, sampler, n) if model else None
            if row is None and model and default is None:
                continue  # the sweep scores this checkpoint itself
            if row is None and args.cached_only and field == "ddpm_fd":
                continue  # --cached-only: the DDPM rows scored so far; the default's own rows are cheap
            row = row or score(unet, sched_cfg, scorer, sampler=sampler, steps=n, args=rank_args)
            point[field] = row["fd"]
            if field == "default_fd":
                point["default"] = tag
            log.info("rank check step %d: %s %d steps FD %.3f", step, sampler, n, row["fd"])
            write_json(cache, {"key": key, "points": sorted(points.values(), key=lambda p: p["step"])})
    pts = [p for p in sorted(points.values(), key=lambda p: p["step"]) if "default_fd" in p and p.get("ddpm_fd")]
    if default is None or len(pts) < 2:
        return None
    return {
        "key": key,
        "points": pts,
        "spearman": spearman([p["ddpm_fd"] for p in pts], [p["default_fd"] for p in pts]),
    }


def throughput(unet, sched_cfg: dict, default: dict, *, args) -> list[dict]:
    """images/s of DDPM-1000 and of the default on this CPU (batch ``--batch-size``, one torch thread)."""
    rows = []
    for sampler, steps, n in [
        ("ddpm", args.ddpm_steps, args.speed_images),
        (default["sampler"], default["steps"], args.speed_images * 10),
    ]:
        load = os.getloadavg()[0]
        t0 = time.perf_counter()
        generate(unet, sched_cfg, num_images=n, seed=0, batch_size=args.batch_size, steps=steps, scheduler=sampler)
        sec = time.perf_counter() - t0
        evals = num_evaluations(sampler, sched_cfg, steps)
        rows.append({"sampler": sampler, "steps": steps, "evaluations": evals, "images": n,
                     "seconds": round(sec, 2), "images_per_s": n / sec, "load_1m": round(load, 2)})  # fmt: skip
    return rows


# ----------------------------------------------------------------------------------------------------------------
# Outputs


def tables(rows: list[dict], floor: float, default: dict, rank: dict | None, speed: list[dict], info: dict) -> str:
    """The markdown: one FD table per model (cells: FD and its ratio to that model's DDPM), the default, the rank
    check and the images/s."""
    models = list(dict.fromkeys(r["model"] for r in rows))
    ref = {m: next(r for r in rows if r["model"] == m and r["reference"]) for m in models}
    n_ref = ref[models[0]]["steps"]
    lines = [
        f"_{bq.PROXY}. {info['num_images']} generated images per FD (seeds fixed); real-data floor "
        f"({info['test_images']} held-out digits against the training split): **{floor:.3f}**._",
        "",
        f"Cells: FD (ratio to the same model's DDPM-{n_ref}); bold: within 5% of it or better; [n]: the UNet "
        "evaluations actually spent where a sampler cannot hit the column's count (Heun: 2 a step, 1 on the last).",
        "",
    ]
    samplers = list(dict.fromkeys(r["sampler"] for r in rows if not r["reference"]))
    for m in models:
        lines += [f"**{m}**: DDPM-{n_ref} FD {ref[m]['fd']:.3f}", ""]
        lines += ["| sampler | " + " | ".join(f"{e}" for e in info["evals"]) + " |"]
        lines += ["|---|" + "---:|" * len(info["evals"])]
        for name in samplers:
            cells = []
            for e in info["evals"]:
                hit = [r for r in rows if r["model"] == m and r["sampler"] == name and r.get("target") == e]
                if not hit:
                    cells.append("-")
                    continue
                r = hit[0]
                ratio = r["fd"] / ref[m]["fd"]
                txt = f"{r['fd']:.2f} ({ratio:.2f})" + ("" if r["evaluations"] == e else f" [{r['evaluations']}]")
                cells.append(f"**{txt}**" if ratio <= 1.05 else txt)
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append("")
    pct = 100 * (default["worst_ratio"] - 1)
    verdict = (
        f"within 5% on every model (worst {pct:+.1f}%)"
        if default["met"]
        else f"nothing reached 5% on every model; the best misses by {pct:.1f}%"
    )
    lines += [
        f"Default: **{default['sampler']} {default['steps']} steps = {default['evaluations']} UNet evaluations per "
        f"image**: {verdict}.",
        "",
    ]
    if rank:
        lines += [
            f"Rank check over the x0 run's {len(rank['points'])} checkpoints ({info['rank_images']} images each): "
            f"Spearman rho **{rank['spearman']:.3f}**.",
            "",
            f"| step | DDPM-{n_ref} FD | {default['sampler']} {default['steps']} FD |",
            "|---:|---:|---:|",
        ]
        lines += [f"| {p['step']} | {p['ddpm_fd']:.3f} | {p['default_fd']:.3f} |" for p in rank["points"]]
        lines.append("")
    if speed:
        lines += ["| sampler | UNet evaluations | images | seconds | images/s | 1-min load at start |",
                  "|---|---:|---:|---:|---:|---:|"]  # fmt: skip
        lines += [f"| {r['sampler']} {r['steps']} | {r['evaluations']} | {r['images']} | {r['seconds']:.1f} | "
                  f"{r['images_per_s']:.2f} | {r['load_1m']:.2f} |" for r in speed]  # fmt: skip
    return "\n".join(lines) + "\n"


def write_plot(out: Path, rows: list[dict], floor: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(r["model"] for r in rows))
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4.5), squeeze=False)
    for ax, m in zip(axes[0], models, strict=True):
        ref = next(r for r in rows if r["model"] == m and r["reference"])
        for s in dict.fromkeys(r["sampler"] for r in rows if not r["reference"]):
            pts = sorted((r["evaluations"], r["fd"]) for r in rows if r["model"] == m and r["sampler"] == s
                         and not r["reference"])  # fmt: skip
            ax.plot(*zip(*pts, strict=True), marker="o", ms=3, label=s)
        ax.axhline(ref["fd"], color="r", lw=1, label=f"ddpm {ref['steps']}")
        ax.axhline(ref["fd"] * 1.05, color="r", lw=1, ls="--", label="ddpm + 5%")
        ax.axhline(floor, color="k", lw=1, ls=":", label="real-data floor")
        ax.set(title=m, xlabel="UNet evaluations per image", ylabel="FD (proxy)", xscale="log", yscale="log")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(bq.PROXY, fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "samplers.png", dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------------------
# Entry point


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "bench_out" / "samplers")
    p.add_argument("--images", type=int, default=28_800, help="images seen per training run")
    p.add_argument("--points", type=int, default=6, help="checkpoints per run (the rank check scores them)")
    p.add_argument("--test-images", type=int, default=500, help="held-out digits (the real-data floor)")
    # 250: what fit the shared 2-core machine (BENCHMARKS.md section 6); 1000 or more resolves closer settings
    p.add_argument("--num-images", type=int, default=250, help="generated images per FD")
    p.add_argument("--rank-images", type=int, default=None, help="images per FD in the rank check (--num-images)")
    p.add_argument("--speed-images", type=int, default=64, help="DDPM-1000 images timed (the default: 10x as many)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--samplers", nargs="+", default=list(SCHEDULERS), help="ddpm here: DDPM at --evals steps")
    p.add_argument("--evals", type=int, nargs="+", default=[10, 15, 20, 25, 35, 50], help="UNet evaluations/image")
    p.add_argument("--ddpm-steps", type=int, default=1000)
    p.add_argument("--sample-seed", type=int, default=10_000)
    p.add_argument("--models", nargs="+", default=["x0", "x0_early", "eps"], help="sweep only these (two processes)")
    p.add_argument("--train-only", action="store_true")
    p.add_argument(
        "--cached-only", action="store_true", help="report the sweep and rank-check DDPM rows scored so far"
    )
    p.add_argument("--rank-ddpm-only", action="store_true", help="score the x0 run's checkpoints with DDPM only")
    p.add_argument("--no-rank", action="store_true")
    p.add_argument("--no-speed", action="store_true")
    p.add_argument("--reuse", action="store_true", help="reuse trained runs and scored rows under --out")
    args = p.parse_args(argv)
    args.rank_images = args.rank_images or args.num_images
    unknown = [s for s in args.samplers if s not in SCHEDULERS]
    if unknown:
        p.error(f"unknown sampler {unknown[0]!r}; choose from {', '.join(SCHEDULERS)}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    bq.setup_logging()
    import torch

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    dataset_dir = args.out / "digits_dataset"
    if not (args.reuse and dataset_dir.is_dir()):
        bq.write_digits_dataset(dataset_dir, test=args.test_images)
    for name in RUNS:
        train_run(
            name, out=args.out, dataset_dir=dataset_dir, images=args.images, points=args.points, reuse=args.reuse
        )
    if args.train_only:
        return 0

    proxy = bq.digits_proxy(dataset_dir, test=args.test_images, write=False)  # the folder the runs trained on
    scorer = proxy.scorer
    test_u8 = proxy.test_u8[: args.num_images]  # the floor at the generated images' count (FD's bias depends on it)
    floor = proxy.floor(args.num_images)
    print(f"{bq.PROXY}\nreal-data floor ({len(test_u8)} held-out digits): FD {floor:.3f}", flush=True)

    if args.rank_ddpm_only:  # the rank check's DDPM-1000 half, which needs no default: run beside the sweep
        rank_check(args.out, scorer, None, args=args)
        return 0
    models, steps_info = load_models(args.out)
    rows = []
    for name, unet in models.items():
        if name not in args.models:
            continue
        sched_cfg = scheduler_config(args.out, "eps" if name == "eps" else "x0")
        for r in sweep_model(name, unet, sched_cfg, scorer, args=args):
            r["target"] = next((e for e in args.evals if steps_for_evaluations(r["sampler"], sched_cfg, e) ==
                                r["steps"]), None) if not r["reference"] else None  # fmt: skip
            rows.append(r)
    scored = {r["model"] for r in rows if r["reference"]}
    rows = [r for r in rows if r["model"] in scored]  # --cached-only: a model without its DDPM row is left out
    default = pick_default(rows)
    print(f"default: {default}", flush=True)
    if default is None:
        print("no sampler scored on every model yet; nothing to report", flush=True)
        return 0
    rank = None if args.no_rank else rank_check(args.out, scorer, default, args=args)
    speed = [] if args.no_speed else throughput(models["x0"], scheduler_config(args.out, "x0"), default, args=args)
    info = {
        **bq.result_header(),
        "floor": floor,
        "num_images": args.num_images,
        "rank_images": args.rank_images,
        "test_images": len(test_u8),
        "evals": args.evals,
        **steps_info,
    }
    md = tables(rows, floor, default, rank, speed, info)
    (args.out / "samplers.md").write_text(md, encoding="utf-8")
    write_plot(args.out, rows, floor)
    info.update(rows=rows, default=default, rank=rank, speed=speed, wall_s=round(time.perf_counter() - t_start, 1))
    write_json(args.out / "samplers.json", info)
    print(md)
    print(f"wrote {args.out}/samplers.md, samplers.png, samplers.json in {info['wall_s']:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
