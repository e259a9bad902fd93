"""Post-hoc EMA (Karras et al. 2024, "Analyzing and Improving the Training Dynamics of Diffusion Models", EDM2):
power-function EMA profiles tracked during training, their snapshots in the run directory, and the least-squares
reconstruction of an EMA of any width from those snapshots after training.

The math, from the paper's section 3 and appendix C:

- A power-function EMA at step ``t`` averages the weights of steps ``1..t`` with density ``~ tau**gamma``. Its
  relative width (standard deviation over the run's length) is ``sigma_rel = sqrt((g+1) / ((g+2)**2 (g+3)))``;
  :func:`sigma_rel_to_gamma` inverts it (the largest real root of ``g**3 + 7 g**2 + (16 - s) g + (12 - s)``,
  ``s = sigma_rel**-2``). ``sigma_rel`` must be below ``0.2981`` (``gamma > -1/2``: the profile must have a finite
  L2 norm to be reconstructed).
- Updated every step with ``beta_t = (1 - 1/t)**(gamma + 1)``, the EMA at step ``t`` gives step ``tau`` the weight
  ``(tau**(g+1) - (tau-1)**(g+1)) / t**(g+1)`` (:func:`discrete_profile`): exactly the continuous profile
  ``(g+1) x**g / t**(g+1)`` on ``[0, t]`` applied to the weights held piecewise constant over each step. So the
  continuous inner products of power functions (:func:`profile_dot`, the paper's ``p_dot_p``) are the right metric
  for the discrete EMAs too.
- Reconstruction (the paper's Algorithm 3, :func:`solve_coefficients`): the target profile (``gamma_out`` at step
  ``T``) is projected onto the stored snapshots' profiles (each tracked ``gamma_i`` at each saved step
  ``t_i <= T``) by least squares; the reconstructed EMA is the same combination of the snapshots. A target equal to
  a stored profile is reproduced exactly; any other has a residual, :func:`profile_error` (relative L2), which
  decides what is reconstructable (:data:`MAX_PROFILE_ERROR`).

Run directory (contracts.md section 4)::

    <run_dir>/posthoc_ema/snapshot-<step>.safetensors   every profile's EMA at <step> (fp16/bf16/fp32), atomic

Each file holds tensors ``ema<i>.<parameter name>`` for profile ``i`` and metadata (``format``, ``step``,
``sigma_rels``, ``dtype``). The profiles' float32 state is part of every checkpoint (``custom_checkpoint_<i>.pkl``
of :class:`PosthocEma`), so ``--resume`` continues them with no gap; snapshots newer than the resumed step (written
after that checkpoint by the interrupted run, or by an abandoned branch) are set aside as
``abandoned-snapshot-<step>.safetensors`` and written again by the resumed run, so no step is stored twice.

Example::

    from training.posthoc_ema import sigma_rel_to_gamma, solve_coefficients
    g = [sigma_rel_to_gamma(s) for s in (0.05, 0.10)]
    x = solve_coefficients([100, 200, 100, 200], [g[0], g[0], g[1], g[1]], 200, sigma_rel_to_gamma(0.08))

This module imports torch lazily: :class:`PosthocEmaConfig` is part of the trainer's config schema.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from common.configio import ConfigError, StrictModel
from common.fileio import atomic_write, clean_stale_temps, fsync_dir

log = logging.getLogger(__name__)

__all__ = [
    "MAX_PROFILE_ERROR",
    "MAX_SIGMA_REL",
    "PosthocEma",
    "PosthocEmaConfig",
    "SnapshotError",
    "build_posthoc_ema",
    "discrete_profile",
    "list_snapshots",
    "profile_dot",
    "profile_error",
    "reconstruct",
    "read_snapshot",
    "sigma_rel_to_gamma",
    "solve_coefficients",
]

SNAPSHOT_DIR = "posthoc_ema"
FORMAT = "ptt-posthoc-ema"
_NAME = re.compile(r"^snapshot-(\d+)\.safetensors$")
# gamma -> -1/2 gives sigma_rel -> sqrt(0.5 / (2.25 * 2.5)); at or past it the profile has no finite L2 norm
MAX_SIGMA_REL = math.sqrt(0.5 / (1.5**2 * 2.5))
# A reconstruction whose profile misses the target by more than this (relative L2) is refused: past it the
# snapshots cannot express that width (EDM2's figure 5 shows errors of a few per cent inside the useful range).
MAX_PROFILE_ERROR = 0.10


class PosthocEmaConfig(StrictModel):
    """``ema.posthoc``: opt-in; the trainer's usual EMA (``ema.decay``) stays what pipeline/ and best/ export."""

    enabled: bool = False
    # EDM2's two profiles; any width between them and a little beyond is reconstructable after training.
    sigma_rels: list[float] = Field(default_factory=lambda: [0.05, 0.10], min_length=1)
    # EDM2 saved every 8Mi images (~4k steps at batch 2048); more snapshots widen the reconstructable range.
    snapshot_every_steps: int = Field(500, ge=1)
    # null keeps every snapshot (what the reconstruction needs: an early snapshot shapes the early profile);
    # N keeps the newest N, rotated like checkpoints, and narrows the range of widths that can be reconstructed.
    snapshots_keep: int | None = Field(None, ge=2)
    # float16 halves the disk cost at ~1e-3 relative rounding (EDM2 stored fp16); float32 for exactness tests.
    snapshot_dtype: Literal["float16", "bfloat16", "float32"] = "float16"

    @field_validator("sigma_rels")
    @classmethod
    def _widths(cls, value: list[float]) -> list[float]:
        for s in value:
            if not 0.0 < s < MAX_SIGMA_REL:
                raise ValueError(f"{s} is not a power-function EMA width; each must be in (0, {MAX_SIGMA_REL:.4f})")
        if len(set(value)) != len(value):
            raise ValueError(f"{value} lists a width twice")
        return value


