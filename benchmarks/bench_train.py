"""Training throughput: our training step vs the usual diffusers-example loop, same model, same batch, one process.

The baseline is written the way diffusers' ``examples/unconditional_image_generation/train_unconditional.py`` does
it: a ``datasets`` folder with a torchvision transform per sample (PIL decode, Resize, CenterCrop,
RandomHorizontalFlip, ToTensor, Normalize), a ``DataLoader`` with ``num_workers=0``, fp32, no ``channels_last``,
default (foreach) AdamW, ``DDPMScheduler.add_noise``, MSE, ``clip_grad_norm_``, a per-step ``loss.item()`` and a
non-foreach ``EMAModel``.

Ours is the trainer's step itself (``training.step.optimizer_step``, the function ``training/train.py`` loops
over, with its ``BatchSource`` and ``build_ema``): images decoded once into a uint8 tensor on the device, the
preset's augmentation on the batch on the device, ``step_loss`` (loss in fp32), fused AdamW with the on-device
non-finite skip, the preset's EMA (foreach), no host sync, with what the preset asks for (bf16 autocast; on CUDA also
channels_last and TF32) and ``torch.compile`` with ``--compile`` (CUDA, or CPU through Inductor and the C++
compiler). On CPU, bf16 autocast is used when the CPU has AVX512-BF16 or AMX (``--cpu-bf16 auto``), since that is
what ``train.mixed_precision=bf16`` does there.

``--ablate`` adds one variant per speed feature, each ours with that one feature switched (fp32 instead of bf16,
``channels_last`` flipped, foreach instead of fused AdamW, EMA without foreach, the per-sample PIL ``DataLoader``
instead of the decoded-once tensor, a ``loss.item()`` every step, augmentation off, ``torch.compile`` with
``--compile``): what each feature pays is ours / that variant.

The variants alternate in rounds (warm-up steps first), and the median images/s of each is reported with the
ratio to the baseline, the peak memory of each variant measured alone in a fresh process (warm-up + 2 steps; CUDA:
``max_memory_allocated``; CPU: peak RSS above the imported libraries; ``--no-isolated-memory`` skips it), the
model FLOP utilisation (UNet training FLOPs per image x images/s / a measured matmul rate: bf16 on CUDA, fp32 or
bf16 on CPU), and the machine.

Example::

    python benchmarks/bench_train.py --presets homework_unet --batch 16 --steps 3 --rounds 2    # CPU, a few minutes
    python benchmarks/bench_train.py --presets homework_unet --batch 16 --ablate               # what each feature pays
    python benchmarks/bench_train.py --presets attention_unet --batch 128 --steps 20 --compile  # GPU
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks._common import machine, nvidia_gpu_name, proc_status_kb, write_json  # noqa: E402
from tests.crops import write_crops_dataset  # noqa: E402
from training.config import load_train_config  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


# -- machine ---------------------------------------------------------------------------------------------------


def machine_info() -> dict:
    """``benchmarks._common.machine`` plus what the training figures depend on (threads, CPU bf16, GPU)."""
    flags = ""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        pass
    return machine(
        torch_threads=torch.get_num_threads(),
        cpu_bf16=any(f in flags.split() for f in ("avx512_bf16", "amx_bf16")),
        torch=torch.__version__,
        gpu=nvidia_gpu_name() if torch.cuda.is_available() else "none",
    )


def matmul_rate(device: torch.device, dtype: torch.dtype) -> float:
    """Measured dense matmul FLOP/s at this dtype (the MFU denominator)."""
    n = 8192 if device.type == "cuda" else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    reps = 20 if device.type == "cuda" else 4
    for _ in range(2):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    _sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


# -- data --------------------------------------------------------------------------------------------------------


def make_dataset(path: Path, n: int = 256, size: int = 64) -> Path:
    """A real ``datasets`` folder of 64x64 PNG crops of skimage's astronaut (the curated format)."""
    return write_crops_dataset(path, n=n, size=size)


# -- the baseline: diffusers' train_unconditional.py, reduced to its training step ---------------------------------


def _pil_loader(dataset_dir: str, res: int, batch: int, *, normalize: bool, flip: bool):
    """The example's input path: PIL decode + torchvision transforms per sample, ``num_workers=0``."""
    import datasets
    from torchvision import transforms

    steps = [transforms.Resize(res, interpolation=transforms.InterpolationMode.BILINEAR), transforms.CenterCrop(res)]
    steps += [transforms.RandomHorizontalFlip()] if flip else []
    steps += [transforms.ToTensor()]
    steps += [transforms.Normalize([0.5], [0.5])] if normalize else []
    augmentations = transforms.Compose(steps)
    dataset = datasets.load_from_disk(dataset_dir)["train"]

    def transform_images(examples):
        return {"input": [augmentations(image.convert("RGB")) for image in examples["image"]]}

    dataset.set_transform(transform_images)
    return torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, num_workers=0, drop_last=True)


