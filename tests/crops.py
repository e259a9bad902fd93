"""Test and benchmark data: a real ``datasets`` folder (the curated format) of crops of one photo, without a crawl.

The crops are random squares of skimage's astronaut, resized; they are a pure function of ``n`` and ``size``. The
tests, ``benchmarks/bench_train.py``, ``benchmarks/bench_peer.py`` and the GPU kit's ``check_run.py`` train on them.

Example::

    from tests.crops import write_crops_dataset
    write_crops_dataset("/tmp/ds", n=20, size=16, test=4)   # train: 16 images, test: 4
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["write_crops_dataset"]


def write_crops_dataset(path: str | Path, *, n: int, size: int, test: int = 0) -> Path:
    """Save a real ``datasets`` folder of ``n`` random square crops of skimage's astronaut, resized to ``size``.

    For tests and benchmarks (the curated format without a crawl): ``test`` crops go to a ``test`` split, the
    rest to ``train``. The crops are a pure function of ``n`` and ``size``.
    """
    import datasets
    from PIL import Image
    from skimage import data

    img = data.astronaut()
    rng = np.random.default_rng(0)
    ims = []
    for _ in range(n):
        s = int(rng.integers(120, 300))
        y, x = int(rng.integers(0, 512 - s)), int(rng.integers(0, 512 - s))
        ims.append(Image.fromarray(img[y : y + s, x : x + s]).resize((size, size)))
    ds = datasets.Dataset.from_dict({"image": ims}).cast_column("image", datasets.Image())
    splits = {"train": ds.select(range(test, n))}
    if test:
        splits["test"] = ds.select(range(test))
    datasets.DatasetDict(splits).save_to_disk(str(path))
    return Path(path)
