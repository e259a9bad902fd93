"""ptt-push: the allow-list (never optimizer state or checkpoints), the card, token handling, offline errors.

The Hub is unreachable here, so the real-upload test replaces ``huggingface_hub.HfApi`` with a recorder and checks
what ``ptt-push`` hands it: the repo, its visibility and the exact commit operations (paths and bytes).
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


class RecordingApi:
    calls: list = []

    def __init__(self, token=None, **kw):
        RecordingApi.calls.append(("init", token))

    def create_repo(self, repo_id, *, private=None, exist_ok=False, repo_type=None, **kw):
        RecordingApi.calls.append(("create_repo", repo_id, private, exist_ok, repo_type))
        return f"https://huggingface.co/{repo_id}"

    def create_commit(self, repo_id, operations, *, commit_message, repo_type=None, **kw):
        ops = {}
        for op in operations:
            src = op.path_or_fileobj
            ops[op.path_in_repo] = src if isinstance(src, bytes) else open(src, "rb").read()
        RecordingApi.calls.append(("create_commit", repo_id, ops))
        return type("Info", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()


def test_push_sends_allow_listed_files_and_a_fresh_card_without_leaking_the_token(
    run_dir, capsys, caplog, monkeypatch
):
    import huggingface_hub

    RecordingApi.calls = []
    monkeypatch.setattr(huggingface_hub, "HfApi", RecordingApi)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    rc = main(["--model", str(run_dir / "pipeline"), "--repo", "me/faces", "--private"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert RecordingApi.calls[0] == ("init", TOKEN)
    assert RecordingApi.calls[1] == ("create_repo", "me/faces", True, True, "model")
    _, repo, ops = RecordingApi.calls[2]
    assert repo == "me/faces" and sorted(ops) == sorted(EXPECTED + ["README.md"])
    pipe = run_dir / "pipeline"
    assert ops["unet/diffusion_pytorch_model.safetensors"] == (pipe / "unet/diffusion_pytorch_model.safetensors"
                                                               ).read_bytes()  # fmt: skip
    card = ops["README.md"].decode()
    assert card.startswith("---\n") and "| FID | 33.300 |" in card and "![samples](sample_grid.png)" in card
    assert "commit/abc" in captured.out
    assert TOKEN not in captured.out + captured.err + caplog.text


def test_hub_error_is_one_line_with_the_token_scrubbed(run_dir, capsys, monkeypatch):
    import huggingface_hub

    class FailingApi(RecordingApi):
        def create_repo(self, repo_id, **kw):
            raise ConnectionError(f"could not reach hub with Authorization: Bearer {TOKEN}\nmore")

    monkeypatch.setattr(huggingface_hub, "HfApi", FailingApi)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    rc = main(["--model", str(run_dir), "--repo", "me/faces"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "ConnectionError" in err and "***" in err
    assert TOKEN not in err


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
