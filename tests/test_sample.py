"""Sampling: one seed per image (batch-size and resume invariant), every scheduler writes valid PNGs, CLI errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from evaluation.sample import (
    DEFAULT_SAMPLER,
    DEFAULT_STEPS,
    SAMPLERS,
    SCHEDULERS,
    SampleError,
    build_scheduler,
    generate,
    generate_seeds,
    image_grid,
    main,
    num_evaluations,
    steps_for_evaluations,
    write_samples,
)

# Samplers that draw fresh noise at every step (diffusers' step(..., generator=...)).
STOCHASTIC = [name for name in SCHEDULERS if name.startswith("ddpm") or "sde" in name]


def tiny_unet(sample_size: int):
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
    ).eval()


def export_tiny_pipeline(path, sample_size: int = 64):
    from diffusers import DDPMPipeline, DDPMScheduler

    DDPMPipeline(unet=tiny_unet(sample_size), scheduler=DDPMScheduler()).save_pretrained(
        str(path), safe_serialization=True
    )
    return path


@pytest.fixture(scope="module")
def pipeline64(tmp_path_factory):
    return export_tiny_pipeline(tmp_path_factory.mktemp("pipe") / "pipeline", 64)


@pytest.fixture(scope="module")
def unet16():
    return tiny_unet(16)


@pytest.fixture(scope="module")
def sched_cfg():
    from diffusers import DDPMScheduler

    return dict(DDPMScheduler().config)


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_image_i_is_the_same_for_batch_size_1_and_8(unet16, sched_cfg, scheduler):
    seeds = list(range(100, 108))
    batched = generate_seeds(unet16, sched_cfg, seeds, steps=3, scheduler=scheduler)  # (8, 3, 16, 16)
    singles = torch.cat([generate_seeds(unet16, sched_cfg, [s], steps=3, scheduler=scheduler) for s in seeds])
    assert batched.shape == (8, 3, 16, 16)
    torch.testing.assert_close(batched, singles, atol=1e-4, rtol=1e-4)
    # the seeds matter: different images get different noise
    assert (batched[0] - batched[1]).abs().max() > 0.05

    # the public uint8 API: batch 8 vs batch 2 starting at image 5, and vs the single-image floats
    b = generate(unet16, sched_cfg, num_images=8, seed=100, batch_size=8, steps=3, scheduler=scheduler)
    c = generate(unet16, sched_cfg, num_images=3, seed=100, batch_size=2, steps=3, scheduler=scheduler, start_index=5)
    a = ((singles / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy() * 255).round().astype(np.uint8)
    assert b.dtype == np.uint8 and b.shape == (8, 16, 16, 3)
    assert np.abs(a.astype(int) - b).max() <= 1  # rounding to uint8 may flip at a .5 boundary
    assert np.abs(b[5:].astype(int) - c).max() <= 1


@pytest.mark.parametrize("scheduler", STOCHASTIC)
def test_step_noise_comes_from_each_image_generator(unet16, sched_cfg, scheduler):
    """DDPM and the SDE solvers are stochastic at every step: were their noise drawn from a shared generator,
    image 1 would change with the batch it is in."""
    together = generate_seeds(unet16, sched_cfg, [7, 8, 9], steps=4, scheduler=scheduler)
    alone = generate_seeds(unet16, sched_cfg, [8], steps=4, scheduler=scheduler)
    torch.testing.assert_close(together[1:2], alone, atol=1e-4, rtol=1e-4)


def test_the_default_sampler_is_covered_by_the_seeding_tests():
    """The batch, resume and multi-process tests run the default sampler (write_samples' default); a stochastic
    default is also in the per-step-noise test above."""
    assert DEFAULT_SAMPLER in SCHEDULERS
    assert ("sde" in DEFAULT_SAMPLER) == (DEFAULT_SAMPLER in STOCHASTIC)
    assert write_samples.__kwdefaults__["scheduler"] == DEFAULT_SAMPLER


def test_ddpm_pipeline_cannot_run_the_samplers_marked_so_on_the_cosine_schedule():
    """Why PIPELINE_SAMPLER exists: DDPMPipeline looks the first step up by timestep value, and Karras sigmas on the
    cosine schedule repeat t = 998; our loop starts at step 0 and runs them."""
    trained = {"beta_schedule": "squaredcos_cap_v2", "prediction_type": "sample"}
    sched = build_scheduler("dpm2_sde_karras", trained)
    sched.set_timesteps(DEFAULT_STEPS["dpm2_sde_karras"])
    assert len(set(sched.timesteps.tolist())) < len(sched.timesteps)
    assert not SAMPLERS["dpm2_sde_karras"].for_ddpm_pipeline and not SAMPLERS["heun_karras"].for_ddpm_pipeline


def test_samplers_take_only_the_noise_schedule_from_a_pipeline_config():
    """A pipeline exported with one sampler's scheduler builds every other sampler as named, not with its keys."""
    from diffusers import DDIMScheduler

    trained = {"beta_schedule": "squaredcos_cap_v2", "prediction_type": "sample", "clip_sample": True}
    dpm_cfg = dict(build_scheduler("dpm3", trained).config)
    assert dpm_cfg["solver_order"] == 3 and dpm_cfg["thresholding"] is True
    ddim = build_scheduler("ddim", dpm_cfg)
    assert ddim.config.beta_schedule == "squaredcos_cap_v2" and ddim.config.prediction_type == "sample"
    assert ddim.config.timestep_spacing == DDIMScheduler().config.timestep_spacing  # not DPM-Solver's linspace
    assert ddim.config.thresholding is False and ddim.config.clip_sample is True
    with pytest.raises(SampleError, match="unknown scheduler 'dpm9'"):
        build_scheduler("dpm9", trained)


def test_unet_evaluations_per_image(sched_cfg):
    assert num_evaluations("dpm2_sde", sched_cfg, 20) == 20
    assert num_evaluations("heun_karras", sched_cfg, 5) == 9  # two a step, one on the last
    assert steps_for_evaluations("heun_karras", sched_cfg, 10) == 5
    assert steps_for_evaluations("ddim", sched_cfg, 15) == 15


def test_exported_pipeline_gives_diffusers_ddpm_pipeline_its_sampler(tmp_path):
    """DDPMPipeline.from_pretrained on our export runs PIPELINE_SAMPLER (the default where DDPMPipeline can) and
    makes ptt-sample's images for it."""
    from diffusers import DDPMPipeline, DDPMScheduler

    from evaluation.pipeline import export_pipeline, load_pipeline
    from evaluation.samplers import PIPELINE_SAMPLER

    spec = SAMPLERS[PIPELINE_SAMPLER]
    assert spec.for_ddpm_pipeline
    assert PIPELINE_SAMPLER == DEFAULT_SAMPLER or not SAMPLERS[DEFAULT_SAMPLER].for_ddpm_pipeline
    trained = dict(DDPMScheduler(beta_schedule="squaredcos_cap_v2", prediction_type="sample").config)
    export_pipeline(tiny_unet(16), trained, tmp_path / "pipe")
    pipe = DDPMPipeline.from_pretrained(tmp_path / "pipe")
    assert type(pipe.scheduler).__name__ == spec.scheduler_class
    assert {k: pipe.scheduler.config[k] for k in spec.options} == spec.options
    assert pipe.scheduler.config.beta_schedule == "squaredcos_cap_v2"
    assert pipe.scheduler.config.prediction_type == "sample"
    steps = DEFAULT_STEPS[PIPELINE_SAMPLER]
    unet, cfg, _ = load_pipeline(str(tmp_path / "pipe"))
    ours = generate(unet, cfg, num_images=2, seed=11, batch_size=2, steps=steps, scheduler=PIPELINE_SAMPLER)
    for i in range(2):
        gen = torch.Generator().manual_seed(11 + i)
        img = pipe(generator=gen, num_inference_steps=steps, output_type="np").images[0]  # (H, W, 3) in [0, 1]
        assert np.abs((img * 255).round().astype(int) - ours[i]).max() <= 1


@pytest.mark.parametrize("scheduler", SCHEDULERS)
def test_cli_writes_valid_64x64_pngs_for_each_scheduler(pipeline64, tmp_path, scheduler, capsys):
    out = tmp_path / "samples"
    rc = main(["--model", str(pipeline64), "--num-images", "3", "--out", str(out), "--scheduler", scheduler,
               "--steps", "2", "--batch-size", "2", "--seed", "5", "--no-progress"])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["00001.png", "00002.png", "00003.png"]
    imgs = []
    for n in names:
        with Image.open(out / n) as im:
            assert im.format == "PNG" and im.size == (64, 64) and im.mode == "RGB"
            imgs.append(np.array(im))
    info = json.loads((out / "sample_info.json").read_text())
    assert info["scheduler"] == scheduler and info["steps"] == 2 and info["seed"] == 5
    assert info["evaluations"] == (3 if scheduler == "heun_karras" else 2)  # UNet evaluations per image
    assert "wrote 3" in capsys.readouterr().out
    # file i holds the image of seed + i - 1, as the library makes it
    from diffusers import UNet2DModel

    unet = UNet2DModel.from_pretrained(pipeline64, subfolder="unet")
    cfg = json.loads((pipeline64 / "scheduler" / "scheduler_config.json").read_text())
    ref = generate(unet, cfg, num_images=3, seed=5, batch_size=3, steps=2, scheduler=scheduler)
    assert np.abs(np.stack(imgs).astype(int) - ref).max() <= 1


def test_rerun_skips_existing_and_resumes_identically(unet16, sched_cfg, tmp_path):
    out = tmp_path / "s"
    first = write_samples(unet16, sched_cfg, out, num_images=3, seed=1, batch_size=2, steps=2, progress=False)
    assert first["written"] == 3 and first["skipped"] == 0
    before = {p.name: p.read_bytes() for p in out.glob("*.png")}
    mtime1 = (out / "00001.png").stat().st_mtime_ns
    (out / "00002.png").unlink()  # an interrupted run lost this one
    second = write_samples(unet16, sched_cfg, out, num_images=4, seed=1, batch_size=2, steps=2, progress=False)
    assert second["written"] == 2 and second["skipped"] == 2
    assert (out / "00001.png").stat().st_mtime_ns == mtime1  # not rewritten
    assert (out / "00002.png").read_bytes() == before["00002.png"]  # regenerated bit for bit
    assert sorted(p.name for p in out.glob("*.png")) == ["00001.png", "00002.png", "00003.png", "00004.png"]
    assert not list(out.glob("*.tmp*"))


def test_rerun_redoes_damaged_or_foreign_pngs(unet16, sched_cfg, tmp_path, caplog):
    out = tmp_path / "s"
    write_samples(unet16, sched_cfg, out, num_images=4, seed=1, batch_size=4, steps=2, progress=False)
    good = {p.name: p.read_bytes() for p in out.glob("*.png")}
    (out / "00001.png").write_bytes(good["00001.png"][:-20])  # truncated
    (out / "00002.png").write_bytes(b"")  # zero bytes
    Image.new("RGB", (32, 32)).save(out / "00003.png")  # a PNG of the wrong size
    with caplog.at_level("WARNING", logger="evaluation.sample"):
        again = write_samples(unet16, sched_cfg, out, num_images=4, seed=1, batch_size=4, steps=2, progress=False)
    assert again["written"] == 3 and again["skipped"] == 1
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == good
    assert sum("writing it again" in r.getMessage() for r in caplog.records) == 3


def test_ranks_write_disjoint_shares_that_match_one_process(unet16, sched_cfg, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    write_samples(unet16, sched_cfg, one, num_images=5, seed=3, batch_size=4, steps=2, progress=False)
    r0 = write_samples(unet16, sched_cfg, two, num_images=5, seed=3, batch_size=4, steps=2, rank=0, world_size=2,
                       progress=False)  # fmt: skip
    r1 = write_samples(unet16, sched_cfg, two, num_images=5, seed=3, batch_size=4, steps=2, rank=1, world_size=2,
                       progress=False)  # fmt: skip
    assert (r0["written"], r1["written"]) == (3, 2)
    for p in sorted(one.glob("*.png")):
        a = np.array(Image.open(p)).astype(int)
        b = np.array(Image.open(two / p.name)).astype(int)
        assert np.abs(a - b).max() <= 1, p.name


def test_rerun_with_other_settings_is_refused(unet16, sched_cfg, tmp_path):
    write_samples(unet16, sched_cfg, tmp_path, num_images=1, seed=0, steps=2, progress=False)
    with pytest.raises(SampleError, match=r"steps=2 \(now 3\).*new --out"):
        write_samples(unet16, sched_cfg, tmp_path, num_images=1, seed=0, steps=3, progress=False)


def test_missing_model_is_a_one_line_error(tmp_path, capsys):
    rc = main(["--model", str(tmp_path / "nope"), "--num-images", "1", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1
    assert "nope" in err and "no such folder" in err and "pipeline" in err


def test_folder_without_pipeline_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    rc = main(["--model", str(tmp_path / "empty"), "--num-images", "1", "--out", str(tmp_path / "o")])
    assert rc == 2 and "needs unet/ and scheduler/" in capsys.readouterr().err


def test_run_dir_is_resolved_to_its_pipeline(tmp_path):
    from evaluation.pipeline import load_pipeline as load_model

    export_tiny_pipeline(tmp_path / "run" / "pipeline", 16)
    unet, cfg, source = load_model(str(tmp_path / "run"))
    assert source.endswith("pipeline") and unet.config.sample_size == 16 and cfg["num_train_timesteps"] == 1000


def test_image_grid_tiles_images():
    imgs = np.stack([np.full((4, 4, 3), k, np.uint8) for k in range(5)])
    grid = image_grid(imgs, ncols=3, pad=1)
    assert grid.shape == (2 * 5 + 1, 3 * 5 + 1, 3)
    assert grid[1, 1, 0] == 0 and grid[1, 6, 0] == 1 and grid[6, 6, 0] == 4 and grid[6, 11, 0] == 255


@pytest.mark.slow
def test_two_processes_via_accelerate_write_their_shares(tmp_path):
    """`accelerate launch` with 2 CPU processes: each rank writes i % 2 == rank; together they equal 1 process."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    pipe = export_tiny_pipeline(tmp_path / "pipeline", 16)
    out = tmp_path / "two"
    launcher = Path(sys.executable).parent / "accelerate"
    env = {**os.environ, "ACCELERATE_USE_CPU": "true", "OMP_NUM_THREADS": "1"}
    cmd = [str(launcher), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "-m", "evaluation.sample", "--model", str(pipe),
           "--num-images", "5", "--out", str(out), "--scheduler", "ddim", "--steps", "2", "--batch-size", "2",
           "--no-progress"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1])
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rank 0/2: wrote 3" in proc.stdout and "rank 1/2: wrote 2" in proc.stdout
    from evaluation.pipeline import load_pipeline as load_model

    unet, cfg, _ = load_model(str(pipe))
    ref = generate(unet, cfg, num_images=5, seed=0, batch_size=5, steps=2, scheduler="ddim")
    got = np.stack([np.array(Image.open(out / f"{i:05d}.png")) for i in range(1, 6)])
    assert np.abs(got.astype(int) - ref).max() <= 1
    # the main process held the folder's lock; a second launch onto a held folder is refused on every rank
    from common.lock import FolderLock, lock_owner

    assert lock_owner(out)["command"].startswith("sample.py") or "evaluation.sample" in lock_owner(out)["command"]
    before = {p.name: p.read_bytes() for p in out.glob("*.png")}
    with FolderLock(out):
        busy = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=Path(__file__).parents[1])
    assert busy.returncode != 0 and "in use by another process" in busy.stderr, busy.stderr[-2000:]
    assert {p.name: p.read_bytes() for p in out.glob("*.png")} == before


def test_bf16_autocast_path_stays_close_to_fp32(unet16, sched_cfg):
    a = generate(unet16, sched_cfg, num_images=4, seed=0, batch_size=4, steps=3, scheduler="ddim")
    b = generate(unet16, sched_cfg, num_images=4, seed=0, batch_size=4, steps=3, scheduler="ddim", dtype="bf16")
    assert next(unet16.parameters()).dtype == torch.float32  # the caller's weights are left alone
    assert b.shape == a.shape and 0 < np.abs(a.astype(int) - b).mean() < 5
    with pytest.raises(SampleError, match="use fp32, bf16 or fp16"):
        generate(unet16, sched_cfg, num_images=1, seed=0, batch_size=1, steps=1, dtype="int8")


def test_unreachable_hub_id_is_a_clear_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rc = main(["--model", "someone/no-such-model", "--num-images", "1", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert rc == 2 and "someone/no-such-model" in err and "HF_HUB_OFFLINE" in err and "pipeline folder" in err


def test_zero_steps_is_an_error_not_the_default(unet16, sched_cfg, tmp_path):
    with pytest.raises(SampleError, match="at least 1"):
        write_samples(unet16, sched_cfg, tmp_path, num_images=1, steps=0, progress=False)
    assert not list(tmp_path.glob("*.png"))


def test_out_that_is_a_file_is_a_one_line_error(pipeline64, tmp_path, capsys):
    (tmp_path / "taken.png").write_bytes(b"x")
    rc = main(["--model", str(pipeline64), "--num-images", "1", "--out", str(tmp_path / "taken.png"), "--steps", "1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "taken.png" in err and "not a folder" in err


def test_rerun_through_a_relative_model_path_is_the_same_model(pipeline64, tmp_path, monkeypatch):
    out = tmp_path / "o"
    assert main(["--model", str(pipeline64), "--num-images", "1", "--out", str(out), "--steps", "1"]) == 0
    monkeypatch.chdir(pipeline64.parent)
    rc = main(["--model", f"./{pipeline64.name}", "--num-images", "2", "--out", str(out), "--steps", "1"])
    assert rc == 0 and sorted(p.name for p in out.glob("*.png")) == ["00001.png", "00002.png"]


def test_the_default_sampler_is_the_benchmarked_fast_one(tmp_path):
    """BENCHMARKS.md, "Fast samplers": ptt-sample defaults to the sampler the benchmark picked, at its steps, at no
    more than 50 UNet evaluations per image."""
    import json

    pipe = export_tiny_pipeline(tmp_path / "pipeline", 16)
    assert main(["--model", str(pipe), "--num-images", "1", "--out", str(tmp_path / "s"), "--no-progress"]) == 0
    info = json.loads((tmp_path / "s" / "sample_info.json").read_text())
    assert info["scheduler"] == DEFAULT_SAMPLER and info["steps"] == DEFAULT_STEPS[DEFAULT_SAMPLER]
    assert info["evaluations"] <= 50
