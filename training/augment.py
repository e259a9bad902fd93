"""Batch augmentation on the training device: the homework recipe's list, each switchable with its strength.

Resize + centre crop happen once at decode time (training/data.py). Here, on a whole ``(B, 3, H, W)`` float batch
in [0, 1], with per-image random parameters drawn from one ``torch.Generator`` (so a step's augmentation depends
only on that generator's seed): horizontal flip, rotation (+- degrees, reflection padding), colour jitter
(brightness, contrast, saturation, hue as a rotation of the YIQ chroma plane), random Gaussian blur and random
unsharp-mask sharpening. No PIL, no per-image Python loop.

Example::

    import torch
    from training.augment import augment_batch
    from training.config import AugmentConfig
    x = torch.rand(8, 3, 64, 64)
    y = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(0))   # (8, 3, 64, 64) in [0, 1]
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from training.config import AugmentConfig

__all__ = ["augment_batch", "hflip", "rotate", "color_jitter", "gaussian_blur", "sharpen"]

_LUMA = (0.299, 0.587, 0.114)


def _uniform(n: int, lo: float, hi: float, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) * (hi - lo) + lo


def _chance(n: int, p: float, g: torch.Generator, device) -> torch.Tensor:
    return torch.rand(n, generator=g, device=device) < p


def hflip(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Flip the images where ``mask`` (B,) is true."""
    return torch.where(mask[:, None, None, None], x.flip(-1), x)


def rotate(x: torch.Tensor, degrees: torch.Tensor) -> torch.Tensor:
    """Rotate each image by its angle (B,) in degrees about the centre, reflecting at the border."""
    rad = degrees * (math.pi / 180.0)
    cos, sin = torch.cos(rad), torch.sin(rad)
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], -1), torch.stack([sin, cos, zero], -1)], 1)  # (B, 2, 3)
    grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def _grey(x: torch.Tensor) -> torch.Tensor:
    w = x.new_tensor(_LUMA).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def color_jitter(
    x: torch.Tensor, brightness: torch.Tensor, contrast: torch.Tensor, saturation: torch.Tensor, hue: torch.Tensor
) -> torch.Tensor:
    """Per-image factors (B,): brightness/contrast/saturation multiply (1 = unchanged); hue is a fraction of a turn."""
    x = x * brightness.view(-1, 1, 1, 1)
    mean = _grey(x).mean((2, 3), keepdim=True)
    x = (x - mean) * contrast.view(-1, 1, 1, 1) + mean
    grey = _grey(x)
    x = (x - grey) * saturation.view(-1, 1, 1, 1) + grey
    # Hue: rotate the (I, Q) chroma plane of YIQ, which keeps luma fixed.
    to_yiq = x.new_tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
    yiq = torch.einsum("ij,bjhw->bihw", to_yiq, x)
    ang = hue * (2 * math.pi)
    cos, sin = torch.cos(ang).view(-1, 1, 1), torch.sin(ang).view(-1, 1, 1)
    i, q = yiq[:, 1], yiq[:, 2]
    yiq = torch.stack([yiq[:, 0], i * cos - q * sin, i * sin + q * cos], 1)
    x = torch.einsum("ij,bjhw->bihw", torch.linalg.inv(to_yiq), yiq)
    return x.clamp(0.0, 1.0)


def _gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """(B, 2r+1) normalised 1-D Gaussian kernels."""
    t = torch.arange(-radius, radius + 1, device=sigma.device, dtype=sigma.dtype)
    k = torch.exp(-0.5 * (t[None] / sigma[:, None].clamp_min(1e-3)) ** 2)
    return k / k.sum(1, keepdim=True)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, max_sigma: float | None = None) -> torch.Tensor:
    """Blur each image with its own sigma (B,) pixels: a separable depthwise convolution, reflect padding.

    ``max_sigma`` (an upper bound of ``sigma``) sets the kernel radius without reading ``sigma`` on the host.
    """
    b, c, h, w = x.shape
    bound = float(sigma.max()) if max_sigma is None else max_sigma
    radius = max(1, int(math.ceil(3 * bound)))
    radius = min(radius, (min(h, w) - 1) // 2)
    k = _gaussian_kernels(sigma.to(x.dtype), radius)  # (B, K)
    k = k.repeat_interleave(c, 0)  # (B*C, K): one kernel per (image, channel)
    y = x.reshape(1, b * c, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), k[:, None, None, :], groups=b * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k[:, None, :, None], groups=b * c)
    return y.reshape(b, c, h, w)


def sharpen(x: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    """Unsharp mask: ``x + amount * (x - blur(x))`` with a 1-pixel Gaussian, per-image amount (B,)."""
    blurred = gaussian_blur(x, torch.ones(x.shape[0], device=x.device, dtype=x.dtype), 1.0)
    return (x + amount.view(-1, 1, 1, 1) * (x - blurred)).clamp(0.0, 1.0)


def augment_batch(x: torch.Tensor, cfg: AugmentConfig, g: torch.Generator) -> torch.Tensor:
    """Augment ``x`` (B, 3, H, W) float in [0, 1] on its device; returns the same shape and range."""
    if not cfg.enabled:
        return x
    n, dev = x.shape[0], x.device
    if cfg.hflip_p > 0:
        x = hflip(x, _chance(n, cfg.hflip_p, g, dev))
    if cfg.rotate_degrees > 0:
        x = rotate(x, _uniform(n, -cfg.rotate_degrees, cfg.rotate_degrees, g, dev))
    if cfg.brightness or cfg.contrast or cfg.saturation or cfg.hue:
        x = color_jitter(
            x,
            _uniform(n, 1 - cfg.brightness, 1 + cfg.brightness, g, dev),
            _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, g, dev),
            _uniform(n, 1 - cfg.saturation, 1 + cfg.saturation, g, dev),
            _uniform(n, -cfg.hue, cfg.hue, g, dev),
        )
    if cfg.blur_p > 0:
        mask = _chance(n, cfg.blur_p, g, dev)
        sigma = _uniform(n, 0.1, cfg.blur_sigma_max, g, dev)
        x = torch.where(mask[:, None, None, None], gaussian_blur(x, sigma, cfg.blur_sigma_max), x)
    if cfg.sharpen_p > 0 and cfg.sharpen_amount > 0:
        mask = _chance(n, cfg.sharpen_p, g, dev)
        amount = _uniform(n, 0.0, cfg.sharpen_amount, g, dev)
        x = torch.where(mask[:, None, None, None], sharpen(x, amount), x)
    return x.clamp(0.0, 1.0)
