"""The exported pipeline (contracts.md section 5): its writer and its one reader, side by side.

The folder is a ``diffusers.DDPMPipeline``: ``model_index.json``, ``unet/`` (safetensors) and ``scheduler/`` from
``save_pretrained``, plus ``training_config.yaml`` (the resolved run config), ``metrics.json`` (latest FID/KID and
how it was computed, when known) and ``README.md`` (model card). Never optimizer state. It is built in a temporary
folder beside the target and swapped in (``common.fileio.atomic_replace_dir``), so a crash mid-write leaves the
previous export intact. ``scheduler/`` holds :data:`evaluation.samplers.PIPELINE_SAMPLER` (its diffusers class
and settings on the model's noise schedule: the toolkit's default sampler where ``DDPMPipeline`` can run it as-is,
else the best one it can), so ``DDPMPipeline.from_pretrained(path)(num_inference_steps=N)`` samples with it (the
model card names N; DDPMPipeline's own default is 1000 steps). The trainer writes it at ``<run_dir>/pipeline``;
every reader (``ptt-sample``,
``ptt-fid --model``, ``ptt-push``) resolves a run directory, a pipeline folder or a Hub id through
:func:`resolve_pipeline_dir` / :func:`load_pipeline` here.

Example::

    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
    from evaluation.pipeline import export_pipeline, load_pipeline
    unet = UNet2DModel(sample_size=16, block_out_channels=(8, 16), norm_num_groups=8, layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    export_pipeline(unet, DDPMScheduler().config, "/tmp/pipe", config_yaml="run_dir: x\\n")
    DDPMPipeline.from_pretrained("/tmp/pipe").scheduler   # the default sampler's scheduler
    unet, scheduler_config, source = load_pipeline("/tmp/pipe")
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from common.fileio import atomic_replace_dir, atomic_write_json
from common.hub import hub_offline, is_repo_id

log = logging.getLogger(__name__)

__all__ = ["PipelineError", "check_pipeline_configs", "export_pipeline", "load_pipeline", "resolve_pipeline_dir"]


class PipelineError(RuntimeError):
    """No exported pipeline where one was named; the message names the path and what to pass instead."""


def export_pipeline(
    unet,
    scheduler_config: dict,
    out_dir: str | Path,
    *,
    config_yaml: str | None = None,
    metrics: dict | None = None,
    sample_grid: str | Path | None = None,
) -> Path:
    """Write ``unet`` (already holding the weights to ship, e.g. the EMA) + :data:`PIPELINE_SAMPLER`'s scheduler,
    built on ``scheduler_config``'s noise schedule, to ``out_dir``."""
    from diffusers import DDPMPipeline

    from evaluation.modelcard import write_model_card
    from evaluation.samplers import PIPELINE_SAMPLER, build_scheduler

    out_dir = Path(out_dir)
    with atomic_replace_dir(out_dir) as tmp:
        scheduler = build_scheduler(PIPELINE_SAMPLER, scheduler_config)
        DDPMPipeline(unet=unet, scheduler=scheduler).save_pretrained(str(tmp), safe_serialization=True)
        if config_yaml is not None:
            (tmp / "training_config.yaml").write_text(config_yaml, encoding="utf-8")
        if metrics:
            atomic_write_json(tmp / "metrics.json", metrics)
        try:
            write_model_card(tmp, metrics=metrics, config=config_yaml, sample_grid=sample_grid)
        except Exception as exc:  # noqa: BLE001 - a model card must never lose a trained model
            log.warning("model card not written (%s: %s)", type(exc).__name__, exc)
    log.info("exported DDPMPipeline to %s", out_dir)
    return out_dir


def resolve_pipeline_dir(model: str | os.PathLike) -> Path | None:
    """The pipeline folder ``model`` names: itself, or ``<model>/pipeline`` for a run directory; None when
    ``model`` is not an existing folder (it may be a Hub id)."""
    path = Path(model)
    run_pipeline = path / "pipeline"
    if path.is_dir() and not (path / "model_index.json").is_file() and (run_pipeline / "model_index.json").is_file():
        return run_pipeline
    return path if path.is_dir() else None