# ----------------------------------------------------------------------------------------------------------------
# The math (pure, numpy only)


def sigma_rel_to_gamma(sigma_rel: float) -> float:
    """The power-function exponent whose profile has relative standard deviation ``sigma_rel`` (EDM2 eq. 3)."""
    import numpy as np

    if not 0.0 < sigma_rel < MAX_SIGMA_REL:
        raise ValueError(f"sigma_rel {sigma_rel} is outside (0, {MAX_SIGMA_REL:.4f})")
    s = sigma_rel**-2
    return float(np.roots([1.0, 7.0, 16.0 - s, 12.0 - s]).real.max())


def gamma_to_sigma_rel(gamma: float) -> float:
    return math.sqrt((gamma + 1) / ((gamma + 2) ** 2 * (gamma + 3)))


def power_beta(step: int, gamma: float) -> float:
    """The EMA's decay at optimizer step ``step`` (1-based): ``(1 - 1/step)**(gamma + 1)``; 0 at step 1."""
    return (1.0 - 1.0 / step) ** (gamma + 1.0)


def discrete_profile(t: int, gamma: float):
    """(t,) float64: the weight the step-``t`` EMA gives the weights after steps 1..t (sums to 1)."""
    import numpy as np

    tau = np.arange(1, t + 1, dtype=np.float64)
    return (tau ** (gamma + 1) - (tau - 1) ** (gamma + 1)) / float(t) ** (gamma + 1)


def profile_dot(t_a, gamma_a, t_b, gamma_b):
    """Inner products of the power-function profiles ``(g+1) x**g / t**(g+1)`` on ``[0, t]`` (EDM2's ``p_dot_p``);
    broadcasts over numpy arrays."""
    import numpy as np

    t_a, gamma_a, t_b, gamma_b = (np.asarray(v, dtype=np.float64) for v in (t_a, gamma_a, t_b, gamma_b))
    ratio = t_a / t_b
    exponent = np.where(t_a < t_b, gamma_b, -gamma_a)
    num = (gamma_a + 1) * (gamma_b + 1) * ratio**exponent
    return num / ((gamma_a + gamma_b + 1) * np.maximum(t_a, t_b))


