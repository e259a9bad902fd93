"""Training throughput against the real peer: diffusers' own ``train_unconditional.py`` example, unmodified.

Both trainers run as they ship, each in its own process, on the same images (``write_crops_dataset``: a
``datasets`` folder for ours, the same train images as PNG files in an image folder for the peer, which reads it as
``imagefolder``), the same UNet (the peer gets ``--model_config_name_or_path`` a folder holding our preset's
``config.json``), the same batch per GPU and the same precision (bf16), one epoch of ``--steps`` steps
(images = batch x steps, so every step is a full batch):

* peer: ``diffusers_train_unconditional.py --train_data_dir IMAGES --model_config_name_or_path CFG
  --resolution 64 --center_crop --random_flip --use_ema --train_batch_size B --num_epochs 1
  --mixed_precision bf16 --logger tensorboard`` (its README's recipe; sampling at the epoch end cut to 1 image x
  2 DDPM steps, no mid-run checkpoint), run through ``runpy`` so that its process can report
  ``torch.cuda.max_memory_allocated``. Its training rate comes from its tensorboard ``loss`` scalars: it logs
  ``loss.item()`` (a host sync) after every step, so the scalars' wall times are step ends; the rate is
  (last step - step ``--skip``) x batch / (their wall-time difference).
* ours: ``training.train.main`` with the preset plus ``train.batch_size=B train.max_steps=S
  train.mixed_precision=bf16``, no sample grids, FID or held-out loss; its rate comes from ``metrics.jsonl``
  (``images_per_s`` per log window of ``--log-every`` steps, each window ending in a host sync), windows after
  step ``--skip``. Variants: ``ours`` (the preset as the trainer runs it) and ``compile`` (+ ``train.compile=true``).

Peak memory: ``torch.cuda.max_memory_allocated`` in each process, and the GPU's ``memory.used`` sampled by
``nvidia-smi`` every 100 ms while it runs (context and allocator cache included). MFU: the UNet's counted training
FLOPs per image (``unet_flops_per_image``, forward x3) x images/s over a bf16 8192^3 matmul rate measured in the
same call. Writes ``peer.json`` and appends a markdown table to ``summary.md`` in ``--out``.

Example::

    python benchmarks/bench_peer.py --out $OUT                                          # GPU, ~4 minutes
    python benchmarks/bench_peer.py --presets demo --batch 4 --steps 6 --skip 2 --log-every 2 --out /tmp/o  # CPU
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import log_tail, run_logged  # noqa: E402

PEER_NAME = "diffusers_train_unconditional.py"
# shared/ inside the checkout (the device tool carries it), the kit's copy (fetch_wheels.sh), the sibling ../shared
PEER_CANDIDATES = (
    ROOT / "shared" / "peers" / PEER_NAME,
    ROOT / ".whl" / "peers" / PEER_NAME,
    ROOT.parent / "shared" / "peers" / PEER_NAME,
)


def find_peer(explicit: str | None = None) -> Path:
    for p in [Path(explicit)] if explicit else PEER_CANDIDATES:
        if p.is_file():
            return p
    where = explicit or ", ".join(str(p) for p in PEER_CANDIDATES)
    raise SystemExit(f"the peer {PEER_NAME} is not at {where}: run benchmarks/gpu/fetch_wheels.sh here first")


# -- pure parts (tested on the CPU) ----------------------------------------------------------------------------


def rate_from_events(events: list[tuple[float, int]], batch: int, skip: int) -> dict:
    """Images/s from (wall_time, step) pairs logged at step ends, over the steps after ``skip``."""
    ev = sorted({s: w for w, s in events}.items())  # one wall time per step (the last one logged)
    ev = [(s, w) for s, w in ev if s >= skip]
    if len(ev) < 2:
        return {"images_per_s": None, "steps_timed": 0, "seconds": None, "error": f"{len(ev)} step(s) after {skip}"}
    (s0, w0), (s1, w1) = ev[0], ev[-1]
    secs = w1 - w0
    return {
        "images_per_s": (s1 - s0) * batch / secs if secs > 0 else None,
        "steps_timed": s1 - s0,
        "seconds": round(secs, 3),
        "from_step": s0,
        "to_step": s1,
    }


def rate_from_metrics(rows: list[dict], batch: int, skip: int) -> dict:
    """Images/s from the trainer's log windows (``step``, ``images_per_s``) that start at or after ``skip``."""
    wins = sorted((r["step"], r["images_per_s"]) for r in rows if "images_per_s" in r and "step" in r)
    steps = secs = 0.0
    prev = 0
    used = []
    for step, ips in wins:
        n = step - prev
        if prev >= skip and ips and n > 0:
            steps += n
            secs += n * batch / ips
            used.append(step)
        prev = step
    if not steps:
        return {"images_per_s": None, "steps_timed": 0, "seconds": None, "error": f"no log window after {skip}"}
    return {
        "images_per_s": steps * batch / secs,
        "steps_timed": int(steps),
        "seconds": round(secs, 3),
        "windows_ending_at": used,
    }


