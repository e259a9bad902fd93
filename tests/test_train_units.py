"""Unit tests of the trainer's pure parts: config errors, losses, augmentations, batch order, LR schedule."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from common.configio import ConfigError
from training.augment import augment_batch, color_jitter, gaussian_blur, hflip, rotate, sharpen
from training.config import AugmentConfig, load_train_config
from training.data import batch_indices
from training.losses import (
    add_noise,
    diffusion_loss,
    min_snr_weights,
    per_sample_loss,
    predict_x0,
    training_target,
)
from training.model import lr_lambda

BASE = ["data.dataset_dir=/nonexistent", "train.max_steps=5"]


# -- config -------------------------------------------------------------------------------------------------------


def test_unknown_key_names_dotted_path(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("optim:\n  lrr: 0.1\n")
    with pytest.raises(ConfigError, match=r"unknown key 'optim\.lrr'"):
        load_train_config(cfg, BASE)


def test_unknown_unet_argument_is_rejected():
    with pytest.raises(ConfigError, match=r"model\.blok_out_channels is not a diffusers\.UNet2DModel argument"):
        load_train_config(None, [*BASE, "model.blok_out_channels=[8,16]"])


def test_any_unet_argument_is_accepted_and_defaults_fill_in():
    cfg = load_train_config(None, [*BASE, "model.dropout=0.1", "data.resolution=32"])
    assert cfg.model["dropout"] == 0.1
    assert cfg.model["sample_size"] == 32
    assert cfg.model["block_out_channels"] == [64, 128, 256]


def test_bad_values_and_missing_required_keys_are_named():
    with pytest.raises(ConfigError, match=r"noise\.prediction_type"):
        load_train_config(None, [*BASE, "noise.prediction_type=x0"])
    with pytest.raises(ConfigError, match=r"train\.max_steps or train\.num_epochs"):
        load_train_config(None, ["data.dataset_dir=x", "train.batch_size=4"])
    with pytest.raises(ConfigError, match=r"data\.dataset_dir"):
        load_train_config(None, ["train.max_steps=3", "data.resolution=64"])
    with pytest.raises(ConfigError, match=r"refine\.base_run_dir"):
        load_train_config(None, [*BASE, "refine.enabled=true"])


def test_presets_validate(repo_root):
    for name in ("demo", "homework_unet", "attention_unet", "diffusers_example", "refine"):
        cfg = load_train_config(repo_root / "configs" / "train" / f"{name}.yaml")
        assert cfg.model["sample_size"] == cfg.data.resolution == 64
    attention_unet = load_train_config(repo_root / "configs/train/attention_unet.yaml")
    assert attention_unet.model["block_out_channels"] == [128, 256, 384, 512]
    assert attention_unet.model["down_block_types"][1:] == ["AttnDownBlock2D"] * 3


def test_cosine_schedule_maps_to_diffusers_name():
    cfg = load_train_config(None, [*BASE, "noise.beta_schedule=cosine"])
    assert cfg.noise.scheduler_config()["beta_schedule"] == "squaredcos_cap_v2"


def test_grids_and_periodic_fid_default_to_ptt_samples_sampler():
    from evaluation.sample import DEFAULT_SAMPLER, DEFAULT_STEPS

    cfg = load_train_config(None, BASE)
    assert (cfg.train.sample_scheduler, cfg.train.sample_steps) == (DEFAULT_SAMPLER, DEFAULT_STEPS[DEFAULT_SAMPLER])
    assert (cfg.eval.fid_scheduler, cfg.eval.fid_steps) == (DEFAULT_SAMPLER, DEFAULT_STEPS[DEFAULT_SAMPLER])
    cfg = load_train_config(
        None, [*BASE, "train.sample_scheduler=ddpm", "eval.fid_scheduler=ddim", "eval.fid_steps=7"]
    )
    assert (cfg.train.sample_steps, cfg.eval.fid_steps) == (1000, 7)  # null steps: the sampler's own default
    with pytest.raises(ConfigError, match="eval.fid_scheduler"):
        load_train_config(None, [*BASE, "eval.fid_scheduler=dpm9"])


# -- losses -------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sched():
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02)


def test_add_noise_and_velocity_match_diffusers(sched):
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    t = torch.tensor([0, 10, 500, 999])
    a = sched.alphas_cumprod
    torch.testing.assert_close(add_noise(a, x0, noise, t), sched.add_noise(x0, noise, t))
    torch.testing.assert_close(training_target("v_prediction", a, x0, noise, t), sched.get_velocity(x0, noise, t))


@pytest.mark.parametrize("pred", ["epsilon", "v_prediction", "sample"])
def test_predict_x0_inverts_the_target(sched, pred):
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(3, 3, 8, 8, generator=g), torch.randn(3, 3, 8, 8, generator=g)
    t = torch.tensor([5, 300, 900])
    a = sched.alphas_cumprod
    x_t = add_noise(a, x0, noise, t)
    out = training_target(pred, a, x0, noise, t)
    torch.testing.assert_close(predict_x0(pred, a, x_t, out, t), x0, atol=2e-3, rtol=1e-3)


def test_loss_kinds():
    pred, target = torch.zeros(2, 1, 2, 2), torch.full((2, 1, 2, 2), 2.0)
    assert per_sample_loss(pred, target, kind="mse").tolist() == [4.0, 4.0]
    assert per_sample_loss(pred, target, kind="l1").tolist() == [2.0, 2.0]
    # the homework recipe: 0.25 L1 + 0.75 MSE
    assert per_sample_loss(pred, target, kind="l1_mse", l1_weight=0.25).tolist() == [3.5, 3.5]
    w = torch.tensor([1.0, 0.0])
    assert float(diffusion_loss(pred, target, kind="mse", weights=w)) == pytest.approx(2.0)
    with pytest.raises(ValueError, match="unknown loss kind"):
        per_sample_loss(pred, target, kind="huber")


def test_min_snr_weights(sched):
    a = sched.alphas_cumprod
    t = torch.tensor([0, 999])
    w_eps = min_snr_weights(a, t, gamma=5.0, prediction_type="epsilon")
    # low noise (high SNR) is down-weighted to gamma / snr, high noise keeps weight 1
    assert float(w_eps[0]) < 0.01 and float(w_eps[1]) == pytest.approx(1.0)
    w_v = min_snr_weights(a, t, gamma=5.0, prediction_type="v_prediction")
    assert float(w_v[0]) == pytest.approx(5.0 / (float(a[0] / (1 - a[0])) + 1), rel=1e-4)
    # the cosine schedule reaches alpha_T ~ 0: weights stay finite
    from diffusers import DDPMScheduler

    cos = DDPMScheduler(beta_schedule="squaredcos_cap_v2").alphas_cumprod
    assert torch.isfinite(min_snr_weights(cos, torch.arange(1000), gamma=5.0, prediction_type="epsilon")).all()


# -- augmentation -------------------------------------------------------------------------------------------------


def _img(b=4, s=16):
    return torch.rand(b, 3, s, s, generator=torch.Generator().manual_seed(3))


def test_hflip_and_identity_transforms():
    x = _img()
    mask = torch.tensor([True, False, True, False])
    y = hflip(x, mask)
    torch.testing.assert_close(y[0], x[0].flip(-1))
    torch.testing.assert_close(y[1], x[1])
    torch.testing.assert_close(rotate(x, torch.zeros(4)), x, atol=1e-5, rtol=0)
    one = torch.ones(4)
    torch.testing.assert_close(color_jitter(x, one, one, one, torch.zeros(4)), x, atol=1e-5, rtol=0)


def test_rotation_moves_pixels_and_blur_sharpen_change_detail():
    x = _img()
    assert (rotate(x, torch.full((4,), 5.0)) - x).abs().mean() > 0.01
    blurred = gaussian_blur(x, torch.full((4,), 1.0), 1.0)
    sharp = sharpen(x, torch.full((4,), 1.0))

    def detail(z):
        return (z[..., 1:] - z[..., :-1]).abs().mean()

    assert detail(blurred) < 0.7 * detail(x)
    assert detail(sharp) > detail(x)
    assert 0.0 <= float(sharp.min()) and float(sharp.max()) <= 1.0


def test_color_jitter_each_factor():
    x = _img()
    one, zero = torch.ones(4), torch.zeros(4)
    assert float(color_jitter(x, one * 0.5, one, one, zero).mean()) < 0.6 * float(x.mean())
    low_sat = color_jitter(x, one, one, zero, zero)
    torch.testing.assert_close(low_sat[:, 0], low_sat[:, 1], atol=1e-5, rtol=0)  # grey
    assert (color_jitter(x, one, one, one, one * 0.25) - x).abs().mean() > 0.01  # hue turned


def test_augment_batch_is_deterministic_per_generator_and_switchable():
    x = _img(8)
    cfg = AugmentConfig(blur_p=1.0, sharpen_p=0.5)
    a = augment_batch(x.clone(), cfg, torch.Generator().manual_seed(7))
    b = augment_batch(x.clone(), cfg, torch.Generator().manual_seed(7))
    c = augment_batch(x.clone(), cfg, torch.Generator().manual_seed(8))
    assert a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1
    torch.testing.assert_close(a, b)
    assert (a - c).abs().max() > 1e-3
    off = augment_batch(x, AugmentConfig(enabled=False), torch.Generator().manual_seed(7))
    assert off is x


# -- batch order and LR -------------------------------------------------------------------------------------------


def test_batch_order_is_a_permutation_per_epoch_and_ranks_are_disjoint():
    n, bs, world = 12, 2, 2
    steps_per_epoch = n // (bs * world)
    seen = torch.cat(
        [
            batch_indices(n, step=s, batch_size=bs, seed=0, rank=r, world=world)
            for s in range(steps_per_epoch)
            for r in range(world)
        ]
    )
    assert sorted(seen.tolist()) == list(range(n))
    again = batch_indices(n, step=1, batch_size=bs, seed=0, rank=1, world=world)
    assert again.tolist() == batch_indices(n, step=1, batch_size=bs, seed=0, rank=1, world=world).tolist()
    # a dataset smaller than a batch wraps into the next epoch's permutation
    small = batch_indices(3, step=0, batch_size=8, seed=0)
    assert small.shape == (8,) and set(small.tolist()) == {0, 1, 2}
    other_seed = torch.cat([batch_indices(n, step=s, batch_size=4, seed=1) for s in range(3)])
    first = torch.cat([batch_indices(n, step=s, batch_size=4, seed=0) for s in range(3)])
    assert other_seed.tolist() != first.tolist()


def test_lr_warmup_then_cosine():
    kw = {"warmup_steps": 10, "total_steps": 110, "schedule": "cosine"}
    assert lr_lambda(0, **kw) == pytest.approx(0.1)
    assert lr_lambda(9, **kw) == pytest.approx(1.0)
    assert lr_lambda(60, **kw) == pytest.approx(0.5)
    assert lr_lambda(110, **kw) == pytest.approx(0.0, abs=1e-9)
    assert lr_lambda(110, **kw, min_ratio=0.1) == pytest.approx(0.1)
    assert lr_lambda(50, warmup_steps=0, total_steps=100, schedule="constant") == 1.0


# -- derived figures, resume checks, checkpoint folders -----------------------------------------------------------


def test_num_epochs_gives_that_many_passes_even_on_a_small_dataset():
    from training.config import derived_figures

    cfg = load_train_config(None, [*BASE[:1], "train.num_epochs=100", "train.batch_size=16"])
    figs = derived_figures(cfg, n_train=20, world=1)  # fewer images than one batch
    assert figs["total_steps"] == 125 and figs["epochs"] == 100.0
    figs = derived_figures(cfg, n_train=50, world=2)  # 50 / 32 is 1.56 steps per epoch
    assert figs["steps_per_epoch"] == 1 and figs["total_steps"] == 157 and figs["epochs"] >= 100


def test_resume_mismatches_name_what_changes_the_data_order():
    from training.checkpoint import resume_mismatches

    cfg = load_train_config(None, [*BASE, "train.batch_size=8", "train.grad_accum_steps=2"])
    same = {"world_size": 2, "batch_size": 8, "grad_accum_steps": 2, "seed": 0}
    assert resume_mismatches(same, cfg, world=2) == []
    assert resume_mismatches({"step": 3}, cfg, world=2) == []  # an older checkpoint without these fields
    got = resume_mismatches({**same, "world_size": 4, "batch_size": 16}, cfg, world=2)
    assert got == ["world_size was 4, now 2", "batch_size was 16, now 8"]


def test_a_chosen_logger_that_is_not_installed_is_a_config_error(monkeypatch):
    import importlib.util

    from training.accel import check_tracker

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "wandb" else real(name))
    with pytest.raises(ConfigError, match=r"train.log_with=wandb .*pip install wandb or set train.log_with="):
        check_tracker("wandb")
    check_tracker("tensorboard")
    check_tracker("none")


class _OneProcess:
    """The part of ``accelerate.Accelerator`` that save_checkpoint uses, for one process."""

    is_main_process = True

    def wait_for_everyone(self):
        pass

    def save_state(self, path):
        Path(path).mkdir(parents=True)
        (Path(path) / "model.safetensors").write_bytes(b"x")


def test_save_checkpoint_clears_crash_leftovers_and_keeps_the_newest(tmp_path):
    from training.checkpoint import latest_checkpoint, list_checkpoints, save_checkpoint

    leftover = tmp_path / "checkpoints" / ".tmp-checkpoint-7"  # a crash mid-write at step 7
    leftover.mkdir(parents=True)
    assert latest_checkpoint(tmp_path) is None
    for step in (10, 20, 30):
        save_checkpoint(_OneProcess(), tmp_path, step=step, meta={"epoch": 0}, keep=2, config_yaml="a: 1\n")
    assert [p.name for p in list_checkpoints(tmp_path)] == ["checkpoint-20", "checkpoint-30"]
    assert not leftover.exists()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["checkpoint-20", "checkpoint-30"]
    assert (latest_checkpoint(tmp_path) / "config.yaml").read_text() == "a: 1\n"


def test_a_save_removes_only_a_dead_writers_temp_folder(tmp_path):
    """The temp folder carries its writer's pid: a save never deletes the folder a live process is writing."""
    import subprocess
    import sys

    from training.checkpoint import save_checkpoint

    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    try:
        root = tmp_path / "checkpoints"
        theirs, gone = root / f".tmp-checkpoint-5-{live.pid}", root / f".tmp-checkpoint-5-{dead.pid}"
        theirs.mkdir(parents=True)
        gone.mkdir()
        final = save_checkpoint(_OneProcess(), tmp_path, step=5, meta={}, keep=2)
        assert final.name == "checkpoint-5" and theirs.is_dir() and not gone.exists()
    finally:
        live.kill()
        live.wait()


