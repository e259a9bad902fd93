"""Sampling throughput: images/s and UNet evaluations/s per scheduler and step count, at one batch size.

Runs ``evaluation.sample.generate`` (the code path ``ptt-sample`` uses) for every (scheduler, steps) variant, the
variants interleaved round-robin for ``--repeats`` rounds after one warm-up each, and reports the median. UNet
evaluations are counted with a forward hook, not assumed. Ratios are images/s over DDPM's at the same step count.

* CPU (always): ``--preset homework_unet`` (the homework recipe's three-level UNet) at a small batch and few steps
  by default.
* GPU (when CUDA is available): ``--gpu-preset attention_unet`` at batch 256 in bf16 (weights cast to bf16, scheduler
  math in fp32), steps 10, 20, 50, 100, 1000. Without a GPU the table says "not measured".

Writes ``bench_out/sample.json`` (figures, machine, command) and prints a table.

Example::

    python benchmarks/bench_sample.py                                  # CPU homework_unet, batch 2, steps 3,6
    python benchmarks/bench_sample.py --cpu-batch 4 --cpu-steps 5 --repeats 1 --schedulers ddim,unipc
    python benchmarks/bench_sample.py --model runs/demo/pipeline       # an exported pipeline instead of a preset
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import machine as _machine  # noqa: E402
from benchmarks._common import write_json  # noqa: E402

# The trained presets' UNets come from their configs (one source of truth: attention_unet has attention_head_dim 64);
# "tiny" is the CPU smoke size.
PRESETS = ("homework_unet", "attention_unet", "tiny")
_TINY = {"block_out_channels": (16, 32), "layers_per_block": 1, "norm_num_groups": 8,
         "down_block_types": ("DownBlock2D",) * 2, "up_block_types": ("UpBlock2D",) * 2}  # fmt: skip


def preset_unet_kwargs(preset: str) -> dict:
    """``UNet2DModel`` arguments of a preset at 64x64 (configs/train/<preset>.yaml's model section)."""
    if preset == "tiny":
        return {"sample_size": 64, **_TINY}
    from training.config import load_train_config, unet_kwargs

    return unet_kwargs(load_train_config(ROOT / "configs" / "train" / f"{preset}.yaml", ["data.resolution=64"]))


def machine() -> dict:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return _machine(torch_threads=torch.get_num_threads(), gpu=gpu, torch=torch.__version__)


def build(preset: str | None, model: str | None, device, dtype):
    import torch
    from diffusers import DDPMScheduler, UNet2DModel

    if model:
        from evaluation.pipeline import load_pipeline

        unet, cfg, _ = load_pipeline(model)
    else:
        torch.manual_seed(0)
        unet = UNet2DModel(**{"in_channels": 3, "out_channels": 3, **preset_unet_kwargs(preset)})
        cfg = dict(DDPMScheduler().config)
    unet = unet.to(device)
    if dtype != torch.float32:
        unet = unet.to(dtype)  # pure low-precision weights, as ptt-sample --dtype does on a GPU
    return unet.eval(), cfg


def run_variants(unet, cfg, *, schedulers, steps_list, batch, repeats, device, dtype) -> list[dict]:
    import torch

    from evaluation.sample import generate

    calls = [0]
    hook = unet.register_forward_hook(lambda *a: calls.__setitem__(0, calls[0] + 1))
    variants = [(s, n) for n in steps_list for s in schedulers]
    times = {v: [] for v in variants}
    evals = {}

    def once(s, n):
        calls[0] = 0
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        generate(unet, cfg, num_images=batch, seed=0, batch_size=batch, steps=n, scheduler=s, device=device,
                 dtype=dtype)  # fmt: skip
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0, calls[0]

    for s, n in variants:  # warm-up (allocator, kernels, scheduler tables)
        once(s, min(n, 2))
    for _ in range(repeats):
        for v in variants:  # interleaved, so drift in machine load hits every variant alike
            t, c = once(*v)
            times[v].append(t)
            evals[v] = c
    hook.remove()
    rows = []
    for s, n in variants:
        t = statistics.median(times[(s, n)])
        rows.append({"scheduler": s, "steps": n, "batch": batch, "seconds": t, "images_per_s": batch / t,
                     "unet_evals": evals[(s, n)], "unet_evals_per_s": batch * evals[(s, n)] / t,
                     "repeats": repeats})  # fmt: skip
    for r in rows:
        base = next((b for b in rows if b["scheduler"] == "ddpm" and b["steps"] == r["steps"]), None)
        r["x_vs_ddpm_same_steps"] = r["images_per_s"] / base["images_per_s"] if base else None
        full = next((b for b in rows if b["scheduler"] == "ddpm" and b["steps"] == 1000), None)
        r["x_vs_ddpm_1000"] = r["images_per_s"] / full["images_per_s"] if full else None
    return rows


def table(title: str, rows: list[dict] | None, note: str = "") -> str:
    cols = "scheduler | steps | batch | images/s | UNet evals | UNet evals/s | x vs DDPM same steps | x vs DDPM 1000"
    out = [title, f"| {cols} |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    if not rows:
        out.append(f"| not measured | | | | | | | |  {note}")
        return "\n".join(out)

    def ratio(v):
        return f"{v:.2f}" if v is not None else "not measured"

    for r in rows:
        cells = [
            r["scheduler"],
            r["steps"],
            r["batch"],
            f"{r['images_per_s']:.3f}",
            r["unet_evals"],
            f"{r['unet_evals_per_s']:.1f}",
            ratio(r["x_vs_ddpm_same_steps"]),
            ratio(r["x_vs_ddpm_1000"]),
        ]
        out.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(out)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="homework_unet", choices=sorted(PRESETS), help="CPU preset")
    p.add_argument("--gpu-preset", default="attention_unet", choices=sorted(PRESETS))
    p.add_argument("--model", default=None, help="exported pipeline instead of a preset (both CPU and GPU)")
    p.add_argument("--schedulers", default="ddpm,ddim,dpmsolver++,unipc")
    p.add_argument("--cpu-batch", type=int, default=2)  # a 64x64 homework_unet eval takes seconds on 2 shared cores
    p.add_argument("--cpu-steps", default="3,6")
    p.add_argument("--gpu-batch", type=int, default=256)
    p.add_argument("--gpu-steps", default="10,20,50,100,1000")
    p.add_argument("--gpu-dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--skip-cpu", action="store_true", help="GPU only (the CPU figures take a while)")
    p.add_argument("--out", default=str(ROOT / "bench_out" / "sample.json"))
    a = p.parse_args(argv)

    import torch

    schedulers = [s for s in a.schedulers.split(",") if s]
    result = {"benchmark": "sample", "date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
              "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
              "cpu": None, "gpu": None}  # fmt: skip
    if not a.skip_cpu:
        dev = torch.device("cpu")
        unet, cfg = build(a.preset, a.model, dev, torch.float32)
        steps = [int(s) for s in a.cpu_steps.split(",")]
        rows = run_variants(unet, cfg, schedulers=schedulers, steps_list=steps, batch=a.cpu_batch,
                            repeats=a.repeats, device=dev, dtype=None)  # fmt: skip
        result["cpu"] = {"preset": a.model or a.preset, "dtype": "fp32", "rows": rows}
        print(table(f"CPU ({result['machine']['cpu']}, {a.model or a.preset}, fp32)", rows))
    if torch.cuda.is_available():
        dev = torch.device("cuda")
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a.gpu_dtype]
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        unet, cfg = build(a.gpu_preset, a.model, dev, dtype)
        steps = [int(s) for s in a.gpu_steps.split(",")]
        rows = run_variants(unet, cfg, schedulers=schedulers, steps_list=steps, batch=a.gpu_batch,
                            repeats=a.repeats, device=dev, dtype=dtype)  # fmt: skip
        result["gpu"] = {"preset": a.model or a.gpu_preset, "dtype": a.gpu_dtype, "rows": rows}
        print(table(f"GPU ({result['machine']['gpu']}, {a.model or a.gpu_preset}, {a.gpu_dtype})", rows))
    else:
        result["gpu"] = "not measured (no CUDA device on this machine)"
        print(table("GPU", None, result["gpu"]))
    print(f"wrote {write_json(a.out, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
