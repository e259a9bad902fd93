"""Print the closing summary of a demo run: counts per stage, artifact paths, the FID line.

python scripts/demo_summary.py demo_out
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def _count_lines(path: Path) -> int:
    with path.open(encoding="utf-8") as fh:
        return sum(1 for line in fh if line.strip())


def main(out: Path) -> int:
    feed = out / "feed.jsonl"
    posts = [json.loads(line) for line in feed.read_text(encoding="utf-8").splitlines() if line.strip()]
    n_links = sum(len(p.get("image_urls", [])) for p in posts)
    n_files = sum(len(p.get("images", [])) for p in posts)
    print(f"crawl     {len(posts)} posts, {n_links} image links, {n_files} images downloaded   {feed}")

    report = json.loads((out / "curated" / "curation_report.json").read_text(encoding="utf-8"))
    print(f"curate    {json.dumps(report.get('counts', report), ensure_ascii=False)[:300]}")
    print(f"          dataset {out / 'curated' / 'dataset'}")

    run = out / "run"
    metrics = run / "metrics.jsonl"
    if metrics.exists():
        print(f"train     {_count_lines(metrics)} metric records   {metrics}")
    print(f"          pipeline {run / 'pipeline'}")

    samples = sorted((out / "samples").glob("*.png"))
    print(f"sample    {len(samples)} images   {out / 'samples'}")

    fid = json.loads((out / "fid.json").read_text(encoding="utf-8"))
    label = "" if fid.get("comparable") else "  [substitute features: NOT comparable to published FID]"
    print(
        f"fid       FID {fid['fid']:.2f}  KID {fid.get('kid', float('nan')):.4f}  "
        f"({fid.get('n_gen')} generated vs {fid.get('n_ref')} reference, {fid.get('feature_extractor')}){label}"
    )

    card = run / "pipeline" / "README.md"
    if card.is_file():
        from huggingface_hub import ModelCard

        results = ModelCard.load(card).data.eval_results or []
        card_fid = next((r for r in results if r.metric_type == "fid"), None)
        where = (
            f"model-index FID {card_fid.metric_value} (comparable; the trainer's FID at its last step)"
            if card_fid is not None
            else "no model-index (its FID, if any, is not comparable)"
        )
        print(f"card      {where}   {card}")

    pictures = sorted(
        list((out / "curated" / "previews").glob("*.png"))
        + list((run / "samples").glob("*.png"))
        + list(run.glob("*.png"))
    )
    page = out / "review_page.txt"
    print("pictures:")
    for p in pictures:
        print(f"  {p}")
    if page.exists():
        print(f"review page: {page.read_text(encoding='utf-8').strip()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1] if len(sys.argv) > 1 else "demo_out")))