def solve_coefficients(in_steps, in_gammas, out_step, out_gamma):
    """(n,) float64: least-squares weights of the stored profiles (``in_steps[i]``, ``in_gammas[i]``) whose sum
    best matches the target profile (EDM2's Algorithm 3)."""
    import numpy as np

    t_in = np.asarray(in_steps, dtype=np.float64).reshape(-1, 1)
    g_in = np.asarray(in_gammas, dtype=np.float64).reshape(-1, 1)
    a = profile_dot(t_in, g_in, t_in.T, g_in.T)  # (n, n)
    b = profile_dot(t_in, g_in, float(out_step), float(out_gamma)).reshape(-1)  # (n,)
    return np.linalg.lstsq(a, b, rcond=None)[0]


def profile_error(in_steps, in_gammas, coefficients, out_step, out_gamma) -> float:
    """Relative L2 distance between the combined profile and the target, in closed form."""
    import numpy as np

    t_in = np.asarray(in_steps, dtype=np.float64).reshape(-1, 1)
    g_in = np.asarray(in_gammas, dtype=np.float64).reshape(-1, 1)
    x = np.asarray(coefficients, dtype=np.float64)
    a = profile_dot(t_in, g_in, t_in.T, g_in.T)
    b = profile_dot(t_in, g_in, float(out_step), float(out_gamma)).reshape(-1)
    c = float(profile_dot(out_step, out_gamma, out_step, out_gamma))
    return math.sqrt(max(0.0, float(x @ a @ x - 2 * x @ b + c)) / c)


# ----------------------------------------------------------------------------------------------------------------
# During training


