"""Training throughput: our training step vs the usual diffusers-example loop, same model, same batch, one process.

The baseline is written the way diffusers' ``examples/unconditional_image_generation/train_unconditional.py`` does
it: a ``datasets`` folder with a torchvision transform per sample (PIL decode, Resize, CenterCrop,
RandomHorizontalFlip, ToTensor, Normalize), a ``DataLoader`` with ``num_workers=0``, fp32, no ``channels_last``,
default (foreach) AdamW, ``DDPMScheduler.add_noise``, MSE, ``clip_grad_norm_``, a per-step ``loss.item()`` and a
non-foreach ``EMAModel``.

Ours is the trainer's step (training/train.py): images decoded once into a uint8 tensor on the device, the
preset's augmentation on the batch on the device, ``step_loss`` (loss in fp32), fused AdamW with the on-device
non-finite skip, foreach EMA, no host sync; on the device each preset asks for (bf16 autocast, channels_last;
on CUDA also TF32 and optionally ``torch.compile``). On CPU, bf16 autocast is used when the CPU has AVX512-BF16
or AMX (``--cpu-bf16 auto``), since that is what ``train.mixed_precision=bf16`` does there.

The two variants alternate in rounds (warm-up steps first), and the median images/s of each is reported with the
ratio, the peak memory (CUDA: max allocated per variant; CPU: the process's peak RSS while the variant ran), the
model FLOP utilisation (UNet training FLOPs per image x images/s / a measured matmul rate: bf16 on CUDA, fp32 or
bf16 on CPU), and the machine.

Example::

    python benchmarks/bench_train.py --presets small --batch 16 --steps 3 --rounds 2          # CPU, a few minutes
    python benchmarks/bench_train.py --presets seed001 --batch 128 --steps 20 --compile       # GPU
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from benchmarks._common import machine, nvidia_gpu_name  # noqa: E402
from training.config import load_train_config  # noqa: E402
from training.data import write_crops_dataset  # noqa: E402

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


class PeakRSS:
    """Samples the process RSS every 20 ms while active (CPU peak memory of a variant)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = None

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.rss())
            time.sleep(0.02)

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())


# -- data --------------------------------------------------------------------------------------------------------


def make_dataset(path: Path, n: int = 256, size: int = 64) -> Path:
    """A real ``datasets`` folder of 64x64 PNG crops of skimage's astronaut (the curated format)."""
    return write_crops_dataset(path, n=n, size=size)


# -- the baseline: diffusers' train_unconditional.py, reduced to its training step ---------------------------------


class Baseline:
    name = "baseline (diffusers example)"

    def __init__(self, cfg, dataset_dir: str, batch: int, device: torch.device):
        import datasets
        from diffusers import DDPMScheduler, UNet2DModel
        from diffusers.training_utils import EMAModel
        from torchvision import transforms

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
        res = cfg.data.resolution
        augmentations = transforms.Compose(
            [
                transforms.Resize(res, interpolation=transforms.InterpolationMode.BILINEAR),
                transforms.CenterCrop(res),
                transforms.RandomHorizontalFlip(),
                transforms.ToTensor(),
                transforms.Normalize([0.5], [0.5]),
            ]
        )
        dataset = datasets.load_from_disk(dataset_dir)["train"]

        def transform_images(examples):
            return {"input": [augmentations(image.convert("RGB")) for image in examples["image"]]}

        dataset.set_transform(transform_images)
        self.loader = torch.utils.data.DataLoader(
            dataset, batch_size=batch, shuffle=True, num_workers=0, drop_last=True
        )
        self.it = iter(self.loader)
        self.model.train()

    def _batch(self):
        try:
            return next(self.it)
        except StopIteration:
            self.it = iter(self.loader)
            return next(self.it)

    def step(self) -> None:
        import torch.nn.functional as F

        clean_images = self._batch()["input"].to(self.device)
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


# -- ours: the trainer's step ---------------------------------------------------------------------------------------


class Ours:
    name = "ours (training/train.py step)"

    def __init__(
        self,
        cfg,
        dataset_dir: str,
        batch: int,
        device: torch.device,
        *,
        bf16: bool,
        channels_last: bool,
        compile_unet: bool,
    ):
        from diffusers import UNet2DModel
        from diffusers.training_utils import EMAModel

        from training.data import load_images
        from training.model import build_noise_scheduler, build_optimizer, build_unet

        torch.manual_seed(0)
        self.cfg, self.batch, self.device = cfg, batch, device
        self.bf16, self.channels_last = bf16, channels_last
        self.images = load_images(dataset_dir, split="train", resolution=cfg.data.resolution).to(device)
        model = build_unet(cfg).to(device)
        if channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model = model
        self.ema = EMAModel(
            model.parameters(),
            decay=cfg.ema.decay,
            use_ema_warmup=True,
            inv_gamma=1.0,
            power=0.75,
            foreach=True,
            model_cls=UNet2DModel,
            model_config=model.config,
        )
        self.ema.to(device)
        self.optimizer = build_optimizer(model.parameters(), cfg, device_type=device.type)
        if compile_unet:
            model.compile()
        self.alphas = build_noise_scheduler(cfg).alphas_cumprod.to(device)
        self.micro = 0
        self.loss_sum = torch.zeros((), device=device)
        model.train()

    def step(self) -> None:
        from training.augment import augment_batch
        from training.data import batch_indices, to_device
        from training.train import step_generator, step_loss

        cfg, dev = self.cfg, self.device
        idx = batch_indices(len(self.images), step=self.micro, batch_size=self.batch, seed=0)
        g = step_generator(dev, 0, 0, self.micro)
        x = self.images[to_device(idx, dev)].float().div_(255.0)
        if cfg.augment.enabled:
            x = augment_batch(x, cfg.augment, g)
        x0 = x.mul_(2.0).sub_(1.0)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.bf16):
            loss = step_loss(self.model, x0, g, cfg, self.alphas, channels_last=self.channels_last)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.optim.max_grad_norm or float("inf"))
        if self.optimizer.defaults.get("fused"):
            self.optimizer.found_inf = (~torch.isfinite(grad_norm)).float()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.ema.step(self.model.parameters())
        self.loss_sum += loss.detach()  # read only at log steps
        self.micro += 1


