"""ptt-push: the allow-list (never optimizer state or checkpoints), dry runs, token and offline errors.

The uploads themselves are tested end to end against a stand-in of the Hub's HTTP API in tests/test_hub_push.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from evaluation.push import main, select_files

EXPECTED = [
    "metrics.json",
    "model_index.json",
    "sample_grid.png",
    "scheduler/scheduler_config.json",
    "training_config.yaml",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
]
TOKEN = "hf_SeCrEtToKeN0123456789abcdef"


@pytest.fixture
def run_dir(tmp_path):
    """A run directory: exported pipeline plus the things that must never be uploaded."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    blocks = {"down_block_types": ("DownBlock2D",) * 2, "up_block_types": ("UpBlock2D",) * 2}
    unet = UNet2DModel(sample_size=16, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, **blocks)
    pipe = tmp_path / "run" / "pipeline"
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(str(pipe), safe_serialization=True)
    (pipe / "training_config.yaml").write_text("seed: 0\n")
    (pipe / "metrics.json").write_text(json.dumps({"fid": 33.3, "kid": 0.01, "mode": "clean", "comparable": True,
                                                   "feature_extractor": "inception", "n_gen": 10, "n_ref": 10,
                                                   "ref": "d:test"}))  # fmt: skip
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(pipe / "sample_grid.png")
    (pipe / "optimizer.bin").write_bytes(b"adam state")
    (pipe / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    (pipe / "random_states_0.pkl").write_bytes(b"rng")
    (pipe / "checkpoints" / "checkpoint-10").mkdir(parents=True)
    (pipe / "checkpoints" / "checkpoint-10" / "model.safetensors").write_bytes(b"x")
    (pipe / "README.md").write_text("stale card")
    ckpt = tmp_path / "run" / "checkpoints" / "checkpoint-20"
    ckpt.mkdir(parents=True)
    (ckpt / "optimizer.bin").write_bytes(b"adam")
    return tmp_path / "run"


def test_select_files_is_an_allow_list(run_dir):
    upload, skipped = select_files(run_dir / "pipeline")
    assert upload == EXPECTED
    assert {"optimizer.bin", "unet/diffusion_pytorch_model.bin", "random_states_0.pkl",
            "checkpoints/checkpoint-10/model.safetensors"} <= set(skipped)  # fmt: skip
    assert "README.md" not in upload + skipped  # regenerated, never the stale one


def test_dry_run_lists_files_and_uploads_nothing(run_dir, capsys, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", None)  # any use would raise
    rc = main(["--model", str(run_dir), "--repo", "me/faces", "--dry-run"])
    out = capsys.readouterr().out
    assert rc == 0 and "would upload 8 files" in out
    assert "+ unet/diffusion_pytorch_model.safetensors" in out and "+ README.md" in out
    assert "- optimizer.bin (not on the allow-list" in out
    assert "+ optimizer.bin" not in out and "checkpoint-20" not in out
    assert (run_dir / "pipeline" / "README.md").read_text() == "stale card"  # dry run changes nothing


def test_no_token_and_offline_are_clear_errors(run_dir, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    assert main(["--model", str(run_dir), "--repo", "me/faces"]) == 2
    assert "no Hugging Face token" in capsys.readouterr().err
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    assert main(["--model", str(run_dir), "--repo", "me/faces"]) == 2
    err = capsys.readouterr().err
    assert "HF_HUB_OFFLINE" in err and TOKEN not in err


def test_bad_folder_and_repo_are_clear(run_dir, tmp_path, capsys):
    (run_dir / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    assert main(["--model", str(run_dir), "--repo", "me/faces", "--dry-run"]) == 2
    assert "safe_serialization=True" in capsys.readouterr().err
    assert main(["--model", str(tmp_path / "nope"), "--repo", "me/faces"]) == 2
    assert "no such folder" in capsys.readouterr().err
    assert main(["--model", str(run_dir), "--repo", "faces", "--dry-run"]) == 2
    assert "USER/NAME" in capsys.readouterr().err
