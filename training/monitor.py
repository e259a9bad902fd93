"""Evaluation during training, spread over the ranks: sample grids, held-out loss, FID, rank agreement.

Every function here is collective (each rank calls it with its share) unless it says otherwise:
:func:`generate_split` samples a contiguous share of the images per rank and gathers them; :func:`heldout_loss`
is the attention recipe's held-out EMA loss on fixed test batches; :func:`evaluate_fid` samples
``eval.fid_num_images`` and scores them on the main process with ``evaluation.fid``; :func:`rank_fingerprints`
checks that the ranks' weights agree at the end. :func:`ema_weights` swaps the EMA weights into a separate eval UNet
around all of these.

Example (one process)::

    from accelerate import Accelerator
    from training.monitor import generate_split
    imgs = generate_split(Accelerator(cpu=True), unet, scheduler_config, num_images=8, seed=0, steps=10,
                          batch_size=8, scheduler="ddim")   # (8, H, W, 3) uint8
"""

from __future__ import annotations

import contextlib
import math
from pathlib import Path

from training.config import TrainConfig
from training.step import step_loss

__all__ = [
    "check_fid_weights",
    "ema_weights",
    "evaluate_fid",
    "generate_split",
    "heldout_loss",
    "latest_grid",
    "rank_fingerprints",
]


def generate_split(
    accelerator,
    unet,
    scheduler_config: dict,
    *,
    num_images: int,
    seed: int,
    steps: int,
    batch_size: int,
    scheduler: str,
):
    """Every rank samples its contiguous share; returns all ``num_images`` uint8 (N, H, W, 3) on every rank."""
    import numpy as np
    import torch

    from evaluation.sample import generate

    world, rank = accelerator.num_processes, accelerator.process_index
    share = math.ceil(num_images / world)
    lo, hi = min(num_images, rank * share), min(num_images, (rank + 1) * share)
    mine = None
    if hi > lo:
        mine = generate(
            unet,
            scheduler_config,
            num_images=hi - lo,
            seed=seed,
            batch_size=batch_size,
            steps=steps,
            start_index=lo,
            scheduler=scheduler,
            device=accelerator.device,
        )
    size = unet.config.sample_size
    padded = np.zeros((share, size, size, 3), np.uint8)
    if mine is not None and len(mine):
        padded[: len(mine)] = mine
    if world == 1:
        return padded[:num_images]
    gathered = accelerator.gather(torch.from_numpy(padded).to(accelerator.device))  # (world * share, H, W, 3)
    return gathered.cpu().numpy()[:num_images]


@contextlib.contextmanager
def ema_weights(ema, train_model, eval_unet):
    """``eval_unet`` holding the EMA weights (or the raw weights when EMA is off), in eval mode."""
    import torch

    with torch.no_grad():
        if ema is not None:
            ema.copy_to(eval_unet.parameters())
        else:
            for p_eval, p in zip(eval_unet.parameters(), train_model.parameters(), strict=True):
                p_eval.copy_(p)
    eval_unet.eval()
    yield eval_unet


def heldout_loss(accelerator, unet, test_u8, cfg: TrainConfig, alphas_cumprod) -> float:
    """Mean loss of the EMA net on fixed test batches with fixed noise (the attention recipe's held-out EMA loss)."""
    import torch

    from training.data import to_model_range

    world, rank, dev = accelerator.num_processes, accelerator.process_index, accelerator.device
    n, bs = len(test_u8), cfg.train.batch_size
    total = torch.zeros(2, device=dev)
    with torch.no_grad(), accelerator.autocast():
        for i in range(rank, cfg.eval.heldout_batches, world):
            idx = torch.arange(i * bs, (i + 1) * bs, device=test_u8.device) % n
            x0 = to_model_range(test_u8[idx].to(dev))
            g = torch.Generator(device=dev).manual_seed(cfg.train.seed + 12345 + i)
            total += torch.stack([step_loss(unet, x0, g, cfg, alphas_cumprod).float(), torch.ones((), device=dev)])
    total = accelerator.reduce(total, reduction="sum") if world > 1 else total
    return float(total[0] / total[1].clamp_min(1))


def rank_fingerprints(accelerator, model, ema) -> list[list[float]]:
    """Collective: per rank, (sum, sum of squares) of the weights and of the EMA weights, in float64."""
    import torch

    def moments(tensors) -> list[float]:
        tensors = list(tensors)
        return [
            sum(float(x.detach().double().sum()) for x in tensors),
            sum(float(x.detach().double().square().sum()) for x in tensors),
        ]

    mine = moments(model.parameters()) + (moments(ema.shadow_params) if ema is not None else [0.0, 0.0])
    local = torch.tensor([mine], dtype=torch.float64, device=accelerator.device)
    allr = accelerator.gather(local) if accelerator.num_processes > 1 else local
    return allr.cpu().tolist()


def latest_grid(run_dir: Path) -> Path | None:
    """The newest ``samples/step-<step>.png`` (the sample grid an export carries), or None."""
    grids = sorted((run_dir / "samples").glob("step-*.png"), key=lambda p: int(p.stem.split("-")[1]))
    return grids[-1] if grids else None


def check_fid_weights(cfg: TrainConfig) -> None:
    """Fail at start, not at the first FID hours later, when ``eval.fid_*`` needs the Inception and it is not found
    (the lookup of ``ptt-fid``: ``eval.fid_inception_path``, clean-fid's place, the registry copy)."""
    if not cfg.eval.fid_every_steps or cfg.eval.fid_extractor != "inception":
        return
    from common.configio import ConfigError
    from evaluation.features import InceptionMissingError, resolve_inception

    try:
        resolve_inception(cfg.eval.fid_inception_path)
    except InceptionMissingError as exc:
        raise ConfigError(f"eval.fid_extractor=inception: {exc}; or set eval.fid_extractor=substitute") from None


def evaluate_fid(accelerator, cfg: TrainConfig, sample_ema) -> dict:
    """Collective: every rank samples its share of ``eval.fid_num_images`` (``sample_ema(**kw)``: a
    :func:`generate_split` from the EMA weights); the main process scores them."""
    from accelerate.utils import broadcast_object_list

    from evaluation.fid import evaluate

    e = cfg.eval
    imgs = sample_ema(
        num_images=e.fid_num_images,
        seed=cfg.train.seed + 1_000_000,
        steps=e.fid_steps,
        batch_size=e.fid_batch_size,
        scheduler=e.fid_scheduler,
    )
    row, failure = [None], None
    if accelerator.is_main_process:
        ref = f"{cfg.data.dataset_dir}:{cfg.data.test_split}"
        try:
            res = evaluate(
                imgs,
                ref,
                extractor=e.fid_extractor,
                inception_path=e.fid_inception_path,
                cache_dir=str(Path(cfg.run_dir) / "fid_cache"),
                device=accelerator.device,
            )
        except Exception as exc:  # the other ranks wait in the broadcast below: the failure travels with it
            failure, row = exc, [f"{type(exc).__name__}: {exc}"]
        else:
            scored = {
                k: (float(v) if isinstance(v, int | float) and not isinstance(v, bool) else v) for k, v in res.items()
            }
            row = [{**scored, "scheduler": e.fid_scheduler, "steps": e.fid_steps, "seed": cfg.train.seed + 1_000_000}]
    row = broadcast_object_list(row)[0]
    if failure is not None:
        raise failure
    if isinstance(row, str):
        raise RuntimeError(f"the main process's FID failed: {row}")
    return row
