"""The sample folder: owned by one process, never a mix of two runs' images, and a refused or interrupted run
leaves it ready for the corrected rerun (real tiny pipeline, real processes, a real SIGINT)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from common.lock import LOCK_NAME, FolderLock
from evaluation.sample import SampleError, main, write_samples
from tests._proc import restore_sigint
from tests.test_sample import export_tiny_pipeline, tiny_unet

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def pipe16(tmp_path_factory):
    return export_tiny_pipeline(tmp_path_factory.mktemp("pipe") / "pipeline", 16)


@pytest.fixture(scope="module")
def sched_cfg():
    from diffusers import DDPMScheduler

    return dict(DDPMScheduler().config)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file() and p.name != LOCK_NAME}


def _sample(pipe, out, *extra) -> list[str]:
    return ["--model", str(pipe), "--num-images", "3", "--out", str(out), "--scheduler", "ddim", "--steps", "2",
            "--no-progress", "--device", "cpu", *extra]  # fmt: skip


def test_a_folder_of_the_users_own_pngs_is_refused_and_left_alone(pipe16, tmp_path, capsys):
    out = tmp_path / "photos"
    out.mkdir()
    Image.fromarray(np.full((16, 16, 3), 7, np.uint8)).save(out / "00001.png")  # right size: once counted as ours
    Image.fromarray(np.full((40, 30, 3), 9, np.uint8)).save(out / "00002.png")  # wrong size: once overwritten
    before = _snapshot(out)
    rc = main(_sample(pipe16, out))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert str(out) in err and "no sample_info.json" in err and "new --out" in err and "move" in err
    assert "delete" not in err  # no advice that would lead to a mix
    assert _snapshot(out) == before


def test_deleting_sample_info_does_not_let_other_settings_mix_in(pipe16, tmp_path, capsys):
    out = tmp_path / "s"
    assert main(_sample(pipe16, out)) == 0
    rc = main(_sample(pipe16, out, "--seed", "9"))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "seed=0 (now 9)" in err and "delete" not in err
    (out / "sample_info.json").unlink()  # what a user might try next
    before = _snapshot(out)
    assert main(_sample(pipe16, out, "--seed", "9")) == 2
    assert "no sample_info.json" in capsys.readouterr().err
    assert _snapshot(out) == before


@pytest.mark.parametrize("content", ['{"model": "x", "sch', "[1, 2]"])
def test_damaged_sample_info_points_to_a_new_folder_not_a_deletion(unet16_cfg, tmp_path, content):
    unet, cfg = unet16_cfg
    (tmp_path / "sample_info.json").write_text(content)
    with pytest.raises(SampleError, match="new --out") as exc:
        write_samples(unet, cfg, tmp_path, num_images=1, steps=1, progress=False)
    assert "delete" not in str(exc.value)


@pytest.fixture(scope="module")
def unet16_cfg(sched_cfg):
    return tiny_unet(16), sched_cfg


def test_too_many_ddpm_steps_leave_no_record_and_the_corrected_rerun_works(pipe16, tmp_path, capsys):
    out = tmp_path / "s"
    rc = main(_sample(pipe16, out, "--scheduler", "ddpm", "--steps", "2000"))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "--steps 2000" in err, err
    assert not (out / "sample_info.json").exists() and not list(out.glob("*.png"))
    assert main(_sample(pipe16, out, "--scheduler", "ddpm", "--steps", "3")) == 0
    assert json.loads((out / "sample_info.json").read_text())["steps"] == 3
    assert sorted(p.name for p in out.glob("*.png")) == ["00001.png", "00002.png", "00003.png"]


def test_a_folder_another_process_holds_is_refused(pipe16, tmp_path, capsys):
    out = tmp_path / "s"
    with FolderLock(out):  # locks are per open file: this process's own second claim is refused too
        rc = main(_sample(pipe16, out))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert f"pid {os.getpid()}" in err and "in use by another process" in err and str(out) in err
    assert not list(out.glob("*.png")) and not (out / "sample_info.json").exists()
    assert main(_sample(pipe16, out)) == 0  # released: the next run takes it


@pytest.mark.parametrize(
    "device, needle",
    [("banana", "--device banana: not a torch device"), ("cuda", "--device cuda: no CUDA GPU")],
)
def test_a_device_that_is_not_there_is_one_line(pipe16, tmp_path, capsys, device, needle):
    import torch

    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    rc = main(_sample(pipe16, tmp_path / "s")[:-2] + ["--device", device])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and needle in err, err
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "text", ["{not json", '["a list"]', '{"block_out_channels": [8, 16], "layers_per_block": "x"}']
)
def test_a_garbage_unet_config_is_blamed_on_the_model_folder(pipe16, tmp_path, capsys, text):
    import shutil

    pipe = shutil.copytree(pipe16, tmp_path / "pipe")
    (pipe / "unet" / "config.json").write_text(text)
    rc = main(_sample(pipe, tmp_path / "s"))
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert str(pipe / "unet" / "config.json") in err and "--out" not in err, err
    assert not (tmp_path / "s").exists()


def test_push_dry_run_does_not_list_a_pipeline_with_a_garbage_unet_config(pipe16, tmp_path, capsys):
    import shutil

    from evaluation.push import main as push_main

    pipe = shutil.copytree(pipe16, tmp_path / "pipe")
    (pipe / "unet" / "config.json").write_text("{not json")
    rc = push_main(["--model", str(pipe), "--repo", "u/n", "--dry-run"])
    out, err = capsys.readouterr()
    assert rc == 2 and "would upload" not in out and "unet/config.json" in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow
def test_ctrl_c_is_one_line_exit_130_and_the_rerun_continues(pipe16, tmp_path):
    out = tmp_path / "s"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    cmd = [sys.executable, "-m", "evaluation.sample", "--model", str(pipe16), "--num-images", "400", "--out",
           str(out), "--scheduler", "ddpm", "--steps", "50", "--batch-size", "1", "--no-progress",
           "--device", "cpu"]  # fmt: skip
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=restore_sigint
    )
    try:
        deadline = time.monotonic() + 240
        while not (out / "00001.png").exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    lines = [line for line in err.splitlines() if line.strip()]
    assert proc.returncode == 130, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]
    assert lines[-1].startswith("ptt-sample: interrupted; rerun") and len(lines) == 1, err[-2000:]
    written = sorted(p.name for p in out.glob("*.png"))
    assert 1 <= len(written) < 400
    for name in written:  # every PNG left is whole
        with Image.open(out / name) as im:
            im.verify()
    assert json.loads((out / "sample_info.json").read_text())["steps"] == 50
    FolderLock(out).release()  # the lock went with the process: taking it does not raise
    # the rerun continues: it skips what is there and writes the rest (here one more image)
    rerun = subprocess.run([*cmd[:6], str(len(written) + 1), *cmd[7:]], cwd=ROOT, env=env, capture_output=True,
                           text=True, timeout=240)  # fmt: skip
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert f"wrote 1, skipped {len(written)} existing" in rerun.stdout