class PosthocEma:
    """The tracked profiles (float32, on the training device), updated every optimizer step; writes a snapshot
    every ``snapshot_every_steps``. Registered with ``accelerator.register_for_checkpointing``."""

    def __init__(self, cfg: PosthocEmaConfig, named_parameters, run_dir: str | Path, *, is_main: bool) -> None:
        import torch

        self.cfg = cfg
        self.gammas = [sigma_rel_to_gamma(s) for s in cfg.sigma_rels]
        named = list(named_parameters)
        self.names = [n for n, _ in named]
        with torch.no_grad():
            self.shadows = [[p.detach().float().clone() for _, p in named] for _ in self.gammas]
        self.folder = Path(run_dir) / SNAPSHOT_DIR
        self.is_main = is_main
        self.step = 0  # optimizer steps folded in

    def snapshot_bytes(self) -> int:
        per = {"float16": 2, "bfloat16": 2, "float32": 4}[self.cfg.snapshot_dtype]
        return per * len(self.gammas) * sum(t.numel() for t in self.shadows[0])

    def banner(self) -> str:
        widths = ", ".join(f"{s:g}" for s in self.cfg.sigma_rels)
        return (
            f"post-hoc EMA: sigma_rel {widths}, a {self.cfg.snapshot_dtype} snapshot every "
            f"{self.cfg.snapshot_every_steps} steps into {self.folder} ({self.snapshot_bytes() / 2**20:.2f} MiB each)"
        )

    def update(self, parameters, step: int, *, last: bool = False) -> Path | None:
        """Fold in the weights after optimizer step ``step`` (1-based); on the main process, write the snapshot
        when ``step`` is a multiple of ``snapshot_every_steps`` or ``last`` (the run's final step)."""
        import torch

        if step != self.step + 1:
            raise RuntimeError(f"post-hoc EMA: update for step {step} after step {self.step}")
        params = [p.detach() for p in parameters]
        with torch.no_grad():
            for shadow, gamma in zip(self.shadows, self.gammas, strict=True):
                if step == 1:
                    torch._foreach_copy_(shadow, [p.float() for p in params])
                else:
                    torch._foreach_lerp_(shadow, [p.float() for p in params], 1.0 - power_beta(step, gamma))
        self.step = step
        if self.is_main and (step % self.cfg.snapshot_every_steps == 0 or last):
            return self.write_snapshot()
        return None

    def write_snapshot(self) -> Path:
        import torch
        from safetensors.torch import save

        dtype = getattr(torch, self.cfg.snapshot_dtype)
        tensors = {
            f"ema{i}.{name}": t.to(dtype=dtype, device="cpu").contiguous()
            for i, shadow in enumerate(self.shadows)
            for name, t in zip(self.names, shadow, strict=True)
        }
        meta = {
            "format": FORMAT,
            "version": "1",
            "step": str(self.step),
            "sigma_rels": json.dumps(self.cfg.sigma_rels),
            "dtype": self.cfg.snapshot_dtype,
        }
        path = self.folder / f"snapshot-{self.step}.safetensors"
        self.folder.mkdir(parents=True, exist_ok=True)
        atomic_write(path, save(tensors, metadata=meta))
        if self.cfg.snapshots_keep is not None:
            for old in [p for _, p in list_snapshots(self.folder.parent)][: -self.cfg.snapshots_keep]:
                old.unlink(missing_ok=True)
            fsync_dir(self.folder)
        return path

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "sigma_rels": list(self.cfg.sigma_rels),
            "names": list(self.names),
            "shadows": [[t.detach().cpu() for t in shadow] for shadow in self.shadows],
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume the profiles (copied into the device tensors) and set aside snapshots newer than the step."""
        if list(state["sigma_rels"]) != list(self.cfg.sigma_rels) or list(state["names"]) != self.names:
            raise ValueError(
                f"post-hoc EMA of the checkpoint tracks sigma_rel {state['sigma_rels']}, this config "
                f"{self.cfg.sigma_rels} (or other parameters); keep ema.posthoc.sigma_rels as the run had them"
            )
        for shadow, saved in zip(self.shadows, state["shadows"], strict=True):
            for t, s in zip(shadow, saved, strict=True):
                t.copy_(s)
        self.step = int(state["step"])
        if self.is_main:
            set_aside_later_snapshots(self.folder.parent, self.step)


def build_posthoc_ema(cfg: PosthocEmaConfig, model, run_dir: str | Path, *, is_main: bool, resume_from=None):
    """The trainer's hook: None when ``ema.posthoc.enabled`` is off; checks that a checkpoint being resumed tracked
    post-hoc EMA too (a one-line ConfigError if it did not), clears a crashed run's temporaries, logs the banner."""
    if not cfg.enabled:
        return None
    if resume_from is not None:
        meta_path = Path(resume_from) / "meta.json"
        try:
            saved = json.loads(meta_path.read_text(encoding="utf-8")).get("custom_objects") or []
        except (OSError, ValueError):
            saved = None  # the checkpoint loader names a damaged meta.json itself
        if saved is not None and "posthoc_ema" not in saved:
            raise ConfigError(
                f"--resume {resume_from}: that run did not track post-hoc EMA, so its profiles would start "
                "mid-run; set ema.posthoc.enabled=false to resume it, or start a new run_dir"
            )
    ema = PosthocEma(cfg, model.named_parameters(), run_dir, is_main=is_main)
    if is_main:
        if ema.folder.is_dir():
            clean_stale_temps(ema.folder)
        if resume_from is None:  # a new run: a run killed before its first checkpoint left these
            set_aside_later_snapshots(run_dir, 0)
        log.info(ema.banner())
    return ema


def list_snapshots(run_dir: str | Path) -> list[tuple[int, Path]]:
    """``(step, path)`` of ``<run_dir>/posthoc_ema/snapshot-<step>.safetensors``, oldest first; temporaries and
    abandoned snapshots are never listed."""
    folder = Path(run_dir) / SNAPSHOT_DIR
    if not folder.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in folder.iterdir() if (m := _NAME.match(p.name)) and p.is_file()]
    return sorted(found)


