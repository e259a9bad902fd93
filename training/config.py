"""The trainer's typed config: every default in one place, each with its reason.

A YAML file under ``configs/train/`` holds only what differs from these defaults; ``key.sub=value`` overrides
come from the command line. Unknown keys fail with their dotted path (``common/configio.py``); the ``model``
section takes any ``diffusers.UNet2DModel`` argument and rejects names that constructor does not have.

Example::

    from training.config import TrainConfig, load_train_config
    cfg = load_train_config("configs/train/demo.yaml", ["train.max_steps=10", "data.dataset_dir=demo_out/dataset"])
    print(cfg.optim.lr, cfg.model["block_out_channels"])

This module imports no torch; the UNet argument check imports diffusers lazily.
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, NamedTuple

from pydantic import Field, field_validator, model_validator

from common.configio import ConfigError, StrictModel, load_config
from common.hub import is_repo_id
from evaluation.samplers import DEFAULT_SAMPLER, DEFAULT_STEPS, SCHEDULERS

__all__ = ["TrainConfig", "load_train_config", "resolve_mixed_precision", "unet_kwargs", "DEFAULT_UNET"]

# Seed 000's network: three down levels, GroupNorm and a sinusoidal time embedding (UNet2DModel's defaults),
# no attention, so it trains on a CPU in minutes at 64x64 and in seconds per epoch on a GPU.
DEFAULT_UNET: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "layers_per_block": 2,
    "block_out_channels": [64, 128, 256],
    "down_block_types": ["DownBlock2D", "DownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "UpBlock2D", "UpBlock2D"],
    "norm_num_groups": 32,
}


@lru_cache(maxsize=1)
def _unet_arguments() -> frozenset[str]:
    from diffusers import UNet2DModel

    params = inspect.signature(UNet2DModel.__init__).parameters
    return frozenset(name for name in params if name != "self")


class DataConfig(StrictModel):
    # The curated folder of contracts.md section 3 (``datasets.load_from_disk``), or any image datasets folder.
    dataset_dir: str | None = None
    # A Hub dataset id (``datasets.load_dataset``) used when dataset_dir is not set.
    hub_dataset: str | None = None
    image_column: str = "image"
    train_split: str = "train"
    # Held-out EMA loss and FID read this split; null or a missing split turns them off with a log line.
    test_split: str | None = "test"
    # Images are resized (shorter side) and centre-cropped to this once, at decode time.
    resolution: int = Field(64, ge=8, le=1024)
    # Keep only the first N training images (quick experiments); null keeps all.
    max_images: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _one_source(self) -> DataConfig:
        if self.dataset_dir is None and self.hub_dataset is None:
            raise ValueError(
                "set data.dataset_dir (a curated datasets folder, e.g. demo_out/dataset) or data.hub_dataset"
            )
        return self


class AugmentConfig(StrictModel):
    """Seed 000's list, done on whole batches on the training device (training/augment.py)."""

    enabled: bool = True
    hflip_p: float = Field(0.5, ge=0.0, le=1.0)  # faces are left-right symmetric
    rotate_degrees: float = Field(5.0, ge=0.0, le=45.0)  # aligned crops: small tilts only
    brightness: float = Field(0.1, ge=0.0, le=1.0)  # multiplicative range 1 +- brightness
    contrast: float = Field(0.1, ge=0.0, le=1.0)
    saturation: float = Field(0.1, ge=0.0, le=1.0)
    hue: float = Field(0.02, ge=0.0, le=0.5)  # fraction of a full turn
    blur_p: float = Field(0.1, ge=0.0, le=1.0)
    blur_sigma_max: float = Field(1.0, gt=0.0, le=5.0)
    sharpen_p: float = Field(0.1, ge=0.0, le=1.0)
    sharpen_amount: float = Field(0.5, ge=0.0, le=3.0)


