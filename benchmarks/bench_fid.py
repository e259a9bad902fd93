"""The Frechet distance's cost: ours (two symmetric eigenproblems) against clean-fid's ``scipy.linalg.sqrtm`` form.

Every FID the project reports (``ptt-fid``, the trainer's periodic FID, ``ptt-fid sweep``) ends in the Frechet
distance of two 2048-d Gaussians. This times :func:`evaluation.fid.frechet_distance` against clean-fid's own
``frechet_distance`` (``sqrtm`` of S1 S2, with its singular-matrix retry) on the same statistics, and prints both
values with their relative difference. The features are random (a fixed seed, mixed so the covariances are not
diagonal), at the sizes a run meets: 500 generated images against a 2,000-image test split, as many as the
dimensions, and more. The Inception network's own time is not in these figures (ptt-sample/ptt-fid time it).

Example::

    python benchmarks/bench_fid.py                          # 2048-d, the four default sizes, 3 repeats
    python benchmarks/bench_fid.py --dim 2048 --sizes 500:2000 --repeats 1
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import machine, write_json  # noqa: E402
from evaluation.fid import feature_stats, frechet_distance  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=2048, help="feature dimensions (Inception: 2048)")
    p.add_argument("--sizes", nargs="+", default=["500:500", "500:2000", "2048:2048", "5000:5000"],
                   help="generated:reference image counts")  # fmt: skip
    p.add_argument("--repeats", type=int, default=3, help="timed calls per size and method (the median is kept)")
    p.add_argument("--out", type=Path, default=ROOT / "bench_out" / "fid" / "fid.json")
    return p.parse_args(argv)


def _stats(rng, n: int, dim: int, mix: np.ndarray, shift: float):
    return feature_stats(rng.standard_normal((n, dim)).astype(np.float32) @ mix + shift)


def _median_time(fn, stats: tuple, repeats: int) -> tuple[float, float]:
    """The median seconds of ``fn(*stats)`` over ``repeats`` calls, and its value."""
    times, value = [], 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn(*stats)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), float(value)


def main(argv=None) -> int:
    args = parse_args(argv)
    from cleanfid.fid import frechet_distance as clean_fid_frechet_distance

    rng = np.random.default_rng(0)
    mix = (rng.standard_normal((args.dim, args.dim)) / np.sqrt(args.dim)).astype(np.float32)
    rows = []
    print("| images (gen:ref) | dims | ours s | clean-fid sqrtm s | speed-up | ours FID | clean-fid FID | rel. diff |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        n_gen, n_ref = (int(x) for x in size.split(":"))
        (mu1, s1), (mu2, s2) = _stats(rng, n_gen, args.dim, mix, 0.3), _stats(rng, n_ref, args.dim, mix, 0.0)
        stats = (mu1, s1, mu2, s2)
        t_ours, ours = _median_time(frechet_distance, stats, args.repeats)
        t_theirs, theirs = _median_time(clean_fid_frechet_distance, stats, args.repeats)
        row = {"n_gen": n_gen, "n_ref": n_ref, "dim": args.dim, "ours_s": t_ours, "clean_fid_s": t_theirs,
               "ours": ours, "clean_fid": theirs, "rel_diff": abs(ours - theirs) / abs(theirs)}  # fmt: skip
        rows.append(row)
        print(f"| {n_gen}:{n_ref} | {args.dim} | {t_ours:.2f} | {t_theirs:.2f} | {t_theirs / t_ours:.1f}x | "
              f"{ours:.4f} | {theirs:.4f} | {row['rel_diff']:.1e} |", flush=True)  # fmt: skip
    write_json(args.out, {"machine": machine(numpy=np.__version__), "repeats": args.repeats, "rows": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
