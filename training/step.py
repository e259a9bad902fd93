"""One optimizer step, in named parts the trainer and ``benchmarks/bench_train.py`` both call.

- :func:`build_ema`: the ``EMAModel`` of the ``ema`` config section (decay, start step, warm-up, foreach).
- :class:`BatchSource`: micro-step ``k``'s batch from the decoded uint8 images (:func:`training.data.batch_indices`),
  as float in [-1, 1], augmented on the device when an augmentation config is given (:func:`clean_batch`).
- :func:`step_loss`: the fp32 loss of a batch; it draws the noise and timesteps from ``g`` (so a step depends only
  on (seed, rank, micro-step) through :func:`step_generator`), plus the refine phase's LPIPS term when an LPIPS net
  is given. The held-out loss calls it too.
- :func:`optimizer_step`: ``grad_accum_steps`` micro-steps under ``accelerator.accumulate``, clipping, the
  non-finite skip (:func:`skip_nonfinite`: on the device for fused AdamW, no host sync), the loss and non-finite
  counters of :class:`StepStats` (read only at log steps), and the EMA update.
- :func:`set_lr`: the LR of a step, a pure function of the step (so a resume needs no scheduler state).

Since the benchmark calls these same functions, it times exactly the trainer's step.

Example::

    import torch
    from accelerate import Accelerator
    from training.config import load_train_config
    from training.model import build_noise_scheduler, build_optimizer, build_unet
    from training.step import BatchSource, StepStats, build_ema, optimizer_step
    cfg = load_train_config("configs/train/demo.yaml", ["data.resolution=16"])
    accelerator, unet = Accelerator(cpu=True), build_unet(cfg)
    optimizer, ema = build_optimizer(unet.parameters(), cfg, device_type="cpu"), build_ema(unet, cfg.ema, "cpu")
    images = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8)
    batches = BatchSource(images, batch_size=4, seed=0, augment=cfg.augment)
    stats = StepStats.zeros("cpu")
    alphas = build_noise_scheduler(cfg).alphas_cumprod
    optimizer_step(accelerator, unet, optimizer, cfg, batches, stats, step=0, alphas_cumprod=alphas, ema=ema)
    print(stats.loss_sum / stats.loss_count)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

from training.config import AugmentConfig, EmaConfig, OptimConfig, TrainConfig

__all__ = [
    "BatchSource",
    "StepStats",
    "build_ema",
    "clean_batch",
    "optimizer_step",
    "set_lr",
    "skip_nonfinite",
    "step_generator",
    "step_loss",
]


def build_ema(unet, ema: EmaConfig, device, *, foreach: bool = True):
    """diffusers' ``EMAModel`` over ``unet``'s parameters, on ``device``, with the ``ema`` section's settings."""
    from diffusers import UNet2DModel
    from diffusers.training_utils import EMAModel

    model = EMAModel(
        unet.parameters(),
        decay=ema.decay,
        update_after_step=ema.start_step,
        use_ema_warmup=ema.warmup,
        inv_gamma=ema.inv_gamma,
        power=ema.power,
        foreach=foreach,
        model_cls=UNet2DModel,
        model_config=unet.config,
    )
    model.to(device)
    return model


def clean_batch(x, augment: AugmentConfig | None, g):
    """Float images (B, 3, H, W) in [0, 1] -> augmented (when ``augment`` is given) and in [-1, 1], in place."""
    if augment is not None:
        from training.augment import augment_batch

        x = augment_batch(x, augment, g)
    return x.mul_(2.0).sub_(1.0)


@dataclass
class BatchSource:
    """Micro-step batches from the decoded images (``images``: (N, 3, H, W) uint8 on the training device)."""

    images: object
    batch_size: int
    seed: int
    rank: int = 0
    world: int = 1
    augment: AugmentConfig | None = None  # None: no augmentation (the refine phase, or augment.enabled=false)

    def __call__(self, micro_step: int, g):
        from training.data import batch_indices, to_device

        idx = batch_indices(
            len(self.images), step=micro_step, batch_size=self.batch_size, seed=self.seed, rank=self.rank,
            world=self.world,
        )  # fmt: skip
        x = self.images[to_device(idx, self.images.device)].float().div_(255.0)  # (B, 3, H, W) in [0, 1]
        return clean_batch(x, self.augment, g)


