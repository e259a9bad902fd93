"""``ptt-ema``: choose the EMA after training, from a run's post-hoc EMA snapshots (``ema.posthoc.enabled``).

Reconstruct the EMA of given relative widths into exported pipelines (``DDPMPipeline.from_pretrained`` loads them),
or sweep widths and keep the one with the best FID on the held-out split::

    ptt-ema runs/demo --sigma-rel 0.05 0.08 0.12            # -> runs/demo/posthoc_pipelines/sigma_rel-0.080-step-<S>/
    ptt-ema runs/demo --sweep --num-images 1000 --set-best  # -> posthoc_pipelines/ema_sweep.{csv,json,png}, best/

Reconstruction is at the last snapshot's step unless ``--at-step`` names other snapshot steps. The sweep samples
with the sampler ``ptt-sample`` defaults to (``--scheduler``/``--steps`` to change it), seeds
``train.seed + 1_000_000`` as the periodic FID, and scores against ``data.dataset_dir:data.test_split`` of the run's
config with the run's ``eval.fid_extractor`` (``--extractor`` to change it), reference features cached in
``<run_dir>/fid_cache``. ``--set-best`` exports the best (step, width) to ``<run_dir>/best``.

While it writes into the run directory (the default ``--out``, the sweep's cache, ``--set-best``) it holds the run
dir's lock (``common.lock``), so it is refused in one line while a trainer owns that run; ``--out`` elsewhere only
reads the snapshots.

A width the snapshots cannot reconstruct, a run without snapshots, a missing or damaged snapshot: one ``error:``
line naming the run and what is missing (exit 2).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import logging
import sys
from pathlib import Path

from common.configio import ConfigError
from common.fileio import atomic_write, atomic_write_json, disk_error_line, os_error_line
from common.lock import FolderBusyError, FolderLock
from evaluation.samplers import DEFAULT_SAMPLER
from training.posthoc_ema import SnapshotError, check_snapshots, plan, reconstruct, reconstructable_range

log = logging.getLogger("ptt.ema")

__all__ = ["main", "export_widths", "sweep_widths"]

# The sweep's default grid: EDM2 found the best width between 0.04 and 0.14 across its models; wider on both sides
# for small data. Widths the snapshots cannot reconstruct are left out with a log line.
SWEEP_SIGMA_RELS = (0.02, 0.03, 0.04, 0.05, 0.06, 0.07, 0.08, 0.10, 0.12, 0.15, 0.20, 0.25)
SWEEP_FIELDS = ("step", "sigma_rel", "fid", "kid", "profile_error", "scheduler", "steps", "num_images",
                "feature_extractor", "comparable")  # fmt: skip


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ptt-ema", description=__doc__.split("\n\n")[0])
    p.add_argument("run_dir", help="a run directory trained with ema.posthoc.enabled=true")
    p.add_argument("--sigma-rel", type=float, nargs="+", default=None, help="relative EMA widths, e.g. 0.05 0.08")
    p.add_argument("--at-step", type=int, nargs="+", default=None, help="snapshot steps (default: the last)")
    p.add_argument("--out", default=None, help="default <run_dir>/posthoc_pipelines")
    p.add_argument("--sweep", action="store_true", help="score every width by FID on the held-out split")
    p.add_argument("--num-images", type=int, default=1000)
    p.add_argument(
        "--scheduler", default=DEFAULT_SAMPLER, help=f"sampler for the sweep (ptt-sample's default: {DEFAULT_SAMPLER})"
    )
    p.add_argument("--steps", type=int, default=None, help="sampler steps (default: ptt-sample's for the sampler)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--extractor", choices=("inception", "substitute"), default=None, help="default: the run's")
    p.add_argument("--set-best", action="store_true", help="export the sweep's best (step, width) to <run_dir>/best")
    p.add_argument("--device", default=None, help="torch device (default: cuda when there is one)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from evaluation.fid import FidError
    from evaluation.sample import SampleError

    held = contextlib.ExitStack()  # the run dir's lock, while this command writes into it
    try:
        if _writes_into_run_dir(args) and Path(args.run_dir).is_dir():  # no folder: _load_run names the mistake
            try:  # a trainer (or another ptt-ema) writing the same run: refused, not raced
                held.enter_context(FolderLock(args.run_dir))
            except FolderBusyError as exc:
                raise ConfigError(str(exc)) from None
        if args.sweep:
            sweep_widths(args.run_dir, args.sigma_rel, at_steps=args.at_step, out=args.out,
                         num_images=args.num_images, scheduler=args.scheduler, steps=args.steps,
                         batch_size=args.batch_size, extractor=args.extractor, set_best=args.set_best,
                         device=args.device)  # fmt: skip
        else:
            if not args.sigma_rel:
                raise ConfigError("pass --sigma-rel WIDTH [WIDTH ...] (e.g. 0.05 0.08) or --sweep")
            export_widths(args.run_dir, args.sigma_rel, at_steps=args.at_step, out=args.out)
    except (SnapshotError, ConfigError, FidError, SampleError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only run dir: one line naming the path
        print(f"error: {disk_error_line(exc, args.run_dir) or os_error_line(exc, args.run_dir)}", file=sys.stderr)
        return 2
    finally:
        held.close()
    return 0


def _writes_into_run_dir(args) -> bool:
    """The sweep's FID cache and ``best/``, and the default ``--out``, are inside the run directory."""
    if args.sweep or args.set_best or args.out is None:
        return True
    return Path(args.out).resolve().is_relative_to(Path(args.run_dir).resolve())


