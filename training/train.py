"""Train a DDPM (diffusers UNet2DModel + DDPMScheduler) on the curated faces, with accelerate.

Reads top to bottom: config -> :func:`setup` (accelerator, data, model, EMA, optimizer, resume, run directory) ->
the loop of :func:`train` over named steps (``set_lr``, ``optimizer_step`` from training/step.py, :func:`log_row`,
:func:`periodic_eval`, :func:`save`) -> :func:`finish` (export, plots, summary).

    accelerate launch training/train.py --config configs/train/demo.yaml data.dataset_dir=demo_out/dataset \\
        run_dir=demo_out/run [--dry-run] [--resume latest|PATH]
    python training/train.py --config configs/train/homework_unet.yaml data.dataset_dir=out/dataset train.max_steps=100

Any number of processes (one GPU, many GPUs, several machines, or the CPU: whatever ``accelerate config`` says).

Run directory (contracts.md section 4)::

    <run_dir>/config.yaml                      resolved config (every default written out)
    <run_dir>/checkpoints/checkpoint-<step>/   accelerator.save_state + meta.json; keep-N rotation; atomic
    <run_dir>/samples/step-<step>.png          sample grids from the EMA weights (fast DDIM sampler)
    <run_dir>/logs/                            tensorboard (or wandb)
    <run_dir>/metrics.jsonl                    one JSON object per logged step / evaluation
    <run_dir>/pipeline/                        exported DDPMPipeline (EMA weights, safetensors) + training_config.yaml
    <run_dir>/best/                            the same for the best checkpoint by FID (when eval.fid_every_steps)
    <run_dir>/curves.png, samples_over_time.png
    <run_dir>/autobatch.json                   train.batch_size=auto on CUDA: the images/s probe and the choice

Batch, lr and time: ``optim.lr_scaling`` scales lr and warm-up to the effective batch (training/scaling.py);
``train.batch_size=auto`` probes the batch on CUDA (:func:`resolve_auto_batch`, training/autobatch.py);
``train.time_budget`` plans the steps from measured times (:func:`plan_budget`, training/budget.py).

Determinism and resume: the batch order, augmentation, noise and timesteps of micro-step k on rank r come from
generators seeded by (seed, r, k) (training/data.py), and the LR is a pure function of the step, so
``--resume latest`` continues exactly (model, optimizer, scaler, EMA, step and RNG are in the checkpoint); a
change of world size, batch, accumulation or seed is logged as a warning, a checkpoint that does not fit the model
is a one-line error, and resuming an older checkpoint sets the newer ones aside (``abandoned-checkpoint-<step>``).
SIGTERM/SIGINT write a checkpoint and exit 0 (a second Ctrl-C: one line, exit 130). A periodic evaluation that
raises checkpoints its step, then stops (exit 5) with one line naming it. The main process holds the run
directory's lock (``<run_dir>/.ptt-lock``) for the whole run: a second trainer on it exits 2. A non-finite
gradient skips the optimizer step (on the device for fused AdamW, no host sync) and is counted;
``train.max_nonfinite_in_row`` in a row stop the run with a checkpoint (checked at log steps, the loop's only
host-device sync).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import signal
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script (accelerate launch training/train.py): repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.configio import ConfigError, dump_config  # noqa: E402
from common.fileio import atomic_write  # noqa: E402
from training.accel import check_tracker, resolve_mixed_precision  # noqa: E402
from training.checkpoint import (  # noqa: E402
    RunState,
    list_checkpoints,
    load_checkpoint,
    lock_run_dir,
    resolve_checkpoint,
    run_dir_error_line,
    run_identity,
    save_checkpoint,
    set_aside_later_checkpoints,
)
from training.config import TrainConfig, derived_figures, load_train_config  # noqa: E402
from training.metrics import append_metrics, latest_fid, truncate_metrics  # noqa: E402
from training.scaling import scaled_optim  # noqa: E402
from training.signals import StopFlag  # noqa: E402
from training.step import BatchSource, StepStats, build_ema, optimizer_step, set_lr  # noqa: E402

log = logging.getLogger("ptt.train")

EXIT_OK, EXIT_CONFIG, EXIT_NONFINITE, EXIT_DIVERGED, EXIT_EVAL, EXIT_INTERRUPTED = 0, 2, 3, 4, 5, 130


# ----------------------------------------------------------------------------------------------------------------
# Command line


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="ptt-train", description=__doc__.split("\n\n")[0])
    p.add_argument("--config", required=True, help="YAML under configs/train/")
    p.add_argument("overrides", nargs="*", help="key.sub=value overrides, e.g. train.max_steps=100")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and derived figures, then exit")
    p.add_argument("--resume", default=None, help="'latest' (starts fresh when there is none) or a checkpoint path")
    return p.parse_intermixed_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cfg = None
    try:
        cfg = load_train_config(args.config, args.overrides)
        if args.dry_run:
            return dry_run(cfg)
        return train(cfg, resume=args.resume)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:  # a second Ctrl-C (the first one checkpoints): stop now, in one line
        print("error: interrupted; --resume latest continues from the last checkpoint", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # a full disk, a read-only run_dir: one line, not torch's or safetensors' traceback
        line = run_dir_error_line(exc, cfg.run_dir if cfg is not None else None)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        return EXIT_CONFIG


def dry_run(cfg: TrainConfig) -> int:
    from training.data import load_split
    from training.model import build_unet, count_parameters

    check_tracker(cfg.train.log_with)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    ds = load_split(cfg.data.dataset_dir, cfg.data.train_split, hub_dataset=cfg.data.hub_dataset)
    n = len(ds) if cfg.data.max_images is None else min(len(ds), cfg.data.max_images)
    precision = resolve_mixed_precision(cfg.train.mixed_precision)
    figs = {"parameters": count_parameters(build_unet(cfg)), **derived_figures(cfg, n, world)}
    figs["mixed_precision"] = f"{precision.effective} (from {precision.source})"
    if cfg.train.batch_size == "auto":
        figs["batch_size"] = "auto: probed at the start on CUDA (training/autobatch.py); the figures here are at 16"
    if cfg.train.time_budget is not None:
        figs["time_budget"] = (
            f"{cfg.train.time_budget} ({cfg.train.time_budget_s:.0f} s): total_steps is planned after a warm-up "
            "from the measured step time" + (", at most the figure above" if figs["total_steps"] < 10**9 else "")
        )
    print(dump_config(cfg), end="")
    print("# derived")
    for k, v in figs.items():
        print(f"# {k}: {v:,}" if isinstance(v, int) else f"# {k}: {v}")
    return EXIT_OK


# ----------------------------------------------------------------------------------------------------------------
# The run: the loop over named steps


def train(cfg: TrainConfig, *, resume: str | None = None) -> int:
    """Train ``cfg`` (resuming ``resume``: 'latest' or a checkpoint path); returns the exit code."""
    with contextlib.ExitStack() as held:  # the run directory's lock: released however the run ends
        return train_owned(cfg, resume, held)


def train_owned(cfg: TrainConfig, resume: str | None, held: contextlib.ExitStack) -> int:
    from tqdm.auto import tqdm

    run = setup(cfg, resume, held)
    cfg = run.cfg  # train.batch_size=auto is resolved there
    t, state, accelerator = cfg.train, run.state, run.accelerator
    stats, clock, stop = StepStats.zeros(accelerator.device), Clock(state.step), StopFlag()
    stop.install()
    exit_code, reason = EXIT_OK, "done"
    pbar = tqdm(total=run.total_steps, initial=state.step, disable=not run.is_main, desc="train", dynamic_ncols=True)
    if run.budget is not None and state.budget.step_s is not None and state.step < run.total_steps:
        plan_budget(run, pbar)  # resumed with steps left: re-plan from what the run measured
    while state.step < run.total_steps:
        set_lr(run.optimizer, run.optim, state.step, run.total_steps, run.lr_anchor)  # a pure function of the step
        optimizer_step(
            accelerator, run.unet, run.optimizer, cfg, run.batches, stats, step=state.step,
            alphas_cumprod=run.alphas_cumprod, ema=run.ema, rank=accelerator.process_index,
            channels_last=run.channels_last, lpips_net=run.lpips_net,
        )  # fmt: skip
        state.step += 1
        if run.budget is not None and run.budget.after_step():  # the warm-up is timed: the first plan
            plan_budget(run, pbar)
        if run.posthoc is not None:  # every step; a snapshot every ema.posthoc.snapshot_every_steps and at the end
            run.posthoc.update(
                accelerator.unwrap_model(run.unet).parameters(), state.step, last=state.step == run.total_steps
            )
        pbar.update(1)
        if run.due(t.log_every_steps):  # the only host-device sync of a normal step
            run_of_bad = log_row(run, stats, clock, pbar)
            if run_of_bad >= t.max_nonfinite_in_row:
                exit_code, reason = EXIT_NONFINITE, nonfinite_reason(run_of_bad, t.max_nonfinite_in_row)
                break
        with clock.paused():  # evaluation and checkpoint time is left out of images_per_s
            with budget_timed(run, "eval", eval_due(run)):
                failed = periodic_eval(run)
            stopping = stop_agreed(run, stop)
            if stopping or failed or run.due(t.checkpoint_every_steps):
                if not (stopping or failed):
                    replan_at_checkpoint(run, pbar)
                with budget_timed(run, "checkpoint", True):
                    save(run)  # a failed evaluation costs no training: this step is checkpointed before the stop
        if failed:
            exit_code, reason = EXIT_EVAL, f"{failed}; checkpointed"
            break
        if stopping:
            reason = f"stopped by {signal.Signals(stop.signum).name if stop.signum else 'a signal on another rank'}"
            break
    pbar.close()
    stop.uninstall()
    return finish(run, exit_code, reason)


def replan_at_checkpoint(run: Run, pbar) -> None:
    """``train.time_budget``: after the warm-up, each checkpoint re-plans the steps left (saved with it)."""
    if run.budget is not None and run.budget.planned and run.state.step < run.total_steps:
        plan_budget(run, pbar)


@dataclass
class Run:
    """What the loop's named steps share, built once by :func:`setup`."""

    cfg: TrainConfig
    accelerator: Any
    unet: Any  # prepared by the accelerator (DDP-wrapped with several processes)
    optimizer: Any  # prepared
    ema: Any  # diffusers EMAModel, or None with ema.enabled=false
    posthoc: Any  # training.posthoc_ema.PosthocEma, or None with ema.posthoc.enabled=false
    eval_unet: Any  # a UNet the EMA weights are copied into for sampling and export
    state: RunState
    batches: BatchSource
    test_u8: Any  # (N, 3, H, W) uint8 on the CPU, or None: no held-out loss or FID
    alphas_cumprod: Any  # (T,) float32 on the device
    scheduler_config: dict
    config_yaml: str  # the resolved config, stored in the run dir, every checkpoint and every export
    custom_objects: list[str]  # the names registered for checkpointing, in order
    pusher: Any  # training.hub.HubPusher
    total_steps: int
    effective_batch: int
    channels_last: bool
    lpips_net: Any  # the refine phase's LPIPS net, or None
    optim: Any  # the optim section with lr and warm-up scaled to effective_batch (training/scaling.py)
    budget: Any = None  # training.budget.BudgetClock with train.time_budget, else None
    budget_cap: int | None = None  # the steps max_steps / num_epochs allow; None: the budget alone decides

    @property
    def lr_anchor(self) -> tuple[int, float] | None:
        """Where a time budget's re-plan bent the lr decay (None: the plain schedule)."""
        return None if self.state.budget is None else self.state.budget.anchor

    @property
    def run_dir(self) -> Path:
        return Path(self.cfg.run_dir)

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def due(self, every: int | None) -> bool:
        """Whether a periodic task with period ``every`` (None: never) falls on this step or the last one."""
        step = self.state.step
        return every is not None and (step % every == 0 or step == self.total_steps)


