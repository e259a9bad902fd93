"""Post-hoc EMA: the power-function math against brute force, reconstruction against directly tracked EMAs on a
tiny real UNet2DModel, snapshots through kill -9 and --resume with the real trainer, and ptt-ema's outputs and
one-line errors."""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.trainkit import reset_accelerate_state, run, write_tiny_config
from training import ema_cli
from training.checkpoint import latest_checkpoint, list_checkpoints
from training.posthoc_ema import (
    MAX_SIGMA_REL,
    PosthocEma,
    PosthocEmaConfig,
    SnapshotError,
    check_snapshots,
    discrete_profile,
    gamma_to_sigma_rel,
    list_snapshots,
    plan,
    power_beta,
    profile_dot,
    read_snapshot,
    reconstruct,
    sigma_rel_to_gamma,
)

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")

# ----------------------------------------------------------------------------------------------------------------
# The math


def test_sigma_rel_to_gamma_matches_the_paper_and_inverts():
    # EDM2 section 3: sigma_rel 0.05 and 0.10 are gamma 16.97 and 6.94
    assert sigma_rel_to_gamma(0.05) == pytest.approx(16.97, abs=0.01)
    assert sigma_rel_to_gamma(0.10) == pytest.approx(6.94, abs=0.01)
    for s in (0.01, 0.08, 0.2, 0.29):
        assert gamma_to_sigma_rel(sigma_rel_to_gamma(s)) == pytest.approx(s, rel=1e-9)
    with pytest.raises(ValueError):
        sigma_rel_to_gamma(MAX_SIGMA_REL)


def test_the_per_step_beta_gives_the_discrete_power_profile():
    """Run the EMA recurrence on one-hot 'weights': the weight of each step is discrete_profile's."""
    gamma, t = 3.7, 25
    ema = np.zeros(t)
    for step in range(1, t + 1):
        beta = power_beta(step, gamma)
        ema = beta * ema + (1 - beta) * np.eye(t)[step - 1]
    np.testing.assert_allclose(ema, discrete_profile(t, gamma), rtol=1e-12, atol=1e-15)
    assert discrete_profile(t, gamma).sum() == pytest.approx(1.0)


def test_profile_dot_is_the_integral_of_the_power_profiles():
    x = (np.arange(200_000) + 0.5) / 200_000 * 7.0  # midpoints on [0, 7]

    def p(t, g):
        return np.where(x <= t, (g + 1) * x**g / t ** (g + 1), 0.0)

    for ta, ga, tb, gb in [(5.0, 2.0, 7.0, 6.9), (7.0, 16.97, 3.0, 0.5), (4.0, 1.0, 4.0, 1.0)]:
        numeric = float((p(ta, ga) * p(tb, gb)).sum() * 7.0 / len(x))
        assert float(profile_dot(ta, ga, tb, gb)) == pytest.approx(numeric, rel=1e-3)


# ----------------------------------------------------------------------------------------------------------------
# Reconstruction against directly tracked EMAs on a tiny UNet


def _tiny_unet():
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(sample_size=8, block_out_channels=(4, 8), norm_num_groups=4, layers_per_block=1,
                       down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                       add_attention=False)  # fmt: skip


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """40 real AdamW steps of a tiny UNet; every step's weights (float64), profiles 0.05/0.10 with float32
    snapshots every 4 steps, and 0.07 tracked directly."""
    run_dir = tmp_path_factory.mktemp("track")
    unet = _tiny_unet()
    opt = torch.optim.AdamW(unet.parameters(), lr=3e-2)
    stored = PosthocEma(PosthocEmaConfig(enabled=True, snapshot_every_steps=4, snapshot_dtype="float32"),
                        unet.named_parameters(), run_dir, is_main=True)  # fmt: skip
    direct = PosthocEma(PosthocEmaConfig(enabled=True, sigma_rels=[0.07], snapshot_every_steps=10**9),
                        unet.named_parameters(), run_dir / "direct", is_main=True)  # fmt: skip
    g = torch.Generator().manual_seed(1)
    history = []
    for step in range(1, 41):
        x = torch.randn(4, 3, 8, 8, generator=g)
        loss = (unet(x, torch.randint(0, 1000, (4,), generator=g)).sample - x).square().mean()
        loss.backward()
        opt.step()
        opt.zero_grad()
        stored.update(unet.parameters(), step)
        direct.update(unet.parameters(), step)
        history.append([p.detach().double().clone() for p in unet.parameters()])
    names = [n for n, _ in unet.named_parameters()]
    return {"run_dir": run_dir, "history": history, "names": names, "stored": stored, "direct": direct}