def _load_run(run_dir: str | Path):
    """(config, its YAML text, unet, scheduler config, checked snapshots) of a run directory."""
    from training.config import load_train_config
    from training.model import build_noise_scheduler, build_unet

    run_dir = Path(run_dir)
    cfg_path = run_dir / "config.yaml"
    if not cfg_path.is_file():
        raise ConfigError(f"{run_dir}: no config.yaml; pass a run directory the trainer wrote")
    cfg = load_train_config(cfg_path)
    snapshots = check_snapshots(run_dir, cfg.ema.posthoc)
    unet = build_unet(cfg).requires_grad_(False).eval()
    return cfg, cfg_path.read_text(encoding="utf-8"), unet, dict(build_noise_scheduler(cfg).config), snapshots


def _targets(run_dir, snapshots, sigma_rels, at_steps) -> list[dict]:
    steps = at_steps or [snapshots[-1].step]
    return [plan(snapshots, s, step, run_dir=run_dir) for step in steps for s in sigma_rels]


def _load_into(unet, target: dict) -> None:
    import torch

    names = [n for n, _ in unet.named_parameters()]
    weights = reconstruct(target, names)
    with torch.no_grad():
        for name, p in unet.named_parameters():
            p.copy_(weights[name])


def _folder_name(target: dict) -> str:
    return f"sigma_rel-{target['sigma_rel']:.3f}-step-{target['step']}"


def _info(target: dict) -> dict:
    return {"step": target["step"], "ema_sigma_rel": target["sigma_rel"], "ema_profile_error": target["profile_error"]}


def export_widths(run_dir, sigma_rels: list[float], *, at_steps=None, out=None) -> list[Path]:
    """Reconstruct each (step, width) and export it as a DDPMPipeline folder; returns the folders."""
    from evaluation.pipeline import export_pipeline

    cfg, config_yaml, unet, scheduler_config, snapshots = _load_run(run_dir)
    targets = _targets(run_dir, snapshots, sigma_rels, at_steps)  # every width checked before any work
    out = Path(out) if out else Path(run_dir) / "posthoc_pipelines"
    folders = []
    for target in targets:
        _load_into(unet, target)
        folder = export_pipeline(unet, scheduler_config, out / _folder_name(target), config_yaml=config_yaml,
                                 metrics=_info(target))  # fmt: skip
        log.info("sigma_rel %g at step %d (profile error %.2f%%) -> %s", target["sigma_rel"], target["step"],
                 100 * target["profile_error"], folder)  # fmt: skip
        folders.append(folder)
    return folders