def _next_batch(variant):
    try:
        return next(variant.it)
    except StopIteration:
        variant.it = iter(variant.loader)
        return next(variant.it)


class Baseline:
    name = "baseline (diffusers example)"

    def __init__(self, cfg, dataset_dir: str, batch: int, device: torch.device):
        from diffusers import DDPMScheduler, UNet2DModel
        from diffusers.training_utils import EMAModel

        from training.config import unet_kwargs

        torch.manual_seed(0)
        self.device = device
        self.model = UNet2DModel(**unet_kwargs(cfg)).to(device)
        self.noise_scheduler = DDPMScheduler(**cfg.noise.scheduler_config())
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=cfg.optim.lr,
            betas=cfg.optim.betas,
            weight_decay=cfg.optim.weight_decay,
            eps=cfg.optim.eps,
        )
        self.ema = EMAModel(
            self.model.parameters(),
            decay=cfg.ema.decay,
            use_ema_warmup=True,
            inv_gamma=1.0,
            power=0.75,
            model_cls=UNet2DModel,
            model_config=self.model.config,
        )
        self.ema.to(device)
        self.loader = _pil_loader(dataset_dir, cfg.data.resolution, batch, normalize=True, flip=True)
        self.it = iter(self.loader)
        self.model.train()

    def step(self) -> None:
        import torch.nn.functional as F

        clean_images = _next_batch(self)["input"].to(self.device)
        noise = torch.randn(clean_images.shape, device=self.device)
        bsz = clean_images.shape[0]
        timesteps = torch.randint(
            0, self.noise_scheduler.config.num_train_timesteps, (bsz,), device=self.device
        ).long()
        noisy_images = self.noise_scheduler.add_noise(clean_images, noise, timesteps)
        model_output = self.model(noisy_images, timesteps).sample
        loss = F.mse_loss(model_output.float(), noise.float())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        self.optimizer.zero_grad()
        self.ema.step(self.model.parameters())
        self.last_loss = loss.detach().item()  # the example logs this every step


# -- ours: the trainer's step, with each speed feature a switch -----------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """The speed features of our step; the full set is what ``training/train.py`` does for the preset."""

    bf16: bool
    channels_last: bool
    compile: bool = False
    fused_adamw: bool = True
    ema_foreach: bool = True
    data: str = "tensor"  # "tensor": decoded once, indexed on the device; "pil": per-sample PIL + DataLoader
    augment: bool = True
    sync_every_step: bool = False  # read loss.item() each step (the host waits for the device)


def ablations(full: Settings, *, with_compile: bool, bf16_supported: bool) -> list[tuple[str, Settings]]:
    """``ours`` plus one variant per feature, each differing from ``full`` in that feature alone."""
    out = [("ours", full)]
    if full.bf16:
        out.append(("ours, fp32 (no bf16 autocast)", replace(full, bf16=False)))
    elif bf16_supported:
        out.append(("ours + bf16 autocast", replace(full, bf16=True)))
    cl = "off" if full.channels_last else "on"
    out.append((f"ours, channels_last {cl}", replace(full, channels_last=not full.channels_last)))
    if full.fused_adamw:
        out.append(("ours, foreach AdamW (not fused)", replace(full, fused_adamw=False)))
    out.append(("ours, EMA without foreach", replace(full, ema_foreach=False)))
    out.append(("ours, per-sample PIL DataLoader", replace(full, data="pil")))
    out.append(("ours + loss.item() every step", replace(full, sync_every_step=True)))
    if full.augment:
        out.append(("ours, augmentation off", replace(full, augment=False)))
    if with_compile and not full.compile:
        out.append(("ours + torch.compile", replace(full, compile=True)))
    return out