def _brute_force(history, weights):
    """sum_tau weights[tau] * theta_tau, in float64."""
    return [sum(w * h[j] for w, h in zip(weights, history, strict=False)) for j in range(len(history[0]))]


def _snapshots(run_dir):
    return check_snapshots(run_dir, PosthocEmaConfig(enabled=True, snapshot_every_steps=4))


def test_the_tracked_profiles_equal_a_brute_force_ema(tracked):
    for shadow, gamma in zip(tracked["stored"].shadows, tracked["stored"].gammas, strict=True):
        expected = _brute_force(tracked["history"], discrete_profile(40, gamma))
        for a, b in zip(shadow, expected, strict=True):
            torch.testing.assert_close(a.double(), b, rtol=0, atol=2e-6)


def test_reconstructing_a_stored_width_gives_the_stored_ema(tracked):
    snaps = _snapshots(tracked["run_dir"])
    assert [s.step for s in snaps] == list(range(4, 41, 4))
    _, stored = read_snapshot(snaps[-1].path)
    for i, sigma in enumerate((0.05, 0.10)):
        target = plan(snaps, sigma, None, run_dir=tracked["run_dir"])
        assert target["profile_error"] < 1e-6
        got = reconstruct(target, tracked["names"])
        for name in tracked["names"]:
            torch.testing.assert_close(got[name], stored[f"ema{i}.{name}"], rtol=0, atol=1e-5)


def test_an_intermediate_width_is_the_ema_of_its_combined_profile_and_near_the_directly_tracked_one(tracked):
    """Reconstructed 0.07 = sum_tau p(tau) theta_tau with p the combined discrete profile of the snapshots (float
    tolerance); its distance to the directly tracked 0.07 EMA is at most sum_tau |p - p_0.07| * max|theta|, the
    profile mismatch the least squares left, which is a few per cent here."""
    snaps = _snapshots(tracked["run_dir"])
    target = plan(snaps, 0.07, None, run_dir=tracked["run_dir"])
    combined = np.zeros(40)
    for (snap, i), w in target["inputs"]:
        combined[: snap.step] += w * discrete_profile(snap.step, sigma_rel_to_gamma(snap.sigma_rels[i]))
    got = reconstruct(target, tracked["names"])
    history = tracked["history"]
    expected = _brute_force(history, combined)
    for name, e in zip(tracked["names"], expected, strict=True):
        torch.testing.assert_close(got[name].double(), e, rtol=0, atol=1e-5)

    direct_profile = discrete_profile(40, sigma_rel_to_gamma(0.07))
    mismatch = float(np.abs(combined - direct_profile).sum())
    assert 0 < mismatch < 0.1
    theta_max = [torch.stack([h[j].abs() for h in history]).amax(0) for j in range(len(history[0]))]
    direct = tracked["direct"].shadows[0]
    far = tracked["stored"].shadows  # the 0.05 and 0.10 EMAs: the reconstruction must be nearer 0.07 than they
    for j, name in enumerate(tracked["names"]):
        gap = (got[name].double() - direct[j].double()).abs()
        assert bool((gap <= mismatch * theta_max[j] + 1e-5).all()), name
    total = sum(float((got[n].double() - direct[j].double()).norm()) for j, n in enumerate(tracked["names"]))
    for shadow in far:
        assert total < 0.5 * sum(float((shadow[j].double() - direct[j].double()).norm()) for j in range(len(direct)))


def test_fp16_snapshots_reconstruct_within_their_rounding(tracked, tmp_path):
    unet = _tiny_unet()
    ema = PosthocEma(PosthocEmaConfig(enabled=True, snapshot_every_steps=4), unet.named_parameters(), tmp_path,
                     is_main=True)  # fmt: skip
    for step, weights in enumerate(tracked["history"], 1):
        ema.update([w.float() for w in weights], step)
    assert read_snapshot(list_snapshots(tmp_path)[-1][1])[0]["dtype"] == "float16"
    numel = sum(w.numel() for w in ema.shadows[0])
    assert ema.snapshot_bytes() == 2 * 2 * numel  # two profiles, two bytes a weight
    assert ema.snapshot_bytes() < list_snapshots(tmp_path)[-1][1].stat().st_size < 4 * 2 * numel  # + the header
    got = reconstruct(plan(_snapshots(tmp_path), 0.07, None, run_dir=tmp_path), tracked["names"])
    ref = reconstruct(plan(_snapshots(tracked["run_dir"]), 0.07, None, run_dir=tmp_path), tracked["names"])
    for name in tracked["names"]:
        torch.testing.assert_close(got[name], ref[name], rtol=0, atol=4e-3 * float(ref[name].abs().max()) + 1e-6)


