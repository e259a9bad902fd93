"""``ptt-fid``: FID/KID of a folder of generated images against the curated dataset, and ``ptt-fid sweep``.

Examples::

    ptt-fid --gen samples/ --ref demo_out/curated/dataset:test --out-json samples/fid.json
    ptt-fid --gen samples/ --ref demo_out/curated/dataset --substitute          # offline smoke run, not comparable
    ptt-fid sweep --model runs/demo/pipeline --ref demo_out/curated/dataset --steps 10,20,50 --substitute

A bad input (no such folder, no images, no Inception weights offline, a bad ``--steps``) ends in one line on
stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from common.fileio import disk_error_line, os_error_line
from evaluation.features import InceptionMissingError
from evaluation.fid import FidError, evaluate, format_result, write_output
from evaluation.pipeline import PipelineError
from evaluation.sample import DEFAULT_SAMPLER, SCHEDULERS, SampleError
from evaluation.sweep import sweep

__all__ = ["main"]


def _main_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ptt-fid", description="FID/KID (clean-fid clean protocol). Also: `ptt-fid sweep --help`."
    )
    p.add_argument("--gen", required=True, help="folder of generated images (ptt-sample --out)")
    p.add_argument("--ref", required=True, help="DATASET_DIR[:split] (default split test) or a folder of images")
    p.add_argument("--num-images", type=int, default=None, help="use the first N generated images (default all)")
    _common(p)
    p.add_argument("--out-json", default=None, help="also write the result as JSON here")
    return p


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--inception", default=None, help="Inception TorchScript (default: where `ptt-weights` finds it)")
    p.add_argument("--substitute", action="store_true", help="offline substitute features (NOT comparable FID)")
    p.add_argument("--cache-dir", default=None, help="reference statistics cache (default ~/.cache/ptt-faces/fid)")
    p.add_argument("--device", default=None)


def _sweep_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ptt-fid sweep", description="FID against samplers and step counts: CSV, Markdown, PNG."
    )
    p.add_argument("--model", required=True, help="exported pipeline folder or Hub id")
    p.add_argument("--ref", required=True)
    p.add_argument(
        "--scheduler",
        default=f"{DEFAULT_SAMPLER},ddpm:1000",  # the default sampler beside the 1000-step reference
        help=f"comma-separated samplers, each at every --steps, or NAME:N at N steps only, e.g. ddpm:1000 "
        f"(from: {', '.join(SCHEDULERS)})",
    )
    p.add_argument("--steps", default="10,20,35,50", help="comma-separated step counts")
    p.add_argument("--num-images", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="sweep_out", help="folder for sweep.csv, sweep.md, sweep.png")
    _common(p)
    return p


def _check_writable_parent(path: Path) -> None:
    """FidError when ``path`` cannot be written because a folder on its way is a file (or is not writable)."""
    anc = path.parent
    while not anc.exists() and anc != anc.parent:
        anc = anc.parent
    if not anc.is_dir():
        raise FidError(f"--out-json {path}: {anc} is a file, not a folder; pass a path inside a folder")
    if not os.access(anc, os.W_OK):
        raise FidError(f"--out-json {path}: {anc} is not writable; pass a path in a writable folder")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    extractor_of = lambda a: "substitute" if a.substitute else "inception"  # noqa: E731
    try:
        if argv[:1] == ["sweep"]:
            a = _sweep_parser().parse_args(argv[1:])
            try:
                steps = [int(s) for s in a.steps.split(",") if s.strip()]
            except ValueError:
                raise FidError(f"--steps {a.steps!r}: give comma-separated integers, e.g. 10,20,50") from None
            rows = sweep(
                a.model,
                a.ref,
                a.out,
                scheduler=[s.strip() for s in a.scheduler.split(",") if s.strip()],
                steps=steps,
                num_images=a.num_images,
                batch_size=a.batch_size,
                seed=a.seed,
                extractor=extractor_of(a),
                inception_path=a.inception,
                cache_dir=a.cache_dir,
                device=a.device,
            )
            print((Path(a.out) / "sweep.md").read_text(encoding="utf-8"))
            print(f"ptt-fid sweep: {len(rows)} rows -> {a.out}/sweep.csv, sweep.md, sweep.png")
            return 0
        a = _main_parser().parse_args(argv)
        if a.out_json:  # before the features are computed, not after
            _check_writable_parent(Path(a.out_json))
        res = evaluate(
            a.gen,
            a.ref,
            extractor=extractor_of(a),
            inception_path=a.inception,
            cache_dir=a.cache_dir,
            device=a.device,
            num_images=a.num_images,
            progress=True,
        )
    except (FidError, InceptionMissingError, SampleError, PipelineError) as exc:
        print(f"ptt-fid: error: {exc}", file=sys.stderr)
        return 2
    print(format_result(res))
    if a.out_json:
        try:
            write_output(Path(a.out_json), json.dumps(res, indent=2) + "\n")
        except FidError as exc:
            print(f"ptt-fid: error: {exc}", file=sys.stderr)
            return 2
        except OSError as exc:
            line = disk_error_line(exc, a.out_json) or os_error_line(exc, a.out_json, "--out-json")
            print(f"ptt-fid: error: {line}", file=sys.stderr)
            return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
