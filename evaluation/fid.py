"""FID and KID with clean-fid's "clean" protocol, reference statistics cached per dataset split.

Protocol: every image (uint8 RGB) goes through clean-fid's "clean" resize to 299x299 (PIL bicubic on float
channels) and a feature extractor (evaluation/features.py): clean-fid's Inception-v3 (comparable to published
clean-fid figures) or, with ``--substitute``, a fixed random network for offline smoke runs whose every figure is
labelled "substitute features: not comparable to published FID" (``comparable: false``).
FID is the Frechet distance between Gaussians fitted to the two feature sets (clean-fid's formula; the trace of
its matrix square root taken exactly from two symmetric eigenproblems, :func:`frechet_distance`); KID is the
unbiased polynomial-kernel MMD^2 ``k(x, y) = (x.y / d + 1)^3`` averaged over 100 random subsets of at most 1000
images (clean-fid's ``kernel_distance``, with a fixed seed).

The reference ``--ref`` is either ``DATASET_DIR[:split]`` (a ``datasets.save_to_disk`` folder with an ``image``
column, docs/contracts.md section 3; default split ``test``; ptt-curate's ``out=`` folder stands for its
``dataset/``) or a folder of images. The reference features of a
dataset split are computed once and cached in ``--cache-dir`` (default ``~/.cache/ptt-faces/fid``) under a key of
the split's fingerprint, the mode and the feature extractor.

Output contract (docs/contracts.md section 6): ``{fid, kid, mode, feature_extractor, comparable, n_gen, n_ref, ref}``
printed and written with ``--out-json``; substitute results also carry ``note``.

The sweep over sampler steps is ``evaluation/sweep.py``; the ``ptt-fid`` command line is
``evaluation/fid_cli.py``. Example::

    ptt-fid --gen samples/ --ref demo_out/dataset:test --out-json samples/fid.json
    ptt-fid --gen samples/ --ref demo_out/dataset --substitute          # offline smoke run, not comparable
    ptt-fid sweep --model runs/demo/pipeline --ref demo_out/dataset --scheduler ddim --steps 10,20,50 --substitute

Library::

    from evaluation.fid import evaluate, frechet_distance
    res = evaluate(images_uint8_nhwc, "demo_out/dataset:test", extractor="substitute")
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import numpy as np

from common.fileio import atomic_write
from curation.store import is_dataset_dir
from evaluation.features import SUBSTITUTE_LABEL, extractor_name

__all__ = [
    "FidError",
    "evaluate",
    "extract_features",
    "feature_stats",
    "format_result",
    "frechet_distance",
    "kernel_inception_distance",
    "list_image_files",
    "write_output",
]

log = logging.getLogger(__name__)

MODE = "clean"
# clean-fid's cleanfid.utils.EXTENSIONS, so a folder yields the same files for us and for compute_fid.
IMAGE_EXTENSIONS = {"bmp", "jpg", "jpeg", "pgm", "png", "ppm", "tif", "tiff", "webp", "JPEG", "JPG", "PNG"}


class FidError(RuntimeError):
    """Bad input to FID (missing folder, split, too few images); the message names it and the fix."""


# ----------------------------------------------------------------------------------------------- pure math


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` of ``(N, D)`` features, in float64."""
    f = np.asarray(feats, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise FidError(f"need at least 2 feature vectors of shape (N, D), got {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrt(S1 S2)): clean-fid's ``frechet_distance``, computed exactly without
    a matrix square root.

    Tr sqrt(S1 S2) is the sum of the square roots of the eigenvalues of S1 S2, which are those of the symmetric
    R^T S2 R for any factor S1 = R R^T. R comes from S1's eigendecomposition, keeping only its non-zero
    eigenvalues: with fewer images than feature dimensions (500 generated images, 2048 Inception features) S1 has
    rank below 500, so the second eigenproblem is that small. Two symmetric eigensolvers instead of
    ``scipy.linalg.sqrtm``: the same figure (1e-7 relative or closer, benchmarks/bench_fid.py), 5-18x faster at
    2048 dimensions on a 2-core CPU (about 1-2 s instead of 9-15 s; no singular-matrix retry, no imaginary part)."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1, sigma2 = np.atleast_2d(sigma1).astype(np.float64), np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise FidError(f"feature sizes differ: {mu1.shape} vs {mu2.shape}; use the same extractor for both sets")
    if not all(np.isfinite(x).all() for x in (mu1, mu2, sigma1, sigma2)):
        raise FidError("FID: the feature statistics are not finite (NaN or inf in the features)")
    diff = mu1 - mu2
    return float(diff.dot(diff) + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt_product(sigma1, sigma2))


def trace_sqrt_product(sigma1: np.ndarray, sigma2: np.ndarray) -> float:
    """Tr sqrt(S1 S2) for symmetric positive semi-definite S1, S2 (see :func:`frechet_distance`)."""
    w, u = np.linalg.eigh((sigma1 + sigma1.T) / 2)
    keep = w > max(float(w.max()), 0.0) * 1e-12  # round-off below this is a zero eigenvalue (rank < dimensions)
    if not keep.any():
        return 0.0
    r = u[:, keep] * np.sqrt(w[keep])  # S1 = R R^T
    m = r.T @ sigma2 @ r
    return float(np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0.0, None)).sum())