class Clock:
    """Wall time between log steps, less the pauses (evaluation, checkpoints), for ``images_per_s``."""

    def __init__(self, step: int) -> None:
        self.t, self.step = time.perf_counter(), step

    def rate(self, step: int, images_per_step: int) -> float:
        """Images per second since the last call (or the start), and restart the count at ``step``."""
        now = time.perf_counter()
        rate = (step - self.step) * images_per_step / (now - self.t)
        self.t, self.step = now, step
        return rate

    @contextlib.contextmanager
    def paused(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.t += time.perf_counter() - t0


def setup(cfg: TrainConfig, resume: str | None, held: contextlib.ExitStack) -> Run:
    """Accelerator, run directory lock and check, data, model, EMA, optimizer, resume, run directory, trackers,
    banner. The run directory's lock goes into ``held``: taken before its checkpoints are read when the folder
    exists, else just before the folder is first written (so a run that cannot start leaves nothing behind)."""
    import torch
    from accelerate.utils import set_seed
    from diffusers import UNet2DModel

    from training.accel import build_accelerator, init_trackers
    from training.data import load_images
    from training.hub import HubPusher
    from training.model import build_noise_scheduler, build_optimizer
    from training.monitor import check_fid_weights
    from training.posthoc_ema import build_posthoc_ema

    t, d, run_dir = cfg.train, cfg.data, Path(cfg.run_dir)
    check_tracker(t.log_with)
    # -- accelerator: mixed precision from train.mixed_precision, else from accelerate launch / accelerate config --
    accelerator, precision = build_accelerator(cfg)
    world, device = accelerator.num_processes, accelerator.device
    set_seed(t.seed)  # identical initial weights on every rank
    if t.tf32 and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    owned = lock_run_dir(accelerator, run_dir, held, if_exists=True)  # another trainer may be rotating it
    ckpt = checked_checkpoint(cfg, resume)

    # -- data: decoded once, kept as uint8 on the training device ----------------------------------------------
    source = {"resolution": d.resolution, "image_column": d.image_column, "hub_dataset": d.hub_dataset}
    train_u8 = load_images(d.dataset_dir, split=d.train_split, max_images=d.max_images, **source).to(device)
    test_u8 = None
    if d.test_split and (cfg.eval.heldout_every_steps or cfg.eval.fid_every_steps):
        test_u8 = load_images(d.dataset_dir, split=d.test_split, required=False, **source)
        if test_u8 is None:
            log.warning("no %r split: held-out loss and FID are off", d.test_split)
    cfg = resolve_auto_batch(cfg, accelerator, len(train_u8), ckpt, precision=precision.effective)
    t = cfg.train
    figs = derived_figures(cfg, len(train_u8), world)
    if cfg.eval.fid_every_steps and test_u8 is not None:  # fail now, not after hours
        if d.dataset_dir is None:
            raise ConfigError(
                "eval.fid_every_steps needs data.dataset_dir (FID reads its test split); set it or "
                "eval.fid_every_steps=null"
            )
        check_fid_weights(cfg)

    # -- model, noise schedule, EMA, optimizer ----------------------------------------------------------------
    unet, lpips_net, augment_on, channels_last = build_model(cfg, device, fresh=ckpt is None)
    noise_sched = build_noise_scheduler(cfg)
    ema = build_ema(unet, cfg.ema, device) if cfg.ema.enabled else None
    eval_unet = UNet2DModel.from_config(unet.config).to(device).requires_grad_(False).eval()
    optimizer = build_optimizer(unet.parameters(), cfg, device_type=device.type)
    if t.compile:
        unet.compile()
    unet, optimizer = accelerator.prepare(unet, optimizer)
    # post-hoc EMA (ema.posthoc): power-function profiles on the device and their snapshots; None when off
    posthoc = build_posthoc_ema(cfg.ema.posthoc, accelerator.unwrap_model(unet), run_dir,
                                is_main=accelerator.is_main_process, resume_from=ckpt)  # fmt: skip
    state = RunState()
    custom_objects = []
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
        custom_objects.append("ema")
    accelerator.register_for_checkpointing(state)
    custom_objects.append("run_state")
    if posthoc is not None:  # last, so the other objects keep their checkpoint indices
        accelerator.register_for_checkpointing(posthoc)
        custom_objects.append("posthoc_ema")
    run = Run(
        cfg=cfg, accelerator=accelerator, unet=unet, optimizer=optimizer, ema=ema, posthoc=posthoc,
        eval_unet=eval_unet, state=state,
        batches=BatchSource(train_u8, t.batch_size, t.seed, accelerator.process_index, world,
                            cfg.augment if augment_on else None),
        test_u8=test_u8, alphas_cumprod=noise_sched.alphas_cumprod.to(device),
        scheduler_config=dict(noise_sched.config), config_yaml=dump_config(cfg), custom_objects=custom_objects,
        pusher=None, total_steps=figs["total_steps"], effective_batch=figs["effective_batch"],
        channels_last=channels_last, lpips_net=lpips_net, optim=scaled_optim(cfg.optim, figs["effective_batch"]),
    )  # fmt: skip

    resume_from(run, ckpt, resume)
    if t.time_budget is not None:
        start_budget(run, cap=None if t.max_steps is None and t.num_epochs is None else figs["total_steps"])
    # -- the run directory: written only once the data, model, LPIPS and checkpoint are known good --
    if not owned:
        lock_run_dir(accelerator, run_dir, held)
    if run.is_main:
        (run_dir / "samples").mkdir(parents=True, exist_ok=True)
        atomic_write(run_dir / "config.yaml", run.config_yaml)
    init_trackers(accelerator, cfg, resumed=ckpt is not None)  # wandb continues its run on --resume
    run.pusher = HubPusher(cfg.hub, run_dir, checkpoint_every_steps=t.checkpoint_every_steps, enabled=run.is_main)
    if run.is_main:
        log_banner(run, figs, precision_source=precision.source, augment_on=augment_on)
    return run


# ----------------------------------------------------------------------------------------------------------------
# The time budget (train.time_budget): the planning is in training/budget.py; these are the loop's hooks


def start_budget(run: Run, *, cap: int | None) -> None:
    """Start this session's budget clock: a new budget, or the one a resumed checkpoint carries (what is left)."""
    from training.budget import BudgetClock, BudgetState

    t, state = run.cfg.train, run.state
    if state.budget is None:
        state.budget = BudgetState(budget_s=t.time_budget_s)
    elif state.budget.budget_s != t.time_budget_s:
        log.info("train.time_budget: %s now (was %.0f s); %.0f s already spent", t.time_budget,
                 state.budget.budget_s, state.budget.spent_s)  # fmt: skip
        state.budget.budget_s = t.time_budget_s
    if state.budget.total_steps is not None:  # the last plan, until this session's warm-up re-plans
        run.total_steps = state.budget.total_steps
    run.budget = BudgetClock(state.budget)
    run.budget_cap = cap


def budget_timed(run: Run, kind: str, due: bool):
    """Time an evaluation or checkpoint for the budget (a no-op without one, or when nothing is due)."""
    return run.budget.timed(kind) if run.budget is not None and due else contextlib.nullcontext()


def eval_due(run: Run) -> bool:
    """Whether :func:`periodic_eval` does anything at this step."""
    e, t = run.cfg.eval, run.cfg.train
    held_out = run.test_u8 is not None and (run.due(e.heldout_every_steps) or run.due(e.fid_every_steps))
    return run.due(t.sample_every_steps) or held_out


def budget_priors(run: Run, step_s: float) -> tuple[float, float]:
    """(seconds of one full evaluation, evaluation seconds per step) guessed from the step time, used until an
    evaluation is timed (:func:`training.budget.eval_prior_s`)."""
    from training.budget import eval_prior_s

    t, e = run.cfg.train, run.cfg.eval
    kinds = [(t.sample_every_steps, t.sample_num_images * t.sample_steps)]
    if run.test_u8 is not None:
        kinds += [(e.fid_every_steps, e.fid_num_images * e.fid_steps), (e.heldout_every_steps, 0.0)]
    batch = t.batch_size * t.grad_accum_steps
    full = sum(eval_prior_s(step_s, batch_size=batch, images_x_steps=work) for every, work in kinds if every)
    per_step = sum(
        eval_prior_s(step_s, batch_size=batch, images_x_steps=work) / every for every, work in kinds if every
    )
    return full, per_step


def plan_budget(run: Run, pbar) -> None:
    """Collective: (re-)plan the total steps in the time budget from what was measured; the main process decides
    and broadcasts, so every rank runs the same schedule. Logs the plan and appends it to metrics.jsonl."""
    from training.budget import BudgetState
    from training.model import decay_progress

    clock, state, t = run.budget, run.state, run.cfg.train
    clock.account()
    b = state.budget
    warm = run.optim.lr_warmup_steps
    progress = 0.0
    if state.step >= warm:
        progress = decay_progress(state.step, warmup_steps=warm, total_steps=run.total_steps, anchor=run.lr_anchor)
    eval_full, eval_per_step = budget_priors(run, b.step_s or 0.0)
    if b.total_steps is None and b.budget_s < (minimum := b.minimum_s(elapsed_s=0.0, eval_prior_s=eval_full)):
        raise ConfigError(
            f"train.time_budget={t.time_budget}: too short for this run here; it needs at least "
            f"{math.ceil(minimum)} s "
            f"({state.step} steps so far, one more, the final evaluation, checkpoint and export); raise it"
        )
    b.replan(step=state.step, progress=progress, cap=run.budget_cap, eval_prior_s=eval_full,
             overhead_prior_s=eval_per_step)  # fmt: skip
    if run.accelerator.num_processes > 1:  # the main process's measurements decide for every rank
        from accelerate.utils import broadcast_object_list

        state.budget = clock.state = BudgetState.from_state_dict(broadcast_object_list([b.state_dict()])[0])
    b = state.budget
    clock.planned = True
    run.total_steps = b.total_steps
    pbar.total = b.total_steps
    pbar.refresh()
    row = {"step": state.step, "budget_s": b.budget_s, "budget_spent_s": round(b.spent_s, 1),
           "budget_step_s": round(b.step_s or 0.0, 4), "budget_planned_steps": b.total_steps,
           "budget_estimated_end_s": b.plans[-1][2]}  # fmt: skip
    if run.is_main:
        log.info(
            "time budget %s: %.0f s spent, %.3f s/step, evaluations %s; plan: %d steps (to step %d), ending at "
            "about %.0f s", t.time_budget, b.spent_s, b.step_s or 0.0,
            f"{b.eval_total_s:.0f} s over {b.evals}" if b.evals else f"estimated {eval_full:.0f} s each",
            b.total_steps - state.step, b.total_steps, row["budget_estimated_end_s"],
        )  # fmt: skip
        append_metrics(run.metrics_path, row)


def resolve_auto_batch(cfg: TrainConfig, accelerator, n_train: int, ckpt: Path | None, *, precision: str):
    """Collective: ``cfg`` with train.batch_size=auto replaced by a batch (a copy; unchanged without auto): the
    checkpoint's on --resume, 16 on the CPU, else the main process's probe (training/autobatch.py), broadcast to
    every rank; the probe table goes to ``<run_dir>/autobatch.json``."""
    from training.checkpoint import read_meta
    from training.config import AUTO_FALLBACK_BATCH

    t, world = cfg.train, accelerator.num_processes
    if t.batch_size != "auto":
        return cfg
    say = log.info if accelerator.is_main_process else log.debug  # once, not once per rank
    if t.max_steps is not None:
        say(
            "train.batch_size=auto with train.max_steps=%d: the images seen (max_steps x the probed batch) depend "
            "on the GPU; set train.num_epochs or train.time_budget instead to fix the data or the time", t.max_steps
        )  # fmt: skip
    rows = None
    if ckpt is not None and "batch_size" in (meta := read_meta(ckpt)):
        batch, why = int(meta["batch_size"]), f"the batch of the checkpoint resumed ({ckpt.name})"
    elif accelerator.device.type != "cuda":
        batch, why = AUTO_FALLBACK_BATCH, f"no GPU to probe on the {accelerator.device.type}: the presets' batch"
    else:
        batch, rows = probe_auto_batch(cfg, accelerator, n_train, precision=precision)
        why = "the smallest within 10% of the best images/s probed"
    say("train.batch_size=auto: %d per device (%s)", batch, why)
    if rows is not None and accelerator.is_main_process:
        from training.autobatch import AUTO_TOLERANCE

        Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
        table = {"device": str(accelerator.device), "world_size": world, "mixed_precision": precision,
                 "tolerance": AUTO_TOLERANCE, "chosen": batch, "rows": rows}  # fmt: skip
        atomic_write(Path(cfg.run_dir) / "autobatch.json", json.dumps(table, indent=2) + "\n")
    resolved = cfg.model_copy(deep=True)
    resolved.train.batch_size = batch
    return resolved


def probe_auto_batch(cfg: TrainConfig, accelerator, n_train: int, *, precision: str) -> tuple[int, list | None]:
    """Collective: the main process probes images/s at growing batches; every rank gets its choice."""
    import torch
    from accelerate.utils import broadcast_object_list

    from training.autobatch import MAX_AUTO_BATCH, choose_batch, measure_images_per_s, probe_batches

    world = accelerator.num_processes
    choice: list = [None, None, None]
    if accelerator.is_main_process:
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
        measure = partial(measure_images_per_s, cfg, accelerator.device, dtype=dtype,
                          channels_last=cfg.train.channels_last)  # fmt: skip
        start = min(cfg.optim.reference_batch, max(1, n_train // world))
        rows = probe_batches(measure, start=start, limit=min(MAX_AUTO_BATCH, max(start, n_train // world)),
                             oom_errors=(torch.OutOfMemoryError,))  # fmt: skip
        try:
            choice = [choose_batch(rows), rows, None]
        except ValueError as exc:
            choice = [None, rows, f"train.batch_size=auto: {exc} on {accelerator.device}; set a smaller batch"]
    if world > 1:
        choice = broadcast_object_list(choice)
    if choice[2] is not None:
        raise ConfigError(choice[2])
    return choice[0], choice[1]


def resume_from(run: Run, ckpt: Path | None, resume: str | None) -> None:
    """Collective: load ``ckpt`` into the run (model, optimizer, scaler, EMA, step, RNG); the main process sets the
    newer checkpoints aside and cuts metrics.jsonl back to the checkpoint's step."""
    if resume and ckpt is None:
        log.info("--resume %s: no checkpoint in %s, starting a new run", resume, run.run_dir)
    if ckpt is None:
        return
    world = run.accelerator.num_processes
    load_checkpoint(run.accelerator, ckpt, run.cfg, custom_objects=run.custom_objects, world=world)
    if run.ema is not None:
        run.ema.to(run.accelerator.device)  # accelerate loads custom objects onto the CPU
    log.info("resumed from %s at step %d", ckpt, run.state.step)
    if run.is_main:
        set_aside_later_checkpoints(run.run_dir, run.state.step)
        truncate_metrics(run.metrics_path, run.state.step)


def log_banner(run: Run, figs: dict, *, precision_source: str, augment_on: bool) -> None:
    """The run in one line: parameters, images, batch arithmetic, steps, device, precision, augmentation."""
    from training.model import count_parameters

    t, accelerator = run.cfg.train, run.accelerator
    log.info(
        f"***** training: {count_parameters(accelerator.unwrap_model(run.unet)):,} parameters, "
        f"{figs['train_images']} images, batch {t.batch_size} x {t.grad_accum_steps} accum x "
        f"{accelerator.num_processes} processes = {figs['effective_batch']}, {figs['steps_per_epoch']} steps/epoch, "
        f"{run.total_steps} steps ({figs['epochs']} epochs), lr {figs['lr']}, from step {run.state.step}, "
        f"{accelerator.device}, "
        f"mixed precision {accelerator.mixed_precision} (from {precision_source}), augmentation "
        f"{'on' if augment_on else 'off'}{', refine (LPIPS)' if run.lpips_net is not None else ''}"
    )
    if run.budget is not None:
        from training.budget import SKIP_STEPS, WARMUP_STEPS

        b = run.state.budget
        log.info(
            f"***** time budget {t.time_budget} ({b.budget_s:.0f} s, {b.spent_s:.0f} s spent before): the steps are "
            f"planned after a {SKIP_STEPS + WARMUP_STEPS}-step warm-up and again at each checkpoint "
            f"(every {t.checkpoint_every_steps} steps), with the final evaluation, checkpoint and export inside it"
            + (f"; at most {run.budget_cap} steps" if run.budget_cap else "")
        )


def checked_checkpoint(cfg: TrainConfig, resume: str | None):
    """The checkpoint to resume (None: a new run); refuses to mix a new run into a run directory with checkpoints."""
    from training.data import load_split

    run_dir = Path(cfg.run_dir)
    if cfg.data.dataset_dir is not None and not Path(cfg.data.dataset_dir).exists():  # inputs before outputs
        load_split(cfg.data.dataset_dir, cfg.data.train_split)  # raises the one-line "does not exist" error
    ckpt = resolve_checkpoint(run_dir, resume) if resume else None
    if resume is None and list_checkpoints(run_dir):
        raise ConfigError(
            f"run_dir: {run_dir} already holds checkpoints; pass --resume latest to continue that run "
            "or set run_dir= to a new folder"
        )
    return ckpt


def build_model(cfg: TrainConfig, device, *, fresh: bool):
    """(unet, lpips_net or None, augmentation on, channels_last): the UNet in train mode, and the refine phase's
    LPIPS net and base weights (loaded into a ``fresh`` run; a resumed one gets its weights from the checkpoint)."""
    import torch

    from training.model import build_unet

    unet = build_unet(cfg)
    lpips_net = None
    augment_on = cfg.augment.enabled
    if cfg.refine.enabled:
        from training.refine import build_lpips, load_base_weights

        lpips_net = build_lpips(cfg.refine, device)
        augment_on = False  # the refine phase trains on the real images only
        if fresh:
            log.info("refine: starting from %s", load_base_weights(cfg.refine, unet))
    # channels_last pays on CUDA (tensor-core convolutions); on the CPU it measured ~15% slower (BENCHMARKS.md)
    channels_last = cfg.train.channels_last and device.type == "cuda"
    if channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    elif cfg.train.channels_last:
        log.info("train.channels_last applies on CUDA only; this run is on the %s", device.type)
    unet.train()
    return unet, lpips_net, augment_on, channels_last


def log_row(run: Run, stats: StepStats, clock: Clock, pbar) -> int:
    """Collective: append a metrics row (loss, LR, images/s, non-finite counts, EMA decay) and send it to the
    trackers; returns the current run of non-finite gradient steps (the most of any rank)."""
    from training.data import epoch_of

    accelerator, state, t = run.accelerator, run.state, run.cfg.train
    world = accelerator.num_processes
    gathered = accelerator.gather(stats.stacked()) if world > 1 else stats.stacked()  # (world, 4)
    epoch = epoch_of(len(run.batches.images), step=state.step * t.grad_accum_steps, batch_size=t.batch_size,
                     world=world)  # fmt: skip
    row = {
        "step": state.step,
        "epoch": round(epoch, 4),
        "loss": float(gathered[:, 0].sum() / gathered[:, 1].sum().clamp_min(1)),
        "lr": run.optimizer.param_groups[0]["lr"],
        "images_per_s": round(clock.rate(state.step, run.effective_batch), 2),
        "nonfinite_total": state.nonfinite_total + int(gathered[:, 3].max()),
    }
    if run.ema is not None:
        row["ema_decay"] = run.ema.cur_decay_value
    state.nonfinite_total = row["nonfinite_total"]
    stats.next_window()
    accelerator.log({k: v for k, v in row.items() if k != "step" and v is not None}, step=state.step)
    if run.is_main:
        append_metrics(run.metrics_path, row)
        pbar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}")
    return int(gathered[:, 2].max())


def nonfinite_reason(run_of_bad: int, limit: int) -> str:
    return (
        f"{run_of_bad} non-finite gradient steps in a row (train.max_nonfinite_in_row={limit}); lower optim.lr, "
        "turn on optim.max_grad_norm, or use bf16 instead of fp16, then --resume latest"
    )


def periodic_eval(run: Run) -> str | None:
    """Collective: the periodic sample grid, held-out loss and FID from the EMA weights, on every rank's share;
    a better FID exports the EMA weights to ``<run_dir>/best``. Returns None, or one line naming the evaluation
    that raised (a vanished Inception file or reference dataset, a disk error writing a grid): every rank goes on
    through the same collectives and the ranks agree on the outcome, so the loop can checkpoint, then stop."""
    from accelerate.utils import broadcast_object_list, gather_object

    from training.accel import log_image
    from training.monitor import ema_weights, evaluate_fid, heldout_loss
    from training.plots import plot_curves, save_grid

    accelerator, state, t, cfg = run.accelerator, run.state, run.cfg.train, run.cfg
    failed: list[str] = []
    due = [run.due(t.sample_every_steps), run.test_u8 is not None and run.due(cfg.eval.heldout_every_steps),
           run.test_u8 is not None and run.due(cfg.eval.fid_every_steps)]  # fmt: skip
    if due[0]:
        with evaluation(failed, "the sample grid", state.step):
            imgs = sample_ema(run, num_images=t.sample_num_images, seed=t.seed, steps=t.sample_steps,
                              batch_size=t.sample_batch_size, scheduler=t.sample_scheduler)  # fmt: skip
            if run.is_main:
                grid_png = save_grid(imgs, run.run_dir / "samples" / f"step-{state.step}.png")
                log_image(accelerator, "samples", grid_png, step=state.step)
    if due[1]:
        with evaluation(failed, "the held-out loss", state.step):
            with ema_weights(run.ema, accelerator.unwrap_model(run.unet), run.eval_unet) as net:
                h = heldout_loss(accelerator, net, run.test_u8, cfg, run.alphas_cumprod)
            accelerator.log({"heldout_loss": h}, step=state.step)
            if run.is_main:
                append_metrics(run.metrics_path, {"step": state.step, "heldout_loss": h})
    if due[2]:
        with evaluation(failed, "the periodic FID", state.step):
            fid_row = evaluate_fid(accelerator, cfg, partial(sample_ema, run))
            accelerator.log({k: v for k, v in fid_row.items() if isinstance(v, float)}, step=state.step)
            if run.is_main:
                append_metrics(run.metrics_path, {"step": state.step, **fid_row})
                curves = plot_curves(run.metrics_path, run.run_dir / "curves.png")
                log_image(accelerator, "curves", curves, step=state.step)
                if state.best_fid is None or fid_row["fid"] < state.best_fid:
                    state.best_fid, state.best_step = fid_row["fid"], state.step
                    export_ema(run, run.run_dir / "best", metrics={**fid_row, "step": state.step})
        state.best_fid, state.best_step = broadcast_object_list([state.best_fid, state.best_step])
    if accelerator.num_processes > 1 and any(due):  # the same steps on every rank: one gather agrees the outcome
        failed = [line for line in gather_object(failed) if line]
    return failed[0] if failed else None


@contextlib.contextmanager
def evaluation(failed: list[str], what: str, step: int):
    """Run one periodic evaluation; an exception becomes a line in ``failed`` (logged with its traceback) rather
    than the end of the run, so the steps since the last checkpoint are saved before the loop stops."""
    try:
        yield
    except Exception as exc:  # any evaluation error: the run's steps matter more than the figure
        first = (str(exc).strip().splitlines() or [""])[0][:300]
        log.debug("%s failed at step %d", what, step, exc_info=True)
        failed.append(f"{what} failed ({type(exc).__name__}{': ' + first if first else ''})")


def sample_ema(run: Run, **kwargs):
    """Collective: :func:`training.monitor.generate_split` from the EMA weights (copied into ``eval_unet``)."""
    from training.monitor import ema_weights, generate_split

    unet = run.accelerator.unwrap_model(run.unet)
    with ema_weights(run.ema, unet, run.eval_unet) as net, run.accelerator.autocast():
        return generate_split(run.accelerator, net, run.scheduler_config, **kwargs)


def export_ema(run: Run, folder: Path, metrics: dict | None) -> None:
    """Main process: the EMA weights as a DDPMPipeline folder with the config, metrics and latest grid."""
    from evaluation.pipeline import export_pipeline
    from training.monitor import ema_weights, latest_grid

    with ema_weights(run.ema, run.accelerator.unwrap_model(run.unet), run.eval_unet) as net:
        grid = latest_grid(run.run_dir)
        export_pipeline(net, run.scheduler_config, folder, config_yaml=run.config_yaml, metrics=metrics,
                        sample_grid=grid)  # fmt: skip


def stop_agreed(run: Run, stop: StopFlag) -> bool:
    """Whether to stop after this step: this process's flag, or with several processes any rank's, agreed every
    ``train.signal_check_every_steps`` steps (one all-reduce)."""
    import torch

    accelerator, t = run.accelerator, run.cfg.train
    if accelerator.num_processes == 1:
        return stop.requested
    if run.state.step % t.signal_check_every_steps != 0:
        return False
    flag = torch.tensor([1.0 if stop.requested else 0.0], device=accelerator.device)
    return bool(accelerator.gather(flag).max() > 0)


def save(run: Run) -> None:
    """Collective: a checkpoint of this step (keep-N rotation), and the Hub push of its EMA export when due."""
    from training.data import epoch_of

    accelerator, state, t = run.accelerator, run.state, run.cfg.train
    world = accelerator.num_processes
    if run.budget is not None:  # the checkpoint carries the seconds spent so far
        run.budget.account()
    epoch = epoch_of(len(run.batches.images), step=state.step * t.grad_accum_steps, batch_size=t.batch_size,
                     world=world)  # fmt: skip
    meta = {"epoch": epoch, "custom_objects": run.custom_objects, **run_identity(run.cfg, world)}
    save_checkpoint(accelerator, run.run_dir, step=state.step, meta=meta, keep=t.checkpoints_keep,
                    config_yaml=run.config_yaml)  # fmt: skip
    if run.is_main:  # the upload runs in the background; only the export happens here
        run.pusher.at_checkpoint(state.step, lambda folder: export_ema(run, folder, latest_fid(run.metrics_path)))


def finish(run: Run, exit_code: int, reason: str) -> int:
    """Collective: check the ranks agree, then checkpoint (non-finite stop) or export and push (done), plot the
    curves and log the summary; returns the exit code."""
    from training.monitor import rank_fingerprints
    from training.plots import plot_curves, samples_over_time

    accelerator, state, run_dir = run.accelerator, run.state, run.run_dir
    fingerprints = rank_fingerprints(accelerator, accelerator.unwrap_model(run.unet), run.ema)
    if run.is_main:
        append_metrics(run.metrics_path, {"step": state.step, "rank_fingerprints": fingerprints})
        first = fingerprints[0]
        if any(abs(f[i] - first[i]) > 1e-6 * (1 + abs(first[i])) for f in fingerprints for i in range(len(f))):
            log.error("the ranks' weights or EMA differ at the end of training: %s", fingerprints)
            exit_code = exit_code or EXIT_DIVERGED

    if run.budget is not None and run.is_main:  # the estimate was logged with each plan; this is the actual
        b = run.state.budget
        actual = round(b.spent_s + run.budget.elapsed_s(), 1)
        append_metrics(run.metrics_path, {"step": state.step, "budget_s": b.budget_s, "budget_actual_s": actual})
    if exit_code == EXIT_NONFINITE:
        save(run)
    elif state.step >= run.total_steps and run.is_main:
        export_ema(run, run_dir / "pipeline", metrics=latest_fid(run.metrics_path))
        run.pusher.final(run_dir / "pipeline", state.step)
    if run.is_main:
        failed: list[str] = []
        with evaluation(failed, "the final plots", state.step):
            plot_curves(run.metrics_path, run_dir / "curves.png")
            samples_over_time(run_dir / "samples", run_dir / "samples_over_time.png")
        if failed:
            exit_code, reason = exit_code or EXIT_EVAL, f"{reason}; {failed[0]}"
        summary = f"{reason} at step {state.step}/{run.total_steps}; run dir {run_dir}"
        if state.best_fid is not None:
            summary += f"; best FID {state.best_fid:.2f} at step {state.best_step} ({run_dir / 'best'})"
        if state.step < run.total_steps:
            summary += "; continue with --resume latest"
        (log.error if exit_code else log.info)(summary)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    run.pusher.close()  # main process: the last upload finishes while the other ranks are already done
    return exit_code


if __name__ == "__main__":
    raise SystemExit(main())