def set_aside_later_snapshots(run_dir: str | Path, step: int) -> list[Path]:
    """Rename snapshots newer than ``step`` to ``abandoned-snapshot-<step>.safetensors`` (main process)."""
    moved = []
    for s, path in list_snapshots(run_dir):
        if s > step:
            dest = path.with_name(f"abandoned-{path.name}")
            os.replace(path, dest)
            moved.append(dest)
    if moved:
        fsync_dir(moved[0].parent)
        log.warning(
            "resumed at step %d: set aside post-hoc EMA snapshots written after it: %s",
            step,
            ", ".join(p.name for p in moved),
        )
    return moved


# ----------------------------------------------------------------------------------------------------------------
# After training


class SnapshotError(ValueError):
    """A run's snapshots cannot give what was asked; the message is one line naming the run and what is missing."""


@dataclass(frozen=True)
class Snapshot:
    step: int
    path: Path
    sigma_rels: tuple[float, ...]


def read_snapshot(path: str | Path) -> tuple[dict, dict]:
    """(metadata, tensors) of one snapshot file; a damaged file raises :class:`SnapshotError`."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = Path(path)
    problem = _file_problem(path)
    if problem:
        raise SnapshotError(f"{path}: {problem}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        raise SnapshotError(f"{path}: damaged ({str(exc).splitlines()[0][:120]})") from None
    return meta, tensors


def _file_problem(path: Path) -> str | None:
    """Why a snapshot file is not whole (headers only): empty, cut short, not a snapshot."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return "empty" if size == 0 else "cut short (no safetensors header)"
            n = int.from_bytes(head, "little")
            if n > size - 8:
                return f"cut short: its header needs {n} bytes, the file has {size}"
            header = json.loads(fh.read(n))
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    except (json.JSONDecodeError, UnicodeDecodeError):
        return "damaged (its header is not JSON)"
    if not isinstance(header, dict) or (header.get("__metadata__") or {}).get("format") != FORMAT:
        return f"not a post-hoc EMA snapshot (no format={FORMAT} in its metadata)"
    end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        return f"cut short: {size} bytes, its header says {8 + n + end}"
    meta = header["__metadata__"]
    try:
        json.loads(meta["sigma_rels"]), int(meta["step"])
    except (KeyError, ValueError):
        return "damaged (its metadata lacks step or sigma_rels)"
    return None


def check_snapshots(run_dir: str | Path, cfg: PosthocEmaConfig | None) -> list[Snapshot]:
    """Every snapshot of a run, checked (headers only): none, a damaged one, one missing from the series
    (``snapshot_every_steps`` apart from the first kept), or widths that differ, raise :class:`SnapshotError`."""
    run_dir = Path(run_dir)
    listed = list_snapshots(run_dir)
    if not listed:
        raise SnapshotError(
            f"{run_dir}: no post-hoc EMA snapshots ({run_dir / SNAPSHOT_DIR}/snapshot-<step>.safetensors); train "
            "with ema.posthoc.enabled=true to keep them"
        )
    out = []
    for step, path in listed:
        if problem := _file_problem(path):
            raise SnapshotError(f"{run_dir}: snapshot {path.name} is {problem}; remove it or restore it")
        meta = json.loads(_header(path)["__metadata__"]["sigma_rels"])
        out.append(Snapshot(step, path, tuple(float(s) for s in meta)))
    widths = {s.sigma_rels for s in out}
    if len(widths) > 1:
        raise SnapshotError(f"{run_dir}: the snapshots track different widths ({sorted(widths)}); keep one series")
    if cfg is not None:
        every = cfg.snapshot_every_steps
        steps = [s.step for s in out]
        first = every if cfg.snapshots_keep is None else steps[0]
        expected = list(range(first, steps[-1] + 1, every))
        missing = sorted(set(expected) - set(steps))
        if missing:
            names = ", ".join(f"snapshot-{m}" for m in missing[:3]) + (" ..." if len(missing) > 3 else "")
            raise SnapshotError(
                f"{run_dir}: {len(missing)} post-hoc EMA snapshot(s) missing from the series every {every} steps "
                f"({names}); restore them or reconstruct at an earlier step with --at-step"
            )
    return out


