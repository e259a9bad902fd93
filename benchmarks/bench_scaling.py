"""Batch and learning-rate scaling on the quality benchmark (a proxy): which ``optim.lr_scaling`` rule holds up.

The recommended recipe (``configs/train/fast.yaml``'s noise, loss, lr 1e-3 and 50 warm-up steps, tuned at batch 16)
is trained at batch 16/32/64/128 with lr scaled from batch 16 by each rule (``optim.lr_scaling`` none | sqrt |
linear, ``optim.reference_batch=16``; sqrt and linear also scale the warm-up to the same images seen), in two
regimes: at **equal optimizer steps** (a large batch sees more images) and at **equal images seen** (a large batch
takes fewer steps). Everything else is ``benchmarks/bench_quality.py``'s frame (digits at 8x8, a 1.1M UNet, FD in
a small CNN's features against a real-data floor), and its functions train and score each run, so this ranks
rules; it is not a face FID and says nothing about GPU throughput.

A second seed is trained for every run within ``--second-seed-within`` (10%) of the best final FD in its regime
(``--all-seeds 0 1``: every run at both seeds; with ``--reuse`` the runs already done are read back).

Example::

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/bench_scaling.py --steps 150 --images 4800 --points 1 \
        --curve-steps 25 --all-seeds 0 1                                # what BENCHMARKS.md section 7 ran
    python benchmarks/bench_scaling.py --batches 16 64 --rules none sqrt --steps 150 --images 4800
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import bench_quality as bq  # noqa: E402
from benchmarks._common import write_json  # noqa: E402

log = logging.getLogger("bench_scaling")

# fast.yaml's recipe, as bench_quality's variants spell it (its lr and warm-up are the reference at batch 16)
RECIPE = [*bq.recipe_overrides(), "optim.reference_batch=16"]
RULES = ("none", "sqrt", "linear")


def runs(batches: list[int], rules: list[str]) -> list[tuple[str, int, str]]:
    """(name, batch, rule) for each run; at the reference batch the rules coincide, so it runs once."""
    out = []
    for b in batches:
        for rule in rules if b != 16 else ["none"]:
            out.append((f"b{b}-{rule}", b, rule))
    return out


def overrides(batch: int, rule: str) -> list[str]:
    return [*RECIPE, f"optim.lr_scaling={rule}", f"train.batch_size={batch}"]


def best_within(finals: dict[str, float], tol: float) -> list[str]:
    """Names whose final FD is within ``tol`` of the best one."""
    best = min(finals.values())
    return [n for n, fd in finals.items() if fd <= best * (1.0 + tol)]


def table(results: list[dict], floor: float) -> str:
    lines = [
        f"{bq.PROXY}; real-data floor FD {floor:.3f}",
        "",
        "| regime | batch | rule | lr | images seen | steps | final FD (per seed) | mean | train s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["regime"], r["batch_size"], r["rule"]), []).append(r)
    for (regime, batch, rule), rs in groups.items():
        fds = [r["final_fd"] for r in rs]
        lr = 1.0e-3 * {"none": 1.0, "sqrt": (batch / 16) ** 0.5, "linear": batch / 16}[rule]
        lines.append(
            f"| {regime} | {batch} | {rule} | {lr:.2g} | {rs[0]['budget_images']:,} | {rs[0]['steps']} | "
            f"{' / '.join(f'{x:.3f}' for x in fds)} | {sum(fds) / len(fds):.3f} | "
            f"{sum(r['train_s'] for r in rs):.0f} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "bench_out" / "scaling")
    p.add_argument("--batches", type=int, nargs="+", default=[16, 32, 64, 128])
    p.add_argument("--rules", nargs="+", default=list(RULES), choices=RULES)
    p.add_argument("--steps", type=int, default=300, help="optimizer steps of the equal-steps regime")
    p.add_argument("--images", type=int, default=9_600, help="images seen in the equal-images regime")
    p.add_argument("--regimes", nargs="+", default=["images", "steps"], choices=["images", "steps"])
    p.add_argument("--points", type=int, default=2, help="checkpoints scored per run")
    p.add_argument("--second-seed-within", type=float, default=0.10)
    p.add_argument("--all-seeds", type=int, nargs="*", default=None, help="train every run at these seeds instead")
    p.add_argument("--num-images", type=int, default=500)
    p.add_argument("--curve-scheduler", default="ddim")
    p.add_argument("--curve-steps", type=int, default=50)
    p.add_argument("--sample-seed", type=int, default=10_000)
    p.add_argument("--reuse", action="store_true", help="reuse runs/<name>-s<seed>.json from an earlier run")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    bq.setup_logging()
    import torch

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    args.keep_pipeline_of = set()
    t0 = time.perf_counter()
    proxy = bq.digits_proxy(args.out / "digits_dataset", test=args.num_images)
    dataset_dir, scorer, floor = proxy.dataset_dir, proxy.scorer, proxy.floor()
    print(f"{bq.PROXY}; real-data floor FD {floor:.3f}", flush=True)
    common = {"args": args, "dataset_dir": dataset_dir, "scorer": scorer, "points": args.points}
    results = []
    for regime in args.regimes:
        finals = {}
        plan = runs(args.batches, args.rules)
        for seed in args.all_seeds or (0, 1):
            every = seed == 0 or args.all_seeds is not None
            names = [n for n, _, _ in plan] if every else best_within(finals, args.second_seed_within)
            for name, batch, rule in plan:
                if name not in names:
                    continue
                images = args.images if regime == "images" else args.steps * batch
                r = bq.run_variant(f"{regime}-{name}", overrides(batch, rule), images=images, seed=seed, **common)
                r.update(regime=regime, rule=rule)
                results.append(r)
                if seed == 0:
                    finals[name] = r["final_fd"]
                print(f"{regime} {name} s{seed}: final FD {r['final_fd']:.3f} ({r['train_s']:.0f} s)", flush=True)
            write_json(args.out / "scaling.json", {"floor": floor, "results": results})
    md = table(results, floor)
    (args.out / "table.md").write_text(md, encoding="utf-8")
    write_json(
        args.out / "scaling.json",
        {"floor": floor, "results": results, "command": " ".join(sys.argv), "wall_s": time.perf_counter() - t0},
    )
    print(md)
    print(json.dumps({"wall_s": round(time.perf_counter() - t0)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