_REEXPORT = (
    "the pipeline folder is damaged: export it again (the trainer writes <run_dir>/pipeline) or pass another --model"
)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _read_json_object(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PipelineError(f"{path}: missing; {_REEXPORT}") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise PipelineError(f"{path}: not valid JSON ({_first_line(exc)}); {_REEXPORT}") from None
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: a JSON {type(data).__name__}, not an object; {_REEXPORT}")
    return data


def check_pipeline_configs(folder: str | Path) -> tuple[dict, dict]:
    """(unet config, scheduler config) of an exported pipeline folder, after checking that a ``UNet2DModel`` can
    be built from the first (on the meta device: no weights allocated) and that the second holds a noise
    schedule; a :class:`PipelineError` names the damaged file."""
    from accelerate import init_empty_weights
    from diffusers import UNet2DModel

    folder = Path(folder)
    unet_path = folder / "unet" / "config.json"
    unet_config = _read_json_object(unet_path)
    try:
        with init_empty_weights():
            UNet2DModel.from_config(unet_config)
    except Exception as exc:  # noqa: BLE001 - any failure to build from this file is the file's fault
        raise PipelineError(f"{unet_path}: not a UNet2DModel config ({_first_line(exc)}); {_REEXPORT}") from None
    sched_path = folder / "scheduler" / "scheduler_config.json"
    scheduler_config = _read_json_object(sched_path)
    bad = {k: v for k, v in scheduler_config.items() if k == "num_train_timesteps" and not isinstance(v, int)}
    if bad:
        raise PipelineError(f"{sched_path}: num_train_timesteps={bad['num_train_timesteps']!r} is not an integer; "
                            f"{_REEXPORT}")  # fmt: skip
    return unet_config, scheduler_config


def load_pipeline(model: str, *, device=None):
    """(unet, scheduler_config dict, source) from an exported pipeline folder, a run dir or a Hub id."""
    from diffusers import UNet2DModel

    path = resolve_pipeline_dir(model)
    if path is not None:
        if not (path / "unet" / "config.json").is_file() or not (path / "scheduler").is_dir():
            raise PipelineError(
                f"--model {model}: no exported pipeline there (needs unet/ and scheduler/); pass the folder "
                f"the trainer wrote (<run_dir>/pipeline) or a Hub id USER/NAME"
            )
        unet_config, scheduler_config = check_pipeline_configs(path)
        try:
            unet = UNet2DModel.from_pretrained(path, subfolder="unet")
        except (OSError, ValueError, TypeError, KeyError, RuntimeError) as exc:  # weights that do not fit config
            raise PipelineError(f"{path / 'unet'}: cannot load the UNet ({_first_line(exc)}); {_REEXPORT}") from None
        source = str(path.resolve())  # one name per folder: a relative path does not look like another model
    elif is_repo_id(model) and not Path(model).exists() and not model.startswith((".", "/")):
        from diffusers import DDPMScheduler

        try:
            unet = UNet2DModel.from_pretrained(model, subfolder="unet")
            # the raw config: whichever scheduler class it names, the samplers take its noise schedule from it
            scheduler_config = dict(DDPMScheduler.load_config(model, subfolder="scheduler"))
        except (OSError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            if hub_offline():
                first = "HF_HUB_OFFLINE is set and it is not in the local Hub cache"
            raise PipelineError(
                f"--model {model}: not a local folder and could not load it from the Hub ({first}); pass an "
                f"exported pipeline folder (<run_dir>/pipeline) or a reachable Hub id"
            ) from None
        source = model
    else:
        raise PipelineError(
            f"--model {model}: no such folder; pass an exported pipeline folder (<run_dir>/pipeline, with "
            f"model_index.json) or a Hub id USER/NAME"
        )
    if device is not None:
        unet.to(device)
    return unet, scheduler_config, source