def test_resuming_an_older_checkpoint_sets_the_newer_ones_aside(tmp_path):
    from training.checkpoint import latest_checkpoint, save_checkpoint, set_aside_later_checkpoints

    for step in (10, 20, 30):
        save_checkpoint(_OneProcess(), tmp_path, step=step, meta={}, keep=5)
    moved = set_aside_later_checkpoints(tmp_path, 10)
    assert [p.name for p in moved] == ["abandoned-checkpoint-20", "abandoned-checkpoint-30"]
    assert latest_checkpoint(tmp_path).name == "checkpoint-10"
    assert all((p / "model.safetensors").is_file() for p in moved)  # kept, not deleted


def test_mixed_precision_no_survives_yaml_booleans(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("train:\n  mixed_precision: no\n  max_steps: 1\ndata:\n  dataset_dir: x\n")
    assert load_train_config(cfg).train.mixed_precision == "no"
    assert load_train_config(None, [*BASE, "train.mixed_precision=no"]).train.mixed_precision == "no"
    with pytest.raises(ConfigError, match="train.mixed_precision"):
        load_train_config(None, [*BASE, "train.mixed_precision=yes"])


def test_resume_drops_later_rows_and_a_line_cut_short_by_a_crash(tmp_path):
    import json

    from training.metrics import read_metrics
    from training.metrics import truncate_metrics as _truncate_metrics

    path = tmp_path / "metrics.jsonl"
    rows = [{"step": 1, "loss": 0.5}, {"heldout_loss": 0.4, "step": 2}, {"loss": 0.3, "step": 3}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 4, "lo')  # killed mid-append
    assert read_metrics(path) == rows
    _truncate_metrics(path, 2)
    assert read_metrics(path) == rows[:2]
    assert path.read_text().endswith("}\n")


def test_a_misspelt_unet_argument_gets_the_nearest_name():
    with pytest.raises(ConfigError, match=r"did you mean model\.block_out_channels\?"):
        load_train_config(None, [*BASE, "model.block_out_channel=[8,16]"])


def test_unet_flops_count_every_conv_linear_and_attention_matmul():
    """The MFU numerator: equal to an independent count from forward hooks, attention's QK^T and AV included."""
    from diffusers import UNet2DModel
    from diffusers.models.attention_processor import Attention

    from training.model import unet_flops_per_image

    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=16,
        block_out_channels=(8, 16),
        layers_per_block=1,
        norm_num_groups=4,
        attention_head_dim=8,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    ).eval()
    counted = {"conv": 0, "linear": 0, "attention": 0}

    def on_conv(m, inp, out):
        k = m.kernel_size[0] * m.kernel_size[1]
        counted["conv"] += 2 * out.numel() * (m.in_channels // m.groups) * k

    def on_linear(m, inp, out):
        counted["linear"] += 2 * out.numel() * m.in_features

    def on_attention(m, inp, out):
        h = inp[0]
        tokens = h.shape[-1] * h.shape[-2] if h.ndim == 4 else h.shape[1]
        counted["attention"] += 2 * 2 * tokens * tokens * m.inner_dim  # QK^T and softmax(.)V

    hooks = [m.register_forward_hook(on_conv) for m in unet.modules() if isinstance(m, torch.nn.Conv2d)]
    hooks += [m.register_forward_hook(on_linear) for m in unet.modules() if isinstance(m, torch.nn.Linear)]
    hooks += [m.register_forward_hook(on_attention) for m in unet.modules() if isinstance(m, Attention)]
    with torch.no_grad():
        unet(torch.randn(1, 3, 16, 16), torch.tensor([10]))
    for h in hooks:
        h.remove()
    assert counted["attention"] > 0 and counted["conv"] > 0
    forward = unet_flops_per_image(unet, 16, training=False)
    assert forward == sum(counted.values())
    assert unet_flops_per_image(unet, 16, training=True) == 3 * forward
