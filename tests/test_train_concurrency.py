"""Two trainers on one run directory, and Ctrl-C of a trainer: real processes, real signals.

A trainer owns its run directory through ``<run_dir>/.ptt-lock`` (common.lock): a second trainer started on the
same folder is refused with one line naming the first one's pid, and the first goes on with a run directory that
holds only its own steps. Ctrl-C checkpoints and exits 0; a second Ctrl-C stops at once with one line, exit 130,
and no KeyboardInterrupt traceback.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from common.lock import lock_owner
from tests.crops import write_crops_dataset
from training.checkpoint import latest_checkpoint

TINY = """\
data: {resolution: 16}
model: {block_out_channels: [8, 16], down_block_types: [DownBlock2D, DownBlock2D],
        up_block_types: [UpBlock2D, UpBlock2D], layers_per_block: 1, norm_num_groups: 4, add_attention: false}
train: {batch_size: 4, max_steps: 100000, log_every_steps: 1, checkpoint_every_steps: 100000,
        sample_every_steps: 100000, sample_num_images: 4, sample_steps: 2, log_with: none}
"""
ROOT = Path(__file__).resolve().parents[1]
LOG_RE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ (INFO|WARNING) ")
BAR_RE = re.compile(r"^\s*\w+:\s+\d+%\|")


@pytest.fixture(scope="module")
def ws(tmp_path_factory) -> Path:
    w = tmp_path_factory.mktemp("conc")
    write_crops_dataset(w / "ds", n=20, size=16, test=4)
    (w / "tiny.yaml").write_text(TINY)
    return w


def trainer(ws: Path, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, str(ROOT / "training" / "train.py"), "--config", str(ws / "tiny.yaml"),
            f"data.dataset_dir={ws / 'ds'}", f"run_dir={run_dir}", *extra]  # fmt: skip


def env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def wait_until(cond, proc: subprocess.Popen, *, seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not cond():
        assert proc.poll() is None, f"exited before {what}: " + proc.stderr.read()[-3000:]
        assert time.monotonic() < deadline, f"no {what} in {seconds} s"
        time.sleep(0.1)


def loss_steps(run_dir: Path) -> list[int]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]
    return [r["step"] for r in rows if "loss" in r]


def error_lines(stderr: str) -> list[str]:
    """stderr less the trainer's INFO/WARNING records and progress bars: what a user reads as the outcome."""
    return [s for s in stderr.splitlines() if s.strip() and not LOG_RE.match(s) and not BAR_RE.search(s)]


@pytest.mark.slow
def test_a_second_trainer_on_a_busy_run_dir_is_refused_and_the_first_keeps_its_run(ws, tmp_path):
    run_dir = tmp_path / "run"
    first = subprocess.Popen(trainer(ws, run_dir), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)  # fmt: skip
    try:
        wait_until(lambda: lock_owner(run_dir).get("pid") == first.pid, first, seconds=240, what="lock")
        wait_until(lambda: (run_dir / "metrics.jsonl").is_file(), first, seconds=240, what="metrics")
        for extra in ([], ["--resume", "latest"]):  # a new run and a resume alike
            second = subprocess.run(trainer(ws, run_dir, *extra), env=env(), capture_output=True, text=True,
                                    timeout=300)  # fmt: skip
            lines = error_lines(second.stderr)
            assert second.returncode == 2, second.stderr[-3000:]
            assert "Traceback" not in second.stderr and len(lines) == 1, second.stderr[-3000:]
            assert lines[0].startswith("error: run_dir:") and "in use by another process" in lines[0]
            assert f"pid {first.pid} " in lines[0]
            assert first.poll() is None  # the refusal came from a live owner
        first.send_signal(signal.SIGTERM)
        _, err = first.communicate(timeout=240)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err[-3000:]
    steps = loss_steps(run_dir)
    last = json.loads((latest_checkpoint(run_dir) / "meta.json").read_text())["step"]
    assert steps == list(range(1, last + 1))  # one row per step, all from the first trainer
    assert not list((run_dir / "checkpoints").glob(".tmp-*"))
    # the owner is gone: the folder is free again (the kernel dropped its lock), and the run continues
    done = subprocess.run(trainer(ws, run_dir, f"train.max_steps={last + 2}", "--resume", "latest"), env=env(),
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert loss_steps(run_dir) == list(range(1, last + 3))


@pytest.mark.slow
def test_ctrl_c_checkpoints_and_a_second_one_stops_in_one_line(ws, tmp_path):
    for presses in (1, 2):
        run_dir = tmp_path / f"run{presses}"
        proc = subprocess.Popen(trainer(ws, run_dir), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)  # fmt: skip
        try:
            wait_until(lambda: (run_dir / "metrics.jsonl").is_file(), proc, seconds=240, what="metrics")  # noqa: B023
            for _ in range(presses):
                proc.send_signal(signal.SIGINT)
                time.sleep(0.05)
            _, err = proc.communicate(timeout=240)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-3000:]
        if presses == 1:
            assert proc.returncode == 0 and "stopped by SIGINT" in err, err[-3000:]
            assert latest_checkpoint(run_dir) is not None
        else:  # the second press lands during the step or the checkpoint: no traceback either way
            lines = error_lines(err)
            assert proc.returncode in (0, 130), err[-3000:]
            if proc.returncode == 130:
                assert len(lines) == 1 and lines[0].startswith("error: interrupted"), err[-3000:]
