"""Training data: images decoded once into a uint8 tensor, and a batch order that is a pure function of the step.

The curated dataset (contracts.md section 3) is a ``datasets`` folder with ``train``/``test`` splits and an
``image`` column of 64x64 RGB faces; any image ``datasets`` folder or Hub id works too. Every image is decoded
once, resized (shorter side, antialiased) and centre-cropped to the training resolution, and kept as a
``(N, 3, H, W)`` uint8 tensor -- 12 KiB per 64x64 image, so 100k faces fit in 1.2 GB of device memory, and the
input side never waits on PIL.

Batch order: the training stream is the concatenation of per-epoch permutations ``perm(seed, epoch)``; micro-step
``k`` takes stream positions ``[k * G, (k + 1) * G)`` with ``G = batch_size * num_processes``, and rank ``r`` takes
its ``batch_size`` slice. So the data a step sees depends only on (seed, step, rank): resuming at step ``k``
continues the data order exactly, and datasets smaller than a global batch work.

Example::

    from training.data import load_images, batch_indices
    images = load_images("demo_out/dataset", split="train", resolution=64)   # (N, 3, 64, 64) uint8
    idx = batch_indices(len(images), step=0, batch_size=16, seed=0)          # (16,) int64
"""

from __future__ import annotations

import logging
from functools import lru_cache

import numpy as np
import torch

from common.configio import ConfigError

log = logging.getLogger(__name__)

__all__ = [
    "load_split",
    "load_images",
    "decode_images",
    "batch_indices",
    "to_device",
    "epoch_of",
    "to_model_range",
]


def load_split(dataset_dir: str | None, split: str, *, hub_dataset: str | None = None, required: bool = True):
    """The ``datasets.Dataset`` for ``split``, or None when it is absent and not ``required``."""
    import datasets

    if dataset_dir is not None:
        from curation.store import DatasetFolderError, read_split

        try:
            ds, _ = read_split(dataset_dir, split, required=required)
        except DatasetFolderError as exc:
            hint = "; set data.train_split" if "no split" in str(exc) else ""
            raise ConfigError(f"data.dataset_dir: {exc}{hint}") from None
        return ds
    try:
        ds = datasets.load_dataset(hub_dataset)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types; all mean "cannot get it"
        raise ConfigError(
            f"data.hub_dataset: cannot load {hub_dataset!r} ({type(exc).__name__}: {exc}); check the id and "
            "the network, or download it and set data.dataset_dir"
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        if split not in ds:
            if required:
                raise ConfigError(f"{hub_dataset}: no split {split!r} (has {sorted(ds)}); set data.train_split")
            return None
        return ds[split]
    return ds if split == "train" or required else None  # a bare Dataset is the training split


def decode_images(images, resolution: int) -> np.ndarray:
    """PIL images (any size/mode) -> ``(N, res, res, 3)`` uint8: RGB, shorter side resized, centre crop."""
    from PIL import Image

    out = np.empty((len(images), resolution, resolution, 3), dtype=np.uint8)
    for i, img in enumerate(images):
        img = img.convert("RGB")
        w, h = img.size
        if (w, h) != (resolution, resolution):
            scale = resolution / min(w, h)
            nw, nh = max(resolution, round(w * scale)), max(resolution, round(h * scale))
            img = img.resize((nw, nh), Image.Resampling.BICUBIC, reducing_gap=None)
            left, top = (nw - resolution) // 2, (nh - resolution) // 2
            img = img.crop((left, top, left + resolution, top + resolution))
        out[i] = np.asarray(img)
    return out


def load_images(
    dataset_dir: str | None,
    *,
    split: str = "train",
    resolution: int = 64,
    image_column: str = "image",
    hub_dataset: str | None = None,
    max_images: int | None = None,
    required: bool = True,
) -> torch.Tensor | None:
    """Decode a split once into a ``(N, 3, H, W)`` uint8 CPU tensor (None if the split is absent and optional)."""
    ds = load_split(dataset_dir, split, hub_dataset=hub_dataset, required=required)
    if ds is None:
        return None
    where = dataset_dir or hub_dataset
    if image_column not in ds.column_names:
        raise ConfigError(
            f"{where}: split {split!r} has no column {image_column!r} (has {ds.column_names}); set data.image_column"
        )
    feature = ds.features[image_column]
    if type(feature).__name__ != "Image":  # datasets.Image; anything else would fail deep inside PIL
        images = [n for n, f in ds.features.items() if type(f).__name__ == "Image"]
        raise ConfigError(
            f"{where}: data.image_column={image_column!r} holds {feature!r}, not images; "
            + (
                f"set data.image_column={images[0]}"
                if images
                else "cast it with ds.cast_column(col, datasets.Image())"
            )
        )
    if max_images is not None:
        ds = ds.select(range(min(max_images, len(ds))))
    if len(ds) == 0:
        if required:
            raise ConfigError(f"{where}: split {split!r} is empty; curate more photos or lower the filters")
        return None
    chunks = []
    for start in range(0, len(ds), 512):
        batch = ds[start : start + 512][image_column]
        chunks.append(decode_images(batch, resolution))
    arr = np.concatenate(chunks)  # (N, H, W, 3) uint8
    log.info("decoded %d images from %s[%s] at %dx%d", len(arr), where, split, resolution, resolution)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()


@lru_cache(maxsize=4)  # a step needs one or two epochs' permutations
def _perm(n: int, seed: int, epoch: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g)


def batch_indices(n: int, *, step: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> torch.Tensor:
    """Indices of micro-step ``step`` for ``rank``, ``(batch_size,)`` int64: a pure function of the arguments."""
    global_batch = batch_size * world
    start = step * global_batch + rank * batch_size
    positions = torch.arange(start, start + batch_size)
    epochs = positions // n
    out = torch.empty(batch_size, dtype=torch.int64)
    for epoch in epochs.unique().tolist():
        mask = epochs == epoch
        out[mask] = _perm(n, seed, epoch)[positions[mask] % n]
    return out


def to_device(idx: torch.Tensor, device) -> torch.Tensor:
    """Copy a small index tensor to ``device`` without a host-device sync (pinned + non_blocking on CUDA)."""
    if torch.device(device).type == "cuda":
        return idx.pin_memory().to(device, non_blocking=True)
    return idx.to(device)


def epoch_of(n: int, *, step: int, batch_size: int, world: int = 1) -> float:
    """How many passes over ``n`` images the first ``step`` micro-steps made."""
    return step * batch_size * world / n


def to_model_range(batch_u8: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` in [0, 255] -> float32 in [-1, 1]."""
    return batch_u8.float().div_(127.5).sub_(1.0)
