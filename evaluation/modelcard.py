"""The model card (README.md) of an exported pipeline: data, config, FID/KID and how they were made, a sample grid.

``write_model_card(pipeline_dir, metrics=..., config=..., sample_grid=...)`` writes ``README.md`` into an exported
pipeline folder (docs/contracts.md section 5). Its front matter is ``huggingface_hub.ModelCardData`` (see
:func:`card_data`: ``library_name: diffusers``, ``pipeline_tag``, tags, license, ``datasets`` when the dataset repo
is known, FID/KID as ``EvalResult`` when comparable), so ``huggingface_hub.ModelCard`` reads it back. Each argument
falls back to what the folder already holds: ``metrics.json``, ``training_config.yaml`` and ``sample_grid.png``.
Local absolute paths (run dirs, home folders) appear in the card as names only (``common.paths``).

``metrics`` is the dict ``evaluation.fid.evaluate`` returns (``fid, kid, mode, feature_extractor, comparable, n_gen,
n_ref, ref``), optionally with how the images were sampled: ``scheduler``, ``steps``, ``seed`` and the training
``step``/``epoch`` it was measured at. Substitute-feature figures are printed with their "not comparable" label.
``config`` is the resolved training config as a dict or YAML text. ``sample_grid`` is a PNG path, a PIL image or a
uint8 ``(H, W, 3)`` array; it is copied to ``sample_grid.png`` in the folder.

Example::

    from evaluation.modelcard import write_model_card
    write_model_card("runs/demo/pipeline", metrics={"fid": 42.99, "kid": 0.01, "mode": "clean",
                     "feature_extractor": "inception-v3-torchscript (clean-fid)", "comparable": True,
                     "n_gen": 1000, "n_ref": 1000, "ref": "data/dataset:test", "scheduler": "ddim", "steps": 50})
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from huggingface_hub import EvalResult, ModelCardData

from common.fileio import atomic_write
from common.paths import scrub_paths
from evaluation.features import SUBSTITUTE_LABEL

__all__ = [
    "GRID_NAME",
    "card_data",
    "card_text",
    "read_config",
    "read_metrics",
    "sampler_note",
    "write_model_card",
]

GRID_NAME = "sample_grid.png"


def read_config(config, folder: Path) -> dict | None:
    if config is None:
        path = folder / "training_config.yaml"
        if not path.is_file():
            return None
        config = path.read_text(encoding="utf-8")
    if isinstance(config, str | bytes):
        data = yaml.safe_load(config)
        return data if isinstance(data, dict) else None
    if hasattr(config, "model_dump"):
        return config.model_dump(mode="json")
    return dict(config)


def read_metrics(metrics, folder: Path) -> dict | None:
    if metrics is None:
        path = folder / "metrics.json"
        if not path.is_file():
            return None
        metrics = json.loads(path.read_text(encoding="utf-8"))
    return dict(metrics) if metrics else None


def _save_grid(sample_grid, folder: Path) -> bool:
    """Copy/write the grid to ``folder/sample_grid.png``; True when the folder has one afterwards."""
    dest = folder / GRID_NAME
    if sample_grid is None:
        return dest.is_file()
    tmp = folder / f".{GRID_NAME}.tmp-{os.getpid()}"
    if isinstance(sample_grid, str | os.PathLike):
        src = Path(sample_grid)
        if not src.is_file():
            raise FileNotFoundError(f"sample grid {src} not found; pass an existing PNG or leave it out")
        if src.resolve() == dest.resolve():
            return True
        shutil.copyfile(src, tmp)
    else:
        from PIL import Image

        img = (
            sample_grid if isinstance(sample_grid, Image.Image) else Image.fromarray(np.asarray(sample_grid, np.uint8))
        )
        img.save(tmp, format="PNG")
    os.replace(tmp, dest)
    return True


def _find(cfg: dict | None, *names: str) -> Any:
    """First value whose key (at any depth) is one of ``names``; configs of different trainers nest differently."""
    if not isinstance(cfg, dict):
        return None
    for k, v in cfg.items():
        if k in names and not isinstance(v, dict):
            return v
    for v in cfg.values():
        if isinstance(v, dict):
            found = _find(v, *names)
            if found is not None:
                return found
    return None


def _fmt(v: Any, digits: int) -> str:
    return f"{v:.{digits}f}" if isinstance(v, int | float) else "n/a"


def _ref_split(ref: Any) -> str | None:
    """The split of a ``DIR:split`` reference (``ptt-fid --ref``), when it names one."""
    if isinstance(ref, str) and ":" in ref:
        split = ref.rsplit(":", 1)[1]
        return split if split.isidentifier() else None
    return None


def card_data(
    *, metrics: dict | None, config: dict | None = None, dataset_repo: str | None = None, model_name: str | None = None
) -> ModelCardData:
    """The card's front matter as ``huggingface_hub.ModelCardData`` (pure function of its inputs).

    FID/KID become ``EvalResult`` entries (model-index) only when ``metrics["comparable"]`` is true: a figure from
    the offline substitute feature extractor is not an FID anyone else can compare with, so it stays out of the
    metadata the Hub indexes and appears only in the card's text, under its "not comparable" label.
    ``datasets`` links ``dataset_repo`` or, failing that, the config's ``data.hub_dataset``.
    """
    dataset = dataset_repo or _find(config, "hub_dataset")
    results = []
    if metrics and metrics.get("comparable") and isinstance(metrics.get("fid"), int | float):
        split = _ref_split(metrics.get("ref"))
        common = {
            "task_type": "unconditional-image-generation",
            "task_name": "Unconditional Image Generation",
            "dataset_type": dataset or "ptt-beauty-faces",
            "dataset_name": "PTT Beauty faces" + (f" ({split})" if split else ""),
            "dataset_split": split,
            "metric_config": metrics.get("mode", "clean"),
        }
        results.append(EvalResult(metric_type="fid", metric_value=round(float(metrics["fid"]), 3),
                                  metric_name="FID (clean-fid)", **common))  # fmt: skip
        if isinstance(metrics.get("kid"), int | float):
            results.append(EvalResult(metric_type="kid", metric_value=round(float(metrics["kid"]), 5),
                                      metric_name="KID (clean-fid)", **common))  # fmt: skip
    return ModelCardData(
        license="mit",
        library_name="diffusers",
        pipeline_tag="unconditional-image-generation",
        tags=["pytorch", "diffusers", "unconditional-image-generation", "ddpm", "faces", "ptt-faces"],
        datasets=[dataset] if dataset else None,
        model_name=(model_name or "ptt-faces") if results else None,
        eval_results=results or None,
    )


def sampler_note() -> list[str]:
    """How to sample: the scheduler saved in ``scheduler/`` and its step count, and the toolkit's default."""
    from evaluation.samplers import DEFAULT_SAMPLER, DEFAULT_STEPS, PIPELINE_SAMPLER, SAMPLERS

    spec, steps = SAMPLERS[PIPELINE_SAMPLER], DEFAULT_STEPS[PIPELINE_SAMPLER]
    options = ", ".join(f"`{k}={v!r}`" for k, v in spec.options.items())
    lines = [
        "```python",
        "from diffusers import DDPMPipeline",
        'pipe = DDPMPipeline.from_pretrained("<this repo>")',
        f"image = pipe(num_inference_steps={steps}).images[0]  # pass it: the pipeline's default is 1000 steps",
        "```",
        "",
        f"`scheduler/` holds `{spec.scheduler_class}` with {options or 'its defaults'} ({spec.about}): the sampler "
        f"`{PIPELINE_SAMPLER}` at {steps} steps ({steps} UNet evaluations per image). Pass `num_inference_steps` "
        "as above, since `DDPMPipeline` defaults to 1000 steps whatever the scheduler. The 1000-step DDPM "
        "reference: `pipe.scheduler = diffusers.DDPMScheduler.from_config(pipe.scheduler.config)`, then "
        "`num_inference_steps=1000`.",
        "",
    ]
    if DEFAULT_SAMPLER != PIPELINE_SAMPLER:
        d = SAMPLERS[DEFAULT_SAMPLER]
        lines += [
            f"The toolkit's default sampler is `{DEFAULT_SAMPLER}` ({d.about}) at {DEFAULT_STEPS[DEFAULT_SAMPLER]} "
            f"steps, which `DDPMPipeline` cannot run as-is ({d.scheduler_class} with "
            + ", ".join(f"`{k}={v!r}`" for k, v in d.options.items())
            + " repeats its first timesteps on the cosine noise schedule; the toolkit starts its loop at step 0)."
            " On the toolkit's sampler benchmark (a proxy FD on 8x8 digits, not a face FID) neither came within 5% "
            "of 1000-step DDPM on every model; see the toolkit's BENCHMARKS.md.",
            "",
        ]
    lines += [
        f"With the toolkit: `ptt-sample --model <this repo> --num-images 1000 --out samples/` (`{DEFAULT_SAMPLER}`, "
        f"{DEFAULT_STEPS[DEFAULT_SAMPLER]} steps, one seed per image).",
        "",
    ]
    return lines


