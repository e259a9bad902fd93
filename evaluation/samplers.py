"""The samplers: named diffusers schedulers with their settings, built on a model's noise schedule.

:data:`SAMPLERS` maps a name (``ptt-sample --scheduler``, ``ptt-fid sweep --scheduler``, the trainer's
``train.sample_scheduler`` / ``eval.fid_scheduler``) to a diffusers scheduler class and the settings it runs with;
:func:`build_scheduler` builds one on the noise schedule a model was trained with (the :data:`TRAINING_KEYS` of
a pipeline's ``scheduler_config.json``). :data:`DEFAULT_SAMPLER` is what the toolkit samples with;
:data:`PIPELINE_SAMPLER` is what the exported pipeline's ``scheduler/`` holds (the default, when diffusers'
``DDPMPipeline`` can run it). No torch at import; the sampling loop is ``evaluation.sample``.

Example::

    from evaluation.samplers import DEFAULT_SAMPLER, build_scheduler, num_evaluations
    cfg = {"beta_schedule": "squaredcos_cap_v2", "prediction_type": "sample"}
    sched = build_scheduler(DEFAULT_SAMPLER, cfg)           # a diffusers scheduler, ready for set_timesteps
    print(num_evaluations("heun_karras", cfg, 10))           # 19: Heun costs two UNet evaluations a step
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field

__all__ = [
    "DEFAULT_SAMPLER",
    "DEFAULT_STEPS",
    "PIPELINE_SAMPLER",
    "SAMPLERS",
    "SCHEDULERS",
    "TRAINING_KEYS",
    "SampleError",
    "Sampler",
    "build_scheduler",
    "num_evaluations",
    "steps_for_evaluations",
]


# The noise schedule a model was trained with (and its x0 clipping): the only keys a sampler takes from a
# pipeline's scheduler config.
# Everything else (solver order, spacing, clipping, ...) belongs to the sampler, so a pipeline exported with one
# sampler's scheduler still builds every other sampler exactly as named here.
TRAINING_KEYS = (
    "num_train_timesteps",
    "beta_start",
    "beta_end",
    "beta_schedule",
    "trained_betas",
    "prediction_type",
    "rescale_betas_zero_snr",
    "clip_sample",  # the trainer's noise.clip_sample (DDPM and DDIM clip the predicted x0 to [-1, 1] with it)
    "clip_sample_range",
)


@dataclass(frozen=True)
class Sampler:
    """A diffusers scheduler class and the settings it runs with (on top of the model's noise schedule)."""

    scheduler_class: str
    options: dict = field(default_factory=dict)
    default_steps: int = 50
    about: str = ""
    # Whether diffusers' DDPMPipeline runs it as-is: that pipeline neither scales the model input nor multiplies
    # the first noise by init_noise_sigma, and looks the first step up by timestep value.
    for_ddpm_pipeline: bool = True


# Clip the predicted x0 to [-1, 1] as DDPM and DDIM do (clip_sample): dynamic thresholding with a maximum of 1.0
# is that clipping. lambda_min_clipped: the cosine schedule's log-SNR near t = 1000 is numerically unusable
# (diffusers PR #3314; its tests use -5.1); it leaves the linear schedule's steps as they are.
_DPM_FIXES = {"thresholding": True, "sample_max_value": 1.0, "lambda_min_clipped": -5.1}

SAMPLERS: dict[str, Sampler] = {
    "ddpm": Sampler("DDPMScheduler", {}, 1000, "ancestral, as trained; stochastic"),
    "ddpm_trailing": Sampler(
        "DDPMScheduler", {"timestep_spacing": "trailing"}, 50, "ancestral on trailing-spaced steps; stochastic"
    ),
    "ddim": Sampler("DDIMScheduler", {}, 50, "eta 0, leading spacing (diffusers' default)"),
    "ddim_trailing": Sampler("DDIMScheduler", {"timestep_spacing": "trailing"}, 50, "eta 0, trailing spacing"),
    "dpmsolver++": Sampler(
        "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++"}, 20, "diffusers' defaults (order 2)"
    ),
    "dpm2": Sampler(
        "DPMSolverMultistepScheduler", {"algorithm_type": "dpmsolver++", **_DPM_FIXES}, 20, "order 2, x0 clipped"
    ),
    "dpm3": Sampler(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "dpmsolver++", "solver_order": 3, **_DPM_FIXES},
        20,
        "order 3, x0 clipped",
    ),
    "dpm2_sde": Sampler(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", **_DPM_FIXES},
        50,
        "SDE DPM-Solver++ order 2, x0 clipped; stochastic",
    ),
    "dpm2_sde_karras": Sampler(
        "DPMSolverMultistepScheduler",
        {"algorithm_type": "sde-dpmsolver++", "use_karras_sigmas": True, **_DPM_FIXES},
        35,
        "SDE DPM-Solver++ order 2 on Karras et al.'s sigma spacing, x0 clipped; stochastic",
        for_ddpm_pipeline=False,  # on the cosine schedule several first steps share t = 998
    ),
    "unipc": Sampler("UniPCMultistepScheduler", {}, 20, "diffusers' defaults (order 2)"),
    "unipc3": Sampler(
        "UniPCMultistepScheduler",
        {"solver_order": 3, "thresholding": True, "sample_max_value": 1.0, "timestep_spacing": "trailing"},
        20,
        "order 3, x0 clipped, trailing spacing",
    ),
    "heun_karras": Sampler(
        "HeunDiscreteScheduler",
        {"use_karras_sigmas": True},
        10,
        "Karras et al.'s 2nd-order Heun (two UNet evaluations a step)",
        for_ddpm_pipeline=False,  # needs scale_model_input and init_noise_sigma
    ),
}
SCHEDULERS = tuple(SAMPLERS)
# ptt-sample's default and the trainer's grids and periodic FID: on the sampler benchmark (BENCHMARKS.md, "Fast
# samplers"; a proxy FD on 8x8 digits, not a face FID) no sampler came within 5% of 1000-step DDPM on all three
# models at <= 50 UNet evaluations; this one came closest on the worst of them, at its default_steps.
DEFAULT_SAMPLER = "dpm2_sde_karras"
# The exported pipeline's scheduler/: the default when DDPMPipeline can run it as-is, else the best one it can.
PIPELINE_SAMPLER = DEFAULT_SAMPLER if SAMPLERS[DEFAULT_SAMPLER].for_ddpm_pipeline else "dpm2_sde"
DEFAULT_STEPS = {name: s.default_steps for name, s in SAMPLERS.items()}


