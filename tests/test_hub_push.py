"""Every push of ours end to end against a stand-in of the Hub's HTTP API on loopback (tests/hub_standin.py).

The command lines run in subprocesses with ``HF_ENDPOINT`` pointing at the stand-in (offline mode unset there
only), so the requests are huggingface_hub's real ones; the tests assert on what the server received: the repo
and its visibility, the commit's files and bytes, a card the server's validation parses, the token only in the
``Authorization`` header and never in any line we printed or logged.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hub_standin import HubStandIn  # tests/ is on sys.path (rootdir conftest, no package)
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_StAnDiNtOkEn0123456789abcdefXYZ"
MODEL_FILES = {
    "README.md",
    "metrics.json",
    "model_index.json",
    "sample_grid.png",
    "scheduler/scheduler_config.json",
    "training_config.yaml",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
}


def hub_env(hub: HubStandIn, tmp_path: Path) -> dict:
    """The environment of a push to the stand-in: its endpoint, a token, no offline switch, no saved login."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "PTT_OFFLINE", "TRANSFORMERS_OFFLINE"))}
    env.update(HF_ENDPOINT=hub.url, HF_TOKEN=TOKEN, HF_HOME=str(tmp_path / "hf_home"), NO_PROXY="127.0.0.1",
               PYTHONPATH=str(ROOT), HF_HUB_DISABLE_TELEMETRY="1")  # fmt: skip
    return env