def card_text(
    *,
    metrics: dict | None,
    config: dict | None,
    has_grid: bool,
    unet_config: dict | None = None,
    dataset_repo: str | None = None,
    model_name: str | None = None,
) -> str:
    """The README.md text (pure function of its inputs); local paths in ``metrics``/``config`` become names."""
    metrics, config = scrub_paths(metrics), scrub_paths(config)
    comparable = bool(metrics and metrics.get("comparable"))
    data = card_data(metrics=metrics, config=config, dataset_repo=dataset_repo, model_name=model_name)
    lines = ["---", data.to_yaml(), "---", ""]
    size = (unet_config or {}).get("sample_size", 64)
    lines += [f"# ptt-faces: {size}x{size} face DDPM", ""]
    lines += [
        f"An unconditional `diffusers` `DDPMPipeline` generating {size}x{size} RGB faces, trained with the "
        "ptt-faces toolkit on aligned face crops curated from images linked on the PTT "
        "Beauty board.",
        "",
        *sampler_note(),
        "## Evaluation",
        "",
    ]
    if not metrics or metrics.get("fid") is None:
        lines += [
            "Not evaluated yet (no `metrics.json`). Compute it with `ptt-fid --gen samples/ --ref DATASET:test`.",
            "",
        ]
    else:
        tag = "" if comparable else f" ({metrics.get('note') or SUBSTITUTE_LABEL})"
        sampler = metrics.get("scheduler")
        steps = metrics.get("steps")
        lines += [
            "| metric | value |",
            "|---|---:|",
            f"| FID{tag} | {_fmt(metrics.get('fid'), 3)} |",
            f"| KID{tag} | {_fmt(metrics.get('kid'), 5)} |",
            "",
            "How it was computed:",
            "",
            f"- protocol: clean-fid `{metrics.get('mode', 'clean')}` (PIL bicubic resize to 299x299), KID = unbiased "
            "MMD^2 with the cubic polynomial kernel",
            f"- feature extractor: {metrics.get('feature_extractor', 'n/a')}",
            f"- generated images: {metrics.get('n_gen', 'n/a')}; reference images: {metrics.get('n_ref', 'n/a')} "
            f"from `{metrics.get('ref', 'n/a')}`",
            f"- sampler: {sampler or 'n/a'}, {steps if steps is not None else 'n/a'} steps"
            + (f", seed {metrics['seed']}" if metrics.get("seed") is not None else ""),
        ]
        if metrics.get("step") is not None or metrics.get("epoch") is not None:
            lines.append(
                f"- measured at training step {metrics.get('step', 'n/a')}, epoch {metrics.get('epoch', 'n/a')}"
            )
        if not comparable:
            lines += [
                "",
                f"> **{metrics.get('note') or SUBSTITUTE_LABEL}**: these figures come from an offline "
                "substitute feature extractor, not Inception; they only compare runs of this toolkit.",
            ]
        lines.append("")
    if has_grid:
        lines += ["## Samples", "", f"![samples]({GRID_NAME})", ""]
    lines += ["## Training data", ""]
    dataset = _find(config, "dataset_dir", "dataset", "dataset_path", "data_dir")
    hub_dataset = (data.datasets or [None])[0]
    where = f" (dataset [`{hub_dataset}`](https://huggingface.co/datasets/{hub_dataset}))" if hub_dataset else ""
    lines += [
        "Face crops (aligned with 5 facial landmarks, 64x64) detected in photos linked from posts on the PTT "
        "Beauty board, filtered for blur, size, pose and duplicates by `ptt-curate`"
        + (where or (f" (dataset `{dataset}`)" if dataset else ""))
        + ".",
        "The photos are of real people posted by third parties; use the model for research on generative models, "
        "not to depict or identify anyone.",
        "",
    ]
    if unet_config:
        keys = ("sample_size", "block_out_channels", "layers_per_block", "down_block_types", "up_block_types")
        lines += ["## Model", "", "| UNet2DModel | |", "|---|---|"]
        lines += [f"| `{k}` | `{unet_config[k]}` |" for k in keys if k in unet_config]
        lines.append("")
    if config:
        lines += [
            "## Training config",
            "",
            "<details><summary>resolved config (training_config.yaml)</summary>",
            "",
            "```yaml",
            yaml.safe_dump(config, sort_keys=False, allow_unicode=True).rstrip(),
            "```",
            "",
            "</details>",
            "",
        ]
    return "\n".join(lines)


def write_model_card(pipeline_dir, *, metrics=None, config=None, sample_grid=None, dataset_repo=None) -> Path:
    """Write ``README.md`` into the exported pipeline folder (atomically); returns its path."""
    folder = Path(pipeline_dir)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder}: no such pipeline folder; export one with evaluation/pipeline.py first")
    unet_cfg_path = folder / "unet" / "config.json"
    unet_config = json.loads(unet_cfg_path.read_text(encoding="utf-8")) if unet_cfg_path.is_file() else None
    has_grid = _save_grid(sample_grid, folder)
    text = card_text(
        metrics=read_metrics(metrics, folder),
        config=read_config(config, folder),
        has_grid=has_grid,
        unet_config=unet_config,
        dataset_repo=dataset_repo,
    )
    dest = folder / "README.md"
    atomic_write(dest, text)
    return dest