class NoiseConfig(StrictModel):
    """DDPMScheduler settings; both seeds used 1000 steps and linear betas 1e-4..0.02."""

    num_train_timesteps: int = Field(1000, ge=2)
    beta_schedule: Literal["linear", "cosine", "scaled_linear"] = "linear"
    beta_start: float = Field(1.0e-4, gt=0.0)
    beta_end: float = Field(0.02, gt=0.0, lt=1.0)
    prediction_type: Literal["epsilon", "v_prediction", "sample"] = "epsilon"
    clip_sample: bool = True  # samples are images in [-1, 1]

    def scheduler_config(self) -> dict[str, Any]:
        """Keyword arguments for ``diffusers.DDPMScheduler`` (cosine is diffusers' ``squaredcos_cap_v2``)."""
        schedule = "squaredcos_cap_v2" if self.beta_schedule == "cosine" else self.beta_schedule
        return {
            "num_train_timesteps": self.num_train_timesteps,
            "beta_schedule": schedule,
            "beta_start": self.beta_start,
            "beta_end": self.beta_end,
            "prediction_type": self.prediction_type,
            "clip_sample": self.clip_sample,
        }


class LossConfig(StrictModel):
    # mse: seed 001. l1_mse: seed 000's mix, l1_weight * L1 + (1 - l1_weight) * MSE.
    kind: Literal["mse", "l1_mse", "l1"] = "mse"
    l1_weight: float = Field(0.25, ge=0.0, le=1.0)
    # Min-SNR-gamma weighting (Hang et al. 2023); 5.0 is the paper's value; null turns it off.
    min_snr_gamma: float | None = Field(None, gt=0.0)


class OptimConfig(StrictModel):
    lr: float = Field(3.0e-4, gt=0.0)  # seed 001, at batch 16
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(1.0e-6, ge=0.0)  # diffusers' unconditional example
    eps: float = Field(1.0e-8, gt=0.0)
    lr_schedule: Literal["cosine", "constant", "linear"] = "cosine"
    lr_warmup_steps: int = Field(500, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)  # floor of the decay, as a fraction of lr
    max_grad_norm: float | None = Field(1.0, gt=0.0)  # null: no clipping (the norm is still measured)
    # Fused AdamW (CPU and CUDA): one kernel per step, and it skips a non-finite step on the device.
    fused: bool = True


class EmaConfig(StrictModel):
    enabled: bool = True
    decay: float = Field(0.998, gt=0.0, lt=1.0)  # seed 001
    # Seed 000 started the EMA at step 10,000; before it the EMA copies the weights.
    start_step: int = Field(0, ge=0)
    warmup: bool = True  # diffusers' EMA warmup: decay grows as 1 - (1 + step / inv_gamma) ** -power
    inv_gamma: float = Field(1.0, gt=0.0)
    power: float = Field(0.75, gt=0.0)  # 3/4 suits runs of ~10k-200k steps (crowsonkb's note)


class TrainLoopConfig(StrictModel):
    seed: int = 0
    batch_size: int = Field(16, ge=1)  # per device; seed 001 used 16
    grad_accum_steps: int = Field(1, ge=1)
    # Total optimizer steps; when null, num_epochs x steps per epoch.
    max_steps: int | None = Field(None, ge=1)
    num_epochs: int | None = Field(None, ge=1)
    # null: whatever `accelerate launch --mixed_precision` / `accelerate config` chose (fp32 without either);
    # a value here wins over the launcher (with a warning when they disagree). See resolve_mixed_precision.
    mixed_precision: Literal["no", "fp16", "bf16"] | None = None
    tf32: bool = True  # CUDA matmuls/convs in TF32; no effect on CPU
    channels_last: bool = False  # CUDA only: pays with tensor cores, measured slower on the CPU
    compile: bool = False  # torch.compile of the UNet
    log_every_steps: int = Field(10, ge=1)  # the only host-device sync in the loop
    log_with: Literal["tensorboard", "wandb", "none"] = "tensorboard"
    checkpoint_every_steps: int = Field(1000, ge=1)
    checkpoints_keep: int = Field(3, ge=1)
    sample_every_steps: int | None = Field(1000, ge=1)  # a grid per checkpoint (issue 7: grids over time)
    sample_num_images: int = Field(16, ge=1)
    # The periodic grids' sampler: ptt-sample's default (BENCHMARKS.md, "Fast samplers"); steps null = its default.
    sample_scheduler: Literal[SCHEDULERS] = DEFAULT_SAMPLER
    sample_steps: int | None = Field(None, ge=1)
    sample_batch_size: int = Field(64, ge=1)
    max_nonfinite_in_row: int = Field(20, ge=1)
    # With several processes, how often the ranks agree on a SIGTERM/SIGINT (one all-reduce each time).
    signal_check_every_steps: int = Field(10, ge=1)

    @field_validator("mixed_precision", mode="before")
    @classmethod
    def _yaml_no(cls, value: Any) -> Any:
        return "no" if value is False else value  # YAML reads a bare `no` (mixed_precision=no) as false

    @model_validator(mode="after")
    def _length(self) -> TrainLoopConfig:
        if self.max_steps is None and self.num_epochs is None:
            raise ValueError("set train.max_steps or train.num_epochs")
        if self.sample_steps is None:
            self.sample_steps = DEFAULT_STEPS[self.sample_scheduler]
        return self


