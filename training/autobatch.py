"""``train.batch_size: auto``: probe images per second at growing batches and pick the batch to train at.

On a GPU a small UNet is far from saturated at batch 16: images per second grow with the batch until the device is
full. :func:`probe_batches` doubles the batch from ``start`` while it fits (an out-of-memory error ends the probe:
the caller's ``measure`` frees what it allocated and the batch steps back to the last one that fitted), and
:func:`choose_batch` takes the **smallest** batch within ``tolerance`` (10%) of the best throughput: past that point
a larger batch buys little speed and costs steps (the lr is then scaled to it by ``optim.lr_scaling``). With several
processes the main process probes and broadcasts its choice, so every rank trains at the same batch.

:func:`measure_images_per_s` is the CUDA measurement: a fresh UNet of the run's config, AdamW, the run's autocast
dtype and random images, ``warmup`` untimed steps then ``steps`` timed ones. The decision is pure and tested on the
CPU with an injected throughput table and a simulated out-of-memory error; on the CPU the trainer probes nothing.

Example::

    from training.autobatch import choose_batch, probe_batches
    table = {16: 900.0, 32: 1700.0, 64: 2900.0, 128: 3100.0, 256: 3150.0}
    def measure(b):
        if b > 256:
            raise MemoryError("simulated")
        return table[b]
    rows = probe_batches(measure, start=16, limit=1024, oom_errors=(MemoryError,))
    print(choose_batch(rows))      # 64: the smallest within 10% of 3,150 images/s (2,900)
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable

__all__ = ["AUTO_TOLERANCE", "PROBE_STEPS", "choose_batch", "measure_images_per_s", "probe_batches"]

AUTO_TOLERANCE = 0.10  # a batch within 10% of the best images/s is as good: prefer the smaller (more steps)
PROBE_STEPS = 5  # timed steps per batch (after 2 untimed ones): a probe of ~6 batches takes seconds on a GPU
MAX_AUTO_BATCH = 1024  # per device; the probe stops here even when memory is left


def probe_batches(
    measure: Callable[[int], float], *, start: int, limit: int, oom_errors: tuple[type[BaseException], ...]
) -> list[dict]:
    """Rows ``{"batch", "images_per_s", "oom"}`` for batches start, 2 x start, ... up to ``limit``, ending at the
    first batch whose ``measure`` raises one of ``oom_errors``."""
    rows, batch = [], start
    while batch <= limit:
        try:
            rate = measure(batch)
        except oom_errors:
            rows.append({"batch": batch, "images_per_s": None, "oom": True})
            break
        rows.append({"batch": batch, "images_per_s": round(float(rate), 2), "oom": False})
        batch *= 2
    return rows


def choose_batch(rows: list[dict], tolerance: float = AUTO_TOLERANCE) -> int:
    """The smallest batch whose images/s is within ``tolerance`` of the best row's; ValueError when none fitted."""
    fitted = [r for r in rows if not r["oom"]]
    if not fitted:
        raise ValueError(f"even batch {rows[0]['batch'] if rows else '?'} ran out of memory")
    best = max(r["images_per_s"] for r in fitted)
    return min(r["batch"] for r in fitted if r["images_per_s"] >= (1.0 - tolerance) * best)


def measure_images_per_s(cfg, device, batch: int, *, dtype=None, channels_last: bool = False,
                         steps: int = PROBE_STEPS, warmup: int = 2) -> float:  # fmt: skip
    """Training images per second of a fresh UNet of ``cfg`` at ``batch`` on ``device`` (forward, MSE, backward,
    AdamW step under autocast to ``dtype``); frees its memory before returning or raising."""
    import torch

    from training.model import build_optimizer, build_unet

    parts: dict = {}
    try:
        unet = parts["unet"] = build_unet(cfg).to(device).train()
        if channels_last:
            unet = parts["unet"] = unet.to(memory_format=torch.channels_last)
        opt = parts["opt"] = build_optimizer(unet.parameters(), cfg, device_type=device.type)
        size = cfg.data.resolution
        x = parts["x"] = torch.randn(batch, unet.config.in_channels, size, size, device=device)
        t = torch.randint(0, cfg.noise.num_train_timesteps, (batch,), device=device)
        seconds = _timed_steps(unet, opt, x, t, dtype=dtype, steps=steps, warmup=warmup)
        return batch * steps / seconds
    finally:
        parts.clear()
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def _timed_steps(unet, opt, x, t, *, dtype, steps: int, warmup: int) -> float:
    """Seconds of ``steps`` training steps on the fixed batch ``x`` (B, C, H, W), after ``warmup`` untimed ones."""
    import torch

    def step():
        with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
            out = unet(x, t).sample
        torch.nn.functional.mse_loss(out.float(), x).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def sync():
        if x.device.type == "cuda":
            torch.cuda.synchronize(x.device)

    for _ in range(warmup):
        step()
    sync()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return time.perf_counter() - t0
