"""Run-directory checkpoints: atomic ``accelerator.save_state`` folders, rotation, ``latest`` lookup, run state.

Layout (contracts.md section 4): ``<run_dir>/checkpoints/checkpoint-<step>/`` holds what
``accelerator.save_state`` writes (model, optimizer, grad scaler, every rank's RNG states, and the
objects registered for checkpointing: the EMA and :class:`RunState`), the run's ``config.yaml``, and ``meta.json``
(step, epoch, version, the registered objects' names in order, and the world size, per-device batch, gradient
accumulation and seed that fix the data order).
Every rank writes into ``.tmp-checkpoint-<step>-<pid>`` (the main process's pid); the main process writes
``meta.json`` last and renames the folder, so a crash mid-write leaves only a ``.tmp-*`` folder that
:func:`latest_checkpoint` never picks (the next save removes it once its pid is gone: a save never deletes a live
writer's folder). Rotation renames a checkpoint ``.deleting-checkpoint-<step>`` before removing it, so a kill
mid-removal never leaves a half-deleted folder that looks complete. ``--resume latest`` takes the newest checkpoint
whose files are whole (:func:`checkpoint_problem`: meta.json parses, every safetensors file is as long as its
header says, every torch file's zip directory is readable) and names each damaged newer one in a warning.
Resuming from an older checkpoint renames the newer ones ``abandoned-checkpoint-<step>``.
One trainer owns a run directory at a time: :func:`lock_run_dir` holds ``<run_dir>/.ptt-lock`` (``common.lock``)
on the main process from before the checkpoint is resolved to the end of the run; a second trainer is refused
with a one-line error naming the owner.

Example::

    from training.checkpoint import latest_checkpoint, list_checkpoints
    print(list_checkpoints("runs/demo"), latest_checkpoint("runs/demo"))
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from pathlib import Path

from common.configio import ConfigError
from common.fileio import (
    atomic_write_json,
    clean_stale_temps,
    disk_error_line,
    fsync_dir,
    os_error_line,
    pid_alive,
)
from common.lock import FolderBusyError, lock_on_main_process
from training.config import TrainConfig

log = logging.getLogger(__name__)

__all__ = [
    "CHECKPOINT_VERSION",
    "RunState",
    "checkpoint_problem",
    "list_checkpoints",
    "latest_checkpoint",
    "lock_run_dir",
    "resolve_checkpoint",
    "save_checkpoint",
    "read_meta",
    "set_aside_later_checkpoints",
    "load_checkpoint",
    "resume_mismatches",
    "run_dir_error_line",
    "run_identity",
]

CHECKPOINT_VERSION = 1
_NAME = re.compile(r"^checkpoint-(\d+)$")
_TMP = re.compile(r"^\.tmp-checkpoint-\d+(?:-(?P<pid>\d+))?$")  # no pid: written before the name carried one


class RunState:
    """Loop counters saved with every checkpoint (registered with ``accelerator.register_for_checkpointing``)."""

    def __init__(self) -> None:
        self.step = 0  # optimizer steps done
        self.nonfinite_total = 0
        self.best_fid: float | None = None
        self.best_step: int | None = None
        self.budget = None  # training.budget.BudgetState with train.time_budget: what is left of it, and the plan

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "nonfinite_total": self.nonfinite_total,
            "best_fid": self.best_fid,
            "best_step": self.best_step,
            "budget": None if self.budget is None else self.budget.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.step = int(state["step"])
        self.nonfinite_total = int(state.get("nonfinite_total", 0))
        self.best_fid = state.get("best_fid")
        self.best_step = state.get("best_step")
        if state.get("budget") is not None:
            from training.budget import BudgetState

            self.budget = BudgetState.from_state_dict(state["budget"])


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Complete checkpoints (renamed into place, with meta.json), oldest first."""
    root = Path(run_dir) / "checkpoints"
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _NAME.match(p.name)
        if m and p.is_dir() and (p / "meta.json").is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def _safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file is not whole (empty, cut short, bad header), or None; reads only the header."""
    size = path.stat().st_size
    with path.open("rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            return "empty" if size == 0 else f"{size} bytes, shorter than a safetensors header"
        n = int.from_bytes(head, "little")
        if n > size - 8:
            return f"cut short: its header needs {n} bytes, the file has {size}"
        try:
            header = json.loads(fh.read(n))
        except (json.JSONDecodeError, UnicodeDecodeError):
            return "its header is not JSON"
    end = max((int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"), default=0)
    if 8 + n + end != size:
        return f"cut short: {size} bytes, its header says {8 + n + end}"
    return None


def _torch_file_problem(path: Path) -> str | None:
    """Why a ``torch.save`` file (a zip archive) is not whole, or None; reads only the zip's directory."""
    import zipfile

    size = path.stat().st_size
    if size == 0:
        return "empty"
    with path.open("rb") as fh:
        if fh.read(4) != b"PK\x03\x04":
            return None  # a legacy (non-zip) pickle: nothing cheap to check beyond its being there
    try:
        with zipfile.ZipFile(path) as zf:
            zf.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        return f"cut short or damaged ({exc})"
    return None