def kernel_inception_distance(
    feats1: np.ndarray, feats2: np.ndarray, *, num_subsets: int = 100, max_subset_size: int = 1000, seed: int = 0
) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel, averaged over random subsets (clean-fid's KID).

    Two ways to the same figure for the same subsets (to round-off), whichever evaluates fewer kernel entries:
    clean-fid's, each subset's kernels from its features (3 m^2 entries a subset), or the whole sets' kernels once,
    a block of rows at a time, each subset's sums read off them as ``c^T K c`` with its 0/1 indicator ``c``
    ((n1 + n2)^2 entries in all, for every subset together: 100 subsets of 1,000 drawn from 2,000 + 2,000 images
    need 16 M entries instead of 300 M)."""
    f1, f2 = np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)
    m = min(f1.shape[0], f2.shape[0], max_subset_size)
    if m < 2:
        raise FidError("KID needs at least 2 images in each set")
    rng = np.random.default_rng(seed)
    # With whole sets the estimate does not depend on the draw: one subset is enough.
    subsets = 1 if m == f1.shape[0] == f2.shape[0] else num_subsets
    draws = [(rng.choice(f2.shape[0], m, replace=False), rng.choice(f1.shape[0], m, replace=False))
             for _ in range(subsets)]  # fmt: skip
    if (f1.shape[0] + f2.shape[0]) ** 2 < 3 * subsets * m * m:
        return _kid_from_kernels(f1, f2, draws, m)
    return _kid_per_subset(f1, f2, draws, m)


def _cubic_kernel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a @ b.T / a.shape[1] + 1) ** 3


def _kid_per_subset(f1: np.ndarray, f2: np.ndarray, draws: list, m: int) -> float:
    t = 0.0
    for ix, iy in draws:
        x, y = f2[ix], f1[iy]
        a = _cubic_kernel(x, x) + _cubic_kernel(y, y)
        b = _cubic_kernel(x, y)
        t += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(t / len(draws) / m)


def _kid_from_kernels(f1: np.ndarray, f2: np.ndarray, draws: list, m: int, rows: int = 1024) -> float:
    """KID from the whole sets' kernels, ``rows`` rows of a kernel matrix at a time (memory: rows x n floats)."""
    cx, cy = np.zeros((f2.shape[0], len(draws))), np.zeros((f1.shape[0], len(draws)))  # subset indicators
    for s, (ix, iy) in enumerate(draws):
        cx[ix, s], cy[iy, s] = 1.0, 1.0

    def quad(a, b, ca, cb):  # per subset s: ca[:, s]^T K(a, b) cb[:, s]
        out = np.zeros(len(draws))
        for i in range(0, a.shape[0], rows):
            out += np.einsum("is,is->s", ca[i : i + rows], _cubic_kernel(a[i : i + rows], b) @ cb)
        return out

    def diag(a, ca):  # per subset: the sum of its k(x, x)
        return ca.T @ ((np.einsum("ij,ij->i", a, a) / a.shape[1] + 1) ** 3)

    within = quad(f2, f2, cx, cx) + quad(f1, f1, cy, cy) - diag(f2, cx) - diag(f1, cy)
    t = within / (m - 1) - quad(f2, f1, cx, cy) * 2 / m
    return float(t.sum() / len(draws) / m)


# --------------------------------------------------------------------------------------- images and features


def list_image_files(folder: str | os.PathLike) -> list[Path]:
    """Image files under ``folder`` (recursive), sorted by path, as clean-fid lists them."""
    folder = Path(folder)
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix[1:] in IMAGE_EXTENSIONS)


