"""Sampling from an exported DDPM pipeline with diffusers' schedulers; one seed per image.

Image *i* (0-based, written as ``f"{i + 1:05d}.png"``) depends only on ``seed + i``: its initial noise and, for
stochastic samplers (DDPM, the SDE DPM-Solver++ variants), every step's noise come from its own
``torch.Generator`` on the CPU (``step(..., generator=[one per image])``: diffusers' ``randn_tensor`` draws row i
from generator i). So image *i* is the same whatever the batch size, the number of processes or an
interrupted-and-resumed run. The scheduler's state stays float32 whatever the UNet's dtype (``step`` would cast
it to the model output's dtype, rounding the state at every step in bf16).

Output contract (docs/contracts.md section 6): ``<out>/00001.png, 00002.png, ...`` 64x64 (the UNet's
``sample_size``) RGB PNGs, each written atomically (temp + rename), plus ``<out>/sample_info.json`` recording the
model, sampler, steps, UNet evaluations per image, seed and dtype; a rerun with other settings into the same folder
is refused so runs never mix, and a rerun with the same settings skips images already written (whole PNGs of the
right size; a damaged or foreign ``NNNNN.png`` is written again, with a warning). The settings are checked before
``sample_info.json`` is written, and it is written before the first PNG; a folder of PNGs without one is refused.
The run holds ``<out>/.ptt-lock`` (``common.lock``; with several processes, the main one takes it and the others
wait for its verdict), so a second sampler on the folder is refused in one line naming the owner.

Samplers (``--scheduler``, :data:`SAMPLERS`): a diffusers scheduler class with named settings, built on the model's
noise schedule (:data:`TRAINING_KEYS` of the pipeline's ``scheduler/scheduler_config.json``). The default,
:data:`DEFAULT_SAMPLER`, is the one the sampler benchmark picked (BENCHMARKS.md, "Fast samplers"); ``ddpm`` with
1000 steps is the reference it was measured against.

Example (CLI; several processes split the images, rank r writes every index i with i % world_size == r)::

    ptt-sample --model runs/demo/pipeline --num-images 1000 --out samples/              # the default sampler
    ptt-sample --model runs/demo/pipeline --num-images 1000 --out ref/ --scheduler ddpm --steps 1000
    accelerate launch -m evaluation.sample --model USER/ptt-faces --num-images 10000 --out s/ --dtype bf16

Example (library; what the trainer calls)::

    from diffusers import UNet2DModel
    from evaluation.sample import generate
    unet = UNet2DModel.from_pretrained("runs/demo/pipeline", subfolder="unet")
    imgs = generate(unet, {"num_train_timesteps": 1000}, num_images=8, seed=0, batch_size=8, steps=20)
    print(imgs.shape, imgs.dtype)   # (8, 64, 64, 3) uint8
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import logging
import math
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.fileio import atomic_write, atomic_write_png, clean_stale_temps, disk_error_line, os_error_line
from evaluation.pipeline import PipelineError
from evaluation.samplers import (
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    SAMPLERS,
    SCHEDULERS,
    TRAINING_KEYS,
    SampleError,
    Sampler,
    build_scheduler,
    num_evaluations,
    steps_for_evaluations,
)

__all__ = [
    "DEFAULT_SAMPLER",
    "SAMPLERS",
    "SCHEDULERS",
    "TRAINING_KEYS",
    "Sampler",
    "SampleError",
    "build_scheduler",
    "generate",
    "generate_seeds",
    "image_grid",
    "main",
    "num_evaluations",
    "steps_for_evaluations",
    "write_samples",
]

log = logging.getLogger(__name__)

_IMAGE_NAME_RE = re.compile(r"^(\d{5,})\.png$")


def _dtype(dtype):
    import torch

    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "fp32": torch.float32,
        "float32": torch.float32,
        "bf16": torch.bfloat16,
        "bfloat16": torch.bfloat16,
        "fp16": torch.float16,
        "float16": torch.float16,
    }
    if dtype not in names:
        raise SampleError(f"unknown dtype {dtype!r}; use fp32, bf16 or fp16")
    return names[dtype]


def _sample_shape(unet) -> tuple[int, int, int]:
    size = unet.config.sample_size
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return int(unet.config.in_channels), int(h), int(w)


def generate_seeds(
    unet,
    scheduler_config: dict,
    seeds: Sequence[int],
    *,
    steps: int,
    scheduler: str = DEFAULT_SAMPLER,
    device=None,
    dtype=None,
):
    """Sample one image per seed in a single batch; returns float32 ``(B, C, H, W)`` in [-1, 1] on the CPU.

    The UNet runs in ``dtype`` (its own weights when they already have it, else under autocast); the
    scheduler arithmetic stays in float32.
    """
    import torch

    device = torch.device(device) if device is not None else next(unet.parameters()).device
    dtype = _dtype(dtype)
    sched = build_scheduler(scheduler, scheduler_config)
    sched.set_timesteps(int(steps), device=device)
    if hasattr(sched, "set_begin_index"):
        # start at step 0 even when a timestep repeats (Karras sigmas on the cosine schedule map several of the
        # largest sigmas to t = 999; the lookup by value would start at the repeat and run off the end)
        sched.set_begin_index(0)
    c, h, w = _sample_shape(unet)
    # One CPU generator per image: its initial noise, then its per-step noise (DDPM), in this order.
    gens = [torch.Generator("cpu").manual_seed(int(s)) for s in seeds]
    x = torch.cat([torch.randn((1, c, h, w), generator=g) for g in gens]).to(device)  # (B, C, H, W)
    x = x * sched.init_noise_sigma
    step_kwargs = {"generator": gens} if "generator" in inspect.signature(sched.step).parameters else {}
    param_dtype = next(unet.parameters()).dtype
    # Autocast only when asked for a lower precision than the weights have; inputs always match the weights.
    use_autocast = dtype is not None and dtype not in (param_dtype, torch.float32)
    with torch.inference_mode():
        for t in sched.timesteps:
            inp = sched.scale_model_input(x, t).to(param_dtype)
            with torch.autocast(device.type, dtype=dtype or torch.float32, enabled=use_autocast):
                out = unet(inp, t).sample
            # per-image generators: DDPM's step noise for image i comes from gens[i] whatever the batch
            x = sched.step(out.float(), t, x, **step_kwargs).prev_sample
    return x.float().cpu()


def _to_uint8(x) -> np.ndarray:
    """(B, 3, H, W) in [-1, 1] -> (B, H, W, 3) uint8, rounded as diffusers' pipelines do."""
    img = (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    return (img * 255).round().astype(np.uint8)


def generate(
    unet,
    scheduler_config: dict,
    *,
    num_images: int,
    seed: int,
    batch_size: int,
    steps: int,
    scheduler: str = DEFAULT_SAMPLER,
    device=None,
    dtype=None,
    start_index: int = 0,
) -> np.ndarray:
    """``num_images`` images as uint8 ``(N, H, W, 3)``; image i is seeded with ``seed + start_index + i``."""
    c = _sample_shape(unet)[0]
    if c != 3:
        raise SampleError(f"the UNet has {c} input channels; sampling writes RGB images and needs 3")
    was_training = unet.training
    unet.eval()
    try:
        out = []
        for lo in range(0, num_images, batch_size):
            seeds = [seed + start_index + i for i in range(lo, min(lo + batch_size, num_images))]
            x = generate_seeds(
                unet, scheduler_config, seeds, steps=steps, scheduler=scheduler, device=device, dtype=dtype
            )
            out.append(_to_uint8(x))
    finally:
        unet.train(was_training)
    if not out:
        _, h, w = _sample_shape(unet)
        return np.zeros((0, h, w, 3), np.uint8)
    return np.concatenate(out)


def image_grid(images: np.ndarray, ncols: int | None = None, pad: int = 2) -> np.ndarray:
    """Tile uint8 ``(N, H, W, 3)`` images into one ``(rows*(H+pad)+pad, cols*(W+pad)+pad, 3)`` grid (white gaps)."""
    n, h, w, c = images.shape
    ncols = ncols or max(1, math.ceil(math.sqrt(n)))
    nrows = max(1, math.ceil(n / ncols))
    grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), 255, np.uint8)
    for k in range(n):
        r, q = divmod(k, ncols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[y : y + h, x : x + w] = images[k]
    return grid


def _existing_indices(out: Path, size: int | None = None) -> set[int]:
    """Indices of ``NNNNN.png`` in ``out`` that are whole ``size`` x ``size`` PNGs; others are logged, to redo."""
    from PIL import Image

    found = set()
    for p in out.iterdir():
        m = _IMAGE_NAME_RE.match(p.name)
        if not m:
            continue
        try:
            with Image.open(p) as im:
                ok = im.format == "PNG" and (size is None or im.size == (size, size))
                im.verify()  # checks the chunks' CRCs, so a truncated or damaged file is caught
        except (OSError, SyntaxError, ValueError):
            ok = False
        if ok:
            found.add(int(m.group(1)) - 1)
        else:
            log.warning(
                "ptt-sample: %s is not a whole %sx%s PNG (damaged or not ours); writing it again", p, size, size
            )
    return found


def _check_info(out: Path, info: dict, *, write: bool) -> None:
    """Refuse a folder whose samples were made otherwise, or whose PNGs no ``sample_info.json`` accounts for;
    with ``write``, record ``info`` (before the first PNG, so a folder's PNGs always have their settings)."""
    info_path = out / "sample_info.json"
    if info_path.is_file():
        try:
            old = json.loads(info_path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise SampleError(
                f"{info_path}: damaged ({type(exc).__name__}), so the settings of the PNGs in {out} are unknown; "
                "pass a new --out (or an empty folder)"
            ) from None
        if not isinstance(old, dict):
            raise SampleError(f"{info_path}: not a JSON object, so the settings of the PNGs in {out} are unknown; "
                              "pass a new --out (or an empty folder)")  # fmt: skip
        keys = ("model", "scheduler", "steps", "seed", "dtype")
        diff = [k for k in keys if old.get(k) != info.get(k)]
        if diff:
            what = ", ".join(f"{k}={old.get(k)!r} (now {info.get(k)!r})" for k in diff)
            raise SampleError(
                f"{out}: holds samples made with {what}; pass a new --out (or an empty folder), or rerun with "
                "those settings to continue it"
            )
    elif write and (pngs := sorted(p.name for p in out.iterdir() if p.suffix.lower() == ".png")):
        raise SampleError(
            f"{out}: holds {len(pngs)} PNG(s) ({pngs[0]}, ...) but no sample_info.json, so they are not samples "
            "this tool can continue; pass a new --out (or an empty folder), or move those PNGs away"
        )
    if write:
        atomic_write(info_path, (json.dumps(info, indent=2) + "\n").encode("utf-8"))


def sample_info(
    scheduler_config: dict,
    *,
    model_name: str,
    scheduler: str,
    steps: int | None,
    seed: int,
    dtype=None,
    num_images: int,
    batch_size: int = 1,
) -> dict:
    """What ``sample_info.json`` records for these settings, after checking them (a :class:`SampleError` names
    the bad one) -- before anything is written, so a refused run leaves no record of settings it never ran."""
    if scheduler not in SCHEDULERS:
        raise SampleError(f"unknown scheduler {scheduler!r}; choose one of {', '.join(SCHEDULERS)}")
    steps = int(DEFAULT_STEPS[scheduler] if steps is None else steps)  # --steps 0 is an error, not the default
    if num_images < 1 or batch_size < 1 or steps < 1:
        raise SampleError("--num-images, --batch-size and --steps must be at least 1")
    try:  # e.g. ddpm with more steps than the schedule's train timesteps
        build_scheduler(scheduler, scheduler_config).set_timesteps(steps)
    except ValueError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise SampleError(f"--scheduler {scheduler} --steps {steps}: {first}") from None
    return {
        "model": model_name,
        "scheduler": scheduler,
        "steps": steps,
        "evaluations": num_evaluations(scheduler, scheduler_config, steps),  # UNet evaluations per image
        "seed": seed,
        "dtype": {None: "fp32"}.get(dtype, str(dtype).replace("torch.", "")),
        "num_images": num_images,
        "image_i_seed": "seed + i - 1 for file i (1-based)",
    }


def claim_out(out: str | os.PathLike, info: dict, *, write: bool = True) -> Path:
    """Make ``out``, remove a dead run's half-written PNGs, and check (``write``: record) ``info`` there."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise SampleError(f"--out {out}: is a file, not a folder; pass a folder for the PNGs") from None
    if gone := clean_stale_temps(out):  # an interrupted run's half-written PNGs, if that run is gone
        log.info("ptt-sample: removed %d leftovers of an interrupted run in %s", len(gone), out)
    _check_info(out, info, write=write)
    return out


def write_samples(
    unet,
    scheduler_config: dict,
    out: str | os.PathLike,
    *,
    num_images: int,
    seed: int = 0,
    batch_size: int = 64,
    steps: int | None = None,
    scheduler: str = DEFAULT_SAMPLER,
    device=None,
    dtype=None,
    rank: int = 0,
    world_size: int = 1,
    model_name: str = "",
    progress: bool = True,
) -> dict:
    """Write this rank's share of ``00001.png`` .. into ``out``, skipping those already there; returns a summary."""
    from tqdm.auto import tqdm

    info = sample_info(
        scheduler_config,
        model_name=model_name,
        scheduler=scheduler,
        steps=steps,
        seed=seed,
        dtype=dtype,
        num_images=num_images,
        batch_size=batch_size,
    )
    steps = info["steps"]
    # rank 0 records the settings (and refuses a folder of foreign PNGs); the others check against its record
    out = claim_out(out, info, write=rank == 0)
    done = _existing_indices(out, getattr(unet.config, "sample_size", None))
    mine = [i for i in range(num_images) if i % world_size == rank]
    todo = [i for i in mine if i not in done]
    t0 = time.perf_counter()
    was_training = unet.training
    unet.eval()
    bar = tqdm(
        total=len(mine),
        initial=len(mine) - len(todo),
        desc=f"sampling ({scheduler}, {steps} steps)",
        unit="img",
        disable=not progress,
    )
    try:
        for lo in range(0, len(todo), batch_size):
            idx = todo[lo : lo + batch_size]
            x = generate_seeds(
                unet,
                scheduler_config,
                [seed + i for i in idx],
                steps=steps,
                scheduler=scheduler,
                device=device,
                dtype=dtype,
            )
            for i, img in zip(idx, _to_uint8(x), strict=True):
                atomic_write_png(out / f"{i + 1:05d}.png", img)
            bar.update(len(idx))
    finally:
        bar.close()
        unet.train(was_training)
    seconds = time.perf_counter() - t0
    return {
        "out": str(out),
        "written": len(todo),
        "skipped": len(mine) - len(todo),
        "seconds": seconds,
        "rank": rank,
        "world_size": world_size,
        **info,
    }


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ptt-sample", description="Write 00001.png ... from an exported DDPM pipeline.")
    p.add_argument("--model", required=True, help="exported pipeline folder (<run_dir>/pipeline) or Hub id USER/NAME")
    p.add_argument("--num-images", type=int, required=True)
    p.add_argument("--out", required=True, help="output folder (reruns skip images already there)")
    # The default matched 1000-step DDPM's FD on the sampler benchmark at a fraction of its UNet evaluations
    # (BENCHMARKS.md, "Fast samplers"); --scheduler ddpm --steps 1000 is the slow reference.
    p.add_argument("--scheduler", choices=SCHEDULERS, default=DEFAULT_SAMPLER)
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="sampler steps (default per sampler: "
        + ", ".join(f"{n} {k}" for n, k in DEFAULT_STEPS.items())
        + "; heun_karras costs two UNet evaluations a step)",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0, help="image i (1-based file) uses seed + i - 1")
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32", help="UNet precision (GPU)")
    p.add_argument("--device", default=None, help="torch device (default: accelerate's device for this process)")
    p.add_argument("--no-progress", action="store_true")
    return p


def _device(name: str | None):
    """``--device`` as a torch device, or a :class:`SampleError` naming it (no such type, no such GPU)."""
    import torch

    if name is None:
        return None
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError):
        raise SampleError(f"--device {name}: not a torch device; use cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise SampleError(f"--device {name}: no CUDA GPU is available here; use --device cpu")
        if device.index is not None and device.index >= count:
            raise SampleError(f"--device {name}: this machine has {count} CUDA GPU(s) (cuda:0..cuda:{count - 1})")
    elif device.type == "mps" and not torch.backends.mps.is_available():
        raise SampleError(f"--device {name}: MPS is not available here; use --device cpu")
    return device


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    held = contextlib.ExitStack()  # the sample folder's lock, held by the main process for the whole run
    try:
        with held:
            summary = _run(args, held)
    except (SampleError, PipelineError) as exc:
        print(f"ptt-sample: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only --out: the PNGs already written stay whole
        print(f"ptt-sample: error: {_out_error_line(exc, args.out)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C: every PNG on disk is whole (atomic writes); a rerun skips them
        print(f"ptt-sample: interrupted; rerun the same command to continue into {args.out}", file=sys.stderr)
        return 130
    rate = summary["written"] / summary["seconds"] if summary["written"] else 0.0
    print(
        f"ptt-sample: rank {summary['rank']}/{summary['world_size']}: wrote {summary['written']}, skipped "
        f"{summary['skipped']} existing, {rate:.2f} img/s, {summary['scheduler']} {summary['steps']} steps "
        f"({summary['evaluations']} UNet evaluations per image) -> {summary['out']}"
    )
    return 0


def _out_error_line(exc: BaseException, out: str) -> str:
    if isinstance(exc, (FileExistsError, NotADirectoryError)) and Path(out).exists() and not Path(out).is_dir():
        return f"--out {out}: is a file, not a folder; pass a folder for the PNGs"
    return disk_error_line(exc, out) or os_error_line(exc, out, "--out")


def _run(args, held: contextlib.ExitStack) -> dict:
    """Load, claim ``--out`` (lock and settings, on the main process; every rank waits for its verdict), sample."""
    import torch
    from accelerate import PartialState
    from accelerate.utils import parse_flag_from_env

    from common.lock import FolderBusyError, lock_on_main_process
    from evaluation.pipeline import load_pipeline

    device = _device(args.device)
    # PartialState only forms a multi-process CPU group when told it is on the CPU (Accelerator reads the flag)
    cpu = parse_flag_from_env("ACCELERATE_USE_CPU") or (device is not None and device.type == "cpu")
    state = PartialState(cpu=cpu)
    device = device or state.device
    dtype = _dtype(args.dtype)
    unet, scheduler_config, source = load_pipeline(args.model, device=device)
    if dtype != torch.float32 and device.type == "cuda":
        unet.to(dtype)  # pure low-precision weights on the GPU; the scheduler math stays fp32
    dtype = None if dtype == torch.float32 else dtype
    info = sample_info(
        scheduler_config,
        model_name=source,
        scheduler=args.scheduler,
        steps=args.steps,
        seed=args.seed,
        dtype=dtype,
        num_images=args.num_images,
        batch_size=args.batch_size,
    )

    def describe(exc: BaseException) -> str:
        if isinstance(exc, FolderBusyError):
            return f"--out {exc}"
        return str(exc) if isinstance(exc, SampleError) else _out_error_line(exc, args.out)

    lock_on_main_process(
        state, args.out, held, error=SampleError, describe=describe, check=lambda: claim_out(args.out, info)
    )
    summary = write_samples(
        unet,
        scheduler_config,
        args.out,
        num_images=args.num_images,
        seed=args.seed,
        batch_size=args.batch_size,
        steps=args.steps,
        scheduler=args.scheduler,
        device=device,
        dtype=dtype,
        rank=state.process_index,
        world_size=state.num_processes,
        model_name=source,
        progress=state.is_local_main_process and not args.no_progress,
    )
    state.wait_for_everyone()
    return summary


if __name__ == "__main__":
    sys.exit(main())