def sweep_widths(run_dir, sigma_rels=None, *, at_steps=None, out=None, num_images: int = 1000,
                 scheduler: str = DEFAULT_SAMPLER, steps: int | None = None, batch_size: int = 64,
                 extractor: str | None = None, set_best: bool = False, device=None) -> list[dict]:  # fmt: skip
    """FID of each reconstructed (step, width) on the held-out split; writes ``ema_sweep.csv``/``.json``/``.png``
    and the best one's pipeline under ``out``; with ``set_best``, also ``<run_dir>/best``. Returns the rows."""
    import torch

    from evaluation.fid import evaluate
    from evaluation.pipeline import export_pipeline
    from evaluation.sample import generate
    from evaluation.samplers import DEFAULT_STEPS, SCHEDULERS

    if scheduler not in SCHEDULERS:
        raise ConfigError(f"--scheduler {scheduler}: choose one of {', '.join(SCHEDULERS)}")
    run_dir = Path(run_dir)
    cfg, config_yaml, unet, scheduler_config, snapshots = _load_run(run_dir)
    if cfg.data.dataset_dir is None or not cfg.data.test_split:
        raise ConfigError(f"{run_dir}: the run's config has no data.dataset_dir/test_split to score FID against")
    if sigma_rels is None:
        step = (at_steps or [snapshots[-1].step])[-1]
        lo, hi = reconstructable_range(snapshots, step)
        sigma_rels = [s for s in SWEEP_SIGMA_RELS if lo is not None and lo <= s <= hi]
        log.info("sweeping sigma_rel %s (reconstructable: %s to %s)", sigma_rels, lo, hi)
    targets = _targets(run_dir, snapshots, sigma_rels, at_steps)
    steps = int(DEFAULT_STEPS[scheduler] if steps is None else steps)
    extractor = extractor or cfg.eval.fid_extractor
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    unet.to(device)
    out = Path(out) if out else run_dir / "posthoc_pipelines"
    ref = f"{cfg.data.dataset_dir}:{cfg.data.test_split}"
    seed = cfg.train.seed + 1_000_000  # the periodic FID's seeds, so the figures line up with metrics.jsonl
    rows = []
    for target in targets:
        _load_into(unet, target)
        imgs = generate(unet, scheduler_config, num_images=num_images, seed=seed, batch_size=batch_size,
                        steps=steps, scheduler=scheduler, device=device)  # fmt: skip
        res = evaluate(imgs, ref, extractor=extractor, inception_path=cfg.eval.fid_inception_path,
                       cache_dir=str(run_dir / "fid_cache"), device=device)  # fmt: skip
        row = {"step": target["step"], "sigma_rel": target["sigma_rel"], "fid": float(res["fid"]),
               "kid": float(res["kid"]), "profile_error": round(target["profile_error"], 6), "scheduler": scheduler,
               "steps": steps, "num_images": num_images, "feature_extractor": res["feature_extractor"],
               "comparable": bool(res["comparable"])}  # fmt: skip
        log.info("sigma_rel %g at step %d: FID %.3f", row["sigma_rel"], row["step"], row["fid"])
        rows.append(row)
    best_i = min(range(len(rows)), key=lambda i: rows[i]["fid"])
    best, best_target = rows[best_i], targets[best_i]
    write_sweep(rows, out)
    _load_into(unet, best_target)
    unet.to("cpu")
    metrics = {**best, "ref": ref, **_info(best_target)}
    folder = export_pipeline(unet, scheduler_config, out / _folder_name(best_target), config_yaml=config_yaml,
                             metrics=metrics)  # fmt: skip
    if set_best:
        export_pipeline(unet, scheduler_config, run_dir / "best", config_yaml=config_yaml, metrics=metrics)
    log.info("best: sigma_rel %g at step %d, FID %.3f -> %s%s", best["sigma_rel"], best["step"], best["fid"],
             folder, f" and {run_dir / 'best'}" if set_best else "")  # fmt: skip
    return rows


def write_sweep(rows: list[dict], out: Path) -> None:
    """``ema_sweep.csv``, ``ema_sweep.json`` and ``ema_sweep.png`` (FID against sigma_rel, a line per step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SWEEP_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: r[k] for k in SWEEP_FIELDS} for r in rows)
    atomic_write(out / "ema_sweep.csv", buf.getvalue())
    atomic_write_json(out / "ema_sweep.json", rows)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for step in sorted({r["step"] for r in rows}):
        pts = sorted((r["sigma_rel"], r["fid"]) for r in rows if r["step"] == step)
        ax.plot(*zip(*pts, strict=True), marker="o", label=f"step {step}")
    ax.set_xlabel("EMA relative width sigma_rel")
    ax.set_ylabel("FID" if rows[0]["comparable"] else "FD (substitute features)")
    ax.legend()
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=100)
    plt.close(fig)
    atomic_write(out / "ema_sweep.png", png.getvalue())
    log.info("wrote %s", json.dumps({"table": str(out / "ema_sweep.csv"), "plot": str(out / "ema_sweep.png")}))


if __name__ == "__main__":
    raise SystemExit(main())