class SampleError(RuntimeError):
    """Bad input to sampling (model, output folder, options); the message names it and the fix."""


def build_scheduler(name: str, scheduler_config: dict):
    """A fresh diffusers scheduler for sampler ``name``: the model's noise schedule (:data:`TRAINING_KEYS` of a
    pipeline's scheduler config) with the sampler's own settings."""
    import diffusers

    if name not in SAMPLERS:
        raise SampleError(f"unknown scheduler {name!r}; choose one of {', '.join(SCHEDULERS)}")
    spec = SAMPLERS[name]
    cls = getattr(diffusers, spec.scheduler_class)
    accepted = inspect.signature(cls.__init__).parameters  # e.g. DPM-Solver has no clip_sample (it thresholds)
    config = {k: v for k, v in dict(scheduler_config).items() if k in TRAINING_KEYS and k in accepted}
    return cls.from_config({**config, **spec.options})


def num_evaluations(name: str, scheduler_config: dict, steps: int) -> int:
    """UNet evaluations per image for ``steps`` steps of sampler ``name`` (Heun: two a step, one on the last)."""
    sched = build_scheduler(name, scheduler_config)
    sched.set_timesteps(int(steps))
    return len(sched.timesteps)


def steps_for_evaluations(name: str, scheduler_config: dict, evaluations: int) -> int:
    """The most steps of sampler ``name`` that cost at most ``evaluations`` UNet evaluations per image (>= 1)."""
    steps = max(1, int(evaluations))
    while steps > 1 and num_evaluations(name, scheduler_config, steps) > evaluations:
        steps -= 1
    return steps
