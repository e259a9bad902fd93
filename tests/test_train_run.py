"""End-to-end trainer tests on the CPU with a tiny real UNet2DModel and a real datasets folder in tmp_path."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.trainkit import (
    assert_same_training_state,
    load_ckpt,
    metrics,
    reset_accelerate_state,
    run,
    wait_for_logged_steps,
)
from training import train as train_mod
from training.checkpoint import latest_checkpoint, list_checkpoints

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


@pytest.fixture(scope="module")
def base_run(tiny_cfg, ds16, tmp_path_factory) -> Path:
    """20 steps with augmentation, held-out loss and sample grids; reused by several tests."""
    reset_accelerate_state()
    run_dir = tmp_path_factory.mktemp("runs") / "base"
    rc = run(
        tiny_cfg,
        ds16,
        run_dir,
        "train.max_steps=20",
        "train.checkpoint_every_steps=10",
        "train.sample_every_steps=10",
        "eval.heldout_every_steps=10",
        "eval.heldout_batches=2",
    )
    assert rc == 0
    return run_dir


def test_training_lowers_the_loss_and_writes_the_run_dir(base_run):
    rows = [r for r in metrics(base_run) if "loss" in r]
    assert [r["step"] for r in rows] == list(range(1, 21))
    first, last = np.mean([r["loss"] for r in rows[:3]]), np.mean([r["loss"] for r in rows[-3:]])
    assert last < 0.8 * first, (first, last)
    assert all(r["nonfinite_total"] == 0 for r in rows)
    held = [r for r in metrics(base_run) if "heldout_loss" in r]
    assert [r["step"] for r in held] == [10, 20] and all(np.isfinite(r["heldout_loss"]) for r in held)
    assert [p.name for p in list_checkpoints(base_run)] == ["checkpoint-10", "checkpoint-20"]
    meta = json.loads((latest_checkpoint(base_run) / "meta.json").read_text())
    assert meta["step"] == 20 and meta["custom_objects"] == ["ema", "run_state"]
    assert (latest_checkpoint(base_run) / "config.yaml").read_text() == (base_run / "config.yaml").read_text()
    assert (base_run / "samples" / "step-10.png").is_file() and (base_run / "samples" / "step-20.png").is_file()
    from PIL import Image

    assert Image.open(base_run / "curves.png").size[0] > 100
    assert (
        Image.open(base_run / "samples_over_time.png").size[1] > Image.open(base_run / "samples/step-20.png").size[1]
    )
    cfg_text = (base_run / "config.yaml").read_text()
    assert "max_steps: 20" in cfg_text and "min_snr_gamma: null" in cfg_text  # every default written out


def test_export_loads_with_ddpm_pipeline_and_holds_the_ema_weights(base_run):
    from diffusers import DDPMPipeline

    pipe_dir = base_run / "pipeline"
    assert (pipe_dir / "unet" / "diffusion_pytorch_model.safetensors").is_file()
    assert (pipe_dir / "training_config.yaml").is_file()
    assert not list(pipe_dir.rglob("optimizer*"))
    pipe = DDPMPipeline.from_pretrained(str(pipe_dir))
    out = pipe(batch_size=2, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np")
    assert out.images.shape == (2, 16, 16, 3) and np.isfinite(out.images).all()
    _, ema, _ = load_ckpt(latest_checkpoint(base_run))
    for p, e in zip(pipe.unet.parameters(), ema, strict=True):
        torch.testing.assert_close(p.data, e)


def test_resume_matches_the_uninterrupted_run(tiny_cfg, ds16, tmp_path):
    extra = ("train.grad_accum_steps=2", "loss.kind=l1_mse", "loss.min_snr_gamma=5.0")
    full = tmp_path / "full"
    assert run(tiny_cfg, ds16, full, *extra) == 0
    # the "stopped" run: only the step-4 checkpoint of the same run, then --resume latest
    part = tmp_path / "part"
    (part / "checkpoints").mkdir(parents=True)
    shutil.copytree(full / "checkpoints" / "checkpoint-4", part / "checkpoints" / "checkpoint-4")
    assert run(tiny_cfg, ds16, part, *extra, resume="latest") == 0
    assert_same_training_state(part / "checkpoints" / "checkpoint-8", full / "checkpoints" / "checkpoint-8", step=8)
    lr_full = [r["lr"] for r in metrics(full) if r.get("step", 0) > 4 and "lr" in r]
    lr_part = [r["lr"] for r in metrics(part) if "lr" in r]
    assert lr_part == pytest.approx(lr_full)


def test_a_run_dir_with_checkpoints_needs_resume(base_run, tiny_cfg, ds16, capsys):
    assert run(tiny_cfg, ds16, base_run) == 2
    assert "already holds checkpoints; pass --resume latest" in capsys.readouterr().err


def test_missing_dataset_is_a_one_line_error(tiny_cfg, tmp_path, capsys):
    assert run(tiny_cfg, tmp_path / "nope", tmp_path / "r") == 2
    err = capsys.readouterr().err.strip()
    assert "data.dataset_dir" in err and "ptt-curate" in err and "\n" not in err
    assert not (tmp_path / "r").exists()  # nothing written for a run that cannot start


def test_dry_run_prints_config_and_figures(tiny_cfg, ds16, tmp_path, capsys):
    rc = train_mod.main(
        ["--config", str(tiny_cfg), f"data.dataset_dir={ds16}", "--dry-run", "train.grad_accum_steps=2"]
    )
    out = capsys.readouterr().out
    assert rc == 0
    assert "# effective_batch: 8" in out and "# steps_per_epoch: 2" in out and "# total_steps: 8" in out
    assert "# parameters:" in out and "block_out_channels:" in out
    assert not (tmp_path / "runs").exists()


def test_too_many_nonfinite_steps_stop_with_a_checkpoint(tiny_cfg, ds16, tmp_path, caplog):
    run_dir = tmp_path / "nan"
    # an absurd LR blows the weights up after one step; every later gradient is non-finite and skipped
    rc = run(
        tiny_cfg,
        ds16,
        run_dir,
        "optim.lr=1.0e30",
        "optim.lr_warmup_steps=0",
        "optim.max_grad_norm=null",
        "train.max_steps=50",
        "train.max_nonfinite_in_row=3",
        "train.checkpoint_every_steps=100",
    )
    assert rc == train_mod.EXIT_NONFINITE
    rows = [r for r in metrics(run_dir) if "loss" in r]
    assert rows[-1]["nonfinite_total"] >= 3 and rows[-1]["step"] < 50
    ckpt = latest_checkpoint(run_dir)
    assert ckpt is not None and json.loads((ckpt / "meta.json").read_text())["step"] == rows[-1]["step"]
    assert "non-finite gradient steps in a row" in caplog.text


def test_sigterm_writes_a_usable_checkpoint_and_exits_cleanly(tiny_cfg, ds16, tmp_path, repo_root):
    run_dir = tmp_path / "sig"
    env = {**os.environ, "PYTHONPATH": str(repo_root)}
    cmd = [
        sys.executable,
        str(repo_root / "training" / "train.py"),
        "--config",
        str(tiny_cfg),
        f"data.dataset_dir={ds16}",
        f"run_dir={run_dir}",
        "train.max_steps=100000",
        "train.checkpoint_every_steps=100000",
    ]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    wait_for_logged_steps(proc, run_dir, seconds=240)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out
    assert "stopped by SIGTERM" in out
    ckpt = latest_checkpoint(run_dir)
    assert ckpt is not None
    step = json.loads((ckpt / "meta.json").read_text())["step"]
    assert step >= 2 and not list((run_dir / "checkpoints").glob(".tmp-*"))
    # usable: resume from it and finish two more steps
    rc = run(tiny_cfg, ds16, run_dir, f"train.max_steps={step + 2}", resume="latest")
    assert rc == 0
    assert json.loads((latest_checkpoint(run_dir) / "meta.json").read_text())["step"] == step + 2
    assert (run_dir / "pipeline" / "model_index.json").is_file()


def test_periodic_fid_keeps_and_exports_the_best(tiny_cfg, ds16, tmp_path):
    from diffusers import DDPMPipeline

    from evaluation.sample import DEFAULT_SAMPLER

    run_dir = tmp_path / "fid"
    rc = run(
        tiny_cfg,
        ds16,
        run_dir,
        "train.max_steps=4",
        "eval.fid_every_steps=2",
        "eval.fid_num_images=6",
        "eval.fid_steps=2",
        "eval.fid_extractor=substitute",
        "train.sample_every_steps=2",
    )
    assert rc == 0
    assert (run_dir / "best" / "sample_grid.png").is_file()  # contracts.md section 5, like pipeline/
    fids = [r for r in metrics(run_dir) if "fid" in r]
    assert [r["step"] for r in fids] == [2, 4]
    assert all(r["comparable"] is False and np.isfinite(r["fid"]) for r in fids)
    assert {r["scheduler"] for r in fids} == {DEFAULT_SAMPLER}  # ptt-sample's default sampler
    best = min(fids, key=lambda r: r["fid"])
    saved = json.loads((run_dir / "best" / "metrics.json").read_text())
    assert saved["step"] == best["step"] and saved["fid"] == pytest.approx(best["fid"])
    DDPMPipeline.from_pretrained(str(run_dir / "best"))


def test_a_failed_evaluation_checkpoints_its_step_and_resume_continues(tiny_cfg, ds16, tmp_path, caplog):
    """A real write fault: the grid's path is a folder, so saving the step-2 grid fails (as a full disk or a
    vanished folder would). The run checkpoints step 2 (checkpoint_every_steps is 4), stops naming the grid, and
    --resume latest continues once the cause is gone."""
    run_dir = tmp_path / "evalfail"
    blocker = run_dir / "samples" / "step-2.png"
    blocker.mkdir(parents=True)
    with caplog.at_level(logging.ERROR):
        rc = run(tiny_cfg, ds16, run_dir, "train.sample_every_steps=2")
    assert rc == train_mod.EXIT_EVAL
    summary = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(summary) == 1 and "the sample grid failed (IsADirectoryError" in summary[0], summary
    assert "at step 2/8" in summary[0] and "--resume latest" in summary[0]
    assert [p.name for p in list_checkpoints(run_dir)] == ["checkpoint-2"]
    assert [r["step"] for r in metrics(run_dir) if "loss" in r] == [1, 2]
    blocker.rmdir()
    assert run(tiny_cfg, ds16, run_dir, "train.sample_every_steps=2", resume="latest") == 0
    assert [r["step"] for r in metrics(run_dir) if "loss" in r] == list(range(1, 9))
    assert (run_dir / "samples" / "step-2.png").is_file() is False  # step 2 is not redone: it was checkpointed
    assert (run_dir / "samples" / "step-8.png").is_file() and (run_dir / "pipeline" / "model_index.json").is_file()


def test_a_failed_periodic_fid_checkpoints_its_step(tiny_cfg, ds16, tmp_path, caplog):
    """A real fault in the FID: its reference-feature cache cannot be made (a file holds its name)."""
    run_dir = tmp_path / "fidfail"
    run_dir.mkdir()
    (run_dir / "fid_cache").write_text("not a folder")
    fid = ["eval.fid_every_steps=2", "eval.fid_num_images=6", "eval.fid_steps=2", "eval.fid_extractor=substitute"]
    with caplog.at_level(logging.ERROR):
        assert run(tiny_cfg, ds16, run_dir, "train.max_steps=4", *fid) == train_mod.EXIT_EVAL
    summary = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(summary) == 1 and summary[0].startswith("the periodic FID failed (") and "at step 2/4" in summary[0]
    assert [p.name for p in list_checkpoints(run_dir)] == ["checkpoint-2"]
    (run_dir / "fid_cache").unlink()
    assert run(tiny_cfg, ds16, run_dir, "train.max_steps=4", *fid, resume="latest") == 0
    assert [r["step"] for r in metrics(run_dir) if "fid" in r] == [4]
    assert [r["step"] for r in metrics(run_dir) if "loss" in r] == [1, 2, 3, 4]


def test_refine_phase_starts_from_the_base_ema_and_adds_lpips(base_run, tiny_cfg, ds16, tmp_path, caplog):
    from conftest import registry_weights

    trunk = registry_weights("lpips-alex")  # the real AlexNet trunk, found with no path flag
    caplog.set_level(logging.INFO)
    run_dir = tmp_path / "refine"
    rc = run(
        tiny_cfg,
        ds16,
        run_dir,
        "refine.enabled=true",
        f"refine.base_run_dir={base_run}",
        "refine.lpips_weight=0.5",
        "refine.lpips_max_timestep=800",
        "train.max_steps=2",
        "train.checkpoint_every_steps=100",
    )
    assert rc == 0
    assert f"LPIPS alex backbone: {trunk}" in caplog.text and "augmentation off, refine (LPIPS)" in caplog.text
    assert "checkpoint-20 (ema weights)" in caplog.text
    rows = [r for r in metrics(run_dir) if "loss" in r]
    assert len(rows) == 2 and all(np.isfinite(r["loss"]) for r in rows)


def test_refine_without_lpips_weights_says_where_to_put_them(base_run, tiny_cfg, ds16, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setenv("PTT_CACHE_DIR", str(tmp_path / "cache"))  # no registry copy either
    rc = run(tiny_cfg, ds16, tmp_path / "r", "refine.enabled=true", f"refine.base_run_dir={base_run}")
    assert rc == 2
    err = capsys.readouterr().err
    assert "alexnet-owt-7be5be79.pth" in err and str(tmp_path / "torch_home") in err
    assert "refine.lpips_backbone_path" in err and "ptt-weights fetch lpips-alex" in err


def test_lpips_backbone_loads_from_a_torchvision_weights_file(tmp_path):
    import torchvision

    from training.config import RefineConfig
    from training.refine import build_lpips

    tv = torchvision.models.alexnet()
    path = tmp_path / "alexnet.pth"
    torch.save(tv.state_dict(), path)
    lp = build_lpips(RefineConfig(lpips_backbone_path=str(path)), "cpu")
    torch.testing.assert_close(lp.net.slice1[0].weight, tv.features[0].weight)
    torch.testing.assert_close(getattr(lp.net.slice5, "10").bias, tv.features[10].bias)
    x = torch.rand(2, 3, 64, 64) * 2 - 1
    assert float(lp(x, x).abs().max()) < 1e-6


def test_resume_latest_without_a_checkpoint_starts_fresh_and_a_bad_path_is_named(tiny_cfg, ds16, tmp_path, capsys):
    run_dir = tmp_path / "fresh"
    assert run(tiny_cfg, ds16, run_dir, "train.max_steps=2", "train.sample_every_steps=null", resume="latest") == 0
    assert [p.name for p in list_checkpoints(run_dir)] == ["checkpoint-2"]
    assert run(tiny_cfg, ds16, tmp_path / "other", resume=str(tmp_path / "missing")) == 2
    assert "not a complete checkpoint folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    "overrides",
    [
        ("optim.fused=false", "noise.prediction_type=v_prediction", "noise.beta_schedule=cosine", "loss.kind=l1"),
        ("noise.prediction_type=sample", "loss.kind=l1_mse", "loss.min_snr_gamma=5.0", "ema.enabled=false"),
    ],
)
def test_other_objectives_and_the_unfused_optimizer_train(tiny_cfg, ds16, tmp_path, overrides):
    run_dir = tmp_path / "obj"
    assert run(tiny_cfg, ds16, run_dir, "train.max_steps=3", "train.sample_every_steps=null", *overrides) == 0
    rows = [r for r in metrics(run_dir) if "loss" in r]
    assert len(rows) == 3 and all(np.isfinite(r["loss"]) and r["loss"] > 0 for r in rows)
    meta = json.loads((latest_checkpoint(run_dir) / "meta.json").read_text())
    assert meta["custom_objects"] == (["run_state"] if "ema.enabled=false" in overrides else ["ema", "run_state"])
    from diffusers import DDPMPipeline

    pipe = DDPMPipeline.from_pretrained(str(run_dir / "pipeline"))
    wanted = next(o.split("=")[1] for o in overrides if o.startswith("noise.prediction_type="))
    assert pipe.scheduler.config.prediction_type == wanted


def test_resume_from_an_older_checkpoint_branches_and_latest_follows_the_branch(base_run, tiny_cfg, ds16, tmp_path):
    run_dir = tmp_path / "branch"
    shutil.copytree(base_run / "checkpoints", run_dir / "checkpoints")  # checkpoint-10 and checkpoint-20
    rows_before = [r for r in metrics(base_run) if "loss" in r and r["step"] <= 10]
    shutil.copy(base_run / "metrics.jsonl", run_dir / "metrics.jsonl")
    rc = run(
        tiny_cfg,
        ds16,
        run_dir,
        "train.max_steps=14",
        "train.checkpoint_every_steps=2",
        "train.sample_every_steps=null",
        resume="checkpoint-10",
    )
    assert rc == 0
    # keep 3: without setting the old branch's checkpoint-20 aside, it would stay `latest` and push 12 out
    assert [p.name for p in list_checkpoints(run_dir)] == ["checkpoint-10", "checkpoint-12", "checkpoint-14"]
    assert (run_dir / "checkpoints" / "abandoned-checkpoint-20" / "meta.json").is_file()
    steps = [r["step"] for r in metrics(run_dir) if "loss" in r]
    assert steps == [r["step"] for r in rows_before] + [11, 12, 13, 14]


def test_resume_with_a_different_model_is_a_one_line_error_and_keeps_the_run_dir(
    base_run, tiny_cfg, ds16, tmp_path, capsys
):
    run_dir = tmp_path / "mismatch"
    shutil.copytree(base_run / "checkpoints", run_dir / "checkpoints")
    shutil.copy(base_run / "config.yaml", run_dir / "config.yaml")
    before = (run_dir / "config.yaml").read_text()
    rc = run(tiny_cfg, ds16, run_dir, "model.block_out_channels=[8,32]", resume="latest")
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err
    assert "does not fit this config" in err and "checkpoint-20/config.yaml" in err
    assert (run_dir / "config.yaml").read_text() == before  # the run's config is not overwritten
    assert [p.name for p in list_checkpoints(run_dir)] == ["checkpoint-10", "checkpoint-20"]
    assert run(tiny_cfg, ds16, run_dir, "ema.enabled=false", resume="latest") == 2
    err = capsys.readouterr().err.strip()
    assert "that run had ema.enabled=true; set ema.enabled=true" in err and "\n" not in err


def test_fp16_on_the_cpu_is_a_config_error_not_a_silent_fp32_run(tiny_cfg, ds16, tmp_path, capsys):
    assert run(tiny_cfg, ds16, tmp_path / "fp16", "train.mixed_precision=fp16") == 2
    err = capsys.readouterr().err.strip()
    assert "train.mixed_precision=fp16 needs a GPU" in err and "\n" not in err
    assert not (tmp_path / "fp16").exists()


def test_another_image_column_and_no_test_split(tiny_cfg, ds16, tmp_path, capsys, caplog):
    import datasets

    bare = tmp_path / "bare"  # a bare Dataset folder (no splits) whose images are in "img", plus a text column
    train = datasets.load_from_disk(str(ds16))["train"].rename_column("image", "img")
    train.add_column("caption", ["a face"] * len(train)).save_to_disk(str(bare))
    capsys.readouterr()  # the save_to_disk progress bar
    for column, wanted in [("image", "has no column 'image'"), ("caption", "set data.image_column=img")]:
        assert run(tiny_cfg, bare, tmp_path / "r", f"data.image_column={column}") == 2
        err = capsys.readouterr().err.strip()
        assert wanted in err and "data.image_column" in err and "\n" not in err
    run_dir = tmp_path / "r"
    with caplog.at_level(logging.WARNING):
        rc = run(tiny_cfg, bare, run_dir, "data.image_column=img", "train.max_steps=2", "eval.heldout_every_steps=1")
    assert rc == 0 and "no 'test' split: held-out loss and FID are off" in caplog.text
    rows = metrics(run_dir)
    assert [r["step"] for r in rows if "loss" in r] == [1, 2] and not any("heldout_loss" in r for r in rows)


def test_a_missing_dataset_is_named_before_a_busy_run_dir(base_run, tiny_cfg, tmp_path, capsys):
    assert run(tiny_cfg, tmp_path / "nope", base_run) == 2  # both wrong: the input is reported first
    err = capsys.readouterr().err.strip()
    assert "data.dataset_dir" in err and "does not exist" in err and "\n" not in err


@pytest.mark.parametrize(
    "preset", sorted(p.stem for p in (Path(__file__).parents[1] / "configs" / "train").glob("*.yaml"))
)
def test_every_preset_dry_runs_with_a_dataset_override(preset, ds16, repo_root, capsys):
    cfg = repo_root / "configs" / "train" / f"{preset}.yaml"
    assert train_mod.main(["--config", str(cfg), f"data.dataset_dir={ds16}", "--dry-run"]) == 0
    out = capsys.readouterr().out
    params = int(
        next(line for line in out.splitlines() if line.startswith("# parameters:")).split(":")[1].replace(",", "")
    )
    assert params > 100_000 and "# total_steps:" in out


def test_an_unreachable_hub_dataset_is_a_one_line_error(tiny_cfg, tmp_path, capsys):
    argv = ["--config", str(tiny_cfg), "data.hub_dataset=someone/faces", f"run_dir={tmp_path / 'r'}"]
    assert train_mod.main(argv) == 2  # HF_HUB_OFFLINE=1 in the tests: the Hub cannot be reached
    err = capsys.readouterr().err.strip()
    assert "data.hub_dataset: cannot load 'someone/faces'" in err and "data.dataset_dir" in err and "\n" not in err
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_compiled_unet_trains_like_eager_and_its_checkpoint_resumes_uncompiled(tiny_cfg, ds16, tmp_path):
    """``train.compile=true`` (Inductor on the CPU here): same losses and weights as eager, same checkpoint keys."""
    from diffusers import DDPMPipeline
    from safetensors.torch import load_file

    eager, compiled = tmp_path / "eager", tmp_path / "compiled"
    short = ("train.max_steps=4", "train.sample_every_steps=null")
    from torch._dynamo.utils import counters

    counters.clear()
    assert run(tiny_cfg, ds16, eager, *short) == 0
    assert counters["stats"]["unique_graphs"] == 0
    assert run(tiny_cfg, ds16, compiled, *short, "train.compile=true") == 0
    assert counters["stats"]["unique_graphs"] > 0  # the UNet really went through torch.compile
    loss = {d.name: [r["loss"] for r in metrics(d) if "loss" in r] for d in (eager, compiled)}
    assert len(loss["eager"]) == 4 and loss["compiled"] == pytest.approx(loss["eager"], rel=1e-4)
    a = load_file(str(compiled / "checkpoints" / "checkpoint-4" / "model.safetensors"))
    b = load_file(str(eager / "checkpoints" / "checkpoint-4" / "model.safetensors"))
    assert sorted(a) == sorted(b)  # no "_orig_mod." prefixes: the checkpoint is a plain UNet's
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-4
    assert run(tiny_cfg, ds16, compiled, "train.max_steps=6", "train.sample_every_steps=null", resume="latest") == 0
    assert json.loads((latest_checkpoint(compiled) / "meta.json").read_text())["step"] == 6
    assert DDPMPipeline.from_pretrained(str(compiled / "pipeline")).unet.config.block_out_channels == [8, 16]


def test_periodic_fid_without_the_inception_stops_at_start(tiny_cfg, ds16, tmp_path, capsys):
    """The trainer's FID looks for the Inception as ptt-fid does, and says so before any training step."""
    missing = tmp_path / "nope" / "inception-2015-12-05.pt"
    rc = run(tiny_cfg, ds16, tmp_path / "r", "eval.fid_every_steps=2", f"eval.fid_inception_path={missing}")
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err
    assert "eval.fid_extractor=inception" in err and str(missing) in err and "ptt-weights fetch inception" in err
    assert not (tmp_path / "r" / "checkpoints").exists()
