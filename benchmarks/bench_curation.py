"""Curation throughput: photos per second and peak memory on ~1 megapixel photos, default detector, by workers.

Builds ``--photos`` distinct ~1 MP JPEGs from the offline photos (t1.jpg, astronaut, Tom Hanks: resized,
rotated, shifted, recoloured so every file has new bytes and no cache hit), then runs the real curation
(``curation.run.run_curation``: decode, RetinaFace + landmark refinement + gender, alignment, metrics,
dedupe, dataset + previews written) once per variant in a fresh child process, interleaved over
``--repeats`` rounds, plus one rerun from the detection cache. Prints a table and writes
``bench_out/curation.json``::

    .venv/bin/python benchmarks/bench_curation.py --photos 60 --workers 1 2 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import machine as _machine  # noqa: E402
from benchmarks._common import nvidia_gpu_name, proc_status_kb, write_json  # noqa: E402


def machine() -> dict:
    import onnxruntime as ort

    return _machine(gpu=nvidia_gpu_name(), onnxruntime=ort.__version__, providers=ort.get_available_providers())


def make_photos(root: Path, n: int, megapixels: float = 1.0) -> Path:
    import cv2
    import numpy as np

    from tests import _synth as synth  # test photos live with the tests; ROOT is on sys.path

    bases = [synth.t1(), synth.astronaut(), synth.insightface_image("Tom_Hanks_54745.png")]
    photos = {}
    rng = np.random.default_rng(0)
    for i in range(n):
        b = bases[i % len(bases)]
        h, w = b.shape[:2]
        s = (megapixels * 1e6 / (h * w)) ** 0.5
        img = cv2.resize(b, (round(w * s), round(h * s)), interpolation=cv2.INTER_CUBIC)
        img = synth.rotate(img, float(rng.uniform(-20, 20)))
        img = np.roll(img, int(rng.integers(-40, 40)), axis=1)
        img = np.clip(img.astype(np.float32) * rng.uniform(0.8, 1.2, 3), 0, 255).astype(np.uint8)
        photos[f"p{i:04d}.jpg"] = synth.encode(img, "JPEG", quality=90)
    return synth.write_store(root, photos, posts=max(1, n // 5))


def child(args: argparse.Namespace) -> None:
    from curation.config import CurationConfig
    from curation.run import run_curation

    cfg = CurationConfig(feed=args.feed, images=args.images, out=args.out, workers=args.child_workers)
    cfg.filters.min_face_area_ratio = 0.0  # keep t1's faces: measure the whole path, not the rejects
    t = time.perf_counter()
    rep = run_curation(cfg)
    wall = time.perf_counter() - t
    self_kb = proc_status_kb("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    print(
        json.dumps(
            {
                "wall_s": wall,
                "detect_align_s": rep["seconds"]["detect_align"],
                "photos": rep["photos"]["unique"],
                "detected_now": rep["photos"]["detected_now"],
                "kept": rep["faces"]["kept"],
                "peak_rss_main_mb": self_kb / 1024,
                "peak_rss_worker_mb": kids_kb / 1024,
            }
        )
    )


def run_variant(store: Path, out: Path, workers: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--feed",
        str(store / "feed.jsonl"),
        "--images",
        str(store / "images"),
        "--out",
        str(out),
        "--child-workers",
        str(workers),
    ]
    env = dict(os.environ, TQDM_DISABLE="1", PYTHONPATH=str(ROOT))
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if r.returncode != 0:
        raise SystemExit(f"child failed ({workers} workers):\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--photos", type=int, default=60)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--megapixels", type=float, default=1.0, help="size of the generated photos")
    p.add_argument("--out-json", default=str(ROOT / "bench_out" / "curation.json"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--feed")
    p.add_argument("--images")
    p.add_argument("--out")
    p.add_argument("--child-workers", type=int, default=1)
    args = p.parse_args()
    if args.child:
        child(args)
        return
    tmp = Path(tempfile.mkdtemp(prefix="bench-curation-"))
    try:
        store = make_photos(tmp / "store", args.photos, args.megapixels).parent
        runs: dict[int, list[dict]] = {w: [] for w in args.workers}
        for rep in range(args.repeats):  # interleaved: w1, w2, w1, w2 ...
            for w in args.workers:
                out = tmp / f"out-w{w}-r{rep}"
                runs[w].append(run_variant(store, out, w))
                if rep == args.repeats - 1 and w == args.workers[-1]:
                    cached = run_variant(store, out, w)  # same out: every detection comes from the cache
        rows = []
        base = None
        for w, rs in runs.items():
            pps = statistics.median(r["photos"] / r["detect_align_s"] for r in rs)
            end2end = statistics.median(r["photos"] / r["wall_s"] for r in rs)
            base = base or pps
            rows.append(
                {
                    "variant": f"workers={w}",
                    "workers": w,
                    "photos": rs[0]["photos"],
                    "photos_per_s": round(pps, 2),
                    "photos_per_s_end_to_end": round(end2end, 2),
                    "speedup_vs_first": round(pps / base, 2),
                    "peak_rss_main_mb": round(max(r["peak_rss_main_mb"] for r in rs), 1),
                    "peak_rss_worker_mb": round(max(r["peak_rss_worker_mb"] for r in rs), 1) if w > 1 else None,
                    "kept": rs[0]["kept"],
                }
            )
        rows.append(
            {
                "variant": f"rerun from cache, workers={args.workers[-1]}",
                "workers": args.workers[-1],
                "photos": cached["photos"],
                "detected_now": cached["detected_now"],
                "photos_per_s": round(cached["photos"] / cached["detect_align_s"], 2),
                "photos_per_s_end_to_end": round(cached["photos"] / cached["wall_s"], 2),
                "speedup_vs_first": round(cached["photos"] / cached["detect_align_s"] / base, 2),
                "peak_rss_main_mb": round(cached["peak_rss_main_mb"], 1),
                "peak_rss_worker_mb": round(cached["peak_rss_worker_mb"], 1),
                "kept": cached["kept"],
            }
        )
        info = machine()
        info["load_average_1m"] = os.getloadavg()[0]  # other jobs on the machine lower the figures
        from curation.config import DetectorConfig

        d = DetectorConfig()
        print(
            f"curation benchmark: {args.photos} photos of ~{args.megapixels:g} MP, default detector ({d.backend}, "
            f"max_side_px={d.max_side_px}, refine_size_px={d.refine_size_px}), gender on"
        )
        print(f"machine: {info['cpu']}, {info['cores']} cores, GPU {info['gpu']}, onnxruntime {info['onnxruntime']}")
        hdr = f"{'variant':<30} {'photos/s':>9} {'end-to-end/s':>13} {'ratio':>6} {'main MB':>8} {'worker MB':>10}"
        print(hdr)
        print("-" * len(hdr))
        for r in rows:
            wmb = "-" if r["peak_rss_worker_mb"] is None else f"{r['peak_rss_worker_mb']:.0f}"
            print(
                f"{r['variant']:<30} {r['photos_per_s']:>9.2f} {r['photos_per_s_end_to_end']:>13.2f} "
                f"{r['speedup_vs_first']:>6.2f} {r['peak_rss_main_mb']:>8.0f} {wmb:>10}"
            )
        print(
            "photos/s = unique photos / time in decode+detect+align+measure; end-to-end includes hashing, "
            "dataset, previews; peak RSS: VmHWM of the main process, ru_maxrss of the largest worker"
        )
        out_json = write_json(
            args.out_json,
            {
                "date": time.strftime("%Y-%m-%d %H:%M:%S"),
                "machine": info,
                "command": " ".join([Path(sys.executable).name, *sys.argv]),
                "photos": args.photos,
                "megapixels": args.megapixels,
                "repeats": args.repeats,
                "runs": runs,
                "table": rows,
                "target_photos_per_s": 10,
            },
        )
        print(f"wrote {out_json}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
