"""The GPU machine's Python packages against what the carried wheels need, before any device time goes to training.

Two sub-commands (run by ``run_device.sh``; both work on the CPU machine too, against its own packages):

``needed SITE DIR...``
    Prints (one a line) the wheels in each ``DIR`` that must be installed on top of the image: a wheel named in a
    requirement of a distribution installed in ``SITE`` (the carried wheels' ``--target`` folder) whose installed
    version, if any, fails that requirement. ``.whl/cond/`` holds such fallbacks (fsspec, typing_extensions, zipp),
    ``bench_out/wheels-pyarrow/`` pyarrow (55 MB, carried only when the first call says it is needed).

``check SITE``
    Prints python, torch, CUDA, the GPU and the versions of every package the kit uses; every requirement of the
    carried distributions that the installed packages fail (with the wheel to carry for it); then a functional
    smoke test (diffusers' UNet and schedulers, a ``datasets`` save/load round trip of images, an ``imagefolder``
    load as the peer does it, pydantic). Exit 1 when the smoke test fails: the version list says what to carry.

Example::

    python3 benchmarks/gpu/preflight.py needed /tmp/site .whl/cond bench_out/wheels-pyarrow
    python3 benchmarks/gpu/preflight.py check /tmp/site
"""

from __future__ import annotations

import importlib.metadata as md
import re
import sys
import tempfile
from pathlib import Path

KIT_PACKAGES = (
    "torch",
    "torchvision",
    "triton",
    "accelerate",
    "diffusers",
    "datasets",
    "huggingface_hub",
    "safetensors",
    "pydantic",
    "pydantic_core",
    "pyarrow",
    "fsspec",
    "dill",
    "multiprocess",
    "xxhash",
    "pandas",
    "numpy",
    "pillow",
    "tensorboard",
    "scikit-image",
    "pyyaml",
    "typing_extensions",
    "zipp",
    "importlib_metadata",
    "packaging",
    "tqdm",
)


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def wheel_name(path: str | Path) -> tuple[str, str]:
    """(canonical name, version) from a wheel's file name (``NAME-VERSION-...whl``)."""
    parts = Path(path).name.split("-")
    return canon(parts[0]), parts[1]


def installed_version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def site_requirements(site: str | Path) -> list[tuple[str, object]]:
    """(distribution, Requirement) for every non-extra requirement, marker true here, of the dists in ``site``."""
    from packaging.requirements import Requirement

    out = []
    for dist in md.distributions(path=[str(site)]):
        for line in dist.requires or []:
            req = Requirement(line)
            if req.marker is not None and not req.marker.evaluate({"extra": ""}):
                continue
            out.append((dist.metadata["Name"], req))
    return out


def failing(reqs: list[tuple[str, object]]) -> list[tuple[str, object, str | None]]:
    """Those requirements the importable packages do not meet: (by, requirement, installed version or None)."""
    bad = []
    for by, req in reqs:
        have = installed_version(req.name)
        if have is None or (req.specifier and not req.specifier.contains(have, prereleases=True)):
            bad.append((by, req, have))
    return bad


def needed(site: str | Path, dirs: list[str]) -> list[Path]:
    """The fallback wheels in ``dirs`` that fix a failing requirement of the dists in ``site``."""
    bad = {canon(req.name) for _, req, _ in failing(site_requirements(site))}
    wheels = [w for d in dirs if Path(d).is_dir() for w in sorted(Path(d).glob("*.whl"))]
    return [w for w in wheels if wheel_name(w)[0] in bad]