@dataclass
class StepStats:
    """On-device counters between log steps: summed finite losses, their count, the current run of non-finite
    gradient steps and the non-finite steps since the last log (0-d tensors: adding to them never syncs)."""

    loss_sum: object
    loss_count: object
    bad_run: object
    bad_count: object

    @classmethod
    def zeros(cls, device) -> StepStats:
        import torch

        zero = torch.zeros((), device=device)
        return cls(zero.clone(), zero.clone(), zero.clone(), zero.clone())

    def add_loss(self, loss) -> None:
        import torch

        finite = torch.isfinite(loss.detach())
        self.loss_sum += torch.where(finite, loss.detach(), torch.zeros_like(self.loss_sum))
        self.loss_count += finite.float()

    def stacked(self):
        """(1, 4): loss_sum, loss_count, bad_run, bad_count, for one gather across ranks."""
        import torch

        return torch.stack([self.loss_sum, self.loss_count, self.bad_run, self.bad_count])[None]

    def next_window(self) -> None:
        """After a log step: the loss and the non-finite count start again; the run of non-finite steps goes on."""
        self.loss_sum.zero_(), self.loss_count.zero_(), self.bad_count.zero_()


def skip_nonfinite(grad_norm, optimizer, stats: StepStats, *, scaler=None) -> bool:
    """Count a non-finite gradient norm and arrange the skip of its update; True when the host must skip it.

    Four cases: a grad scaler (fp16) skips it itself; fused AdamW skips it on the device through ``found_inf``
    (no host sync); any other optimizer needs the host to skip (one sync). The norm is identical on every rank
    (the gradients are all-reduced), so every rank decides alike.
    """
    import torch

    bad = ~torch.isfinite(grad_norm)
    bad_f = bad.float()
    stats.bad_count += bad_f
    stats.bad_run = (stats.bad_run + bad_f) * bad_f
    if scaler is not None:
        return False
    inner = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer wraps the torch one
    if inner.defaults.get("fused"):
        inner.found_inf = bad_f  # fused AdamW skips the update on the device
        return False
    return bool(bad)


def set_lr(
    optimizer, optim: OptimConfig, step: int, total_steps: int, anchor: tuple[int, float] | None = None
) -> float:
    """Set (and return) the LR of optimizer step ``step``: ``optim.lr`` times the warm-up and decay schedule
    (``anchor``: where a time budget's re-plan bent the decay, see training/budget.py)."""
    from training.model import lr_lambda

    lr = optim.lr * lr_lambda(step, warmup_steps=optim.lr_warmup_steps, total_steps=total_steps,
                              schedule=optim.lr_schedule, min_ratio=optim.min_lr_ratio, anchor=anchor)  # fmt: skip
    for group in optimizer.param_groups:
        group["lr"] = lr
    return lr


def optimizer_step(
    accelerator,
    unet,
    optimizer,
    cfg: TrainConfig,
    batches,
    stats: StepStats,
    *,
    step: int,
    alphas_cumprod,
    ema=None,
    rank: int = 0,
    channels_last: bool = False,
    lpips_net=None,
    autocast=contextlib.nullcontext,
):
    """Optimizer step ``step``: ``accelerator.gradient_accumulation_steps`` micro-steps, then the EMA update.

    ``batches(micro_step, g)`` gives each micro-step's batch (B, 3, H, W) in [-1, 1] (:class:`BatchSource`).
    ``autocast`` wraps the loss: the trainer's prepared UNet autocasts itself, so only a caller with an unprepared
    model (the benchmark) passes one. Returns the last micro-step's loss (a device tensor; reading it syncs).
    """
    accum = accelerator.gradient_accumulation_steps
    max_norm = cfg.optim.max_grad_norm if cfg.optim.max_grad_norm is not None else float("inf")
    loss = None
    for a in range(accum):
        micro = step * accum + a
        g = step_generator(accelerator.device, cfg.train.seed, rank, micro)
        x0 = batches(micro, g)
        with accelerator.accumulate(unet):
            with autocast():
                loss = step_loss(unet, x0, g, cfg, alphas_cumprod, channels_last=channels_last, lpips_net=lpips_net)
            accelerator.backward(loss)
            skip = False
            if accelerator.sync_gradients:
                grad_norm = accelerator.clip_grad_norm_(unet.parameters(), max_norm)
                skip = skip_nonfinite(grad_norm, optimizer, stats, scaler=accelerator.scaler)
            if not skip:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        stats.add_loss(loss)
    if ema is not None:
        ema.step(accelerator.unwrap_model(unet).parameters())
    return loss


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
