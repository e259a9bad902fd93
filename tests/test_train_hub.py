"""The trainer with the libraries' conventions: the launcher's mixed precision, images in the trackers, wandb
resume, and the push of the exported pipeline (end to end against the Hub stand-in, tests/hub_standin.py)."""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path

import pytest
from hub_standin import HubStandIn  # tests/ is on sys.path (rootdir conftest, no package)
from test_hub_push import MODEL_FILES, TOKEN, assert_token_only_in_auth_header, hub_env

from training import train as train_mod
from training.accel import resolve_mixed_precision, wandb_run
from training.config import load_train_config

ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


def run(cfg: Path, ds: Path, run_dir: Path, *overrides: str) -> int:
    return train_mod.main(["--config", str(cfg), f"data.dataset_dir={ds}", f"run_dir={run_dir}", *overrides])


# -- 12.2: mixed precision from the launcher unless the config says otherwise ---------------------------------------


@pytest.mark.parametrize(
    ("configured", "launcher", "requested", "effective", "source", "warns", "notes"),
    [
        (None, None, None, "no", "accelerate's default", False, False),
        (None, "bf16", None, "bf16", "accelerate launch --mixed_precision", False, False),
        ("bf16", None, "bf16", "bf16", "train.mixed_precision", False, False),
        ("bf16", "bf16", "bf16", "bf16", "train.mixed_precision", False, False),
        ("no", "bf16", "no", "no", "train.mixed_precision", True, False),
        ("bf16", "no", "bf16", "bf16", "train.mixed_precision", False, True),  # "no" is also the launcher's default
    ],
)
def test_mixed_precision_resolution(configured, launcher, requested, effective, source, warns, notes):
    env = {} if launcher is None else {"ACCELERATE_MIXED_PRECISION": launcher}
    p = resolve_mixed_precision(configured, env)
    assert (p.requested, p.effective) == (requested, effective) and p.source.startswith(source)
    assert bool(p.conflict) == warns and bool(p.note) == notes
    if warns:
        assert (
            f"train.mixed_precision={configured}" in p.conflict
            and f"ACCELERATE_MIXED_PRECISION={launcher}" in p.conflict
        )


def test_presets_still_mean_what_they_meant(ds16):
    expected = {"demo": None, "diffusers_example": None, "homework_unet": "bf16", "attention_unet": "bf16"}
    expected["refine"] = "bf16"
    for name, value in expected.items():
        cfg = load_train_config(ROOT / "configs" / "train" / f"{name}.yaml", [f"data.dataset_dir={ds16}"])
        assert cfg.train.mixed_precision == value, name  # None: fp32 unless the launcher asks for more
        assert resolve_mixed_precision(cfg.train.mixed_precision, {}).effective == (value or "no")


def test_the_launchers_precision_wins_when_the_config_leaves_it_unset(tiny_cfg, ds16, tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")  # what `accelerate launch --mixed_precision bf16` sets
    assert run(tiny_cfg, ds16, tmp_path / "a", "train.max_steps=2") == 0
    banner = next(r.getMessage() for r in caplog.records if "***** training" in r.getMessage())
    assert "mixed precision bf16 (from accelerate launch --mixed_precision / accelerate config" in banner
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING and "precision" in r.getMessage()]


def test_an_explicit_config_value_wins_and_the_conflict_is_a_warning_naming_both(
    tiny_cfg, ds16, tmp_path, caplog, monkeypatch
):
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert run(tiny_cfg, ds16, tmp_path / "b", "train.max_steps=2", "train.mixed_precision=no") == 0
    (warning,) = [
        r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and "precision" in r.getMessage()
    ]
    assert "train.mixed_precision=no" in warning and "ACCELERATE_MIXED_PRECISION=bf16" in warning
    banner = next(r.getMessage() for r in caplog.records if "***** training" in r.getMessage())
    assert "mixed precision no (from train.mixed_precision)" in banner