# -- the comparison -------------------------------------------------------------------------------------------------


def measure(variant, steps: int, batch: int, device: torch.device) -> tuple[float, int]:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with PeakRSS() as rss:
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(steps):
            variant.step()
        _sync(device)
        dt = time.perf_counter() - t0
    mem = torch.cuda.max_memory_allocated() if device.type == "cuda" else rss.peak
    return steps * batch / dt, mem


def bench_preset(preset: str, args, device: torch.device, dataset_dir: str) -> dict:
    from training.model import build_unet, count_parameters, unet_flops_per_image

    cfg = load_train_config(REPO / "configs" / "train" / f"{preset}.yaml", [f"data.dataset_dir={dataset_dir}"])
    cuda = device.type == "cuda"
    if cuda and cfg.train.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    info = machine_info()
    if cuda:
        bf16 = cfg.train.mixed_precision == "bf16" or args.cuda_bf16
    else:
        bf16 = cfg.train.mixed_precision == "bf16" and (
            args.cpu_bf16 == "on" or (args.cpu_bf16 == "auto" and info["cpu_bf16"])
        )
    channels_last = cfg.train.channels_last if cuda else args.cpu_channels_last
    variants = [
        Baseline(cfg, dataset_dir, args.batch, device),
        Ours(
            cfg,
            dataset_dir,
            args.batch,
            device,
            bf16=bf16,
            channels_last=channels_last,
            compile_unet=args.compile and cuda,
        ),
    ]
    for v in variants:  # warm-up (allocator, oneDNN/cuDNN autotuning, torch.compile)
        for _ in range(args.warmup):
            v.step()
    rates = {v.name: [] for v in variants}
    mems = {v.name: 0 for v in variants}
    for r in range(args.rounds):
        for v in variants if r % 2 == 0 else variants[::-1]:
            ips, mem = measure(v, args.steps, args.batch, device)
            rates[v.name].append(ips)
            mems[v.name] = max(mems[v.name], mem)
            print(f"  {preset} round {r + 1}: {v.name}: {ips:.2f} images/s", flush=True)
    flops = unet_flops_per_image(build_unet(cfg).to(device), cfg.data.resolution, training=True)
    peak_dtype = torch.bfloat16 if (cuda or bf16) else torch.float32
    peak = matmul_rate(device, peak_dtype)
    base, ours = (statistics.median(rates[v.name]) for v in variants)
    return {
        "preset": preset,
        "parameters": count_parameters(variants[1].model),
        "batch": args.batch,
        "steps_per_round": args.steps,
        "rounds": args.rounds,
        "device": str(device),
        "ours_settings": {
            "bf16_autocast": bf16,
            "channels_last": channels_last,
            "fused_adamw": bool(variants[1].optimizer.defaults.get("fused")),
            "compile": args.compile and cuda,
            "augmentation": cfg.augment.enabled,
        },
        "baseline_images_per_s": round(base, 3),
        "ours_images_per_s": round(ours, 3),
        "speedup": round(ours / base, 3),
        "baseline_rounds": [round(x, 3) for x in rates[variants[0].name]],
        "ours_rounds": [round(x, 3) for x in rates[variants[1].name]],
        "baseline_peak_mem_mb": round(mems[variants[0].name] / 2**20, 1),
        "ours_peak_mem_mb": round(mems[variants[1].name] / 2**20, 1),
        "peak_mem_kind": "cuda max_memory_allocated" if cuda else "process peak RSS while the variant ran",
        "unet_train_gflops_per_image": round(flops / 1e9, 3),
        "matmul_tflops_measured": round(peak / 1e12, 3),
        "matmul_dtype": str(peak_dtype).removeprefix("torch."),
        "mfu_ours": round(flops * ours / peak, 4),
        "mfu_baseline": round(flops * base / peak, 4),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=["small"], help="names under configs/train/")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--steps", type=int, default=3, help="measured steps per round")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds (median reported)")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--dataset", default=None, help="a datasets folder; default: 256 generated 64x64 crops")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true", help="torch.compile ours (CUDA only)")
    p.add_argument("--cpu-bf16", choices=["auto", "on", "off"], default="auto")
    p.add_argument("--cpu-channels-last", action="store_true")
    p.add_argument("--cuda-bf16", action="store_true", help="bf16 on CUDA even where the preset says no")
    p.add_argument("--out", default="bench_out/train.json")
    args = p.parse_args(argv)

    device = torch.device(
        "cuda"
        if args.device == "auto" and torch.cuda.is_available()
        else ("cpu" if args.device == "auto" else args.device)
    )
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
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
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
            f"{r['ours_images_per_s']:>12.2f}{r['speedup']:>7.2f}x{r['baseline_peak_mem_mb']:>10.0f}"
            f"{r['ours_peak_mem_mb']:>10.0f}{r['mfu_ours']:>10.2%}"
        )
    m = out["machine"]
    print(
        f"machine: {m['cpu']} ({m['cores']} cores), GPU: {m['gpu']}, torch {m['torch']}, "
        f"load {m['load_avg_1m_at_start']}"
    )
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp_path = path.with_name(f".{path.name}.tmp")
    tmp_path.write_text(json.dumps(out, indent=2) + "\n")
    os.replace(tmp_path, path)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
