"""Diffusion losses as pure functions of tensors: targets, x0 prediction, MSE / L1+MSE, min-SNR-gamma weights.

Everything here is computed in float32 whatever the autocast dtype of the network (``pred.float()``), as
diffusers' examples do. ``alphas_cumprod`` is ``DDPMScheduler.alphas_cumprod`` (T,) on the batch's device.

Example::

    import torch
    from training.losses import diffusion_loss, min_snr_weights, training_target
    a = torch.linspace(0.9999, 0.0001, 1000)
    x0, noise, t = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8), torch.tensor([1, 10, 100, 999])
    target = training_target("v_prediction", a, x0, noise, t)
    loss = diffusion_loss(torch.zeros_like(target), target, kind="l1_mse",
                          weights=min_snr_weights(a, t, gamma=5.0, prediction_type="v_prediction"))
"""

from __future__ import annotations

import torch

__all__ = ["add_noise", "training_target", "predict_x0", "snr", "min_snr_weights", "per_sample_loss", "diffusion_loss"]


def _coeffs(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    a = alphas_cumprod.to(device=t.device, dtype=torch.float32)[t].view(-1, 1, 1, 1)
    return a.sqrt(), (1.0 - a).sqrt()


def add_noise(alphas_cumprod: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The forward process ``x_t = sqrt(a_t) x0 + sqrt(1 - a_t) eps`` (same as ``DDPMScheduler.add_noise``)."""
    sa, s1a = _coeffs(alphas_cumprod, t)
    return (sa * x0.float() + s1a * noise.float()).to(x0.dtype)


def training_target(
    prediction_type: str, alphas_cumprod: torch.Tensor, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """What the network learns to output: the noise, the velocity ``sqrt(a) eps - sqrt(1-a) x0``, or x0."""
    if prediction_type == "epsilon":
        return noise
    if prediction_type == "sample":
        return x0
    if prediction_type == "v_prediction":
        sa, s1a = _coeffs(alphas_cumprod, t)
        return sa * noise - s1a * x0
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def predict_x0(
    prediction_type: str, alphas_cumprod: torch.Tensor, x_t: torch.Tensor, model_out: torch.Tensor, t: torch.Tensor
) -> torch.Tensor:
    """The clean image implied by the network output at ``x_t`` (float32, not clipped)."""
    sa, s1a = _coeffs(alphas_cumprod, t)
    x_t, model_out = x_t.float(), model_out.float()
    if prediction_type == "epsilon":
        return (x_t - s1a * model_out) / sa
    if prediction_type == "sample":
        return model_out
    if prediction_type == "v_prediction":
        return sa * x_t - s1a * model_out
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def snr(alphas_cumprod: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Signal-to-noise ratio ``a / (1 - a)`` at timesteps ``t`` (B,)."""
    a = alphas_cumprod.to(device=t.device, dtype=torch.float32)[t]
    return a / (1.0 - a)


def min_snr_weights(
    alphas_cumprod: torch.Tensor, t: torch.Tensor, *, gamma: float, prediction_type: str
) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023), expressed for the chosen prediction target, (B,)."""
    s = snr(alphas_cumprod, t).clamp_min(1e-10)  # cosine schedules reach a_T ~ 0: keep 0/0 out
    clipped = torch.clamp(s, max=gamma)
    if prediction_type == "epsilon":
        return clipped / s
    if prediction_type == "v_prediction":
        return clipped / (s + 1.0)
    if prediction_type == "sample":
        return clipped
    raise ValueError(f"unknown prediction_type {prediction_type!r}")


def per_sample_loss(
    pred: torch.Tensor, target: torch.Tensor, *, kind: str = "mse", l1_weight: float = 0.25
) -> torch.Tensor:
    """(B,) float32: mean over C, H, W of MSE, L1, or ``l1_weight * L1 + (1 - l1_weight) * MSE``
    (the homework recipe's mix)."""
    diff = pred.float() - target.float()
    mse = diff.square().mean((1, 2, 3))
    if kind == "mse":
        return mse
    l1 = diff.abs().mean((1, 2, 3))
    if kind == "l1":
        return l1
    if kind == "l1_mse":
        return l1_weight * l1 + (1.0 - l1_weight) * mse
    raise ValueError(f"unknown loss kind {kind!r}")


def diffusion_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    *,
    kind: str = "mse",
    l1_weight: float = 0.25,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Scalar float32 loss: the (optionally weighted) batch mean of :func:`per_sample_loss`."""
    per = per_sample_loss(pred, target, kind=kind, l1_weight=l1_weight)
    if weights is not None:
        per = per * weights.float()
    return per.mean()