class HubConfig(StrictModel):
    """Push the exported pipeline (allow-list of ``ptt-push``: never optimizer state, never pickles) to the Hub."""

    repo_id: str | None = None  # USER/NAME; null: no push
    # The photos are of real people (README "Data and people"): private unless you have the right to share them.
    private: bool = True
    # Also push every N-th checkpoint's EMA pipeline, in the background; null: only the final export.
    push_every_checkpoints: int | None = Field(None, ge=1)
    dataset_repo: str | None = None  # the dataset repo on the Hub, linked from the model card (`datasets:`)

    @field_validator("repo_id", "dataset_repo")
    @classmethod
    def _user_name(cls, value: str | None) -> str | None:
        if value is not None and not is_repo_id(value):
            raise ValueError(f"{value!r} must be USER/NAME (or ORG/NAME)")
        return value


class EvalConfig(StrictModel):
    fid_every_steps: int | None = Field(None, ge=1)  # null: no periodic FID
    fid_num_images: int = Field(1000, ge=2)
    # The periodic FID's sampler: ptt-sample's default, which ranked one run's checkpoints as 1000-step DDPM did
    # (BENCHMARKS.md, "Fast samplers"); steps null = its default.
    fid_scheduler: Literal[SCHEDULERS] = DEFAULT_SAMPLER
    fid_steps: int | None = Field(None, ge=1)
    fid_extractor: Literal["inception", "substitute"] = "inception"
    fid_inception_path: str | None = None
    fid_batch_size: int = Field(128, ge=1)
    # Seed 001's held-out EMA loss on fixed test batches (fixed noise and timesteps, so it is comparable).
    heldout_every_steps: int | None = Field(None, ge=1)
    heldout_batches: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _fid_steps(self) -> EvalConfig:
        if self.fid_steps is None:
            self.fid_steps = DEFAULT_STEPS[self.fid_scheduler]
        return self


class RefineConfig(StrictModel):
    """Seed 000's second phase: from a base run, augmentation off, plus LPIPS between predicted x0 and real."""

    enabled: bool = False
    base_run_dir: str | None = None  # a run directory (its latest checkpoint) or a checkpoint folder
    base_checkpoint: str = "latest"  # or checkpoint-<step>
    init_from: Literal["ema", "model"] = "ema"
    lpips_weight: float = Field(0.1, ge=0.0)
    # Apply LPIPS only where t < this (x0 predictions from very noisy inputs are blurry); null: everywhere.
    lpips_max_timestep: int | None = Field(None, ge=1)
    lpips_net: Literal["alex", "vgg", "squeeze"] = "alex"
    # The torchvision ImageNet backbone (e.g. alexnet-owt-7be5be79.pth); null: the torch hub cache.
    lpips_backbone_path: str | None = None
    # Tests only: a randomly initialised backbone. Never on by default, never silently.
    lpips_random_backbone: bool = False

    @model_validator(mode="after")
    def _base(self) -> RefineConfig:
        if self.enabled and not self.base_run_dir:
            raise ValueError("refine.enabled needs refine.base_run_dir (the base run directory or a checkpoint)")
        return self


