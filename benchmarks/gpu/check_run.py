"""Correctness of the trainer and the sampler on CUDA, in one command; CPU with ``--tiny``.

Runs of the demo preset (tiny UNet) on generated 64x64 crops, each a real process of the unmodified trainer:

==========  ======================================================================================================
bf16_A      ``python -m training.train``: bf16 autocast, channels_last, fused AdamW, torch.compile; N steps,
            checkpoints at K and N, a sample grid and held-out loss at N, the pipeline exported
bf16_A2     the same again: the run-to-run floor of the comparison (CUDA kernels need not be bitwise repeatable)
bf16_B      the same, stopped by SIGTERM right after checkpoint-K (``interrupt_train.py``: the trainer checkpoints
            at K+1 and exits 0), then ``python -m training.train ... --resume latest`` to N
fp16_C      ``accelerate launch --num_processes 1 --mixed_precision fp16 training/train.py``: fp16 autocast + the
            grad scaler (precision from the launcher), channels_last, fused AdamW; N steps
fp16_D      the same, killed (status 137, no clean-up) right after checkpoint-K, then resumed under
            ``accelerate launch`` with ``--resume latest``
==========  ======================================================================================================

Then: every run's logged losses finite and its exit status right; checkpoints on disk; ``compare_weights``
(max abs diff of the final model and EMA weights) for A vs A2 (floor), A vs B and C vs D; the exported pipeline of
A loaded with ``DDPMPipeline.from_pretrained(..., torch_dtype=bfloat16)`` and sampled with every scheduler both
through ``evaluation.sample.generate`` (default steps) and through the pipeline's own ``__call__``; and the sampler
CLI (``python -m evaluation.sample --dtype bf16``) writing PNGs. Writes ``check.json``, appends a section to
``summary.md`` and copies A's sample grid to ``check_grid.png`` in ``--out``.

Example::

    python benchmarks/gpu/check_run.py --out $OUT                    # GPU: ~3 minutes on an H200
    python benchmarks/gpu/check_run.py --out /tmp/o --tiny --jobs 1  # CPU dry run: same code paths, tiny sizes
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks._common import log_tail, run_logged  # noqa: E402

SCHEDULERS = ("ddpm", "ddim", "dpmsolver++", "unipc")


def run_cmd(name: str, cmd: list[str], logs: Path, timeout: float) -> dict:
    log = logs / f"{name}.log"
    rc, seconds = run_logged(cmd, log, timeout=timeout, cwd=ROOT)
    res = {
        "name": name,
        "cmd": " ".join(cmd),
        "rc": rc,
        "seconds": round(seconds, 1),
        "log": str(log),
    }
    print(f"  {name}: rc {rc} in {res['seconds']} s", flush=True)
    if rc not in (0, 137) or rc == "timeout":
        print(f"  ---- {name} log tail\n{log_tail(log)}\n  ----", flush=True)
    return res


def read_metrics(run: Path) -> dict:
    from training.metrics import read_metrics as metrics_rows  # the run directory's one metrics.jsonl reader

    rows = metrics_rows(run / "metrics.jsonl")
    losses = [(r["step"], r["loss"]) for r in rows if "loss" in r]
    heldout = [r["heldout_loss"] for r in rows if "heldout_loss" in r]
    nonfinite = max((r.get("nonfinite_total", 0) for r in rows), default=None)
    ips = [r["images_per_s"] for r in rows if "images_per_s" in r]
    return {
        "logged_steps": [s for s, _ in losses],
        "losses": [round(v, 5) if math.isfinite(v) else str(v) for _, v in losses],
        "all_finite": bool(losses) and all(math.isfinite(v) for _, v in losses) and all(map(math.isfinite, heldout)),
        "heldout_loss": heldout,
        "nonfinite_grad_steps": nonfinite,  # fp16: the grad scaler's first skipped steps count here
        "images_per_s_last": ips[-1] if ips else None,
    }


def banner(log: Path) -> str | None:
    import re

    m = (
        re.search(r"mixed precision (\S+) \(from ([^)]*)\)", log.read_text(errors="replace"))
        if log.is_file()
        else None
    )
    return f"{m.group(1)} (from {m.group(2)})" if m else None


def resumed_at(log: Path) -> int | None:
    import re

    m = re.search(r"resumed from \S+ at step (\d+)", log.read_text(errors="replace")) if log.is_file() else None
    return int(m.group(1)) if m else None


def checkpoints(run: Path) -> list[str]:
    return sorted((p.name for p in (run / "checkpoints").glob("checkpoint-*")), key=lambda s: int(s.split("-")[1]))


def sample_checks(pipeline_dir: Path, *, cuda: bool, tiny: bool, n: int) -> list[dict]:
    """DDPMPipeline.from_pretrained in bf16, then every scheduler through generate() and the pipeline's __call__."""
    import numpy as np
    import torch
    from diffusers import DDPMPipeline

    from evaluation.sample import DEFAULT_STEPS, build_scheduler, generate

    device = torch.device("cuda" if cuda else "cpu")
    pipe = DDPMPipeline.from_pretrained(str(pipeline_dir), dtype=torch.bfloat16).to(device)
    pipe.set_progress_bar_config(disable=True)
    config = dict(pipe.scheduler.config)
    out = []
    for s in SCHEDULERS:
        steps = 3 if tiny else DEFAULT_STEPS[s]
        row = {"scheduler": s, "steps": steps, "unet_dtype": str(pipe.unet.dtype)}
        try:
            t0 = time.perf_counter()
            imgs = generate(
                pipe.unet,
                config,
                num_images=n,
                seed=0,
                batch_size=n,
                steps=steps,
                scheduler=s,
                device=device,
                dtype=torch.bfloat16,
            )
            row["generate"] = {
                "shape": list(imgs.shape),
                "dtype": str(imgs.dtype),
                "mean": round(float(imgs.mean()), 2),
                "std": round(float(np.asarray(imgs, dtype=np.float32).std()), 2),
                "seconds": round(time.perf_counter() - t0, 2),
                "ok": imgs.shape == (n, 64, 64, 3) and imgs.dtype == np.uint8 and float(imgs.std()) > 0,
            }
        except Exception as exc:  # noqa: BLE001 - record, go on with the next scheduler
            row["generate"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        try:
            pipe.scheduler = build_scheduler(s, config)
            t0 = time.perf_counter()
            gen = torch.Generator(device="cpu").manual_seed(0)
            ims = pipe(batch_size=min(n, 8), num_inference_steps=steps, generator=gen, output_type="np").images
            row["pipeline_call"] = {
                "shape": list(ims.shape),
                "finite": bool(np.isfinite(ims).all()),
                "min": round(float(ims.min()), 3),
                "max": round(float(ims.max()), 3),
                "seconds": round(time.perf_counter() - t0, 2),
                "ok": bool(np.isfinite(ims).all()) and ims.shape[1:] == (64, 64, 3),
            }
        except Exception as exc:  # noqa: BLE001 - e.g. a scheduler whose step() takes no generator
            row["pipeline_call"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        print(
            f"  sample {s} x{steps}: generate {row['generate'].get('ok')}, "
            f"DDPMPipeline.__call__ {row['pipeline_call'].get('ok')}"
            f"{' (' + row['pipeline_call']['error'][:120] + ')' if 'error' in row['pipeline_call'] else ''}",
            flush=True,
        )
        out.append(row)
    return out


def verdict(diff: float | None, floor: float | None) -> str:
    if diff is None:
        return "NOT COMPARED"
    if diff == 0.0:
        return "identical"
    if floor is not None and diff <= max(4 * floor, 1e-7):
        return f"within the run-to-run floor ({floor:.2e})"
    return "DIFFERS"


def markdown(res: dict) -> str:
    lines = [
        "## check: trainer and sampler on " + res["device"],
        "",
        "| run | how | precision (banner) | rc | resumed at | checkpoints | losses finite | non-finite grad steps "
        "| s |",
        "|---|---|---|---|---:|---|---|---:|---:|",
    ]
    for name, r in res["runs"].items():
        rcs = ",".join(str(x["rc"]) for x in r["procs"])
        secs = sum(x["seconds"] for x in r["procs"])
        m = r["metrics"]
        lines.append(
            f"| {name} | {r['how']} | {r['precision']} | {rcs} | {r['resumed_at'] or '-'} | "
            f"{' '.join(r['checkpoints'])} | "
            f"{m['all_finite']} | {m['nonfinite_grad_steps']} | {secs:.0f} |"
        )
    lines += ["", "| comparison | final model / EMA max abs diff | verdict |", "|---|---|---|"]
    for name, c in res["compare"].items():
        files = c.get("files", {})
        d = " / ".join(
            f"{f['max_abs_diff']:.2e}" if "max_abs_diff" in f else f.get("error", "?") for f in files.values()
        )
        lines.append(f"| {name} | {d or c.get('error')} | {c['verdict']} |")
    lines += [
        "",
        "| scheduler | steps | generate (bf16) | DDPMPipeline.from_pretrained + __call__ (bf16) |",
        "|---|---:|---|---|",
    ]
    for s in res["sampling"]:
        g, p = s["generate"], s["pipeline_call"]
        lines.append(
            f"| {s['scheduler']} | {s['steps']} | {'ok' if g.get('ok') else g.get('error', 'FAIL')} | "
            f"{'ok' if p.get('ok') else p.get('error', 'FAIL')[:100]} |"
        )
    lines += [
        "",
        "`DDPMPipeline.__call__` is diffusers' own loop, recorded, not counted as a failure: it converts the "
        "image to numpy without a float cast (a bf16 UNet fails there) and passes `generator=` to "
        "`scheduler.step`, which UniPC's does not take; `generate` is the project's sampler (ptt-sample).",
    ]
    cli = res["sampler_cli"]
    lines += [
        "",
        f"sampler CLI (`{cli['cmd']}`): rc {cli['rc']}, {cli.get('pngs')} PNGs",
        "",
        f"**check: {'PASS' if res['ok'] else 'FAIL'}** ({'; '.join(res['problems']) or 'no problems'})",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="folder for check.json, summary.md, check_grid.png")
    p.add_argument("--work", default="/tmp/kit/check")
    p.add_argument("--tiny", action="store_true", help="CPU dry run: 6 steps, batch 4, no compile, fp16 -> no")
    p.add_argument("--jobs", type=int, default=4, help="runs at once in the first wave (they share the GPU)")
    p.add_argument("--no-compile", action="store_true")
    p.add_argument("--timeout", type=float, default=420.0, help="per process, seconds")
    a = p.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available()
    out, work = Path(a.out), Path(a.work)
    shutil.rmtree(work, ignore_errors=True)
    (work / "logs").mkdir(parents=True)
    out.mkdir(parents=True, exist_ok=True)
    logs = work / "logs"
    steps, k, batch, n_img, n_test = (6, 3, 4, 24, 8) if a.tiny else (40, 20, 64, 512, 64)
    compile_on = not (a.tiny or a.no_compile)
    fp16 = "fp16" if cuda else "no"  # fp16 autocast + GradScaler is a CUDA path; the CPU dry run uses fp32 there

    from tests.crops import write_crops_dataset

    ds = write_crops_dataset(work / "dataset", n=n_img + n_test, size=64, test=n_test)
    py = sys.executable
    common = [
        "--config",
        "configs/train/demo.yaml",
        f"data.dataset_dir={ds}",
        f"train.max_steps={steps}",
        f"train.batch_size={batch}",
        f"train.checkpoint_every_steps={k}",
        f"train.sample_every_steps={steps}",
        "train.log_every_steps=2" if a.tiny else "train.log_every_steps=5",
        "train.channels_last=true",
        f"eval.heldout_every_steps={steps}",
        "train.sample_num_images=8" if a.tiny else "train.sample_num_images=16",
    ]
    if a.tiny:
        common += ["train.sample_steps=2", "eval.heldout_batches=1"]
    bf16 = [*common, "train.mixed_precision=bf16", f"train.compile={'true' if compile_on else 'false'}"]
    launch = [
        py,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--mixed_precision",
        fp16,
        "--dynamo_backend",
        "no",
    ]
    intr = str(Path(__file__).resolve().parent / "interrupt_train.py")

    def run_of(name):
        return work / name

    wave1 = {
        "bf16_A": [py, "-m", "training.train", *bf16, f"run_dir={run_of('bf16_A')}"],
        "bf16_A2": [py, "-m", "training.train", *bf16, f"run_dir={run_of('bf16_A2')}"],
        "bf16_B.1": [
            py,
            intr,
            "--interrupt-after",
            str(k),
            "--interrupt-how",
            "sigterm",
            *bf16,
            f"run_dir={run_of('bf16_B')}",
        ],
        "fp16_C": [*launch, "training/train.py", *common, f"run_dir={run_of('fp16_C')}"],
        "fp16_D.1": [
            *launch,
            intr,
            "--interrupt-after",
            str(k),
            "--interrupt-how",
            "kill",
            *common,
            f"run_dir={run_of('fp16_D')}",
        ],
    }
    wave2 = {
        "bf16_B.2": [py, "-m", "training.train", *bf16, f"run_dir={run_of('bf16_B')}", "--resume", "latest"],
        "fp16_D.2": [*launch, "training/train.py", *common, f"run_dir={run_of('fp16_D')}", "--resume", "latest"],
    }
    t_start = time.perf_counter()
    print(
        f"check: {'CUDA ' + torch.cuda.get_device_name(0) if cuda else 'CPU (dry run)'}; {steps} steps, batch "
        f"{batch}, checkpoint at {k}, compile {compile_on}, launcher precision {fp16}",
        flush=True,
    )
    procs = {}
    # bf16_A first alone when compiling: it fills the Inductor cache the others then reuse
    first = ["bf16_A"] if compile_on else []
    for name in first:
        procs[name] = run_cmd(name, wave1[name], logs, a.timeout)
    with ThreadPoolExecutor(max(1, a.jobs)) as pool:
        futs = {n: pool.submit(run_cmd, n, c, logs, a.timeout) for n, c in wave1.items() if n not in procs}
        procs.update({n: f.result() for n, f in futs.items()})
        futs = {n: pool.submit(run_cmd, n, c, logs, a.timeout) for n, c in wave2.items()}
        procs.update({n: f.result() for n, f in futs.items()})

    problems = []
    runs = {}
    how = {
        "bf16_A": "python -m training.train",
        "bf16_A2": "python -m training.train (repeat)",
        "bf16_B": "SIGTERM after checkpoint-K, then --resume latest",
        "fp16_C": "accelerate launch --num_processes 1",
        "fp16_D": "accelerate launch; killed (137) after checkpoint-K, then --resume latest",
    }
    expect_rc = {"bf16_B.1": 0, "fp16_D.1": 137}
    for run in how:
        parts = sorted(n for n in procs if n.split(".")[0] == run)
        r = {
            "how": how[run],
            "procs": [procs[n] for n in parts],
            "metrics": read_metrics(run_of(run)),
            "checkpoints": checkpoints(run_of(run)),
            "precision": banner(logs / f"{parts[-1]}.log"),
        }
        r["pipeline_exported"] = (run_of(run) / "pipeline" / "model_index.json").is_file()
        r["resumed_at"] = resumed_at(logs / f"{parts[-1]}.log") if len(parts) > 1 else None
        for n in parts:
            want = expect_rc.get(n, 0)
            got = procs[n]["rc"]
            if n == "fp16_D.1" and got not in (137, 1):  # accelerate launch reports its child's 137 as 1
                problems.append(f"{n}: rc {got}, expected 137 (or 1 from accelerate launch)")
            elif n != "fp16_D.1" and got != want:
                problems.append(f"{n}: rc {got}, expected {want} (log {procs[n]['log']})")
        if not r["metrics"]["all_finite"]:
            problems.append(f"{run}: non-finite or no logged losses")
        if f"checkpoint-{k}" not in r["checkpoints"] and f"checkpoint-{k + 1}" not in r["checkpoints"]:
            problems.append(f"{run}: no checkpoint-{k} (have {r['checkpoints']})")
        if not r["pipeline_exported"]:
            problems.append(f"{run}: no exported pipeline")
        runs[run] = r

    from compare_weights import compare

    comp = {}
    floor = compare(run_of("bf16_A"), run_of("bf16_A2"))
    comp["bf16 A vs A2 (run-to-run floor)"] = floor
    comp["bf16 A vs B (interrupted + resumed)"] = compare(run_of("bf16_A"), run_of("bf16_B"))
    comp["fp16 C vs D (killed + resumed)"] = compare(run_of("fp16_C"), run_of("fp16_D"))
    for name, c in comp.items():
        c["verdict"] = verdict(c.get("max_abs_diff"), None if "floor" in name else floor.get("max_abs_diff"))
        print(f"  {name}: max abs diff {c.get('max_abs_diff')} -> {c['verdict']}", flush=True)
        if "floor" not in name and c["verdict"] in ("DIFFERS", "NOT COMPARED"):
            problems.append(f"{name}: {c['verdict']} ({c.get('max_abs_diff')}; {c.get('error', '')})")

    sampling = []
    pipe_dir = run_of("bf16_A") / "pipeline"
    if pipe_dir.is_dir():
        sampling = sample_checks(pipe_dir, cuda=cuda, tiny=a.tiny, n=8 if a.tiny else 32)
        for s in sampling:
            if not s["generate"].get("ok"):
                problems.append(f"generate {s['scheduler']}: {s['generate'].get('error', 'bad output')}")
    cli_out = work / "cli_samples"
    cli_cmd = [
        py,
        "-m",
        "evaluation.sample",
        "--model",
        str(pipe_dir),
        "--num-images",
        "8" if a.tiny else "64",
        "--batch-size",
        "8" if a.tiny else "64",
        "--dtype",
        "bf16",
        "--scheduler",
        "dpmsolver++",
        "--out",
        str(cli_out),
        "--no-progress",
        *(["--steps", "2"] if a.tiny else []),
    ]
    cli = run_cmd("sampler_cli", cli_cmd, logs, a.timeout)
    cli["pngs"] = len(list(cli_out.glob("*.png"))) if cli_out.is_dir() else 0
    if cli["rc"] != 0 or cli["pngs"] != (8 if a.tiny else 64):
        problems.append(f"sampler CLI: rc {cli['rc']}, {cli['pngs']} PNGs")
    grids = sorted((run_of("bf16_A") / "samples").glob("step-*.png"))
    if grids:
        shutil.copy(grids[-1], out / "check_grid.png")

    res = {
        "benchmark": "gpu check",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "device": f"CUDA {torch.cuda.get_device_name(0)}" if cuda else "CPU (dry run)",
        "torch": torch.__version__,
        "settings": {
            "steps": steps,
            "checkpoint_at": k,
            "batch": batch,
            "images": n_img,
            "compile": compile_on,
            "launcher_precision": fp16,
        },
        "runs": runs,
        "compare": comp,
        "sampling": sampling,
        "sampler_cli": cli,
        "seconds": round(time.perf_counter() - t_start, 1),
        "problems": problems,
        "ok": not problems,
    }
    (out / "check.json").write_text(json.dumps(res, indent=2) + "\n")
    md = markdown(res)
    with open(out / "summary.md", "a") as fh:
        fh.write(md + "\n")
    print(md, flush=True)
    print(f"check took {res['seconds']} s", flush=True)
    return 0 if res["ok"] else 1


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    raise SystemExit(main())
