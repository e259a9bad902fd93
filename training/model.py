"""Network, noise schedule, optimizer and LR schedule builders for the trainer (no Accelerator, no disk).

Example::

    from training.config import load_train_config
    from training.model import build_unet, build_noise_scheduler, count_parameters
    cfg = load_train_config("configs/train/demo.yaml", ["data.dataset_dir=demo_out/dataset"])
    unet = build_unet(cfg)
    print(count_parameters(unet), build_noise_scheduler(cfg).config.num_train_timesteps)
"""

from __future__ import annotations

import math

import torch

from common.configio import ConfigError
from training.config import TrainConfig, unet_kwargs

__all__ = [
    "build_unet",
    "build_noise_scheduler",
    "build_optimizer",
    "decay_progress",
    "lr_lambda",
    "count_parameters",
    "unet_flops_per_image",
]


def build_unet(cfg: TrainConfig):
    """``diffusers.UNet2DModel`` from the ``model`` section; a bad combination is a ConfigError naming ``model``."""
    from diffusers import UNet2DModel

    kwargs = unet_kwargs(cfg)
    try:
        return UNet2DModel(**kwargs)
    except (ValueError, TypeError, AssertionError, IndexError, KeyError) as exc:
        raise ConfigError(
            f"model: diffusers.UNet2DModel rejected {kwargs}: {exc}. block_out_channels, down_block_types and "
            "up_block_types need the same length, and each width must divide by norm_num_groups"
        ) from None


def build_noise_scheduler(cfg: TrainConfig):
    from diffusers import DDPMScheduler

    return DDPMScheduler(**cfg.noise.scheduler_config())


def build_optimizer(params, cfg: TrainConfig, *, device_type: str) -> torch.optim.Optimizer:
    """AdamW; fused (one kernel per step, on CPU and CUDA) unless ``optim.fused`` is false."""
    o = cfg.optim
    fused = o.fused and device_type in ("cuda", "cpu")
    return torch.optim.AdamW(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay, eps=o.eps, fused=fused)


def decay_progress(
    step: int, *, warmup_steps: int, total_steps: int, anchor: tuple[int, float] | None = None
) -> float:
    """The fraction of the decay done at ``step`` (0 at the end of the warm-up, 1 at ``total_steps``).

    ``anchor`` = (s0, p0): a plan changed at step s0 where the decay had reached p0 (training/budget.py); from s0 on
    the rest of the decay, 1 - p0, is spread evenly over the steps left, so the LR does not jump."""
    if anchor is not None and step >= anchor[0] and anchor[0] >= warmup_steps:
        s0, p0 = anchor
        return min(1.0, p0 + (1.0 - p0) * (step - s0) / max(1, total_steps - s0))
    span = max(1, total_steps - warmup_steps)
    return min(1.0, (step - warmup_steps) / span)


def lr_lambda(
    step: int,
    *,
    warmup_steps: int,
    total_steps: int,
    schedule: str,
    min_ratio: float = 0.0,
    anchor: tuple[int, float] | None = None,
) -> float:
    """LR multiplier at optimizer step ``step``: linear warmup, then cosine/linear decay to ``min_ratio``, or flat."""
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    progress = decay_progress(step, warmup_steps=warmup_steps, total_steps=total_steps, anchor=anchor)
    if schedule == "cosine":
        decay = 0.5 * (1.0 + math.cos(math.pi * progress))
    elif schedule == "linear":
        decay = 1.0 - progress
    else:
        raise ValueError(f"unknown lr schedule {schedule!r}")
    return min_ratio + (1.0 - min_ratio) * decay


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def unet_flops_per_image(unet, resolution: int, *, training: bool = True) -> float:
    """FLOPs of one image through the UNet (forward, x3 for forward + backward when ``training``), counted.

    Attention is counted through PyTorch's math SDPA backend (its matmuls are visible to the counter): the fused
    CPU kernel is not, which would drop attention (~9% of the attention recipe's FLOPs) and make the count
    device-dependent.
    """
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.utils.flop_counter import FlopCounterMode

    device = next(unet.parameters()).device
    x = torch.randn(1, unet.config.in_channels, resolution, resolution, device=device)
    t = torch.tensor([10], device=device)
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter, torch.no_grad():
        unet(x, t)
    fwd = counter.get_total_flops()
    return float(fwd * (3 if training else 1))