def parse_smi(lines: list[str]) -> float | None:
    """Peak MiB from ``nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits`` lines (first GPU)."""
    vals = []
    for line in lines:
        head = line.strip().split(",")[0].strip()
        try:
            vals.append(float(head))
        except ValueError:
            continue
    return max(vals) if vals else None


def tb_scalars(logdir: Path, tag: str = "loss") -> list[tuple[float, int]]:
    """(wall_time, step) of every ``tag`` scalar in the tensorboard event files under ``logdir``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = []
    for f in sorted(Path(logdir).rglob("events.out.tfevents*")):
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        if tag in acc.Tags().get("scalars", []):
            out += [(e.wall_time, e.step) for e in acc.Scalars(tag)]
    return out


def _fmt(v, spec: str, none: str = "-") -> str:
    return none if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def markdown(res: dict) -> str:
    lines = [
        f"## peer: ours vs diffusers' train_unconditional.py on {res['machine'].get('gpu')}",
        "",
        f"batch {res['batch']} per GPU, bf16, {res['steps']} steps ({res['steps'] * res['batch']} images, one "
        f"epoch), rate over steps after {res['skip']}; bf16 matmul {_fmt(res['matmul_tflops'], '.1f')} TFLOP/s "
        f"measured in this call; peer dataloader workers {res['peer_workers']}.",
        "",
        "| preset | trainer | images/s | x peer | MFU | max_memory_allocated MB | nvidia-smi peak MiB | wall s |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for p in res["presets"]:
        for r in p["rows"]:
            lines.append(
                f"| {p['preset']} | {r['trainer']} | {_fmt(r.get('images_per_s'), '.1f')} | "
                f"{_fmt(r.get('x_peer'), '.2f')} | {_fmt(r.get('mfu'), '.1%')} | "
                f"{_fmt(r.get('max_memory_allocated_mb'), '.0f')} | {_fmt(r.get('smi_peak_mib'), '.0f')} | "
                f"{_fmt(r.get('wall_s'), '.0f')} |"
            )
    for p in res["presets"]:
        lines.append(
            f"\n{p['preset']}: {p['parameters']:,} parameters, {p['train_gflops_per_image']:.1f} GFLOP per "
            f"training image (forward x3)"
        )
    if res.get("problems"):
        lines += ["", "problems: " + "; ".join(res["problems"])]
    return "\n".join(lines) + "\n"


# -- children: one trainer per process -------------------------------------------------------------------------


def _peak_alloc_mb() -> float | None:
    import torch

    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return None


def child(kind: str, result_path: str, argv: list[str]) -> int:
    """Run one trainer in this process, then write its exit status and peak allocated memory to ``result_path``."""
    rc: object = 0
    if kind == "matmul":  # the MFU denominator, in a process of its own (no context left in the trainers' peaks)
        import torch

        from benchmarks.bench_train import matmul_rate

        dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        Path(result_path).write_text(json.dumps({"rc": 0, "flops_per_s": matmul_rate(dev, torch.bfloat16)}))
        return 0
    try:
        if kind == "peer":
            import runpy

            sys.argv = [argv[0], *argv[1:]]
            runpy.run_path(argv[0], run_name="__main__")
        else:
            from training.train import main as train_main

            rc = train_main(argv)
    except SystemExit as exc:
        rc = exc.code or 0
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        import traceback

        traceback.print_exc()
        rc = f"{type(exc).__name__}: {exc}"
    Path(result_path).write_text(json.dumps({"rc": rc, "max_memory_allocated_mb": _peak_alloc_mb()}))
    return 0 if rc == 0 else 1


class SmiSampler:
    """``nvidia-smi`` sampling ``memory.used`` every 100 ms in the background; ``peak`` after ``stop``."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.proc = None
        if shutil.which("nvidia-smi"):
            cmd = ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits", "-lms", "100"]
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            self.thread = threading.Thread(target=self._read, daemon=True)
            self.thread.start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)

    def stop(self) -> float | None:
        if self.proc is None:
            return None
        self.proc.terminate()
        self.proc.wait(timeout=10)
        self.thread.join(timeout=5)
        return parse_smi(self.lines)


