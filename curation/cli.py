"""``ptt-curate``: the curation stage's command line.

::

    ptt-curate --config configs/curation.yaml feed=feed.jsonl images=images out=curated [key=value ...] [--dry-run]
    ptt-curate review curated            # static HTML review page (curation/review.py)
    ptt-curate push --repo USER/NAME curated [--private]

``key=value`` overrides use dotted keys of ``curation.config.CurationConfig`` (``filters.min_blur_var=60.0``,
``workers=2``); ``--dry-run`` prints the resolved config and exits. Errors are one line on stderr, exit code 2;
Ctrl-C is one line, exit code 130. A run owns its ``out=`` folder (a second run on it is refused, naming the first).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys

from common.configio import ConfigError, dump_config, load_config
from common.fileio import disk_error_line, os_error_line

__all__ = ["main"]

log = logging.getLogger("curation")


def _fail(msg: str) -> int:
    print(f"ptt-curate: error: {msg}", file=sys.stderr)
    return 2


def _review(argv: list[str]) -> int:
    from curation.review import main_review

    return main_review(argv)


def _push(argv: list[str]) -> int:
    from curation.push import PushError, push_dataset

    p = argparse.ArgumentParser(prog="ptt-curate push", description="Upload a curated dataset to the Hub.")
    p.add_argument("--repo", required=True, help="USER/NAME of the dataset repo")
    p.add_argument("--private", action="store_true")
    p.add_argument("out_dir", help="the out= folder of a ptt-curate run")
    args = p.parse_args(argv)
    try:
        url = push_dataset(args.out_dir, args.repo, private=args.private)
    except PushError as exc:
        return _fail(str(exc))
    print(f"pushed {args.out_dir}/dataset to {url}" + (" (private)" if args.private else ""))
    return 0


def _summary(report: dict) -> str:
    f, p = report["faces"], report["photos"]
    rej = ", ".join(f"{k} {v}" for k, v in report["rejected"].items() if v) or "none"
    lines = [
        f"photos: {p['in']} in feed, {p['unique']} unique, {p['detected_now']} detected now, "
        f"{p['from_cache']} from cache",
        f"faces: {f['detected']} detected, {f['kept']} kept (train {f['train']}, test {f['test']}); pose {f['pose']}",
        f"rejected: {rej}",
        f"dataset: {report['dataset']}",
        f"report:  {report['out']}/curation_report.json",
        f"previews: {report['out']}/previews/ ({', '.join(sorted(report['previews']))})",
        f"time: {report['seconds']['total']:.1f} s",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``ptt-curate``; Ctrl-C ends it with one line and exit code 130 (the cache keeps what was detected)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return _main(argv)
    except KeyboardInterrupt:
        cached = " (detections so far are cached)" if not argv or argv[0] not in ("review", "push") else ""
        print(f"ptt-curate: interrupted; rerun to continue{cached}", file=sys.stderr)
        return 130


def _main(argv: list[str]) -> int:
    if argv and argv[0] == "review":
        return _review(argv[1:])
    if argv and argv[0] == "push":
        return _push(argv[1:])
    p = argparse.ArgumentParser(
        prog="ptt-curate",
        description="Curate downloaded PTT photos into an aligned 64x64 face dataset. "
        "Subcommands: `ptt-curate review OUT_DIR`, `ptt-curate push --repo USER/NAME OUT_DIR`.",
    )
    p.add_argument("--config", default=None, help="YAML config (e.g. configs/curation.yaml)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("-q", "--quiet", action="store_true")
    p.add_argument("overrides", nargs="*", help="key=value, e.g. feed=feed.jsonl images=images out=curated")
    args = p.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )

    from curation.config import CurationConfig

    try:
        cfg = load_config(CurationConfig, args.config, args.overrides)
    except ConfigError as exc:
        return _fail(str(exc))
    if args.dry_run:
        print(dump_config(cfg), end="")
        return 0
    from curation.detect import DetectorError
    from curation.run import CurationError, FolderBusyError, run_curation

    try:
        report = run_curation(cfg)
    except (CurationError, DetectorError, FolderBusyError) as exc:
        return _fail(str(exc))
    except OSError as exc:  # a full disk, a read-only out=: one line, and what was written before stays whole
        return _fail(disk_error_line(exc, cfg.out) or os_error_line(exc, cfg.out, "out="))
    print(_summary(report))
    log.debug("report: %s", json.dumps(report["rejected"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
