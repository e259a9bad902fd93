"""The learning rate and warm-up at an effective batch other than the one a preset was tuned at.

``optim.lr_scaling`` (none | sqrt | linear) and ``optim.reference_batch`` (the effective batch the preset's ``lr``
and ``lr_warmup_steps`` were tuned at): at effective batch B = batch_size x grad_accum_steps x processes,

- none:   lr unchanged, warm-up unchanged (in steps);
- sqrt:   lr x sqrt(B / reference_batch), the variance-preserving rule for Adam (Malladi et al. 2022);
- linear: lr x B / reference_batch (Goyal et al. 2017, for SGD);

and a scaled rule also sets the warm-up to ``lr_warmup_steps x reference_batch / B`` steps (at least 1 when it was
not 0), so the warm-up spans the same number of images seen. BENCHMARKS.md ("Batch and learning-rate scaling
(proxy)") measured the three rules on the digits benchmark. Pure: no torch.

Example::

    from training.config import OptimConfig
    from training.scaling import scaled_optim
    o = scaled_optim(OptimConfig(lr=1.0e-3, lr_warmup_steps=50, lr_scaling="sqrt"), effective_batch=64)
    print(o.lr, o.lr_warmup_steps)   # 0.002 12
"""

from __future__ import annotations

import math

__all__ = ["lr_factor", "scaled_optim"]


def lr_factor(rule: str, effective_batch: int, reference_batch: int) -> float:
    """The multiplier ``rule`` applies to lr at ``effective_batch``."""
    ratio = effective_batch / reference_batch
    if rule == "none":
        return 1.0
    if rule == "sqrt":
        return math.sqrt(ratio)
    if rule == "linear":
        return ratio
    raise ValueError(f"unknown optim.lr_scaling {rule!r}; choose none, sqrt or linear")


def scaled_optim(optim, effective_batch: int):
    """A copy of the ``optim`` section (:class:`training.config.OptimConfig`) with lr and warm-up steps scaled to
    ``effective_batch``; the config itself (saved in the run dir) keeps the preset's values."""
    if optim.lr_scaling == "none" or effective_batch == optim.reference_batch:
        return optim
    lr = optim.lr * lr_factor(optim.lr_scaling, effective_batch, optim.reference_batch)
    warmup = optim.lr_warmup_steps
    if warmup:
        warmup = max(1, round(warmup * optim.reference_batch / effective_batch))
    return optim.model_copy(update={"lr": lr, "lr_warmup_steps": warmup})