def _header(path: Path) -> dict:
    with path.open("rb") as fh:
        n = int.from_bytes(fh.read(8), "little")
        return json.loads(fh.read(n))


def plan(snapshots: list[Snapshot], sigma_rel: float, step: int | None, *, run_dir) -> dict:
    """Coefficients for one target: ``{"step", "sigma_rel", "inputs": [(snapshot, profile index, weight)],
    "profile_error"}``; a width or step the snapshots cannot give raises :class:`SnapshotError`."""
    if not 0.0 < sigma_rel < MAX_SIGMA_REL:
        raise SnapshotError(
            f"{run_dir}: sigma_rel {sigma_rel:g} is not a power-function EMA width; "
            f"pick one in (0, {MAX_SIGMA_REL:.4f})"
        )
    last = snapshots[-1].step
    step = last if step is None else step
    used = [s for s in snapshots if s.step <= step]
    if step > last or not used or step not in {s.step for s in snapshots}:
        steps = [s.step for s in snapshots]
        raise SnapshotError(
            f"{run_dir}: no snapshot at step {step} to reconstruct at; the snapshots are at steps "
            f"{steps[0]}..{steps[-1]} (every {steps[1] - steps[0] if len(steps) > 1 else steps[0]})"
        )
    pairs = [(s, i) for s in used for i in range(len(s.sigma_rels))]
    t_in = [s.step for s, _ in pairs]
    g_in = [sigma_rel_to_gamma(s.sigma_rels[i]) for s, i in pairs]
    gamma = sigma_rel_to_gamma(sigma_rel)
    x = solve_coefficients(t_in, g_in, step, gamma)
    err = profile_error(t_in, g_in, x, step, gamma)
    if err > MAX_PROFILE_ERROR:
        lo, hi = reconstructable_range(snapshots, step)
        span = f"widths from {lo:.3f} to {hi:.3f} are" if lo is not None else "no width is"
        raise SnapshotError(
            f"{run_dir}: sigma_rel {sigma_rel:g} at step {step} is outside what the snapshots can reconstruct "
            f"(profile error {err:.0%} > {MAX_PROFILE_ERROR:.0%}); {span} within"
        )
    return {"step": step, "sigma_rel": sigma_rel, "inputs": list(zip(pairs, x, strict=True)), "profile_error": err}


def reconstructable_range(snapshots: list[Snapshot], step: int) -> tuple[float | None, float | None]:
    """The smallest and largest width (on a fine grid) whose reconstruction at ``step`` meets MAX_PROFILE_ERROR."""
    import numpy as np

    used = [s for s in snapshots if s.step <= step]
    pairs = [(s, i) for s in used for i in range(len(s.sigma_rels))]
    t_in = [s.step for s, _ in pairs]
    g_in = [sigma_rel_to_gamma(s.sigma_rels[i]) for s, i in pairs]
    ok = []
    for sigma in np.geomspace(0.005, MAX_SIGMA_REL * 0.999, 200):
        gamma = sigma_rel_to_gamma(float(sigma))
        x = solve_coefficients(t_in, g_in, step, gamma)
        if profile_error(t_in, g_in, x, step, gamma) <= MAX_PROFILE_ERROR:
            ok.append(float(sigma))
    return (min(ok), max(ok)) if ok else (None, None)


def reconstruct(target: dict, names: list[str]) -> dict:
    """``{parameter name: float32 tensor}``: the planned combination of the snapshots, read one file at a time."""
    by_file: dict[Path, list[tuple[int, float]]] = {}
    for (snap, i), w in target["inputs"]:
        by_file.setdefault(snap.path, []).append((i, float(w)))
    out = {}
    for path, terms in by_file.items():
        _, tensors = read_snapshot(path)
        for i, w in terms:
            for name in names:
                key = f"ema{i}.{name}"
                if key not in tensors:
                    raise SnapshotError(f"{path}: no tensor {key}; the snapshot is of another model")
                t = tensors[key].double() * w  # float64: the weights alternate in sign
                out[name] = t if name not in out else out[name].add_(t)
    return {name: t.float() for name, t in out.items()}