def checkpoint_problem(ckpt: str | Path) -> str | None:
    """``"<file>: <what is wrong>"`` for the first damaged file of a checkpoint folder, or None when every file
    is whole. Cheap: headers and zip directories only, no tensor is loaded."""
    ckpt = Path(ckpt)
    try:
        meta = read_meta(ckpt)
    except (OSError, ValueError) as exc:
        return f"{ckpt / 'meta.json'}: unreadable ({type(exc).__name__})"
    if not isinstance(meta, dict):
        return f"{ckpt / 'meta.json'}: not a JSON object"
    if not any(ckpt.glob("model*.safetensors")) and not any(ckpt.glob("pytorch_model*.bin")):
        return f"{ckpt}: no model weights (model.safetensors)"
    expected = [f"custom_checkpoint_{i}.pkl" for i in range(len(meta.get("custom_objects") or []))]
    for name in ["optimizer.bin", *expected]:
        if not (ckpt / name).is_file():
            return f"{ckpt / name}: missing"
    for path in sorted(ckpt.iterdir()):
        if not path.is_file():
            continue
        try:
            if path.suffix == ".safetensors":
                why = _safetensors_problem(path)
            elif path.suffix in (".bin", ".pt", ".pth", ".pkl"):
                why = _torch_file_problem(path)
            else:
                continue
        except OSError as exc:
            why = f"unreadable ({exc.strerror or exc})"
        if why:
            return f"{path}: {why}"
    return None


def latest_checkpoint(run_dir: str | Path, *, check: bool = False) -> Path | None:
    """The newest complete checkpoint; with ``check``, the newest whose files are whole (each damaged newer one
    is named in a warning; a ConfigError when every one is damaged, so a run is never restarted over them)."""
    ckpts = list_checkpoints(run_dir)
    if not check:
        return ckpts[-1] if ckpts else None
    bad = []
    for ckpt in reversed(ckpts):
        problem = checkpoint_problem(ckpt)
        if problem is None:
            for b in bad:
                log.warning("--resume latest: skipping %s (%s); resuming from %s", b[0].name, b[1], ckpt.name)
            return ckpt
        bad.append((ckpt, problem))
    if bad:
        raise ConfigError(
            f"--resume latest: every checkpoint of {Path(run_dir) / 'checkpoints'} is damaged (newest: "
            f"{bad[0][1]}); pass --resume with a checkpoint from elsewhere or start a new run_dir"
        )
    return None


def read_meta(ckpt: str | Path) -> dict:
    return json.loads((Path(ckpt) / "meta.json").read_text(encoding="utf-8"))


def resolve_checkpoint(run_dir: str | Path, which: str) -> Path | None:
    """``latest`` -> the newest whole checkpoint of ``run_dir`` (None if there is none; damaged newer ones are
    skipped with a warning); else a path or name."""
    if which == "latest":
        return latest_checkpoint(run_dir, check=True)
    for cand in (Path(which), Path(run_dir) / "checkpoints" / which):
        if cand.is_dir() and (cand / "meta.json").is_file():
            return cand
        if cand.is_dir() and latest_checkpoint(cand) is not None:  # a run directory
            return latest_checkpoint(cand, check=True)
    raise ConfigError(
        f"--resume {which}: not a complete checkpoint folder (with meta.json) or run directory; "
        f"see {Path(run_dir) / 'checkpoints'}"
    )


def save_checkpoint(
    accelerator, run_dir: str | Path, *, step: int, meta: dict, keep: int, config_yaml: str | None = None
) -> Path:
    """Collective: every rank calls it. Writes ``checkpoint-<step>`` atomically, then keeps the newest ``keep``.

    ``config_yaml`` (the resolved run config) is stored beside the state, so a checkpoint rebuilds its model alone.
    """
    from accelerate.utils import broadcast_object_list

    root = Path(run_dir) / "checkpoints"
    final = root / f"checkpoint-{step}"
    owner = broadcast_object_list([os.getpid()])[0]  # every rank writes into the main process's folder
    tmp = root / f".tmp-checkpoint-{step}-{owner}"
    if accelerator.is_main_process:
        root.mkdir(parents=True, exist_ok=True)
        for stale in root.glob(".tmp-checkpoint-*"):  # a crash's (or this step's): never a live writer's
            m = _TMP.match(stale.name)
            if m and (m.group("pid") is None or int(m.group("pid")) == owner or not pid_alive(int(m.group("pid")))):
                shutil.rmtree(stale, ignore_errors=True)
        for stale in root.glob(".deleting-*"):
            shutil.rmtree(stale, ignore_errors=True)
        clean_stale_temps(run_dir)  # an interrupted run's temporaries (config, metrics, pipeline/), if it is gone
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if config_yaml is not None:
            (tmp / "config.yaml").write_text(config_yaml, encoding="utf-8")
        atomic_write_json(tmp / "meta.json", {"step": step, "version": CHECKPOINT_VERSION, **meta})
        if final.exists():  # the same step saved again (e.g. a signal right after a resume)
            _remove_checkpoint(final)
        os.replace(tmp, final)
        for old in list_checkpoints(run_dir)[:-keep]:
            _remove_checkpoint(old)
        log.info("saved %s", final)
    accelerator.wait_for_everyone()
    return final