# ----------------------------------------------------------------------------------------------------------------
# With the trainer


@pytest.fixture(scope="module")
def cfg_path(tmp_path_factory) -> Path:
    """The tiny trainer with post-hoc EMA snapshots every 2 steps, a constant lr, 12 steps, checkpoints at 10."""
    return write_tiny_config(
        tmp_path_factory.mktemp("cfg") / "posthoc.yaml",
        optim={"lr_schedule": "constant"},
        ema={"posthoc": {"enabled": True, "snapshot_every_steps": 2}},
        train={"max_steps": 12, "checkpoint_every_steps": 10, "sample_every_steps": 1000},
    )


@pytest.fixture(scope="module")
def ph_run(cfg_path, ds16, tmp_path_factory) -> Path:
    reset_accelerate_state()
    run_dir = tmp_path_factory.mktemp("runs") / "ph"
    assert run(cfg_path, ds16, run_dir) == 0
    return run_dir


def test_the_trainer_writes_snapshots_and_checkpoints_the_profiles(ph_run):
    assert [s for s, _ in list_snapshots(ph_run)] == [2, 4, 6, 8, 10, 12]
    meta = json.loads((latest_checkpoint(ph_run) / "meta.json").read_text())
    assert meta["custom_objects"] == ["ema", "run_state", "posthoc_ema"]
    state = torch.load(latest_checkpoint(ph_run) / "custom_checkpoint_2.pkl", weights_only=False)
    assert state["step"] == 12 and state["sigma_rels"] == [0.05, 0.1]
    _, tensors = read_snapshot(ph_run / "posthoc_ema" / "snapshot-12.safetensors")
    for name, t in zip(state["names"], state["shadows"][1], strict=True):
        torch.testing.assert_close(tensors[f"ema1.{name}"].float(), t, rtol=0, atol=2e-3 * float(t.abs().max()))


def test_kill_9_then_resume_leaves_no_gap_and_no_duplicate(cfg_path, ds16, tmp_path, repo_root):
    run_dir = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(repo_root), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(repo_root / "training" / "train.py"), "--config", str(cfg_path),
           f"data.dataset_dir={ds16}", f"run_dir={run_dir}", "train.max_steps=100000"]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    try:  # kill once a snapshot lies 4 steps past the newest checkpoint (the next checkpoint is 6 steps away)
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "training did not get far enough"
            ckpts = list_checkpoints(run_dir)
            snaps = [s for s, _ in list_snapshots(run_dir)]
            if ckpts and snaps and snaps[-1] >= int(ckpts[-1].name.split("-")[1]) + 4:
                break
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    resumed_at = int(latest_checkpoint(run_dir).name.split("-")[1])
    beyond = [s for s, _ in list_snapshots(run_dir) if s > resumed_at]
    assert beyond
    end = resumed_at + 4
    assert run(cfg_path, ds16, run_dir, f"train.max_steps={end}", resume="latest") == 0
    steps = [s for s, _ in list_snapshots(run_dir)]
    assert steps == list(range(2, end + 1, 2))  # no gap, each step once
    assert {int(p.name.split("-")[-1].split(".")[0]) for p in (run_dir / "posthoc_ema").glob("abandoned-*")} == set(
        beyond
    )
    assert not [p for p in (run_dir / "posthoc_ema").iterdir() if p.name.startswith(".")]  # no temporaries
    # the same snapshots as an uninterrupted run to the same step
    full = tmp_path / "full"
    assert run(cfg_path, ds16, full, f"train.max_steps={end}") == 0
    assert [s for s, _ in list_snapshots(full)] == steps
    for (_, a), (_, b) in zip(list_snapshots(run_dir), list_snapshots(full), strict=True):
        ta, tb = read_snapshot(a)[1], read_snapshot(b)[1]
        for k in tb:
            torch.testing.assert_close(ta[k], tb[k], rtol=0, atol=1e-3)


