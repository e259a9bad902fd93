"""Sampling throughput of every scheduler at its default step count: batch 256, bf16.

``benchmarks/bench_sample.py`` times one list of step counts for every scheduler; this runs its
``run_variants`` (``evaluation.sample.generate``, the code path of ptt-sample, UNet calls counted by a hook,
warm-up first, median of ``--repeats``) once per scheduler at ``evaluation.sample.DEFAULT_STEPS`` (ddpm 1000,
ddim 50, dpmsolver++ 20, unipc 20), on the UNet of a real preset (``training.model.build_unet`` of
``configs/train/<preset>.yaml``: attention_unet has attention head dim 64, which bench_sample's ``attention_unet``
preset, built with UNet2DModel's default head dim 8, has not), weights cast to ``--dtype``. Writes ``sample.json`` and
appends a table to ``summary.md`` in ``--out``.

Example::

    python benchmarks/gpu/sample_defaults.py --out $OUT                                   # GPU: ~1.5 minutes
    python benchmarks/gpu/sample_defaults.py --out /tmp/o --preset demo --batch 2 --steps-scale 0.003  # CPU
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="attention_unet", help="configs/train/<preset>.yaml's UNet")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--dtype", default="bf16", choices=("bf16", "fp16", "fp32"))
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--schedulers", default="ddpm,ddim,dpmsolver++,unipc")
    p.add_argument("--steps-scale", type=float, default=1.0, help="CPU dry runs only: scale the default steps")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)

    import torch

    from benchmarks.bench_sample import machine, run_variants, table
    from evaluation.sample import DEFAULT_STEPS
    from training.config import load_train_config
    from training.model import build_noise_scheduler, build_unet, count_parameters

    cuda = torch.cuda.is_available()
    dev = torch.device("cuda" if cuda else "cpu")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[a.dtype]
    if not cuda:
        dtype = torch.float32  # the CPU dry run checks the code path, not the precision
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    cfg = load_train_config(ROOT / "configs" / "train" / f"{a.preset}.yaml", ["data.dataset_dir=/unused"])
    torch.manual_seed(0)
    unet = build_unet(cfg).to(dev)
    params = count_parameters(unet)
    if dtype != torch.float32:
        unet = unet.to(dtype)
    unet.eval()
    sched_cfg = dict(build_noise_scheduler(cfg).config)
    rows = []
    t0 = time.perf_counter()
    for s in [x for x in a.schedulers.split(",") if x]:
        n = max(1, round(DEFAULT_STEPS[s] * a.steps_scale))
        rows += run_variants(
            unet,
            sched_cfg,
            schedulers=[s],
            steps_list=[n],
            batch=a.batch,
            repeats=a.repeats,
            device=dev,
            dtype=dtype if dtype != torch.float32 else None,
        )
        r = rows[-1]
        print(f"  {s} x{n}: {r['images_per_s']:.2f} images/s, {r['unet_evals_per_s']:.0f} UNet evals/s", flush=True)
    ddpm = next((r for r in rows if r["scheduler"] == "ddpm"), None)
    for r in rows:
        r["x_vs_ddpm_default"] = r["images_per_s"] / ddpm["images_per_s"] if ddpm else None
    res = {
        "benchmark": "sample (default steps)",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine(),
        "preset": a.preset,
        "parameters": params,
        "dtype": str(dtype).removeprefix("torch."),
        "batch": a.batch,
        "rows": rows,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    (Path(a.out) / "sample.json").parent.mkdir(parents=True, exist_ok=True)
    (Path(a.out) / "sample.json").write_text(json.dumps(res, indent=2) + "\n")
    title = (
        f"## sample: {a.preset} UNet ({params:,} parameters), batch {a.batch}, {res['dtype']}, each scheduler "
        f"at its default steps, on {res['machine'].get('gpu') or 'CPU'}\n"
    )
    md = table(title, rows)
    md += "\n\nx vs DDPM default: images/s over DDPM's at 1000 steps.\n" + "\n".join(
        f"- {r['scheduler']}: {r['x_vs_ddpm_default']:.1f}x" for r in rows if r["x_vs_ddpm_default"]
    )
    with open(Path(a.out) / "summary.md", "a") as fh:
        fh.write(md + "\n\n")
    print(md, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