def run_child(kind: str, name: str, argv: list[str], work: Path, timeout: float) -> dict:
    res_path, log = work / f"{name}.result.json", work / f"{name}.log"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        kind,
        "--child-result",
        str(res_path),
        "--",
        *argv,
    ]
    smi = SmiSampler()
    rc, wall = run_logged(cmd, log, timeout=timeout, cwd=ROOT)
    peak = smi.stop()
    out = {"rc": rc, "wall_s": round(wall, 1), "smi_peak_mib": peak, "log": str(log)}
    if res_path.is_file():
        out.update(json.loads(res_path.read_text()))
    if out["rc"] != 0:
        out["log_tail"] = log_tail(log, 30)
        print(f"  {name} failed (rc {out['rc']}); log tail:\n{out['log_tail']}", flush=True)
    return out


# -- the comparison ----------------------------------------------------------------------------------------------


def prepare_data(work: Path, n: int) -> tuple[Path, Path]:
    """A ``datasets`` folder of ``n`` 64x64 crops (train split only) and the same images as PNGs in a folder."""
    from tests.crops import write_crops_dataset
    from training.data import load_split

    ds_dir = write_crops_dataset(work / "dataset", n=n, size=64)
    img_dir = work / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    for i, row in enumerate(load_split(str(ds_dir), "train")):
        row["image"].convert("RGB").save(img_dir / f"{i:05d}.png")
    return ds_dir, img_dir


def peer_argv(peer: Path, images: Path, config_dir: Path, out_dir: Path, args) -> list[str]:
    return [
        str(peer),
        "--train_data_dir",
        str(images),
        "--model_config_name_or_path",
        str(config_dir),
        "--resolution",
        "64",
        "--center_crop",
        "--random_flip",
        "--use_ema",
        "--output_dir",
        str(out_dir),
        "--train_batch_size",
        str(args.batch),
        "--num_epochs",
        "1",
        "--mixed_precision",
        "bf16",
        "--logger",
        "tensorboard",
        "--eval_batch_size",
        "1",
        "--ddpm_num_inference_steps",
        "2",
        "--checkpointing_steps",
        "1000000",
        "--save_images_epochs",
        "1000",
        "--save_model_epochs",
        "1000",
        "--dataloader_num_workers",
        str(args.peer_workers),
        "--cache_dir",
        str(out_dir / "hf_cache"),
    ]


def ours_argv(preset: str, ds_dir: Path, run_dir: Path, args, extra: list[str]) -> list[str]:
    return [
        "--config",
        str(ROOT / "configs" / "train" / f"{preset}.yaml"),
        f"data.dataset_dir={ds_dir}",
        f"run_dir={run_dir}",
        f"train.batch_size={args.batch}",
        f"train.max_steps={args.steps}",
        "train.mixed_precision=bf16",
        f"train.log_every_steps={args.log_every}",
        "train.sample_every_steps=null",
        "train.checkpoint_every_steps=1000000",
        "eval.fid_every_steps=null",
        "eval.heldout_every_steps=null",
        "data.test_split=null",
        *extra,
    ]


VARIANTS = {"ours": [], "compile": ["train.compile=true"]}


def bench_preset(preset: str, args, peer: Path, ds_dir: Path, img_dir: Path, work: Path) -> dict:
    from training.config import load_train_config
    from training.metrics import read_metrics
    from training.model import build_unet, count_parameters, unet_flops_per_image

    cfg = load_train_config(ROOT / "configs" / "train" / f"{preset}.yaml", [f"data.dataset_dir={ds_dir}"])
    unet = build_unet(cfg)
    config_dir = work / f"{preset}_unet_config"
    unet.save_config(str(config_dir))  # config.json: the peer builds the same UNet2DModel from it
    flops = unet_flops_per_image(unet, cfg.data.resolution, training=True)
    params = count_parameters(unet)
    del unet
    rows = []
    print(f"== {preset}: {params:,} parameters, batch {args.batch}, {args.steps} steps", flush=True)
    peer_out = work / f"{preset}_peer"
    shutil.rmtree(peer_out, ignore_errors=True)
    r = run_child("peer", f"{preset}_peer", peer_argv(peer, img_dir, config_dir, peer_out, args), work, args.timeout)
    events = tb_scalars(peer_out / "logs") if (peer_out / "logs").is_dir() else []
    r.update(rate_from_events(events, args.batch, args.skip))
    r["trainer"] = f"peer (diffusers example, {args.peer_workers} loader workers)"
    rows.append(r)
    variants = args.variants if preset not in args.no_compile_presets else [v for v in args.variants if v != "compile"]
    for v in variants:
        run_dir = work / f"{preset}_{v}"
        shutil.rmtree(run_dir, ignore_errors=True)
        r = run_child(
            "ours", f"{preset}_{v}", ours_argv(preset, ds_dir, run_dir, args, VARIANTS[v]), work, args.timeout
        )
        r.update(rate_from_metrics(read_metrics(run_dir / "metrics.jsonl"), args.batch, args.skip))
        r["trainer"] = {"ours": "ours (preset, bf16)", "compile": "ours + torch.compile"}[v]
        rows.append(r)
    for r in rows:
        print(
            f"  {r['trainer']}: {_fmt(r.get('images_per_s'), '.1f')} images/s, rc {r['rc']}, "
            f"max_memory_allocated {r.get('max_memory_allocated_mb')} MB, nvidia-smi peak {r.get('smi_peak_mib')} MiB",
            flush=True,
        )
    return {
        "preset": preset,
        "parameters": params,
        "train_gflops_per_image": flops / 1e9,
        "rows": rows,
        "unet_config": json.loads((config_dir / "config.json").read_text()),
    }


