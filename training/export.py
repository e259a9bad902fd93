"""Export a trained UNet as a ``diffusers.DDPMPipeline`` folder (contracts.md section 5), atomically.

The folder holds ``model_index.json``, ``unet/`` (safetensors) and ``scheduler/`` from ``save_pretrained``, plus
``training_config.yaml`` (the resolved run config), ``metrics.json`` (latest FID/KID and how it was computed, when
known) and ``README.md`` (model card, via ``training.modelcard`` when that module is present). Never optimizer
state. It is written to ``.<name>.tmp`` beside the target and renamed into place, so a crash mid-write leaves the
previous export intact.

Example::

    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel
    from training.export import export_pipeline
    unet = UNet2DModel(sample_size=16, block_out_channels=(8, 16), norm_num_groups=8, layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
    export_pipeline(unet, DDPMScheduler().config, "/tmp/pipe", config_yaml="run_dir: x\\n")
    DDPMPipeline.from_pretrained("/tmp/pipe")
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

from training.checkpoint import write_json_atomic

log = logging.getLogger(__name__)

__all__ = ["export_pipeline"]


def export_pipeline(
    unet,
    scheduler_config: dict,
    out_dir: str | Path,
    *,
    config_yaml: str | None = None,
    metrics: dict | None = None,
    sample_grid: str | Path | None = None,
) -> Path:
    """Write ``unet`` (already holding the weights to ship, e.g. the EMA) + a DDPMScheduler to ``out_dir``."""
    from diffusers import DDPMPipeline, DDPMScheduler

    out_dir = Path(out_dir)
    tmp = out_dir.with_name(f".{out_dir.name}.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    scheduler = DDPMScheduler.from_config(dict(scheduler_config))
    pipe = DDPMPipeline(unet=unet, scheduler=scheduler)
    pipe.save_pretrained(str(tmp), safe_serialization=True)
    if config_yaml is not None:
        (tmp / "training_config.yaml").write_text(config_yaml, encoding="utf-8")
    if metrics:
        write_json_atomic(tmp / "metrics.json", metrics)
    try:
        from training.modelcard import write_model_card
    except ImportError:
        write_model_card = None
    if write_model_card is not None:
        try:
            write_model_card(tmp, metrics=metrics, config=config_yaml, sample_grid=sample_grid)
        except Exception as exc:  # noqa: BLE001 - a model card must never lose a trained model
            log.warning("model card not written (%s: %s)", type(exc).__name__, exc)
    old = out_dir.with_name(f".{out_dir.name}.old")
    if old.exists():
        shutil.rmtree(old)
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)
    log.info("exported DDPMPipeline to %s", out_dir)
    return out_dir
