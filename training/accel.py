"""The trainer's runtime: its Accelerator as the launcher set it up, its mixed precision, and its trackers.

The config schema (``training/config.py``) says what a run asks for; this module checks it against the machine it
runs on (the launcher's precision, the device, the installed tracker packages).

- :func:`resolve_mixed_precision`: ``train.mixed_precision`` against the launcher's choice, resolved once per run
  (:func:`build_accelerator` for the run and its banner, the dry run for its printout).
- :func:`build_accelerator`: ``Accelerator`` with the mixed precision of ``train.mixed_precision`` or, when that is
  unset, of ``accelerate launch --mixed_precision`` / ``accelerate config``; a disagreement is a warning naming
  both, fp16 on the CPU a one-line error (:func:`check_precision`).
- :func:`check_tracker`: ``train.log_with`` names an installed package (accelerate would drop it without a word).
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
import os
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from common.configio import ConfigError
from common.fileio import atomic_write
from training.config import TrainConfig

__all__ = [
    "TRACKERS_FILE",
    "Precision",
    "build_accelerator",
    "check_precision",
    "check_tracker",
    "flat_config",
    "init_trackers",
    "log_image",
    "resolve_mixed_precision",
    "wandb_run",
]

log = logging.getLogger("ptt.train")

TRACKERS_FILE = "trackers.json"  # {"wandb_run_id": "..."} in the run directory


class Precision(NamedTuple):
    """Which mixed precision a run asks accelerate for, and why (see :func:`resolve_mixed_precision`)."""

    requested: str | None  # passed to Accelerator(mixed_precision=...); None lets accelerate read its launcher
    effective: str  # what accelerate will use: no | fp16 | bf16 (| fp8)
    source: str  # where it came from, for the banner
    conflict: str | None  # a warning naming both settings when the config overrides the launcher's choice
    note: str | None  # an info line when the config overrides the launcher's default "no"


def resolve_mixed_precision(configured: str | None, environ: Mapping[str, str] | None = None) -> Precision:
    """``train.mixed_precision`` against the launcher's ``ACCELERATE_MIXED_PRECISION`` (pure but for the env).

    ``accelerate launch`` always exports ``ACCELERATE_MIXED_PRECISION`` (its ``--mixed_precision`` flag, else
    ``accelerate config``'s value, else "no"), and ``Accelerator(mixed_precision=None)`` reads it. Unset in the
    config, the launcher decides; set, the config wins, with a warning when the launcher asked for another
    precision than "no" (which is also its default, so overriding "no" is only noted).
    """
    env = os.environ if environ is None else environ
    launcher = (env.get("ACCELERATE_MIXED_PRECISION") or "").strip().lower() or None
    where = f"accelerate launch --mixed_precision / accelerate config (ACCELERATE_MIXED_PRECISION={launcher})"
    if configured is None:
        if launcher:
            return Precision(None, launcher, where, None, None)
        return Precision(None, "no", "accelerate's default (train.mixed_precision unset, no launcher setting)", None,
                         None)  # fmt: skip
    if launcher is None or launcher == configured:
        return Precision(configured, configured, "train.mixed_precision", None, None)
    if launcher == "no":
        note = f"train.mixed_precision={configured} is used over the launcher's mixed precision 'no' ({where})"
        return Precision(configured, configured, "train.mixed_precision", None, note)
    conflict = (
        f"train.mixed_precision={configured} overrides the launcher's mixed precision {launcher} ({where}); "
        "leave train.mixed_precision unset (train.mixed_precision=null) to let the launcher decide"
    )
    return Precision(configured, configured, "train.mixed_precision", conflict, None)


def check_precision(precision: Precision, actual: str, device_type: str) -> None:
    """fp16 on the CPU: accelerate would silently train in fp32, so it is an error naming the setting that asked."""
    if actual == "fp16" and device_type == "cpu":
        setting = "train.mixed_precision" if precision.requested else "ACCELERATE_MIXED_PRECISION"
        fix = "set train.mixed_precision=bf16 or no" if precision.requested else (
            "launch with --mixed_precision bf16 or no (or set train.mixed_precision)")  # fmt: skip
        raise ConfigError(f"{setting}=fp16 needs a GPU (this run is on the CPU; from {precision.source}); {fix}")


def check_tracker(log_with: str) -> None:
    """``train.log_with`` must name an installed logger: accelerate would otherwise drop it without a word."""
    import importlib.util

    if log_with != "none" and importlib.util.find_spec(log_with) is None:
        other = "tensorboard" if log_with == "wandb" else "none"
        raise ConfigError(
            f"train.log_with={log_with} but the {log_with} package is not installed; pip install {log_with} "
            f"or set train.log_with={other}"
        )


def flat_config(cfg: TrainConfig) -> dict[str, Any]:
    """The config as one flat ``{"optim.lr": 0.0003, ...}`` mapping of scalars, for trackers' hyperparameters."""
    return _flat(cfg.model_dump(mode="json"))


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v if isinstance(v, int | float | str | bool) else str(v)
    return out


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