def finish(res: dict, rate: float) -> None:
    """Ratios to the peer, MFU and the problem list, from the rows measured so far."""
    res["problems"] = []
    for pr in res["presets"]:
        peer_ips = pr["rows"][0].get("images_per_s")
        for r in pr["rows"]:
            ips = r.get("images_per_s")
            r["x_peer"] = ips / peer_ips if ips and peer_ips else None
            r["mfu"] = pr["train_gflops_per_image"] * 1e9 * ips / rate if ips and rate == rate else None
            if r["rc"] != 0 or not ips:
                res["problems"].append(
                    f"{pr['preset']} {r['trainer']}: rc {r['rc']}, images/s {ips} ({r.get('error', '')})"
                )
    ratios = [r["x_peer"] for pr in res["presets"] for r in pr["rows"][1:] if r.get("x_peer")]
    res["median_ratio"] = statistics.median(ratios) if ratios else None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        kind, result = argv[1], argv[3]
        return child(kind, result, argv[5:])  # --child KIND --child-result PATH -- ARGV...
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--presets", nargs="+", default=["attention_unet", "diffusers_example"])
    p.add_argument("--variants", nargs="+", default=["ours", "compile"], choices=sorted(VARIANTS))
    p.add_argument(
        "--no-compile-presets",
        nargs="*",
        default=["diffusers_example"],
        help="presets measured without the compile variant (device time)",
    )
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--steps", type=int, default=32, help="steps per run (one epoch of batch x steps images)")
    p.add_argument("--skip", type=int, default=8, help="steps left out of the rate (warm-up, compile)")
    p.add_argument("--log-every", type=int, default=4, help="our trainer's log window (steps)")
    p.add_argument("--peer", default=None, help=f"path of {PEER_NAME} (default: found beside or in the checkout)")
    p.add_argument("--peer-workers", type=int, default=0, help="the peer's --dataloader_num_workers (its default 0)")
    p.add_argument("--work", default="/tmp/kit/peer")
    p.add_argument("--timeout", type=float, default=400.0, help="per trainer process, seconds")
    p.add_argument("--out", required=True)
    a = p.parse_args(argv)
    if a.skip % a.log_every:
        p.error("--skip must be a multiple of --log-every (our rate uses whole log windows)")

    from benchmarks.bench_train import machine_info

    peer = find_peer(a.peer)
    work, out = Path(a.work), Path(a.out)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    t0 = time.perf_counter()
    ds_dir, img_dir = prepare_data(work, a.batch * a.steps)
    print(f"data: {a.batch * a.steps} images in {time.perf_counter() - t0:.1f} s; peer {peer}", flush=True)
    mm = run_child("matmul", "matmul", [], work, 300)
    rate = mm.get("flops_per_s") or float("nan")
    print(f"bf16 matmul: {rate / 1e12:.1f} TFLOP/s", flush=True)
    res = {
        "benchmark": "peer",
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": machine_info(),
        "command": " ".join([Path(sys.executable).name, "benchmarks/bench_peer.py", *argv]),
        "peer": str(peer),
        "batch": a.batch,
        "steps": a.steps,
        "skip": a.skip,
        "peer_workers": a.peer_workers,
        "matmul_tflops": rate / 1e12,
        "matmul_dtype": "bfloat16",
        "presets": [],
        "problems": [],
        "complete": False,
    }
    for pr in a.presets:  # peer.json is rewritten after each preset: a run cut short still leaves its figures
        res["presets"].append(bench_preset(pr, a, peer, ds_dir, img_dir, work))
        finish(res, rate)
        res["seconds"] = round(time.perf_counter() - t0, 1)
        (out / "peer.json").write_text(json.dumps(res, indent=2) + "\n")
    res["complete"] = True
    (out / "peer.json").write_text(json.dumps(res, indent=2) + "\n")
    problems = res["problems"]
    md = markdown(res)
    with open(out / "summary.md", "a") as fh:
        fh.write(md + "\n")
    print(md, flush=True)
    print(f"peer took {res['seconds']} s", flush=True)
    return 0 if not problems else 1


if __name__ == "__main__":
    raise SystemExit(main())