def lock_run_dir(accelerator, run_dir: str | Path, held: contextlib.ExitStack, *, if_exists: bool = False) -> bool:
    """Collective: the main process takes ``<run_dir>/.ptt-lock`` into ``held`` (released when ``held`` closes);
    every rank waits for its verdict. True when taken; False when ``if_exists`` and there is no folder yet (so a
    run that cannot start leaves nothing behind); a :class:`ConfigError` on every rank when another live process
    owns the folder (naming its pid, host and command) or the folder cannot be made."""

    def describe(exc: BaseException) -> str | None:
        if isinstance(exc, FolderBusyError):
            return f"run_dir: {exc}"
        return run_dir_error_line(exc, run_dir)  # a file where the folder should be, a read-only parent, full disk

    return lock_on_main_process(accelerator, run_dir, held, error=ConfigError, describe=describe, if_exists=if_exists)


def _remove_checkpoint(ckpt: Path) -> None:
    """Rename, then remove: a kill mid-removal leaves ``.deleting-<name>``, which no lookup picks and the next
    save removes, never a half-deleted ``checkpoint-<step>`` that still has its meta.json."""
    doomed = ckpt.with_name(f".deleting-{ckpt.name}")
    shutil.rmtree(doomed, ignore_errors=True)
    os.replace(ckpt, doomed)
    fsync_dir(ckpt.parent)
    shutil.rmtree(doomed, ignore_errors=True)


def run_dir_error_line(exc: BaseException, run_dir: str | Path | None) -> str | None:
    """One line for a write that failed in the run directory (a full disk, torch's ``enforce fail at
    inline_container.cc``, a read-only or not-a-folder ``run_dir``); None for any other error."""
    where = run_dir or "run_dir"
    if line := disk_error_line(exc, where):
        return f"{line} (the checkpoints already written are whole; --resume latest continues from them)"
    if isinstance(exc, OSError):
        return os_error_line(exc, where, "run_dir=")
    return None


def set_aside_later_checkpoints(run_dir: str | Path, step: int) -> list[Path]:
    """Rename the checkpoints newer than ``step`` to ``abandoned-checkpoint-<step>`` (main process only).

    Resuming from an older checkpoint starts a new branch: the newer checkpoints of the old branch must not be
    what ``latest`` picks next time, nor push the new branch's checkpoints out of the keep-N rotation. They are
    kept (renamed), not deleted, so nothing a user may want is lost.
    """
    moved = []
    for ckpt in list_checkpoints(run_dir):
        if int(_NAME.match(ckpt.name).group(1)) > step:
            dest = ckpt.with_name(f"abandoned-{ckpt.name}")
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(ckpt, dest)
            moved.append(dest)
    if moved:
        log.warning(
            "resumed from step %d: set aside the newer checkpoints of the previous run as %s",
            step,
            ", ".join(p.name for p in moved),
        )
    return moved


# ----------------------------------------------------------------------------------------------------------------
# Resume checks


def run_identity(cfg: TrainConfig, world: int) -> dict:
    """What fixes the data order and step size; saved in every checkpoint's meta.json."""
    t = cfg.train
    return {"world_size": world, "batch_size": t.batch_size, "grad_accum_steps": t.grad_accum_steps, "seed": t.seed}


def resume_mismatches(meta: dict, cfg: TrainConfig, world: int) -> list[str]:
    """What differs between a checkpoint's run and this one in ways that change the data order or step size."""
    now = run_identity(cfg, world)
    return [f"{k} was {meta[k]}, now {v}" for k, v in now.items() if k in meta and meta[k] != v]


def load_checkpoint(accelerator, ckpt: Path, cfg: TrainConfig, *, custom_objects: list[str], world: int) -> None:
    """Collective: ``accelerator.load_state(ckpt)`` after checking that the checkpoint fits this run; a mismatch
    that changes the data order is a warning, one that cannot load is a one-line :class:`ConfigError`."""
    if problem := checkpoint_problem(ckpt):
        raise ConfigError(
            f"--resume {ckpt}: damaged checkpoint: {problem}; resume from an older one "
            f"(--resume {ckpt.parent}/checkpoint-<step>) or --resume latest, which skips damaged ones"
        )
    meta = read_meta(ckpt)
    saved = meta.get("custom_objects", custom_objects)
    if ("ema" in saved) != ("ema" in custom_objects):
        raise ConfigError(
            f"--resume {ckpt}: that run had ema.enabled={str('ema' in saved).lower()}; set "
            f"ema.enabled={str('ema' in saved).lower()} to resume it, or start a new run_dir"
        )
    for problem in resume_mismatches(meta, cfg, world):
        log.warning("--resume %s: %s, so the run will not match an uninterrupted one", ckpt, problem)
    try:
        accelerator.load_state(str(ckpt))
    except (RuntimeError, KeyError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ConfigError(
            f"--resume {ckpt}: the checkpoint does not fit this config ({first}); resume with the config it "
            f"was saved with ({ckpt / 'config.yaml'}) or start a new run_dir"
        ) from None