def run_cli(args: list[str], env: dict, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def assert_token_only_in_auth_header(hub: HubStandIn, *texts: str) -> None:
    writes = [r for r in hub.requests if r["method"] == "POST"]
    assert writes and all(r["headers"].get("authorization") == f"Bearer {TOKEN}" for r in writes)
    for text in (*texts, *hub.log_lines):
        assert TOKEN not in text


@pytest.fixture
def pipeline_dir(tmp_path) -> Path:
    """An exported pipeline (absolute local paths in its config and metrics) plus files that must never go up."""
    from diffusers import DDPMPipeline, DDPMScheduler, UNet2DModel

    blocks = {"down_block_types": ("DownBlock2D",) * 2, "up_block_types": ("UpBlock2D",) * 2}
    unet = UNet2DModel(sample_size=16, block_out_channels=(8, 16), layers_per_block=1, norm_num_groups=4, **blocks)
    pipe = tmp_path / "run" / "pipeline"
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(str(pipe), safe_serialization=True)
    home = tmp_path / "home" / "me"
    (pipe / "training_config.yaml").write_text(f"run_dir: {home}/runs/a\ndata:\n  dataset_dir: {home}/cur/dataset\n")
    (pipe / "metrics.json").write_text(json.dumps({"fid": 33.3, "kid": 0.01, "mode": "clean", "comparable": True,
                                                   "feature_extractor": "inception", "n_gen": 10, "n_ref": 10,
                                                   "ref": f"{home}/cur/dataset:test"}))  # fmt: skip
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(pipe / "sample_grid.png")
    (pipe / "optimizer.bin").write_bytes(b"adam state")
    (pipe / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"pickle")
    (pipe / "random_states_0.pkl").write_bytes(b"rng")
    return pipe


def test_ptt_push_reaches_the_hub_with_the_allow_list_a_valid_card_and_no_token_leak(pipeline_dir, tmp_path):
    from huggingface_hub import ModelCard

    with HubStandIn() as hub:
        r = run_cli(["-m", "evaluation.push", "--model", str(pipeline_dir.parent), "--repo", "me/faces", "--private",
                     "--dataset", "me/ptt-beauty-faces"], hub_env(hub, tmp_path))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert hub.repos[("model", "me/faces")]["visibility"] == "private"
    (commit,) = hub.commits
    assert commit["repo"] == "me/faces" and commit["repo_type"] == "model"
    assert set(commit["files"]) == MODEL_FILES  # never optimizer state, pickles or RNG states
    weights = "unet/diffusion_pytorch_model.safetensors"
    assert commit["files"][weights] == (pipeline_dir / weights).read_bytes()
    card = ModelCard(commit["files"]["README.md"].decode())
    assert card.data.datasets == ["me/ptt-beauty-faces"] and card.data.eval_results[0].metric_value == 33.3
    home = str(tmp_path / "home")
    for name in ("README.md", "training_config.yaml", "metrics.json"):
        assert home not in commit["files"][name].decode(), name  # no local paths go up
    assert "/api/validate-yaml" in hub.paths()  # the server checked the card's metadata before the commit
    assert f"{hub.url}/me/faces/commit/" in r.stdout
    assert_token_only_in_auth_header(hub, r.stdout, r.stderr)


def test_a_hub_error_is_one_line_with_the_token_scrubbed(pipeline_dir, tmp_path):
    with HubStandIn(fail_create_repo=(500, f"internal error, your header was Bearer {TOKEN}")) as hub:
        r = run_cli(
            ["-m", "evaluation.push", "--model", str(pipeline_dir), "--repo", "me/faces"], hub_env(hub, tmp_path)
        )
    err = r.stderr.strip()
    assert r.returncode == 2 and len(err.splitlines()) == 1 and err.startswith("ptt-push: error: push to me/faces")
    assert TOKEN not in r.stdout + r.stderr and not hub.commits


@pytest.mark.parametrize("kind", ["weights_link", "linked_folder"])
def test_ptt_push_refuses_symlinks_named_like_pipeline_files(pipeline_dir, tmp_path, kind, capsys):
    from evaluation.push import PushError, main, select_files

    secret = tmp_path / "token"
    secret.write_text(TOKEN)
    if kind == "weights_link":  # a link named like a weights shard, pointing at a token
        (pipeline_dir / "unet" / "diffusion_pytorch_model.x.safetensors").symlink_to(secret)
        name = "unet/diffusion_pytorch_model.x.safetensors"
    else:  # a whole folder that resolves outside the pipeline
        elsewhere = tmp_path / "elsewhere"
        (pipeline_dir / "scheduler").rename(elsewhere)
        (pipeline_dir / "scheduler").symlink_to(elsewhere, target_is_directory=True)
        name = "scheduler"
    with pytest.raises(PushError, match=f"{name} is a symbolic link"):
        select_files(pipeline_dir)
    with HubStandIn() as hub:
        env = hub_env(hub, tmp_path)
        r = run_cli(["-m", "evaluation.push", "--model", str(pipeline_dir), "--repo", "me/faces"], env)
    assert r.returncode == 2 and "symbolic link" in r.stderr and not hub.requests  # refused before any request
    assert main(["--model", str(pipeline_dir), "--repo", "me/faces", "--dry-run"]) == 2
    assert "symbolic link" in capsys.readouterr().err


def test_a_link_off_the_allow_list_is_skipped_and_listed(pipeline_dir, tmp_path):
    from evaluation.push import select_files

    (tmp_path / "notes.txt").write_text("x")
    (pipeline_dir / "notes.txt").symlink_to(tmp_path / "notes.txt")
    upload, skipped = select_files(pipeline_dir)
    assert "notes.txt" not in upload and "notes.txt (symbolic link)" in skipped


# -- ptt-curate push ------------------------------------------------------------------------------------------------


@pytest.fixture
def curated(tmp_path) -> Path:
    """A curated output folder: a real DatasetDict and a report naming local absolute paths."""
    from tests.crops import write_crops_dataset

    out = tmp_path / "home" / "me" / "curated"
    write_crops_dataset(out / "dataset", n=10, size=16, test=2)
    report = {
        "version": 1, "feed": str(tmp_path / "home/me/feed.jsonl"), "images": str(tmp_path / "home/me/images"),
        "out": str(out), "dataset": str(out / "dataset"), "posts": 3,
        "photos": {"in": 5, "unique": 5}, "faces": {"detected": 12, "kept": 10, "train": 8, "test": 2},
        "rejected": {"blur": 2}, "thresholds": {"min_blur_var": 50.0},
        "review": {"path": str(out / "review.json")}, "previews": {"kept": str(out / "previews" / "kept.png")},
        "photo_rejects": [{"path": str(tmp_path / "home/me/images/full/ab.jpg"), "reason": "decode_error"}],
    }  # fmt: skip
    (out / "curation_report.json").write_text(json.dumps(report))
    return out


def test_ptt_curate_push_uploads_parquet_a_dataset_card_with_dataset_info_and_a_portable_report(curated, tmp_path):
    import pyarrow.parquet as pq
    from huggingface_hub import DatasetCard

    with HubStandIn() as hub:
        r = run_cli(["-m", "curation.cli", "push", "--repo", "me/ptt-faces-64", str(curated)], hub_env(hub, tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    assert hub.repos[("dataset", "me/ptt-faces-64")]["visibility"] == "public"
    (commit,) = hub.commits
    assert commit["repo_type"] == "dataset" and commit["summary"] == "ptt-curate push"
    assert set(commit["files"]) == {"README.md", "curation_report.json", "data/train-00000-of-00001.parquet",
                                    "data/test-00000-of-00001.parquet"}  # fmt: skip
    train = pq.read_table(io.BytesIO(commit["files"]["data/train-00000-of-00001.parquet"]))
    assert train.num_rows == 8 and train.column("image")[0].as_py()["bytes"]  # images embedded, not local paths
    card = DatasetCard(commit["files"]["README.md"].decode())
    info = card.data.dataset_info
    assert {s["name"]: s["num_examples"] for s in info["splits"]} == {"train": 8, "test": 2}
    assert info["features"] == [{"name": "image", "dtype": "image"}]
    assert info["download_size"] == sum(len(v) for k, v in commit["files"].items() if k.endswith(".parquet"))
    assert card.data.configs[0]["data_files"][0] == {"split": "train", "path": "data/train-*"}
    assert card.data.license == "other" and card.data.size_categories == ["n<1K"]
    uploaded = commit["files"]["curation_report.json"].decode()
    report = json.loads(uploaded)
    assert str(tmp_path) not in uploaded and str(tmp_path) not in commit["files"]["README.md"].decode()
    assert (
        report["out"] == "." and report["dataset"] == "dataset" and report["previews"]["kept"] == "previews/kept.png"
    )
    assert report["feed"] == "feed.jsonl" and report["photo_rejects"][0]["path"] == "ab.jpg"
    assert f"{hub.url}/datasets/me/ptt-faces-64" in r.stdout
    assert_token_only_in_auth_header(hub, r.stdout, r.stderr)


def test_a_dataset_card_round_trips_through_dataset_card():
    from datasets import DatasetInfo, Features, SplitDict, SplitInfo, Value
    from huggingface_hub import DatasetCard

    from curation.push import build_card, card_data

    info = DatasetInfo(features=Features({"face_id": Value("string")}), splits=SplitDict(), download_size=10,
                       dataset_size=20)  # fmt: skip
    info.splits.add(SplitInfo(name="train", num_bytes=20, num_examples=3))
    data = card_data({"faces": {"kept": 3}}, info)
    back = DatasetCard(build_card({"faces": {"kept": 3}}, "me/x", data)).data
    assert back.to_dict() == data.to_dict()
    assert back.dataset_info["splits"] == [{"name": "train", "num_bytes": 20, "num_examples": 3}]


@pytest.mark.parametrize("what", ["report", "arrow"])
def test_ptt_curate_push_refuses_symlinks(curated, tmp_path, what):
    from curation.push import PushError, stage_upload

    secret = tmp_path / "token"
    secret.write_text(TOKEN)
    if what == "report":
        (curated / "curation_report.json").unlink()
        (curated / "curation_report.json").symlink_to(secret)
    else:
        (curated / "dataset" / "train" / "notes.txt").symlink_to(secret)
    with pytest.raises(PushError, match="symbolic link"):
        stage_upload(curated, tmp_path / "stage", repo_id="me/x")
    with HubStandIn() as hub:
        r = run_cli(["-m", "curation.cli", "push", "--repo", "me/x", str(curated)], hub_env(hub, tmp_path))
    assert r.returncode == 2 and "symbolic link" in r.stderr and not hub.commits and TOKEN not in r.stderr


def test_a_model_trained_on_a_pushed_dataset_links_it_from_its_card(curated, pipeline_dir, tmp_path):
    from huggingface_hub import ModelCard

    (pipeline_dir / "training_config.yaml").write_text(f"data:\n  dataset_dir: {curated / 'dataset'}\n")
    with HubStandIn() as hub:
        env = hub_env(hub, tmp_path)
        r = run_cli(["-m", "curation.cli", "push", "--repo", "me/ptt-faces-64", "--private", str(curated)], env)
        assert r.returncode == 0, r.stderr[-3000:]
        record = json.loads((curated / "hub_push.json").read_text())
        assert record["repo_id"] == "me/ptt-faces-64" and record["private"] is True
        r = run_cli(["-m", "evaluation.push", "--model", str(pipeline_dir), "--repo", "me/faces"], env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert hub.repos[("dataset", "me/ptt-faces-64")]["visibility"] == "private"
    card = ModelCard(hub.commits[-1]["files"]["README.md"].decode())
    assert card.data.datasets == ["me/ptt-faces-64"]
