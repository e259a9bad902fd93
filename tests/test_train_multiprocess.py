"""Two CPU processes (DDP over gloo) end with identical weights and EMA on both ranks, resume exactly, and stop
together with one checkpoint when one rank is sent SIGTERM."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import psutil
import pytest

from tests.trainkit import TINY, assert_same_training_state, make_dataset, wait_for_logged_steps
from training.checkpoint import latest_checkpoint

pytestmark = pytest.mark.slow


def launch_cmd(repo_root, cfg, ds, run_dir) -> list[str]:
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--main_process_port",
        "0",
        str(repo_root / "training" / "train.py"),
        "--config",
        str(cfg),
        f"data.dataset_dir={ds}",
        f"run_dir={run_dir}",
    ]


def two_process_env(repo_root) -> dict:
    return {**os.environ, "ACCELERATE_USE_CPU": "true", "PYTHONPATH": str(repo_root), "OMP_NUM_THREADS": "1"}


def test_two_process_run_ends_with_identical_weights_and_ema(tmp_path, repo_root):
    ds = make_dataset(tmp_path / "dataset")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    run_dir = tmp_path / "run"
    env = two_process_env(repo_root)
    cmd = [
        *launch_cmd(repo_root, cfg, ds, run_dir),
        "train.max_steps=6",
        "train.checkpoint_every_steps=3",
        "train.sample_every_steps=3",
        "train.sample_num_images=5",
        "eval.heldout_every_steps=3",
        "train.signal_check_every_steps=2",
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    fp = [r for r in rows if "rank_fingerprints" in r][-1]["rank_fingerprints"]
    assert len(fp) == 2  # really two ranks
    assert fp[0] == fp[1]  # weights and EMA identical, bit for bit
    assert fp[0][2] != 0.0  # the EMA was tracked
    meta = json.loads((run_dir / "checkpoints" / "checkpoint-6" / "meta.json").read_text())
    assert meta["world_size"] == 2
    assert (run_dir / "checkpoints" / "checkpoint-6" / "random_states_1.pkl").is_file()
    # the effective batch is 2 x 4: 6 steps see 48 images, 2.4 passes over the 20 training images
    assert [r for r in rows if "loss" in r][-1]["epoch"] == pytest.approx(2.4)
    assert (run_dir / "samples" / "step-6.png").is_file()
    assert (run_dir / "pipeline" / "model_index.json").is_file()

    # stopped after step 3 and resumed on two processes: the same weights, EMA and optimizer state at step 6
    part = tmp_path / "part"
    shutil.copytree(run_dir / "checkpoints" / "checkpoint-3", part / "checkpoints" / "checkpoint-3")
    cmd_part = [a if not a.startswith("run_dir=") else f"run_dir={part}" for a in cmd] + ["--resume", "latest"]
    proc = subprocess.run(cmd_part, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert_same_training_state(part / "checkpoints" / "checkpoint-6", run_dir / "checkpoints" / "checkpoint-6", step=6)


def test_sigterm_to_one_rank_stops_both_with_one_checkpoint(tmp_path, repo_root):
    """A preempted worker: SIGTERM reaches rank 1 only; both ranks stop at the next check, checkpoint, exit 0."""
    ds = make_dataset(tmp_path / "dataset")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    run_dir = tmp_path / "run"
    cmd = [
        *launch_cmd(repo_root, cfg, ds, run_dir),
        "train.max_steps=100000",
        "train.checkpoint_every_steps=100000",
        "train.sample_every_steps=100000",
        "eval.heldout_every_steps=100000",
        "train.signal_check_every_steps=2",
    ]
    proc = subprocess.Popen(cmd, env=two_process_env(repo_root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)  # fmt: skip
    try:
        wait_for_logged_steps(proc, run_dir, seconds=300)
        workers = [c for c in psutil.Process(proc.pid).children(recursive=True) if "train.py" in " ".join(c.cmdline())]
        rank1 = [w for w in workers if w.environ().get("RANK") == "1"]
        assert len(rank1) == 1, [(w.pid, w.environ().get("RANK")) for w in workers]
        rank1[0].send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:  # a failed assertion above: leave no workers behind
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.kill()
    assert proc.returncode == 0, out[-3000:]
    assert "got SIGTERM" in out and "a signal on another rank" in out
    ckpt = latest_checkpoint(run_dir)
    assert ckpt is not None and not list((run_dir / "checkpoints").glob(".tmp-*"))
    meta = json.loads((ckpt / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["step"] % 2 == 0  # taken at a signal check, the same step on both
    assert (ckpt / "random_states_1.pkl").is_file()
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    fp = [r for r in rows if "rank_fingerprints" in r][-1]["rank_fingerprints"]
    assert len(fp) == 2 and fp[0] == fp[1]


def test_two_processes_on_a_busy_run_dir_both_exit_with_the_owners_line(tmp_path, repo_root):
    """The main process asks for the run directory's lock; the other rank waits for its verdict and both exit
    with the same line (here the owner is this test process)."""
    from common.lock import folder_lock

    ds = make_dataset(tmp_path / "dataset", n=10)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(TINY)
    run_dir = tmp_path / "run"
    with folder_lock(run_dir):
        proc = subprocess.run(launch_cmd(repo_root, cfg, ds, run_dir), env=two_process_env(repo_root),
                              capture_output=True, text=True, timeout=300)  # fmt: skip
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: run_dir:")]
    assert proc.returncode != 0, proc.stderr[-3000:]
    assert len(errors) == 2 and errors[0] == errors[1], proc.stderr[-3000:]  # one per rank, the same verdict
    assert f"pid {os.getpid()} " in errors[0] and "in use by another process" in errors[0]
    assert sorted(p.name for p in run_dir.iterdir()) == [".ptt-lock"]  # nothing of the refused run written
