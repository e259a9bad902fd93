"""Push an exported pipeline to the Hugging Face Hub: an allow-list of files plus a fresh model card.

Only these files of the exported folder (docs/contracts.md section 5) are uploaded: ``model_index.json``,
``unet/config.json``, ``unet/*.safetensors`` (and a shard index), ``scheduler/scheduler_config.json``,
``training_config.yaml``, ``metrics.json``, ``sample_grid.png``; ``README.md`` is regenerated from them by
``evaluation.modelcard``; ``training_config.yaml`` and ``metrics.json`` go up with local paths reduced to names
(``common.paths``). Only regular files inside the folder: a symbolic link named like an allowed file is refused.
Anything else -- optimizer state, ``checkpoints/``, RNG states, pickled ``.bin`` weights --
is never uploaded, and the command lists what it skipped. A run directory may be given: its ``pipeline/`` is used.

The token comes from the usual huggingface_hub login (``hf auth login``) or ``HF_TOKEN``; it is never printed.
Offline (``HF_HUB_OFFLINE=1``) or without a token the command stops with a one-line error. When the folder has no
``sample_grid.png``, 16 images are sampled (DDIM, 50 steps) for the card unless ``--no-grid`` is given.

Example::

    ptt-push --model runs/demo/pipeline --repo USER/ptt-faces --private --dry-run   # lists what would go up
    ptt-push --model runs/demo/pipeline --repo USER/ptt-faces --private
"""

from __future__ import annotations

import argparse
import fnmatch
import io
import json
import os
import sys
from pathlib import Path

import yaml

from common.hub import PushError, hub_errors, hub_token, require_repo_id
from common.paths import scrub_paths

__all__ = ["ALLOWED_PATTERNS", "PushError", "main", "push", "select_files"]

ALLOWED_PATTERNS = (
    "model_index.json",
    "unet/config.json",
    "unet/diffusion_pytorch_model*.safetensors",
    "unet/diffusion_pytorch_model.safetensors.index.json",
    "scheduler/scheduler_config.json",
    "training_config.yaml",
    "metrics.json",
    "sample_grid.png",
)
REQUIRED = ("model_index.json", "unet/config.json", "scheduler/scheduler_config.json")


def _resolve_folder(model: str | os.PathLike) -> Path:
    from evaluation.pipeline import resolve_pipeline_dir

    path = resolve_pipeline_dir(model)
    if path is None:
        raise PushError(f"--model {model}: no such folder; pass the exported pipeline folder (<run_dir>/pipeline)")
    return path


def _links(folder: Path) -> list[str]:
    """Symbolic links anywhere under ``folder`` (files and folders, not followed), as POSIX paths relative to it."""
    found = []
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            p = Path(root) / name
            if p.is_symlink():
                found.append(p.relative_to(folder).as_posix())
    return sorted(found)


def _allowed(rel: str) -> bool:
    return any(fnmatch.fnmatchcase(rel, pat) for pat in ALLOWED_PATTERNS)


def select_files(folder: str | os.PathLike) -> tuple[list[str], list[str]]:
    """(files to upload, files skipped), as sorted POSIX paths relative to ``folder``; README.md is regenerated.

    Only regular files inside the folder go up: a symbolic link (or a file reached through a linked folder) is
    refused with a :class:`PushError` when its name is on the allow-list -- a link named like a weights file can
    point at a token -- and skipped otherwise.
    """
    folder = Path(folder)
    root = folder.resolve()
    links = _links(folder)
    bad = [rel for rel in links if _allowed(rel) or any(pat.startswith(rel + "/") for pat in ALLOWED_PATTERNS)]
    if bad:
        raise PushError(
            f"{folder}: {', '.join(bad)} is a symbolic link; ptt-push uploads only regular files inside the folder "
            "(replace the link with the file itself, e.g. re-export the pipeline)"
        )
    upload, skipped = [], [f"{rel} (symbolic link)" for rel in links]
    for p in sorted(folder.rglob("*")):
        if p.is_symlink() or not p.is_file():
            continue
        rel = p.relative_to(folder).as_posix()
        if not p.resolve().is_relative_to(root):  # reached through a linked folder: outside the pipeline
            skipped.append(f"{rel} (outside the folder)")
            continue
        if rel == "README.md":
            continue  # replaced by a freshly written card
        (upload if _allowed(rel) else skipped).append(rel)
    missing = [r for r in REQUIRED if r not in upload]
    if not any(r.startswith("unet/") and r.endswith(".safetensors") for r in upload):
        missing.append("unet/diffusion_pytorch_model.safetensors")
    if missing:
        hint = (
            " (only pickled .bin weights found: re-export with safe_serialization=True)"
            if any(s.startswith("unet/") and s.endswith(".bin") for s in skipped)
            else ""
        )
        raise PushError(
            f"{folder}: not an exported pipeline, missing {', '.join(missing)}{hint}; export it with "
            f"evaluation/pipeline.py (accelerate launch training/train.py ... writes <run_dir>/pipeline)"
        )
    return upload, skipped