def _load_rgb(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.array(im.convert("RGB"))
    except (OSError, UnidentifiedImageError, ValueError) as exc:  # truncated, corrupt or not an image
        raise FidError(
            f"{path}: unreadable image ({exc}); delete or replace it (ptt-sample rewrites missing files)"
        ) from None


def extract_features(images: Iterable[np.ndarray], fn: Callable, *, batch_size: int = 32, progress=None) -> np.ndarray:
    """Features ``(N, D)`` float32 of uint8 ``(H, W, 3)`` images through clean-fid's clean resize and ``fn``."""
    import torch

    from evaluation.features import clean_resize

    feats, batch = [], []

    def flush():
        x = torch.from_numpy(np.stack(batch).transpose(0, 3, 1, 2).copy())  # (B, 3, 299, 299) in [0, 255]
        f = fn(x)
        feats.append(f.detach().cpu().numpy() if hasattr(f, "detach") else np.asarray(f))
        batch.clear()

    for img in images:
        batch.append(clean_resize(np.asarray(img, dtype=np.uint8)))
        if len(batch) == batch_size:
            flush()
            if progress is not None:
                progress.update(batch_size)
    if batch:
        n = len(batch)
        flush()
        if progress is not None:
            progress.update(n)
    if not feats:
        raise FidError("no images to extract features from")
    return np.concatenate(feats).astype(np.float32)


def _parse_ref(ref: str) -> tuple[Path, str | None]:
    """``DIR`` or ``DIR:split`` -> (path, split or None); a path that exists as given wins over the colon."""
    path = Path(ref)
    if path.exists():
        return path, None
    head, sep, split = ref.rpartition(":")
    if sep and head and Path(head).exists():
        return Path(head), split
    raise FidError(
        f"--ref {ref}: no such folder; pass the curated dataset (DATASET_DIR[:split], written by ptt-curate) "
        f"or a folder of images"
    )


def _load_split(path: Path, split: str | None):
    from curation.store import DatasetFolderError, read_split

    try:
        ds, split = read_split(path, split, default="test")
    except DatasetFolderError as exc:
        raise FidError(f"--ref {exc}") from None
    if "image" not in ds.column_names:
        raise FidError(f"--ref {path}: no 'image' column (has {', '.join(ds.column_names)}); see docs/contracts.md")
    return ds, split


def _iter_dataset_images(ds, chunk: int = 256) -> Iterator[np.ndarray]:
    col = ds.select_columns(["image"])
    for lo in range(0, len(col), chunk):
        for im in col[lo : lo + chunk]["image"]:
            yield np.array(im.convert("RGB"))


def default_cache_dir() -> Path:
    if os.environ.get("PTT_CACHE_DIR"):
        return Path(os.environ["PTT_CACHE_DIR"]) / "fid"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ptt-faces" / "fid"


def _save_npz_atomic(path: Path, **arrays) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    write_output(path, buf.getvalue())


def reference_features(ref: str, fn: Callable, extractor: str, *, cache_dir=None, progress: bool = False):
    """(features, n_ref, description) of ``ref``; a dataset split's features are cached by fingerprint."""
    from tqdm.auto import tqdm

    path, split = _parse_ref(ref)
    if not is_dataset_dir(path) and is_dataset_dir(path / "dataset"):
        path = path / "dataset"  # ptt-curate's out= folder: its dataset, not its face crops and preview sheets
    if is_dataset_dir(path):
        ds, split = _load_split(path, split)
        fingerprint = getattr(ds, "_fingerprint", None) or hashlib.sha1(str(path.resolve()).encode()).hexdigest()
        key = f"ref-{fingerprint}-{MODE}-{extractor_name(extractor)}"
        cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        cached = cache / f"{key}.npz"
        desc = f"{path}:{split}"
        if cached.is_file():
            with np.load(cached) as z:
                log.info("reference features from cache %s", cached)
                return z["feats"], int(z["feats"].shape[0]), desc
        if len(ds) < 2:
            raise FidError(f"--ref {desc}: has {len(ds)} images; FID needs at least 2")
        with tqdm(total=len(ds), desc=f"features {desc}", unit="img", disable=not progress) as bar:
            feats = extract_features(_iter_dataset_images(ds), fn, progress=bar)
        _save_npz_atomic(cached, feats=feats, mu=feats.mean(0), sigma=np.cov(feats.astype(np.float64), rowvar=False))
        return feats, int(feats.shape[0]), desc
    if split is not None:
        raise FidError(f"--ref {ref}: {path} is not a datasets folder, so it has no split {split!r}")
    files = list_image_files(path)
    if len(files) < 2:
        raise FidError(f"--ref {path}: found {len(files)} images; FID needs at least 2")
    with tqdm(total=len(files), desc=f"features {path}", unit="img", disable=not progress) as bar:
        feats = extract_features((_load_rgb(f) for f in files), fn, progress=bar)
    return feats, len(files), str(path)


def _gen_images(gen, num_images: int | None) -> tuple[Iterable[np.ndarray], int]:
    if isinstance(gen, np.ndarray):
        if gen.ndim != 4 or gen.shape[-1] != 3 or gen.dtype != np.uint8:
            raise FidError(f"generated images must be uint8 (N, H, W, 3), got {gen.dtype} {gen.shape}")
        n = gen.shape[0] if num_images is None else num_images
        if gen.shape[0] < n:
            raise FidError(f"asked for {n} generated images but got {gen.shape[0]}")
        return list(gen[:n]), n
    folder = Path(gen)
    if not folder.is_dir():
        raise FidError(f"--gen {gen}: no such folder; write samples first with `ptt-sample --out {gen} ...`")
    files = list_image_files(folder)
    n = len(files) if num_images is None else num_images
    if len(files) < n:
        raise FidError(
            f"--gen {gen}: found {len(files)} images, --num-images asks for {n}; "
            f"run `ptt-sample --out {gen} --num-images {n} ...` first (it resumes)"
        )
    return (_load_rgb(f) for f in files[:n]), n


def evaluate(
    gen_images: np.ndarray | str,
    ref: str,
    *,
    extractor: str = "inception",
    inception_path=None,
    cache_dir=None,
    device=None,
    num_images=None,
    progress: bool = False,
    _fn: Callable | None = None,
) -> dict:
    """FID/KID of generated images (uint8 NHWC array or folder) against ``ref``; see the module docstring."""
    import torch

    from evaluation.features import build_extractor

    extractor_name(extractor)  # validates the name before any work
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    images, n = _gen_images(gen_images, num_images)
    if n < 2:
        raise FidError(f"FID needs at least 2 generated images, got {n}")
    fn = _fn or build_extractor(extractor, inception_path=inception_path, device=device)
    ref_feats, n_ref, ref_desc = reference_features(ref, fn, extractor, cache_dir=cache_dir, progress=progress)
    from tqdm.auto import tqdm

    with tqdm(total=n, desc="features generated", unit="img", disable=not progress) as bar:
        gen_feats = extract_features(images, fn, progress=bar)
    fid = frechet_distance(*feature_stats(gen_feats), *feature_stats(ref_feats))
    kid = kernel_inception_distance(gen_feats, ref_feats)
    result = {
        "fid": fid,
        "kid": kid,
        "mode": MODE,
        "feature_extractor": extractor_name(extractor),
        "comparable": extractor == "inception",
        "n_gen": int(gen_feats.shape[0]),
        "n_ref": n_ref,
        "ref": ref_desc,
    }
    if extractor != "inception":
        result["note"] = SUBSTITUTE_LABEL
    return result


def format_result(res: dict) -> str:
    """One line for logs and summaries; substitute figures carry their label."""
    line = (
        f"FID {res['fid']:.3f}  KID {res['kid']:.5f}  ({res['mode']}, {res['feature_extractor']}, "
        f"{res['n_gen']} generated vs {res['n_ref']} reference {res['ref']})"
    )
    if not res.get("comparable", False):
        line += f"  [{SUBSTITUTE_LABEL}]"
    return line


def write_output(path: Path, data: str | bytes) -> None:
    """Write ``data`` (str as UTF-8) to ``path`` via a temporary file and a rename, creating its folder."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise FidError(f"{path}: its folder {path.parent} is a file; pass a path inside a folder") from None
    atomic_write(path, data)
