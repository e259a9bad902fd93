"""Where the time of one training step goes: torch.profiler over our step, plus quick levers.

Our step is ``benchmarks/bench_train.py``'s ``Ours`` (the trainer's step: decoded-once data on the device,
augmentation on the batch, ``step_loss``, fused AdamW, foreach EMA, no host sync) for ``--preset`` (attention_unet) at
``--batch`` (128) in bf16 with the preset's channels_last. After ``--warmup`` steps, ``--steps`` steps run under
``torch.profiler`` (CPU + CUDA activity); the kernel table sorted by self device time goes to ``profile.txt``, a
summary (device time per step by kernel family, device busy fraction = kernel time / wall time per step) to
``profile.json`` and ``summary.md``. A busy fraction well under 1 means the GPU waits for the host (launches):
CUDA graphs through ``torch.compile(mode="reduce-overhead")`` or a larger batch pay; near 1, the kernels themselves.

Then each lever is timed alone (``--levers``; same step, ``--warmup`` + ``--steps`` steps, images/s):
``channels_last`` flipped, batch x2, SDPA forced to each backend (flash, efficient, cudnn, math), and with
``--compile`` torch.compile (default mode) and mode ``max-autotune-no-cudagraphs``.

Example::

    python benchmarks/gpu/profile_step.py --out $OUT                                      # GPU: ~1 minute
    python benchmarks/gpu/profile_step.py --out /tmp/o --preset demo --batch 4 --steps 2 --warmup 1   # CPU
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import sys
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

FAMILIES = (  # first match wins; kernel names of cuDNN, cuBLAS(Lt), CUTLASS, Triton, PyTorch's own
    ("attention", r"flash|fmha|attention|efficient_attention|sdpa|softmax"),
    ("convolution", r"conv|implicit_gemm|xmma_fprop|xmma_dgrad|xmma_wgrad|dgrad|wgrad|fprop|cudnn"),
    ("matmul", r"gemm|cutlass|nvjet|cublas|sm90_xmma|matmul|addmm|mm_"),
    ("group norm", r"group_norm|groupnorm|RowwiseMoments|ComputeFusedParams|GroupNorm"),
    ("optimizer + EMA", r"adam|multi_tensor|foreach|lerp"),
    ("copy / layout", r"copy|transpose|contiguous|nchwToNhwc|nhwcToNchw|cat|memcpy|memset"),
    ("elementwise / reduction", r"elementwise|vectorized|reduce|triton|silu|mul|add|kernel"),
)


def family(name: str) -> str:
    for fam, pat in FAMILIES:
        if re.search(pat, name, re.IGNORECASE):
            return fam
    return "other"


def by_family(rows: list[tuple[str, float]]) -> dict[str, float]:
    """Sum of (name, microseconds) by kernel family, largest first."""
    out: dict[str, float] = {}
    for name, us in rows:
        out[family(name)] = out.get(family(name), 0.0) + us
    return dict(sorted(out.items(), key=lambda kv: -kv[1]))


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def timed(variant, steps: int, batch: int, dev, ctx=None) -> float:
    _sync(dev)
    t0 = time.perf_counter()
    with ctx or contextlib.nullcontext():
        for _ in range(steps):
            variant.step()
    _sync(dev)
    return steps * batch / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="attention_unet")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--levers", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--compile", action="store_true", help="also time torch.compile levers (minutes of compiling)")
    p.add_argument("--rows", type=int, default=40, help="rows of the kernel table")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)

    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.profiler import ProfilerActivity, profile

    from benchmarks.bench_train import Ours, Settings, machine_info, make_dataset, preset_config

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cuda = dev.type == "cuda"
    import shutil

    shutil.rmtree("/tmp/kit/profile_dataset", ignore_errors=True)
    data = str(make_dataset(Path("/tmp/kit/profile_dataset"), n=max(256, 2 * a.batch)))
    cfg = preset_config(a.preset, data, dev)
    base = Settings(
        bf16=cfg.train.mixed_precision == "bf16" or cuda,
        channels_last=cfg.train.channels_last and cuda,
        fused_adamw=cfg.optim.fused,
        augment=cfg.augment.enabled,
    )
    print(f"profile: {a.preset} batch {a.batch} on {dev}, {base}", flush=True)
    v = Ours("ours", cfg, data, a.batch, dev, base)
    for _ in range(a.warmup):
        v.step()
    ips = timed(v, a.steps, a.batch, dev)
    wall_ms = a.batch / ips * 1e3
    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with profile(activities=acts) as prof:
        for _ in range(a.steps):
            v.step()
        _sync(dev)
    ka = prof.key_averages()
    sort = "self_device_time_total" if cuda else "self_cpu_time_total"
    try:
        table = ka.table(sort_by=sort, row_limit=a.rows, max_name_column_width=90)
    except (KeyError, AttributeError, RuntimeError):
        sort = "self_cuda_time_total" if cuda else sort
        table = ka.table(sort_by=sort, row_limit=a.rows, max_name_column_width=90)

    def self_dev_us(e) -> float:
        for attr in ("self_device_time_total", "self_cuda_time_total"):
            if hasattr(e, attr):
                return float(getattr(e, attr))
        return 0.0

    kernels = []
    if cuda:  # device-side events (kernels, memcpy) carry device time; CPU ops carry none of their own
        kernels = [(e.key, self_dev_us(e)) for e in ka if self_dev_us(e) > 0 and e.device_type.name != "CPU"]
        if not kernels:
            kernels = [(e.key, self_dev_us(e)) for e in ka if self_dev_us(e) > 0]
    else:
        kernels = [(e.key, float(e.self_cpu_time_total)) for e in ka if e.self_cpu_time_total > 0]
    total_us = sum(us for _, us in kernels)
    per_step_ms = total_us / a.steps / 1e3
    fams = {k: round(us / a.steps / 1e3, 3) for k, us in by_family(kernels).items()}
    res = {
        "benchmark": "profile",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine_info(),
        "preset": a.preset,
        "batch": a.batch,
        "settings": base.__dict__,
        "images_per_s": ips,
        "wall_ms_per_step": wall_ms,
        "kernel_ms_per_step": per_step_ms,
        "device_busy_fraction": per_step_ms / wall_ms if cuda else None,
        "ms_per_step_by_family": fams,
        "top_kernels": [
            {"name": n, "ms_per_step": round(us / a.steps / 1e3, 3)}
            for n, us in sorted(kernels, key=lambda kv: -kv[1])[:25]
        ],
        "sorted_by": sort,
        "levers": [],
    }
    print(f"  ours: {ips:.1f} images/s, {wall_ms:.1f} ms/step wall, {per_step_ms:.1f} ms/step in kernels", flush=True)
    (out / "profile.txt").write_text(
        f"{a.preset} batch {a.batch} {base} on {res['machine'].get('gpu')}\n"
        f"{ips:.1f} images/s, {wall_ms:.2f} ms/step wall, {per_step_ms:.2f} ms/step "
        f"in kernels\n\n{table}\n"
    )
    del v, prof
    if a.levers:
        levers = [
            ("as profiled", base, a.batch, None),
            (
                f"channels_last {'off' if base.channels_last else 'on'}",
                replace(base, channels_last=not base.channels_last),
                a.batch,
                None,
            ),
            (f"batch {2 * a.batch}", base, 2 * a.batch, None),
        ]
        for name in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
            if hasattr(SDPBackend, name):
                levers.append((f"SDPA {name.lower()} only", base, a.batch, getattr(SDPBackend, name)))
        if a.compile:
            levers.append(("torch.compile (default)", replace(base, compile=True), a.batch, None))
        for name, s, batch, backend in levers:
            row = {"lever": name, "batch": batch}
            try:
                t0 = time.perf_counter()
                var = Ours(name, cfg, data, batch, dev, s)
                ctx = (lambda b=backend: sdpa_kernel(b)) if backend is not None else (lambda: contextlib.nullcontext())
                with ctx():
                    for _ in range(a.warmup):
                        var.step()
                row["warmup_s"] = round(time.perf_counter() - t0, 1)
                row["images_per_s"] = timed(var, a.steps, batch, dev, ctx())
                row["x_as_profiled"] = row["images_per_s"] / ips
                del var
            except Exception as exc:  # noqa: BLE001 - a backend that cannot run this shape, say
                row["error"] = f"{type(exc).__name__}: {str(exc)[:200]}"
            if cuda:
                torch.cuda.empty_cache()
            print(f"  lever {name}: {row.get('images_per_s', row.get('error'))}", flush=True)
            res["levers"].append(row)
    (out / "profile.json").write_text(json.dumps(res, indent=2) + "\n")
    md = [
        f"## profile: {a.preset}, batch {a.batch}, our step ({'bf16' if base.bf16 else 'fp32'}, channels_last "
        f"{base.channels_last})",
        "",
        f"{ips:.1f} images/s; {wall_ms:.2f} ms/step wall, {per_step_ms:.2f} ms/step of kernels"
        + (f" (device busy {per_step_ms / wall_ms:.0%})" if cuda else " (CPU: op self time)"),
        "",
        "| kernel family | ms/step |",
        "|---|---:|",
    ]
    md += [f"| {k} | {v:.2f} |" for k, v in fams.items()]
    md += ["", "| lever | batch | images/s | x as profiled |", "|---|---:|---:|---:|"]
    for r in res["levers"]:
        ips_r = f"{r['images_per_s']:.1f}" if "images_per_s" in r else r.get("error", "")[:80]
        x = f"{r['x_as_profiled']:.2f}" if "x_as_profiled" in r else "-"
        md.append(f"| {r['lever']} | {r['batch']} | {ips_r} | {x} |")
    md.append("\nThe kernel table (sorted by self device time) is profile.txt.\n")
    with open(out / "summary.md", "a") as fh:
        fh.write("\n".join(md) + "\n")
    print("\n".join(md), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