def test_fp16_from_the_launcher_on_the_cpu_is_a_one_line_error(tiny_cfg, ds16, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    assert run(tiny_cfg, ds16, tmp_path / "fp16", "train.max_steps=2") == 2
    err = capsys.readouterr().err.strip()
    assert "ACCELERATE_MIXED_PRECISION=fp16 needs a GPU" in err and "--mixed_precision bf16" in err
    assert "\n" not in err and not (tmp_path / "fp16").exists()


# -- 12.3: images in the trackers, wandb resume ---------------------------------------------------------------------


def test_sample_grids_and_the_fid_curve_go_to_tensorboard_as_images(tiny_cfg, ds16, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import IMAGES, EventAccumulator

    run_dir = tmp_path / "tb"
    fid = ["eval.fid_every_steps=4", "eval.fid_num_images=6", "eval.fid_steps=2", "eval.fid_extractor=substitute"]
    rc = run(
        tiny_cfg, ds16, run_dir, "train.max_steps=4", "train.log_with=tensorboard", "train.sample_every_steps=2", *fid
    )
    assert rc == 0
    events = run_dir / "logs" / "ptt-train"  # accelerate's TensorBoardTracker: <logging_dir>/<project name>
    acc = EventAccumulator(str(events), size_guidance={IMAGES: 0})
    acc.Reload()
    assert {"samples", "curves"} <= set(acc.Tags()[IMAGES])
    samples = acc.Images("samples")
    assert [e.step for e in samples] == [2, 4]
    from PIL import Image

    grid = Image.open(run_dir / "samples" / "step-4.png")
    assert (samples[-1].width, samples[-1].height) == grid.size and samples[-1].encoded_image_string[:4] == b"\x89PNG"
    assert [e.step for e in acc.Images("curves")] == [4]
    assert "loss" in acc.Tags()["scalars"]


def test_wandb_resumes_its_stored_run_only_when_the_training_run_resumes():
    ids = iter(["new1", "new2"])
    assert wandb_run(None, resumed=False, new_id=lambda: next(ids)) == ("new1", "never")
    assert wandb_run("abc123", resumed=True, new_id=lambda: next(ids)) == ("abc123", "allow")
    assert wandb_run("abc123", resumed=False, new_id=lambda: next(ids)) == ("new2", "never")  # a new run, new id
    assert wandb_run(None, resumed=True, new_id=lambda: "x9") == ("x9", "never")  # resumed before wandb was on


# -- 12.4: the trainer's push ---------------------------------------------------------------------------------------


def test_the_trainer_pushes_checkpoints_and_the_final_pipeline_to_the_hub(tiny_cfg, ds16, tmp_path):
    run_dir = tmp_path / "pushed"
    argv = [str(ROOT / "training" / "train.py"), "--config", str(tiny_cfg), f"data.dataset_dir={ds16}",
            f"run_dir={run_dir}", "train.max_steps=8", "train.sample_every_steps=4", "hub.repo_id=me/faces-ddpm",
            "hub.push_every_checkpoints=1", "hub.dataset_repo=me/ptt-beauty-faces"]  # fmt: skip
    with HubStandIn() as hub:
        env = hub_env(hub, tmp_path)
        r = subprocess.run([sys.executable, *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-4000:]
    assert hub.repos[("model", "me/faces-ddpm")]["visibility"] == "private"  # hub.private defaults to true
    summaries = [c["summary"] for c in hub.commits]
    assert summaries[0] == "ptt-train: EMA pipeline at step 4"
    assert summaries[-1] == "ptt-train: final EMA pipeline at step 8"
    final = hub.commits[-1]["files"]
    assert set(final) == MODEL_FILES - {"metrics.json"}  # no FID in this run; never optimizer state or pickles
    weights = "unet/diffusion_pytorch_model.safetensors"
    assert final[weights] == (run_dir / "pipeline" / weights).read_bytes()
    assert str(tmp_path) not in final["README.md"].decode() + final["training_config.yaml"].decode()
    from huggingface_hub import ModelCard

    assert ModelCard(final["README.md"].decode()).data.datasets == ["me/ptt-beauty-faces"]
    assert not (run_dir / "hub_push").exists()  # the checkpoint's staging copy is removed after its upload
    assert_token_only_in_auth_header(hub, r.stdout, r.stderr)
    assert TOKEN not in (run_dir / "metrics.jsonl").read_text()


def test_offline_the_trainer_says_once_that_it_skips_the_push(tiny_cfg, ds16, tmp_path, caplog, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    caplog.set_level(logging.INFO)
    rc = run(
        tiny_cfg, ds16, tmp_path / "off", "train.max_steps=8", "hub.repo_id=me/faces", "hub.push_every_checkpoints=1"
    )
    assert rc == 0 and (tmp_path / "off" / "pipeline" / "model_index.json").is_file()
    hub_lines = [
        r.getMessage() for r in caplog.records if "hub" in r.getMessage().lower() and "push" in r.getMessage()
    ]
    assert hub_lines == ["HF_HUB_OFFLINE is set: skipping the pushes to me/faces (hub.repo_id)"]
    assert not (tmp_path / "off" / "hub_push").exists()


def test_a_bad_hub_repo_id_is_a_config_error(tiny_cfg, ds16, tmp_path, capsys):
    assert run(tiny_cfg, ds16, tmp_path / "bad", "hub.repo_id=faces") == 2
    err = capsys.readouterr().err
    assert "hub.repo_id" in err and "USER/NAME" in err


def test_dry_run_names_the_precision_and_its_source(tiny_cfg, ds16, capsys, monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    assert train_mod.main(["--config", str(tiny_cfg), f"data.dataset_dir={ds16}", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "# mixed_precision: bf16 (from accelerate launch --mixed_precision / accelerate config" in out
    assert "mixed_precision: null" in out  # the resolved config keeps the setting unset