def _sample_grid_png(folder: Path) -> bytes:
    """16 samples (DDIM, 50 steps, seed 0) as a 4x4 PNG grid, for a card whose folder has no grid."""
    from PIL import Image

    from evaluation.pipeline import load_pipeline
    from evaluation.sample import generate, image_grid

    unet, sched_cfg, _ = load_pipeline(str(folder))
    imgs = generate(unet, sched_cfg, num_images=16, seed=0, batch_size=16, steps=50, scheduler="ddim")
    buf = io.BytesIO()
    Image.fromarray(image_grid(imgs, 4)).save(buf, format="PNG")
    return buf.getvalue()


def push(
    model: str | os.PathLike,
    repo: str,
    *,
    private: bool = False,
    dry_run: bool = False,
    grid: bool = True,
    dataset_repo: str | None = None,
    commit_message: str = "Upload ptt-faces DDPM pipeline",
) -> dict:
    """Upload the allow-listed files of an exported pipeline and its model card; returns what was (would be) sent."""
    from evaluation.modelcard import GRID_NAME, card_text, read_config, read_metrics
    from evaluation.pipeline import PipelineError, check_pipeline_configs

    require_repo_id(repo)
    folder = _resolve_folder(model)
    upload, skipped = select_files(folder)
    try:  # a pipeline whose configs cannot build it is not fine to list, let alone upload
        unet_cfg, _ = check_pipeline_configs(folder)
    except PipelineError as exc:
        raise PushError(str(exc)) from None
    sample_grid = GRID_NAME not in upload and grid  # the card shows a grid; sample one when the folder has none
    grid_bytes = _sample_grid_png(folder) if sample_grid and not dry_run else None
    has_grid = GRID_NAME in upload or sample_grid
    metrics, config = read_metrics(None, folder), read_config(None, folder)
    if dataset_repo is None:  # the curated dataset it was trained on, when ptt-curate push recorded its repo
        from curation.push import pushed_dataset_repo

        dataset_repo = pushed_dataset_repo(((config or {}).get("data") or {}).get("dataset_dir"))
    card = card_text(metrics=metrics, config=config, has_grid=has_grid, unet_config=unet_cfg,
                     dataset_repo=dataset_repo, model_name=repo.split("/")[1])  # fmt: skip
    # what the folder's config and metrics say about this machine (run dirs, home folders) stays here
    rewritten = {
        "training_config.yaml": yaml.safe_dump(scrub_paths(config), sort_keys=False, allow_unicode=True)
        if config is not None else None,
        "metrics.json": json.dumps(scrub_paths(metrics), indent=2) if metrics is not None else None,
    }  # fmt: skip
    files = sorted(upload + ["README.md"] + ([GRID_NAME] if sample_grid else []))
    summary = {
        "repo": repo,
        "private": private,
        "folder": str(folder),  # printed here, never uploaded
        "files": files,
        "skipped": skipped,
        "dry_run": dry_run,
        "card": card,
    }
    if dry_run:
        return summary
    token = hub_token()
    from huggingface_hub import CommitOperationAdd, HfApi

    ops = [
        CommitOperationAdd(path_in_repo=rel, path_or_fileobj=rewritten[rel].encode("utf-8"))
        if rewritten.get(rel) is not None
        else CommitOperationAdd(path_in_repo=rel, path_or_fileobj=str(folder / rel))
        for rel in upload
    ]
    ops.append(CommitOperationAdd(path_in_repo="README.md", path_or_fileobj=card.encode("utf-8")))
    if grid_bytes is not None:
        ops.append(CommitOperationAdd(path_in_repo=GRID_NAME, path_or_fileobj=grid_bytes))
    api = HfApi(token=token)
    with hub_errors(repo, token):
        url = api.create_repo(repo, private=private, exist_ok=True, repo_type="model")
        info = api.create_commit(repo, ops, commit_message=commit_message, repo_type="model")
    summary["url"] = str(getattr(info, "commit_url", None) or url)
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ptt-push", description="Upload an exported pipeline with its model card.")
    p.add_argument("--model", required=True, help="exported pipeline folder (<run_dir>/pipeline) or the run dir")
    p.add_argument("--repo", required=True, help="USER/NAME on the Hub")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.add_argument("--dry-run", action="store_true", help="list the files and print the card; upload nothing")
    p.add_argument("--no-grid", action="store_true", help="do not sample a grid when the folder has none")
    p.add_argument("--dataset", default=None, help="USER/NAME of the dataset repo it was trained on (card link)")
    a = p.parse_args(argv)
    try:
        s = push(a.model, a.repo, private=a.private, dry_run=a.dry_run, grid=not a.no_grid, dataset_repo=a.dataset)
    except PushError as exc:
        print(f"ptt-push: error: {exc}", file=sys.stderr)
        return 2
    verb = "would upload" if s["dry_run"] else "uploaded"
    print(
        f"ptt-push: {verb} {len(s['files'])} files from {s['folder']} to {s['repo']}"
        + (" (private)" if s["private"] else "")
    )
    for f in s["files"]:
        print(f"  + {f}")
    for f in s["skipped"]:
        print(f"  - {f}" + ("" if f.endswith(")") else " (not on the allow-list: never uploaded)"))
    if s.get("url"):
        print(f"ptt-push: {s['url']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
