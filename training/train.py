"""Train a DDPM (diffusers UNet2DModel + DDPMScheduler) on the curated faces, with accelerate.

Reads top to bottom: config -> accelerator -> data -> model -> optimizer -> resume -> loop -> export.

    accelerate launch training/train.py --config configs/train/demo.yaml data.dataset_dir=demo_out/dataset \\
        run_dir=demo_out/run [--dry-run] [--resume latest|PATH]
    python training/train.py --config configs/train/small.yaml data.dataset_dir=out/dataset train.max_steps=100

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

Determinism and resume: the batch order, augmentation, noise and timesteps of micro-step k on rank r come from
generators seeded by (seed, r, k) (training/data.py), and the LR is a pure function of the step, so
``--resume latest`` continues exactly (model, optimizer, scaler, EMA, step and RNG are in the checkpoint); a
change of world size, batch, accumulation or seed is logged as a warning, a checkpoint that does not fit the model
is a one-line error, and resuming an older checkpoint sets the newer ones aside (``abandoned-checkpoint-<step>``).
SIGTERM/SIGINT write a checkpoint and exit 0. A non-finite gradient skips the optimizer step (on the device for
fused AdamW, no host sync) and is counted; ``train.max_nonfinite_in_row`` in a row stop the run with a checkpoint
(checked at log steps, the loop's only host-device sync).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script (accelerate launch training/train.py): repo root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from common.configio import ConfigError, dump_config  # noqa: E402
from common.fileio import atomic_write  # noqa: E402
from training.checkpoint import (  # noqa: E402
    RunState,
    StopFlag,
    append_metrics,
    latest_fid,
    list_checkpoints,
    load_checkpoint,
    resolve_checkpoint,
    run_dir_error_line,
    run_identity,
    save_checkpoint,
    set_aside_later_checkpoints,
    truncate_metrics,
)
from training.config import TrainConfig, check_tracker, derived_figures, load_train_config  # noqa: E402

log = logging.getLogger("ptt.train")

EXIT_OK, EXIT_CONFIG, EXIT_NONFINITE, EXIT_DIVERGED = 0, 2, 3, 4


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
    figs = {"parameters": count_parameters(build_unet(cfg)), **derived_figures(cfg, n, world)}
    print(dump_config(cfg), end="")
    print("# derived")
    for k, v in figs.items():
        print(f"# {k}: {v:,}" if isinstance(v, int) else f"# {k}: {v}")
    return EXIT_OK


# ----------------------------------------------------------------------------------------------------------------
# The run


def train(cfg: TrainConfig, *, resume: str | None = None) -> int:  # noqa: C901 - one story, top to bottom
    import torch
    from accelerate.utils import broadcast_object_list, set_seed
    from diffusers import UNet2DModel
    from diffusers.training_utils import EMAModel
    from tqdm.auto import tqdm

    from evaluation.pipeline import export_pipeline
    from training.accel import build_accelerator, init_trackers, log_image
    from training.augment import augment_batch
    from training.data import batch_indices, epoch_of, load_images, load_split, to_device
    from training.hub import HubPusher
    from training.model import build_noise_scheduler, build_optimizer, build_unet, count_parameters, lr_lambda
    from training.monitor import (
        check_fid_weights,
        ema_weights,
        evaluate_fid,
        generate_split,
        heldout_loss,
        latest_grid,
        rank_fingerprints,
    )
    from training.plots import plot_curves, samples_over_time, save_grid
    from training.step import step_generator, step_loss

    t = cfg.train
    run_dir = Path(cfg.run_dir)
    check_tracker(t.log_with)

    # -- accelerator: mixed precision from train.mixed_precision, else from accelerate launch / accelerate config --
    accelerator, precision = build_accelerator(cfg)
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    is_main = accelerator.is_main_process
    set_seed(t.seed)  # identical initial weights on every rank
    if t.tf32 and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    # -- run directory: resume it, or refuse to mix a new run into an old one ---------------------------------
    if cfg.data.dataset_dir is not None and not Path(cfg.data.dataset_dir).exists():  # inputs before outputs
        load_split(cfg.data.dataset_dir, cfg.data.train_split)  # raises the one-line "does not exist" error
    ckpt = resolve_checkpoint(run_dir, resume) if resume else None
    if resume is None and list_checkpoints(run_dir):
        raise ConfigError(
            f"run_dir: {run_dir} already holds checkpoints; pass --resume latest to continue that run "
            "or set run_dir= to a new folder"
        )

    # -- data: decoded once, kept as uint8 on the training device ----------------------------------------------
    d = cfg.data
    source = {"resolution": d.resolution, "image_column": d.image_column, "hub_dataset": d.hub_dataset}
    train_u8 = load_images(d.dataset_dir, split=d.train_split, max_images=d.max_images, **source).to(device)
    test_u8 = None  # (N, 3, H, W) uint8, on the CPU
    if d.test_split and (cfg.eval.heldout_every_steps or cfg.eval.fid_every_steps):
        test_u8 = load_images(d.dataset_dir, split=d.test_split, required=False, **source)
        if test_u8 is None:
            log.warning("no %r split: held-out loss and FID are off", d.test_split)
    n_train = len(train_u8)

    figs = derived_figures(cfg, n_train, world)
    total_steps = figs["total_steps"]

    if cfg.eval.fid_every_steps and test_u8 is not None:  # fail now, not after hours of training
        if d.dataset_dir is None:
            raise ConfigError(
                "eval.fid_every_steps needs data.dataset_dir (FID reads its test split); set it or "
                "eval.fid_every_steps=null"
            )
        check_fid_weights(cfg)

    # -- model, noise schedule, EMA, optimizer ----------------------------------------------------------------
    unet = build_unet(cfg)
    lpips_net = None
    augment_on = cfg.augment.enabled
    if cfg.refine.enabled:
        from training.refine import build_lpips, load_base_weights

        lpips_net = build_lpips(cfg.refine, device)
        augment_on = False  # the refine phase trains on the real images only
        if ckpt is None:
            log.info("refine: starting from %s", load_base_weights(cfg.refine, unet))
    # channels_last pays on CUDA (tensor-core convolutions); on the CPU it measured ~15% slower (BENCHMARKS.md)
    channels_last = t.channels_last and device.type == "cuda"
    if channels_last:
        unet = unet.to(memory_format=torch.channels_last)
    elif t.channels_last:
        log.info("train.channels_last applies on CUDA only; this run is on the %s", device.type)
    unet.train()
    noise_sched = build_noise_scheduler(cfg)
    scheduler_config = dict(noise_sched.config)
    alphas_cumprod = noise_sched.alphas_cumprod.to(device)  # (T,) float32

    ema = None
    if cfg.ema.enabled:
        ema = EMAModel(
            unet.parameters(),
            decay=cfg.ema.decay,
            update_after_step=cfg.ema.start_step,
            use_ema_warmup=cfg.ema.warmup,
            inv_gamma=cfg.ema.inv_gamma,
            power=cfg.ema.power,
            foreach=True,
            model_cls=UNet2DModel,
            model_config=unet.config,
        )
        ema.to(device)
    eval_unet = UNet2DModel.from_config(unet.config).to(device).requires_grad_(False).eval()

    optimizer = build_optimizer(unet.parameters(), cfg, device_type=device.type)
    fused = bool(optimizer.defaults.get("fused"))
    if t.compile:
        unet.compile()
    unet, optimizer = accelerator.prepare(unet, optimizer)
    state = RunState()
    custom_objects = []
    if ema is not None:
        accelerator.register_for_checkpointing(ema)
        custom_objects.append("ema")
    accelerator.register_for_checkpointing(state)
    custom_objects.append("run_state")

    metrics_path = run_dir / "metrics.jsonl"

    # -- resume ------------------------------------------------------------------------------------------------
    if resume and ckpt is None:
        log.info("--resume %s: no checkpoint in %s, starting a new run", resume, run_dir)
    if ckpt is not None:
        load_checkpoint(accelerator, ckpt, cfg, custom_objects=custom_objects, world=world)
        if ema is not None:
            ema.to(device)  # accelerate loads custom objects onto the CPU
        log.info("resumed from %s at step %d", ckpt, state.step)
        if is_main:
            set_aside_later_checkpoints(run_dir, state.step)
            truncate_metrics(metrics_path, state.step)

    # -- the run directory: written only once the data, model, LPIPS and checkpoint are known good --
    config_yaml = dump_config(cfg)
    if is_main:
        (run_dir / "samples").mkdir(parents=True, exist_ok=True)
        atomic_write(run_dir / "config.yaml", config_yaml)

    init_trackers(accelerator, cfg, resumed=ckpt is not None)  # wandb continues its run on --resume
    pusher = HubPusher(cfg.hub, run_dir, checkpoint_every_steps=t.checkpoint_every_steps, enabled=is_main)
    params = count_parameters(accelerator.unwrap_model(unet))
    if is_main:
        log.info(
            f"***** training: {params:,} parameters, {n_train} images, batch {t.batch_size} x {t.grad_accum_steps} "
            f"accum x {world} processes = {figs['effective_batch']}, {figs['steps_per_epoch']} steps/epoch, "
            f"{total_steps} steps ({figs['epochs']} epochs), from step {state.step}, {device}, mixed precision "
            f"{accelerator.mixed_precision} (from {precision.source}), augmentation "
            f"{'on' if augment_on else 'off'}{', refine (LPIPS)' if lpips_net is not None else ''}"
        )

    stop = StopFlag()
    stop.install()
    inner_opt = optimizer.optimizer
    max_norm = cfg.optim.max_grad_norm if cfg.optim.max_grad_norm is not None else float("inf")
    zero = torch.zeros((), device=device)
    loss_sum, loss_count, bad_run, bad_count = zero.clone(), zero.clone(), zero.clone(), zero.clone()
    last_log_t, last_log_step = time.perf_counter(), state.step
    exit_code, reason = EXIT_OK, "done"
    pbar = tqdm(total=total_steps, initial=state.step, disable=not is_main, desc="train", dynamic_ncols=True)

    def checkpoint() -> None:
        epoch = epoch_of(n_train, step=state.step * t.grad_accum_steps, batch_size=t.batch_size, world=world)
        meta = {"epoch": epoch, "custom_objects": custom_objects, **run_identity(cfg, world)}
        save_checkpoint(
            accelerator, run_dir, step=state.step, meta=meta, keep=t.checkpoints_keep, config_yaml=config_yaml
        )
        if is_main:  # the upload runs in the background; only the export happens here
            pusher.at_checkpoint(state.step, lambda folder: export_ema(folder, metrics=latest_fid(metrics_path)))

    def sample_ema(**kwargs):
        """Collective: :func:`generate_split` from the EMA weights (copied into ``eval_unet``) under autocast."""
        with ema_weights(ema, accelerator.unwrap_model(unet), eval_unet) as net, accelerator.autocast():
            return generate_split(accelerator, net, scheduler_config, **kwargs)

    def export_ema(folder: Path, metrics: dict | None) -> None:
        """Main process: the EMA weights as a DDPMPipeline folder with the config, metrics and latest grid."""
        with ema_weights(ema, accelerator.unwrap_model(unet), eval_unet) as net:
            grid = latest_grid(run_dir)
            export_pipeline(net, scheduler_config, folder, config_yaml=config_yaml, metrics=metrics, sample_grid=grid)

    def due(every: int | None) -> bool:
        return every is not None and (state.step % every == 0 or state.step == total_steps)

    # -- the loop ----------------------------------------------------------------------------------------------
    while state.step < total_steps:
        o = cfg.optim  # the LR is a pure function of the step: resume needs no state
        lr = o.lr * lr_lambda(state.step, warmup_steps=o.lr_warmup_steps, total_steps=total_steps,
                              schedule=o.lr_schedule, min_ratio=o.min_lr_ratio)  # fmt: skip
        for group in optimizer.param_groups:
            group["lr"] = lr
        for a in range(t.grad_accum_steps):
            micro = state.step * t.grad_accum_steps + a
            idx = batch_indices(n_train, step=micro, batch_size=t.batch_size, seed=t.seed, rank=rank, world=world)
            g = step_generator(device, t.seed, rank, micro)
            x = train_u8[to_device(idx, device)].float().div_(255.0)  # (B, 3, H, W) in [0, 1]
            if augment_on:
                x = augment_batch(x, cfg.augment, g)
            x0 = x.mul_(2.0).sub_(1.0)  # [-1, 1]
            with accelerator.accumulate(unet):
                loss = step_loss(unet, x0, g, cfg, alphas_cumprod, channels_last=channels_last, lpips_net=lpips_net)
                accelerator.backward(loss)
                skip = False
                if accelerator.sync_gradients:
                    grad_norm = accelerator.clip_grad_norm_(unet.parameters(), max_norm)
                    bad = ~torch.isfinite(grad_norm)  # identical on every rank (gradients are all-reduced)
                    bad_f = bad.float()
                    bad_count += bad_f
                    bad_run = (bad_run + bad_f) * bad_f
                    if fused and accelerator.scaler is None:
                        inner_opt.found_inf = bad_f  # fused AdamW skips the update on the device
                    elif accelerator.scaler is None:
                        skip = bool(bad)  # non-fused optimizers need the host to skip
                if not skip:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            finite = torch.isfinite(loss.detach())
            loss_sum += torch.where(finite, loss.detach(), zero)
            loss_count += finite.float()
        if ema is not None:
            ema.step(accelerator.unwrap_model(unet).parameters())
        state.step += 1
        pbar.update(1)

        # -- logging: the only host-device sync of a normal step --
        if due(t.log_every_steps):
            stats = torch.stack([loss_sum, loss_count, bad_run, bad_count])[None]
            stats = accelerator.gather(stats) if world > 1 else stats  # (world, 4)
            now = time.perf_counter()
            row = {
                "step": state.step,
                "epoch": round(
                    epoch_of(n_train, step=state.step * t.grad_accum_steps, batch_size=t.batch_size, world=world), 4
                ),
                "loss": float(stats[:, 0].sum() / stats[:, 1].sum().clamp_min(1)),
                "lr": optimizer.param_groups[0]["lr"],
                "images_per_s": round((state.step - last_log_step) * figs["effective_batch"] / (now - last_log_t), 2),
                "nonfinite_total": state.nonfinite_total + int(stats[:, 3].max()),
            }
            if ema is not None:
                row["ema_decay"] = ema.cur_decay_value
            run_of_bad = int(stats[:, 2].max())
            state.nonfinite_total = row["nonfinite_total"]
            loss_sum.zero_(), loss_count.zero_(), bad_count.zero_()
            last_log_t, last_log_step = now, state.step
            accelerator.log({k: v for k, v in row.items() if k != "step" and v is not None}, step=state.step)
            if is_main:
                append_metrics(metrics_path, row)
                pbar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}")
            if run_of_bad >= t.max_nonfinite_in_row:
                exit_code = EXIT_NONFINITE
                reason = (
                    f"{run_of_bad} non-finite gradient steps in a row (train.max_nonfinite_in_row="
                    f"{t.max_nonfinite_in_row}); lower optim.lr, turn on optim.max_grad_norm, or use bf16 "
                    "instead of fp16, then --resume latest"
                )
                break

        # -- periodic sample grids, FID and held-out loss from the EMA weights, on every rank's share --
        t_pause = time.perf_counter()  # evaluation time is left out of images_per_s
        if due(t.sample_every_steps):
            imgs = sample_ema(
                num_images=t.sample_num_images,
                seed=t.seed,
                steps=t.sample_steps,
                batch_size=t.sample_batch_size,
                scheduler=t.sample_scheduler,
            )
            if is_main:
                grid_png = save_grid(imgs, run_dir / "samples" / f"step-{state.step}.png")
                log_image(accelerator, "samples", grid_png, step=state.step)
        if test_u8 is not None and due(cfg.eval.heldout_every_steps):
            with ema_weights(ema, accelerator.unwrap_model(unet), eval_unet) as net:
                h = heldout_loss(accelerator, net, test_u8, cfg, alphas_cumprod)
            accelerator.log({"heldout_loss": h}, step=state.step)
            if is_main:
                append_metrics(metrics_path, {"step": state.step, "heldout_loss": h})
        if test_u8 is not None and due(cfg.eval.fid_every_steps):
            fid_row = evaluate_fid(accelerator, cfg, sample_ema)
            accelerator.log({k: v for k, v in fid_row.items() if isinstance(v, float)}, step=state.step)
            if is_main:
                append_metrics(metrics_path, {"step": state.step, **fid_row})
                log_image(accelerator, "curves", plot_curves(metrics_path, run_dir / "curves.png"), step=state.step)
                if state.best_fid is None or fid_row["fid"] < state.best_fid:
                    state.best_fid, state.best_step = fid_row["fid"], state.step
                    export_ema(run_dir / "best", metrics={**fid_row, "step": state.step})
            state.best_fid, state.best_step = broadcast_object_list([state.best_fid, state.best_step])

        # -- checkpoints, signals --
        if world == 1:
            stopping = stop.requested
        elif state.step % t.signal_check_every_steps == 0:
            flag = torch.tensor([1.0 if stop.requested else 0.0], device=device)
            stopping = bool(accelerator.gather(flag).max() > 0)
        else:
            stopping = False
        if stopping or due(t.checkpoint_every_steps):
            checkpoint()
        last_log_t += time.perf_counter() - t_pause
        if stopping:
            reason = f"stopped by {signal.Signals(stop.signum).name if stop.signum else 'a signal on another rank'}"
            break
    pbar.close()
    stop.uninstall()
    fingerprints = rank_fingerprints(accelerator, accelerator.unwrap_model(unet), ema)
    if is_main:
        append_metrics(metrics_path, {"step": state.step, "rank_fingerprints": fingerprints})
        if any(
            abs(f[i] - fingerprints[0][i]) > 1e-6 * (1 + abs(fingerprints[0][i]))
            for f in fingerprints
            for i in range(len(f))
        ):
            log.error("the ranks' weights or EMA differ at the end of training: %s", fingerprints)
            exit_code = exit_code or EXIT_DIVERGED

    if exit_code == EXIT_NONFINITE:
        checkpoint()
    elif state.step >= total_steps:
        if is_main:
            export_ema(run_dir / "pipeline", metrics=latest_fid(metrics_path))
            pusher.final(run_dir / "pipeline", state.step)
    if is_main:
        plot_curves(metrics_path, run_dir / "curves.png")
        samples_over_time(run_dir / "samples", run_dir / "samples_over_time.png")
        summary = f"{reason} at step {state.step}/{total_steps}; run dir {run_dir}"
        if state.best_fid is not None:
            summary += f"; best FID {state.best_fid:.2f} at step {state.best_step} ({run_dir / 'best'})"
        if state.step < total_steps:
            summary += "; continue with --resume latest"
        (log.error if exit_code else log.info)(summary)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    pusher.close()  # main process: the last upload finishes while the other ranks are already done
    return exit_code


if __name__ == "__main__":
    raise SystemExit(main())
