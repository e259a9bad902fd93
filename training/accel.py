"""The trainer's Accelerator as the launcher set it up, and its trackers (scalars, images, wandb resume).

- :func:`build_accelerator`: ``Accelerator`` with the mixed precision of ``train.mixed_precision`` or, when that is
  unset, of ``accelerate launch --mixed_precision`` / ``accelerate config`` (``training.config.
  resolve_mixed_precision``); a disagreement is a warning naming both, fp16 on the CPU a one-line error.
- :func:`init_trackers`: tensorboard under ``<run_dir>/logs`` or wandb; wandb's run id is kept in
  ``<run_dir>/trackers.json`` so ``--resume`` continues the same wandb run (:func:`wandb_run` is the pure rule).
- :func:`log_image`: a PNG of the run directory (an EMA sample grid, the curves) to every tracker as an image, as
  diffusers' ``train_unconditional.py`` does (``add_images`` for tensorboard, ``wandb.Image`` for wandb).

Example::

    accelerator, precision = build_accelerator(cfg)
    init_trackers(accelerator, cfg, resumed=False)
    log_image(accelerator, "samples", "runs/demo/samples/step-100.png", step=100)
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from pathlib import Path

from common.fileio import atomic_write
from training.config import Precision, TrainConfig, check_precision, flat_config, resolve_mixed_precision

__all__ = ["TRACKERS_FILE", "build_accelerator", "init_trackers", "log_image", "wandb_run"]

log = logging.getLogger("ptt.train")

TRACKERS_FILE = "trackers.json"  # {"wandb_run_id": "..."} in the run directory


def build_accelerator(cfg: TrainConfig):
    """(Accelerator, Precision): precision from the config or the launcher, logging under ``<run_dir>/logs``."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    t, run_dir = cfg.train, Path(cfg.run_dir)
    precision: Precision = resolve_mixed_precision(t.mixed_precision)
    accelerator = Accelerator(
        mixed_precision=precision.requested,  # None: accelerate reads ACCELERATE_MIXED_PRECISION (its launcher)
        gradient_accumulation_steps=t.grad_accum_steps,
        log_with=None if t.log_with == "none" else t.log_with,
        project_config=ProjectConfiguration(project_dir=str(run_dir), logging_dir=str(run_dir / "logs")),
    )
    check_precision(precision, accelerator.mixed_precision, accelerator.device.type)
    if accelerator.is_main_process and precision.conflict:
        log.warning(precision.conflict)
    elif accelerator.is_main_process and precision.note:
        log.info(precision.note)
    return accelerator, precision


def wandb_run(stored_id: str | None, *, resumed: bool, new_id: Callable[[], str]) -> tuple[str, str]:
    """(wandb run id, wandb ``resume`` mode): a resumed training run continues its stored wandb run; a new training
    run (also ``--resume latest`` with no checkpoint yet) starts a new wandb run."""
    if resumed and stored_id:
        return stored_id, "allow"
    return new_id(), "never"


def init_trackers(accelerator, cfg: TrainConfig, *, resumed: bool) -> None:
    """Start the configured tracker (collective-free; accelerate starts it on the main process only)."""
    t, run_dir = cfg.train, Path(cfg.run_dir)
    if t.log_with == "none":
        return
    init_kwargs = {}
    if t.log_with == "wandb" and accelerator.is_main_process:
        path = run_dir / TRACKERS_FILE
        stored = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
        run_id, mode = wandb_run(stored.get("wandb_run_id"), resumed=resumed, new_id=lambda: secrets.token_hex(4))
        atomic_write(path, json.dumps({**stored, "wandb_run_id": run_id}, indent=2) + "\n")
        init_kwargs["wandb"] = {"id": run_id, "resume": mode, "dir": str(run_dir), "name": run_dir.name}
        log.info("wandb run %s (%s)", run_id, "resumed" if mode == "allow" else "new")
    accelerator.init_trackers("ptt-train", config=flat_config(cfg), init_kwargs=init_kwargs)


def log_image(accelerator, name: str, png: str | Path | None, *, step: int) -> None:
    """Main process: the PNG at ``png`` as image ``name`` at ``step`` in every started tracker."""
    import numpy as np
    from PIL import Image

    if png is None or not accelerator.trackers or not Path(png).is_file():
        return
    with Image.open(png) as im:
        img = np.asarray(im.convert("RGB"))  # (H, W, 3) uint8
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            tracker.log_images({name: img[None]}, step=step, dataformats="NHWC")
        elif tracker.name == "wandb":
            tracker.log_images({name: [img]}, step=step)
