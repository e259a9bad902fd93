"""One training step's loss: a pure function of the batch, the generator and the networks.

``step_loss`` draws the noise and timesteps from ``g`` (so a step depends only on (seed, rank, micro-step) through
:func:`step_generator`), runs the UNet, and returns the fp32 loss of ``training.losses`` (plus the refine phase's
LPIPS term when an LPIPS net is given). The trainer, its held-out loss and ``benchmarks/bench_train.py`` all call
it, so the benchmark times exactly the trainer's step.

Example::

    import torch
    from diffusers import DDPMScheduler
    from training.config import load_train_config
    from training.model import build_unet
    from training.step import step_generator, step_loss
    cfg = load_train_config("configs/train/demo.yaml", ["data.resolution=16"])
    unet = build_unet(cfg)
    g = step_generator("cpu", seed=0, rank=0, micro_step=0)
    x0 = torch.rand(2, 3, 16, 16, generator=g) * 2 - 1
    print(step_loss(unet, x0, g, cfg, DDPMScheduler().alphas_cumprod))
"""

from __future__ import annotations

from training.config import TrainConfig

__all__ = ["step_generator", "step_loss"]


def step_loss(unet, x0, g, cfg: TrainConfig, alphas_cumprod, *, channels_last: bool = False, lpips_net=None):
    """Scalar float32 loss for a batch ``x0`` (B, 3, H, W) in [-1, 1]; noise and timesteps drawn from ``g``."""
    import torch

    from training.losses import add_noise, diffusion_loss, min_snr_weights, predict_x0, training_target

    b = x0.shape[0]
    noise = torch.randn(x0.shape, generator=g, device=x0.device, dtype=x0.dtype)
    t = torch.randint(0, cfg.noise.num_train_timesteps, (b,), generator=g, device=x0.device)
    x_t = add_noise(alphas_cumprod, x0, noise, t)
    if channels_last:
        x_t = x_t.contiguous(memory_format=torch.channels_last)
    out = unet(x_t, t).sample.float()  # loss in fp32 whatever the autocast dtype
    pred_type = cfg.noise.prediction_type
    target = training_target(pred_type, alphas_cumprod, x0, noise, t)
    weights = None
    if cfg.loss.min_snr_gamma is not None:
        weights = min_snr_weights(alphas_cumprod, t, gamma=cfg.loss.min_snr_gamma, prediction_type=pred_type)
    loss = diffusion_loss(out, target, kind=cfg.loss.kind, l1_weight=cfg.loss.l1_weight, weights=weights)
    if lpips_net is not None and cfg.refine.lpips_weight > 0:
        from training.refine import lpips_term

        x0_pred = predict_x0(pred_type, alphas_cumprod, x_t, out, t)
        loss = loss + cfg.refine.lpips_weight * lpips_term(lpips_net, x0_pred, x0, t, cfg.refine.lpips_max_timestep)
    return loss


def step_generator(device, seed: int, rank: int, micro_step: int):
    """One generator per (seed, rank, micro-step): augmentation, noise and timesteps never depend on history."""
    import torch

    return torch.Generator(device=device).manual_seed((seed * 1_000_003 + rank) * 1_000_000_007 + micro_step)
