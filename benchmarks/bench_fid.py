"""FID's and KID's arithmetic: ours against clean-fid's (``scipy.linalg.sqrtm``; a kernel per subset).

Every FID the project reports (``ptt-fid``, the trainer's periodic FID, ``ptt-fid sweep``) ends in the Frechet
distance of two 2048-d Gaussians. This times :func:`evaluation.fid.frechet_distance` against clean-fid's own
``frechet_distance`` (``sqrtm`` of S1 S2, with its singular-matrix retry) on the same statistics, and prints both
values with their relative difference; then KID, ours (the whole sets' kernel matrices once, up to
``KID_GRAM_MAX_IMAGES`` images) against clean-fid's ``kernel_distance`` (100 subsets of at most 1,000, each
computed from its features). The two KIDs draw different subsets (clean-fid from numpy's global generator), so
their values differ by the draw; tests/test_fid.py checks that ours equals the per-subset loop on the same draws.
The features are random (a fixed seed, mixed so the covariances are not diagonal), at the sizes a run meets: 500
generated images against a 2,000-image test split, as many as the dimensions, and more. The Inception network's
own time is not in these figures (ptt-sample/ptt-fid time it).

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
from evaluation.fid import feature_stats, frechet_distance, kernel_inception_distance  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dim", type=int, default=2048, help="feature dimensions (Inception: 2048)")
    p.add_argument("--sizes", nargs="+", default=["500:500", "500:2000", "2048:2048", "5000:5000"],
                   help="generated:reference image counts")  # fmt: skip
    p.add_argument("--repeats", type=int, default=3, help="timed calls per size and method (the median is kept)")
    p.add_argument("--out", type=Path, default=ROOT / "bench_out" / "fid" / "fid.json")
    return p.parse_args(argv)


def _features(rng, n: int, dim: int, mix: np.ndarray, shift: float) -> np.ndarray:
    return rng.standard_normal((n, dim)).astype(np.float32) @ mix + shift


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
    from cleanfid.fid import kernel_distance as clean_fid_kernel_distance

    rng = np.random.default_rng(0)
    mix = (rng.standard_normal((args.dim, args.dim)) / np.sqrt(args.dim)).astype(np.float32)
    rows = []
    head = "| images (gen:ref) | dims | ours s | clean-fid sqrtm s | speed-up | ours FID | clean-fid FID | rel. diff |"
    print(head + " KID ours s | KID clean-fid s | KID ours | KID clean-fid |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for size in args.sizes:
        n_gen, n_ref = (int(x) for x in size.split(":"))
        gen, ref = _features(rng, n_gen, args.dim, mix, 0.3), _features(rng, n_ref, args.dim, mix, 0.0)
        stats = (*feature_stats(gen), *feature_stats(ref))
        t_ours, ours = _median_time(frechet_distance, stats, args.repeats)
        t_theirs, theirs = _median_time(clean_fid_frechet_distance, stats, args.repeats)
        t_kid, kid = _median_time(kernel_inception_distance, (gen, ref), args.repeats)
        np.random.seed(0)  # clean-fid draws its subsets from numpy's global generator
        t_kid_theirs, kid_theirs = _median_time(clean_fid_kernel_distance, (gen, ref), args.repeats)
        row = {"n_gen": n_gen, "n_ref": n_ref, "dim": args.dim, "ours_s": t_ours, "clean_fid_s": t_theirs,
               "ours": ours, "clean_fid": theirs, "rel_diff": abs(ours - theirs) / abs(theirs),
               "kid_ours_s": t_kid, "kid_clean_fid_s": t_kid_theirs, "kid_ours": kid,
               "kid_clean_fid": kid_theirs}  # fmt: skip
        rows.append(row)
        print(f"| {n_gen}:{n_ref} | {args.dim} | {t_ours:.2f} | {t_theirs:.2f} | {t_theirs / t_ours:.1f}x | "
              f"{ours:.4f} | {theirs:.4f} | {row['rel_diff']:.1e} | {t_kid:.2f} | {t_kid_theirs:.2f} | "
              f"{kid:.6f} | {kid_theirs:.6f} |", flush=True)  # fmt: skip
    write_json(args.out, {"machine": machine(numpy=np.__version__), "repeats": args.repeats, "rows": rows})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