class TrainConfig(StrictModel):
    run_dir: str = "runs/default"
    data: DataConfig
    augment: AugmentConfig = AugmentConfig()
    # Any diffusers.UNet2DModel argument; sample_size defaults to data.resolution.
    model: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_UNET))
    noise: NoiseConfig = NoiseConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    ema: EmaConfig = EmaConfig()
    train: TrainLoopConfig
    eval: EvalConfig = EvalConfig()
    refine: RefineConfig = RefineConfig()
    hub: HubConfig = HubConfig()

    @field_validator("model", mode="before")
    @classmethod
    def _model_args(cls, value: Any) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise ValueError("model must be a mapping of diffusers.UNet2DModel arguments")
        known = _unet_arguments()
        unknown = sorted(set(value) - known)
        if unknown:
            close = difflib.get_close_matches(unknown[0], known, n=1)
            hint = f"did you mean model.{close[0]}? " if close else ""
            raise ValueError(
                f"model.{unknown[0]} is not a diffusers.UNet2DModel argument; {hint}known: {', '.join(sorted(known))}"
            )
        merged = dict(DEFAULT_UNET)
        merged.update(value)
        return merged

    @model_validator(mode="before")
    @classmethod
    def _refine_trains_on_real_images(cls, data: Any) -> Any:
        """The refine phase trains on the real images only: it turns augmentation off, so the saved config
        records what ran; asking for both is an error rather than a silent choice."""
        if not isinstance(data, dict):
            return data
        refine, augment = data.get("refine"), data.get("augment")
        enabled = refine.get("enabled") if isinstance(refine, dict) else getattr(refine, "enabled", False)
        if not enabled:
            return data
        msg = "refine.enabled trains on the real images only; set augment.enabled=false (or leave it out)"
        if isinstance(augment, AugmentConfig):  # re-validation on assignment: sections are models already
            if augment.enabled and "enabled" in augment.model_fields_set:
                raise ValueError(msg)
            return data if not augment.enabled else {**data, "augment": augment.model_copy(update={"enabled": False})}
        augment = dict(augment or {})
        if augment.get("enabled") is True:
            raise ValueError(msg)
        return {**data, "augment": {**augment, "enabled": False}}

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        size = self.model.get("sample_size")
        if size is not None and size != self.data.resolution:
            raise ValueError(f"model.sample_size ({size}) must equal data.resolution ({self.data.resolution})")
        return self


def unet_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """``UNet2DModel(**unet_kwargs(cfg))``: the model section with sample_size filled in, lists as tuples."""
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.model.items()}
    kwargs.setdefault("sample_size", cfg.data.resolution)
    return kwargs


def derived_figures(cfg: TrainConfig, n_train: int, world: int) -> dict:
    t = cfg.train
    effective_batch = t.batch_size * t.grad_accum_steps * world
    steps_per_epoch = max(1, n_train // effective_batch)  # whole batches per pass
    # num_epochs: enough steps for that many passes over the images (the batch stream crosses epoch borders)
    total = t.max_steps if t.max_steps is not None else max(1, math.ceil(t.num_epochs * n_train / effective_batch))
    precision = resolve_mixed_precision(t.mixed_precision)
    return {
        "world_size": world,
        "train_images": n_train,
        "effective_batch": effective_batch,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total,
        "epochs": round(total * effective_batch / max(1, n_train), 2),
        "mixed_precision": f"{precision.effective} (from {precision.source})",
    }


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


def load_train_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Load and validate; a config error raises :class:`ConfigError` naming the file and dotted key."""
    cfg = load_config(TrainConfig, path, overrides)
    if cfg.model.get("sample_size") is None:
        cfg.model = {**cfg.model, "sample_size": cfg.data.resolution}
    return cfg


__all__ += ["ConfigError"]
