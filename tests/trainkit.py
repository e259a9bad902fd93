"""The tiny trainer set-up the training tests share: a two-level 16x16 UNet config (``TINY``), a real ``datasets``
folder of face crops (:func:`make_dataset`), one in-process call of the trainer (:func:`run`), and checks on what a
run writes. The fixtures ``ds16``, ``tiny_cfg`` and ``fresh_accelerate_state`` (tests/conftest.py) are made of
these."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import torch

from tests.crops import write_crops_dataset
from training import train as train_mod

TINY = """\
data: {resolution: 16}
model:
  block_out_channels: [8, 16]
  down_block_types: [DownBlock2D, DownBlock2D]
  up_block_types: [UpBlock2D, UpBlock2D]
  layers_per_block: 1
  norm_num_groups: 4
  add_attention: false
optim: {lr: 3.0e-3, lr_warmup_steps: 2}
ema: {decay: 0.9}
train:
  batch_size: 4
  max_steps: 8
  log_every_steps: 1
  checkpoint_every_steps: 4
  sample_every_steps: 100
  sample_num_images: 4
  sample_steps: 2
  log_with: none
"""


def write_tiny_config(path: Path, **sections: dict) -> Path:
    """``TINY`` with ``sections`` merged into it (``ema={"posthoc": {...}}`` updates ``ema``), written to ``path``."""
    import yaml

    cfg = yaml.safe_load(TINY)
    _merge(cfg, sections)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _merge(into: dict, new: dict) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def make_dataset(path: Path, n: int = 24, size: int = 16) -> Path:
    """A real DatasetDict folder of astronaut crops: (n - n//5) train, n//5 test."""
    return write_crops_dataset(path, n=n, size=size, test=n // 5)


def run(cfg: Path, ds: Path, run_dir: Path, *overrides: str, resume: str | None = None) -> int:
    argv = ["--config", str(cfg), f"data.dataset_dir={ds}", f"run_dir={run_dir}", *overrides]
    if resume:
        argv += ["--resume", resume]
    return train_mod.main(argv)


def metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]


def load_ckpt(ckpt: Path) -> tuple[dict, list[torch.Tensor], dict]:
    from safetensors.torch import load_file

    model = load_file(str(ckpt / "model.safetensors"))
    ema = torch.load(ckpt / "custom_checkpoint_0.pkl", weights_only=False)["shadow_params"]
    opt = torch.load(ckpt / "optimizer.bin", weights_only=False)
    return model, ema, opt


def assert_same_training_state(ckpt: Path, expected: Path, *, step: int) -> None:
    """Weights, EMA and AdamW moments of two checkpoints match (a resumed run against an uninterrupted one)."""
    m_full, e_full, o_full = load_ckpt(expected)
    m_part, e_part, o_part = load_ckpt(ckpt)
    for k in m_full:
        torch.testing.assert_close(m_part[k], m_full[k], rtol=0, atol=1e-6)
    for a, b in zip(e_part, e_full, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)
    s_full, s_part = o_full["state"], o_part["state"]
    for k in s_full:
        torch.testing.assert_close(s_part[k]["exp_avg_sq"], s_full[k]["exp_avg_sq"], rtol=0, atol=1e-9)
        assert float(s_part[k]["step"]) == float(s_full[k]["step"]) == step


def wait_for_logged_steps(proc: subprocess.Popen, run_dir: Path, *, lines: int = 2, seconds: float) -> None:
    """Block until a training subprocess has logged ``lines`` rows to metrics.jsonl (it must not exit first)."""
    metrics_path = run_dir / "metrics.jsonl"
    deadline = time.monotonic() + seconds
    while not (metrics_path.is_file() and metrics_path.read_text().count("\n") >= lines):
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "training did not start"
        time.sleep(0.2)


def reset_accelerate_state() -> None:
    """Forget accelerate's process-wide state, so the next in-process run builds its own Accelerator."""
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