class Ours:
    """The trainer's own step (``training.step.optimizer_step`` with ``build_ema`` and ``BatchSource``, under an
    ``Accelerator`` as ``training/train.py`` runs it), with each speed feature of ``Settings`` a switch."""

    def __init__(self, name: str, cfg, dataset_dir: str, batch: int, device: torch.device, s: Settings):
        from accelerate import Accelerator

        from training.data import load_images
        from training.model import build_noise_scheduler, build_optimizer, build_unet
        from training.step import BatchSource, StepStats, build_ema

        torch.manual_seed(0)
        self.name, self.cfg, self.batch, self.device, self.s = name, cfg, batch, device, s
        # One process, no mixed precision in the accelerator: bf16 is this variant's switch (autocast in step()),
        # and variants with and without it alternate in one process, while accelerate's state is process-wide.
        self.accelerator = Accelerator(cpu=device.type == "cpu")
        augment = cfg.augment if s.augment and cfg.augment.enabled else None
        if s.data == "tensor":
            images = load_images(dataset_dir, split="train", resolution=cfg.data.resolution).to(device)
            self.batches = BatchSource(images, batch_size=batch, seed=cfg.train.seed, augment=augment)
        else:
            self.loader = _pil_loader(dataset_dir, cfg.data.resolution, batch, normalize=False, flip=False)
            self.it = iter(self.loader)
            self.batches = self._pil_batch
        self.augment = augment
        model = build_unet(cfg).to(device)
        if s.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.ema = build_ema(model, cfg.ema, device, foreach=s.ema_foreach)
        opt_cfg = cfg.model_copy(update={"optim": cfg.optim.model_copy(update={"fused": s.fused_adamw})})
        self.optimizer = build_optimizer(model.parameters(), opt_cfg, device_type=device.type)
        if s.compile:
            model.compile()
        self.alphas = build_noise_scheduler(cfg).alphas_cumprod.to(device)
        self.stats = StepStats.zeros(device)
        self.micro = 0
        model.train()

    def _pil_batch(self, micro_step: int, g) -> torch.Tensor:
        """The per-sample PIL ``DataLoader``'s next batch, then the trainer's augmentation and range."""
        from training.step import clean_batch

        return clean_batch(_next_batch(self)["input"].to(self.device), self.augment, g)

    def step(self) -> None:
        from training.step import optimizer_step

        dev, s = self.device, self.s
        loss = optimizer_step(
            self.accelerator, self.model, self.optimizer, self.cfg, self.batches, self.stats, step=self.micro,
            alphas_cumprod=self.alphas, ema=self.ema, channels_last=s.channels_last,
            autocast=lambda: torch.autocast(dev.type, dtype=torch.bfloat16, enabled=s.bf16),
        )  # fmt: skip
        if s.sync_every_step:
            self.last_loss = loss.detach().item()  # the trainer reads its loss sums only at log steps
        self.micro += 1


# -- the comparison -------------------------------------------------------------------------------------------------


def measure(variant, steps: int, batch: int, device: torch.device) -> float:
    """Images per second over ``steps`` steps (memory is measured apart, each variant alone: ``memory_probe``)."""
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        variant.step()
    _sync(device)
    return steps * batch / (time.perf_counter() - t0)


def preset_settings(cfg, args, device: torch.device, info: dict) -> Settings:
    """What the trainer does for this preset on this device (bf16 on CPU where the CPU has bf16 units, with
    ``--cpu-bf16 auto``; channels_last on CUDA only)."""
    cuda = device.type == "cuda"
    if cuda:
        bf16 = cfg.train.mixed_precision == "bf16" or args.cuda_bf16
    else:
        bf16 = cfg.train.mixed_precision == "bf16" and (
            args.cpu_bf16 == "on" or (args.cpu_bf16 == "auto" and info["cpu_bf16"])
        )
    if args.channels_last == "preset":  # as the trainer does: channels_last on CUDA only
        channels_last = cfg.train.channels_last and cuda
    else:
        channels_last = args.channels_last == "on"
    return Settings(
        bf16=bf16,
        channels_last=channels_last,
        compile=bool(args.compile and not args.ablate),
        fused_adamw=cfg.optim.fused,
        augment=cfg.augment.enabled,
    )


def variant_specs(cfg, args, device: torch.device) -> tuple[Settings, list[tuple[str, Settings]]]:
    """Ours as the trainer runs it, and the variants to compare (ours alone, or one per feature with --ablate)."""
    info = machine_info()
    full = preset_settings(cfg, args, device, info)
    specs = [("ours", full)]
    if args.ablate:
        specs = ablations(full, with_compile=args.compile, bf16_supported=device.type == "cuda" or info["cpu_bf16"])
    return full, specs


def preset_config(preset: str, dataset_dir: str, device: torch.device):
    cfg = load_train_config(REPO / "configs" / "train" / f"{preset}.yaml", [f"data.dataset_dir={dataset_dir}"])
    if device.type == "cuda" and cfg.train.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    return cfg