def smoke() -> list[str]:
    """Functional checks of what the kit imports; returns the failures (empty: all passed)."""
    problems = []

    def step(name, fn):
        try:
            fn()
            print(f"  ok   {name}")
        except Exception as exc:  # noqa: BLE001 - report every failure, keep going
            problems.append(f"{name}: {type(exc).__name__}: {exc}")
            print(f"  FAIL {name}: {type(exc).__name__}: {exc}")

    def unet():
        import torch
        from diffusers import (
            DDIMScheduler,
            DDPMScheduler,
            DPMSolverMultistepScheduler,
            UNet2DModel,
            UniPCMultistepScheduler,  # noqa: F401
        )

        net = UNet2DModel(
            sample_size=8,
            block_out_channels=(8, 16),
            norm_num_groups=4,
            layers_per_block=1,
            down_block_types=("DownBlock2D", "AttnDownBlock2D"),
            up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        )
        out = net(torch.randn(2, 3, 8, 8), torch.tensor([1, 2])).sample
        assert out.shape == (2, 3, 8, 8) and torch.isfinite(out).all()
        DDIMScheduler.from_config(DDPMScheduler().config)
        DPMSolverMultistepScheduler.from_config(DDPMScheduler().config, algorithm_type="dpmsolver++")

    def datasets_roundtrip():
        import datasets
        import numpy as np
        from PIL import Image

        with tempfile.TemporaryDirectory() as tmp:
            ims = [Image.fromarray(np.full((8, 8, 3), i * 40, np.uint8)) for i in range(3)]
            ds = datasets.Dataset.from_dict({"image": ims}).cast_column("image", datasets.Image())
            datasets.DatasetDict({"train": ds}).save_to_disk(f"{tmp}/ds")
            back = datasets.load_from_disk(f"{tmp}/ds")["train"]
            assert back[2]["image"].getpixel((0, 0)) == (80, 80, 80)
            Path(f"{tmp}/folder").mkdir()
            for i, im in enumerate(ims):
                im.save(f"{tmp}/folder/{i}.png")
            folder = datasets.load_dataset(
                "imagefolder", data_dir=f"{tmp}/folder", split="train", cache_dir=f"{tmp}/cache"
            )
            assert len(folder) == 3

    def pydantic_models():
        import pydantic

        class M(pydantic.BaseModel):
            x: int = 1

        assert M(x="2").x == 2

    def project():
        from training.config import load_train_config

        root = Path(__file__).resolve().parents[2]
        cfg = load_train_config(root / "configs/train/attention_unet.yaml", ["data.dataset_dir=/nonexistent"])
        assert cfg.train.mixed_precision == "bf16"

    step("diffusers UNet2DModel forward + schedulers", unet)
    step("datasets save_to_disk/load_from_disk + imagefolder", datasets_roundtrip)
    step("pydantic", pydantic_models)
    step("project config (training.config)", project)
    return problems


def check(site: str | Path) -> int:
    import platform

    print(f"python {platform.python_version()} at {sys.executable}")
    try:
        import torch

        cuda = torch.cuda.is_available()
        gpu = torch.cuda.get_device_name(0) if cuda else "none"
        print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, available {cuda}, GPU {gpu}")
    except Exception as exc:  # noqa: BLE001
        print(f"torch: {exc}")
    for name in KIT_PACKAGES:
        dist = None
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            pass
        where = "carried" if dist is not None and str(site) in str(dist.locate_file("")) else "image"
        print(f"  {name:<20} {dist.version if dist else 'MISSING':<16} {where if dist else ''}")
    bad = failing(site_requirements(site)) if Path(site).is_dir() else []
    for by, req, have in bad:
        hint = (
            " (carry bench_out/wheels-pyarrow: fetch_wheels.sh --with-pyarrow)" if canon(req.name) == "pyarrow" else ""
        )
        print(f"  REQUIREMENT NOT MET: {by} needs {req}, installed {have or 'none'}{hint}")
    if not bad:
        print("  every requirement of the carried wheels is met")
    problems = smoke()
    print("preflight: " + ("ok" if not problems else f"{len(problems)} failure(s): " + "; ".join(problems)))
    return 1 if problems else 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) >= 2 and argv[0] == "needed":
        for w in needed(argv[1], argv[2:]):
            print(w)
        return 0
    if len(argv) == 2 and argv[0] == "check":
        return check(argv[1])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    raise SystemExit(main())