def test_turning_posthoc_ema_on_for_a_run_without_it_is_a_one_line_error(cfg_path, ds16, tmp_path, capsys):
    run_dir = tmp_path / "plain"
    assert run(cfg_path, ds16, run_dir, "ema.posthoc.enabled=false", "train.checkpoint_every_steps=4",
               "train.max_steps=4") == 0  # fmt: skip
    assert not (run_dir / "posthoc_ema").exists()
    capsys.readouterr()
    assert run(cfg_path, ds16, run_dir, "train.max_steps=6", resume="latest") == 2
    err = capsys.readouterr().err.strip()
    assert "did not track post-hoc EMA" in err and "ema.posthoc.enabled=false" in err and "\n" not in err


def test_a_bad_width_in_the_config_names_its_key():
    from common.configio import ConfigError
    from training.config import load_train_config

    with pytest.raises(ConfigError, match="ema.posthoc.sigma_rels"):
        load_train_config(None, ["data.dataset_dir=x", "train.max_steps=1", "ema.posthoc.sigma_rels=[0.05,0.5]"])


# ----------------------------------------------------------------------------------------------------------------
# ptt-ema


def test_ptt_ema_exports_loadable_pipelines_and_a_stored_width_holds_the_snapshot(ph_run, tmp_path):
    from diffusers import DDPMPipeline

    out = tmp_path / "out"
    assert ema_cli.main([str(ph_run), "--sigma-rel", "0.05", "0.08", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["sigma_rel-0.050-step-12", "sigma_rel-0.080-step-12"]
    pipe = DDPMPipeline.from_pretrained(str(out / "sigma_rel-0.050-step-12"))
    _, tensors = read_snapshot(ph_run / "posthoc_ema" / "snapshot-12.safetensors")
    for name, p in pipe.unet.named_parameters():
        torch.testing.assert_close(p.data, tensors[f"ema0.{name}"].float(), rtol=0, atol=1e-3)
    info = json.loads((out / "sigma_rel-0.080-step-12" / "metrics.json").read_text())
    assert info["ema_sigma_rel"] == 0.08 and info["step"] == 12 and 0 < info["ema_profile_error"] < 0.1
    imgs = pipe(batch_size=1, num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np")
    assert np.isfinite(imgs.images).all()


def test_ptt_ema_sweep_writes_the_table_the_plot_and_best(ph_run, tmp_path):
    from diffusers import DDPMPipeline

    run_dir = tmp_path / "run"
    shutil.copytree(ph_run, run_dir)
    out = tmp_path / "sweep"
    argv = [str(run_dir), "--sweep", "--sigma-rel", "0.05", "0.07", "0.1", "--at-step", "8", "12", "--out",
            str(out), "--num-images", "4", "--scheduler", "ddim", "--steps", "2", "--extractor", "substitute",
            "--set-best"]  # fmt: skip
    assert ema_cli.main(argv) == 0
    rows = json.loads((out / "ema_sweep.json").read_text())
    assert [(r["step"], r["sigma_rel"]) for r in rows] == [(s, w) for s in (8, 12) for w in (0.05, 0.07, 0.1)]
    assert all(math.isfinite(r["fid"]) and r["comparable"] is False for r in rows)
    assert (out / "ema_sweep.csv").read_text().count("\n") == 7
    best = min(rows, key=lambda r: r["fid"])
    saved = json.loads((run_dir / "best" / "metrics.json").read_text())
    assert (saved["step"], saved["ema_sigma_rel"]) == (best["step"], best["sigma_rel"])
    assert saved["fid"] == pytest.approx(best["fid"])
    from PIL import Image

    assert Image.open(out / "ema_sweep.png").size[0] > 100
    DDPMPipeline.from_pretrained(str(run_dir / "best"))


def _one_line_error(capsys, argv) -> str:
    assert ema_cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_ptt_ema_bad_inputs_are_one_line_errors_naming_the_run(ph_run, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(ph_run, run_dir)
    err = _one_line_error(capsys, [str(run_dir), "--sigma-rel", "0.005"])
    assert str(run_dir) in err and "outside what the snapshots can reconstruct" in err and "widths from" in err
    err = _one_line_error(capsys, [str(run_dir), "--sigma-rel", "0.3"])
    assert "not a power-function EMA width" in err
    err = _one_line_error(capsys, [str(run_dir), "--sigma-rel", "0.05", "--at-step", "7"])
    assert "no snapshot at step 7" in err
    # damaged: cut short
    snap = run_dir / "posthoc_ema" / "snapshot-6.safetensors"
    data = snap.read_bytes()
    snap.write_bytes(data[: len(data) // 2])
    err = _one_line_error(capsys, [str(run_dir), "--sigma-rel", "0.05"])
    assert str(run_dir) in err and "snapshot-6.safetensors is cut short" in err
    # missing from the series
    snap.unlink()
    err = _one_line_error(capsys, [str(run_dir), "--sigma-rel", "0.05"])
    assert str(run_dir) in err and "missing" in err and "snapshot-6" in err
    # none at all
    shutil.rmtree(run_dir / "posthoc_ema")
    err = _one_line_error(capsys, [str(run_dir), "--sigma-rel", "0.05"])
    assert str(run_dir) in err and "no post-hoc EMA snapshots" in err and "ema.posthoc.enabled=true" in err
    err = _one_line_error(capsys, [str(tmp_path / "nowhere"), "--sigma-rel", "0.05"])
    assert "no config.yaml" in err


def test_snapshots_keep_rotates_and_the_kept_series_still_checks(tmp_path):
    unet = _tiny_unet()
    cfg = PosthocEmaConfig(enabled=True, snapshot_every_steps=2, snapshots_keep=3, snapshot_dtype="float32")
    ema = PosthocEma(cfg, unet.named_parameters(), tmp_path, is_main=True)
    for step in range(1, 13):
        ema.update(unet.parameters(), step)
    assert [s for s, _ in list_snapshots(tmp_path)] == [8, 10, 12]
    assert [s.step for s in check_snapshots(tmp_path, cfg)] == [8, 10, 12]
    (tmp_path / "posthoc_ema" / "snapshot-10.safetensors").unlink()
    with pytest.raises(SnapshotError, match="snapshot-10"):
        check_snapshots(tmp_path, cfg)


def test_resuming_with_other_widths_is_a_one_line_error(ph_run, cfg_path, ds16, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(ph_run, run_dir)
    capsys.readouterr()
    assert run(cfg_path, ds16, run_dir, "ema.posthoc.sigma_rels=[0.05,0.2]", "train.max_steps=14",
               resume="latest") == 2  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "does not fit this config" in err and "sigma_rel" in err
    assert [s for s, _ in list_snapshots(run_dir)] == [2, 4, 6, 8, 10, 12]  # nothing set aside or written


def test_ptt_ema_into_an_unwritable_place_is_a_one_line_error(ph_run, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    err = _one_line_error(capsys, [str(ph_run), "--sigma-rel", "0.05", "--out", str(blocker / "out")])
    assert str(blocker) in err


def test_ptt_ema_is_refused_while_another_process_owns_the_run_dir(ph_run, tmp_path, capsys):
    """A trainer (here a process that only holds the run dir's lock, as the trainer does) owns the run: ptt-ema
    refuses to write best/ or posthoc_pipelines/ into it, and only reads it when --out is elsewhere."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from common.lock import FolderLock; l = FolderLock(sys.argv[1]); "
         "print('held', flush=True); sys.stdin.read()", str(ph_run)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1],
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        before = sorted(p.relative_to(ph_run) for p in ph_run.rglob("*") if p.name != ".ptt-lock")
        err = _one_line_error(capsys, [str(ph_run), "--sigma-rel", "0.05"])
        assert f"pid {holder.pid}" in err and "in use by another process" in err and str(ph_run) in err
        assert sorted(p.relative_to(ph_run) for p in ph_run.rglob("*") if p.name != ".ptt-lock") == before
        assert ema_cli.main([str(ph_run), "--sigma-rel", "0.05", "--out", str(tmp_path / "elsewhere")]) == 0
    finally:
        holder.stdin.close()
        holder.wait(timeout=30)
    assert ema_cli.main([str(ph_run), "--sigma-rel", "0.05"]) == 0  # the owner is gone: the lock is free
    assert (ph_run / "posthoc_pipelines" / "sigma_rel-0.050-step-12").is_dir()