def memory_probe(preset: str, name: str, args, device: torch.device, dataset_dir: str) -> dict:
    """Run in a fresh process: build only variant ``name``, take warm-up + 2 steps, report its peak memory."""
    cfg = preset_config(preset, dataset_dir, device)
    _, specs = variant_specs(cfg, args, device)
    import datasets  # noqa: F401  everything either variant imports, so that `idle` holds the libraries
    import diffusers.training_utils  # noqa: F401
    import torchvision.transforms  # noqa: F401

    import training.augment  # noqa: F401
    import training.train  # noqa: F401

    datasets.load_from_disk(dataset_dir)  # and pyarrow's first mapping of the dataset
    tiny = diffusers.UNet2DModel(
        sample_size=8, block_out_channels=(4, 8), norm_num_groups=4, layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    ).to(device)  # fmt: skip
    with torch.autocast(device.type, dtype=torch.bfloat16):
        tiny(torch.randn(1, 3, 8, 8, device=device), torch.tensor([1], device=device)).sample.float().mean().backward()
    del tiny  # the kernels' libraries (oneDNN, cuDNN, cuBLAS) are now loaded, not counted against a variant
    try:  # restart VmHWM here (Linux >= 4.0), so that import-time spikes are not taken for the variant's
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    idle = proc_status_kb("VmRSS") * 1024  # the interpreter with the libraries imported, before the variant
    if name == Baseline.name:
        variant = Baseline(cfg, dataset_dir, args.batch, device)
    else:
        variant = Ours(name, cfg, dataset_dir, args.batch, device, dict(specs)[name])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for _ in range(max(1, args.warmup) + 2):
        variant.step()
    _sync(device)
    if device.type == "cuda":
        return {"kind": "cuda max_memory_allocated", "peak_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1)}
    peak = proc_status_kb("VmHWM") * 1024  # this process's own peak (see proc_status_kb)
    return {"kind": "process peak RSS above the imports", "peak_mb": round((peak - idle) / 2**20, 1)}


def isolated_memory(preset: str, name: str, args, device: torch.device, dataset_dir: str) -> dict:
    """``memory_probe`` in a subprocess, so no other variant's tensors are counted."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--presets", preset, "--dataset", dataset_dir]
    cmd += ["--batch", str(args.batch), "--warmup", str(args.warmup), "--device", str(device)]
    cmd += ["--cpu-bf16", args.cpu_bf16, "--channels-last", args.channels_last, "--memory-probe", name]
    cmd += [
        f for f, on in (("--ablate", args.ablate), ("--compile", args.compile), ("--cuda-bf16", args.cuda_bf16)) if on
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("MEMORY_PROBE ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"memory probe for {name!r} failed (rc {proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(lines[-1].removeprefix("MEMORY_PROBE "))


def bench_preset(preset: str, args, device: torch.device, dataset_dir: str) -> dict:
    from training.model import build_unet, count_parameters, unet_flops_per_image

    cfg = preset_config(preset, dataset_dir, device)
    cuda = device.type == "cuda"
    full, specs = variant_specs(cfg, args, device)
    variants = [Baseline(cfg, dataset_dir, args.batch, device)]
    variants += [Ours(name, cfg, dataset_dir, args.batch, device, s) for name, s in specs]
    for v in variants:  # warm-up (allocator, oneDNN/cuDNN autotuning, torch.compile)
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            v.step()
        print(f"  {preset} warm-up: {v.name}: {time.perf_counter() - t0:.1f} s", flush=True)
    rates = {v.name: [] for v in variants}
    for r in range(args.rounds):
        for v in variants if r % 2 == 0 else variants[::-1]:
            ips = measure(v, args.steps, args.batch, device)
            rates[v.name].append(ips)
            print(f"  {preset} round {r + 1}: {v.name}: {ips:.2f} images/s", flush=True)
    flops = unet_flops_per_image(build_unet(cfg).to(device), cfg.data.resolution, training=True)
    peak_dtype = torch.bfloat16 if (cuda or full.bf16) else torch.float32
    peak = matmul_rate(device, peak_dtype)
    med = {name: statistics.median(xs) for name, xs in rates.items()}
    base, ours = med[variants[0].name], med["ours"]
    rows = [
        {
            "variant": v.name,
            "settings": asdict(v.s) if isinstance(v, Ours) else None,
            "images_per_s": round(med[v.name], 3),
            "rounds": [round(x, 3) for x in rates[v.name]],
            "vs_baseline": round(med[v.name] / base, 3),
            "ours_vs_this": round(ours / med[v.name], 3),  # > 1: the switched feature pays
        }
        for v in variants
    ]
    if args.isolated_memory:
        for row in rows:
            probe = isolated_memory(preset, row["variant"], args, device, dataset_dir)
            row["peak_mem_mb"], row["peak_mem_kind"] = probe["peak_mb"], probe["kind"]
            print(f"  {preset} memory, alone in a process: {row['variant']}: {probe['peak_mb']:.0f} MB", flush=True)
    return {
        "preset": preset,
        "parameters": count_parameters(variants[1].model),
        "batch": args.batch,
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "device": str(device),
        "ours_settings": asdict(full),
        "baseline_images_per_s": round(base, 3),
        "ours_images_per_s": round(ours, 3),
        "speedup": round(ours / base, 3),
        "baseline_peak_mem_mb": rows[0].get("peak_mem_mb"),
        "ours_peak_mem_mb": rows[1].get("peak_mem_mb"),
        "peak_mem_kind": rows[0].get("peak_mem_kind", "not measured (--no-isolated-memory)"),
        "unet_train_gflops_per_image": round(flops / 1e9, 3),
        "matmul_tflops_measured": round(peak / 1e12, 3),
        "matmul_dtype": str(peak_dtype).removeprefix("torch."),
        "mfu_ours": round(flops * ours / peak, 4),
        "mfu_baseline": round(flops * base / peak, 4),
        "variants": rows,
    }


def _mb(v) -> str:
    return "-" if v is None else f"{v:.0f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=["homework_unet"], help="names under configs/train/")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=3, help="measured steps per round")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--dataset", default=None, help="a datasets folder; default: 256 generated 64x64 crops")
    p.add_argument("--device", default="auto")
    p.add_argument("--ablate", action="store_true", help="add one variant per speed feature (see the module doc)")
    p.add_argument("--compile", action="store_true", help="torch.compile ours (with --ablate: as one more variant)")
    p.add_argument("--cpu-bf16", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--channels-last", choices=["preset", "on", "off"], default="preset")
    p.add_argument("--cuda-bf16", action="store_true", help="bf16 on CUDA even where the preset says no")
    p.add_argument(
        "--no-isolated-memory",
        dest="isolated_memory",
        action="store_false",
        help="skip the peak-memory probe (each variant alone in a fresh process)",
    )
    p.add_argument("--memory-probe", default=None, help=argparse.SUPPRESS)  # internal: one variant's memory
    p.add_argument("--out", default="bench_out/train.json")
    args = p.parse_args(argv)

    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
    if args.memory_probe:
        probe = memory_probe(args.presets[0], args.memory_probe, args, device, args.dataset)
        print("MEMORY_PROBE " + json.dumps(probe), flush=True)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        dataset_dir = args.dataset or str(make_dataset(Path(tmp) / "dataset"))
        results = []
        for preset in args.presets:
            print(f"== {preset} on {device}, batch {args.batch}", flush=True)
            results.append(bench_preset(preset, args, device, dataset_dir))
    out = {
        "benchmark": "train",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine_info(),
        "command": " ".join(
            [Path(sys.executable).name, __file__ if argv is not None else sys.argv[0], *(argv or sys.argv[1:])]
        ),
        "results": results,
    }
    hdr = (
        f"{'preset':<18}{'params':>12}{'batch':>6}{'baseline img/s':>16}{'ours img/s':>12}{'ratio':>8}"
        f"{'base MB':>10}{'ours MB':>10}{'MFU ours':>10}"
    )
    print(hdr)
    for r in results:
        print(
            f"{r['preset']:<18}{r['parameters']:>12,}{r['batch']:>6}{r['baseline_images_per_s']:>16.2f}"
            f"{r['ours_images_per_s']:>12.2f}{r['speedup']:>7.2f}x{_mb(r['baseline_peak_mem_mb']):>10}"
            f"{_mb(r['ours_peak_mem_mb']):>10}{r['mfu_ours']:>10.2%}"
        )
    for r in results if args.ablate else []:
        print(f"\n{r['preset']}: each variant (ours / variant > 1: the switched feature pays)")
        print(f"{'variant':<40}{'img/s':>9}{'vs baseline':>13}{'ours/this':>11}{'peak MB':>9}")
        for row in r["variants"]:
            print(
                f"{row['variant']:<40}{row['images_per_s']:>9.2f}{row['vs_baseline']:>12.2f}x"
                f"{row['ours_vs_this']:>10.2f}x{_mb(row.get('peak_mem_mb')):>9}"
            )
    m = out["machine"]
    print(
        f"machine: {m['cpu']} ({m['cores']} cores), GPU: {m['gpu']}, torch {m['torch']}, "
        f"load {m['load_avg_1m_at_start']}"
    )
    print(f"wrote {write_json(args.out, out)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
