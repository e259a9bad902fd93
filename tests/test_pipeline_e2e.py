"""The whole road at tiny size, through the real command lines: crawl -> curate -> train -> sample -> FID.

Each stage reads only the files the stage before it wrote (docs/contracts.md), so this test is the check that
the contracts fit together. It is the `make demo` road with fewer steps and a smaller UNet.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from scrapy_ptt.mirror import serve_mirror

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _run(cmd: list[str], tmp_path: Path, name: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONUNBUFFERED="1")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    (tmp_path / f"{name}.log").write_text(proc.stdout + proc.stderr, encoding="utf-8")
    assert proc.returncode == 0, f"{name} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.mark.slow
def test_whole_pipeline_through_the_command_lines(tmp_path):
    import datasets
    from diffusers import DDPMPipeline
    from PIL import Image

    feed, images, curated = tmp_path / "feed.jsonl", tmp_path / "images", tmp_path / "curated"
    with serve_mirror() as base_url:
        _run(
            [
                str(BIN / "scrapy"),
                "crawl",
                "ptt_beauty",
                "-a",
                "start_date=2024-01-01",
                "-a",
                "end_date=2024-01-31",
                "-a",
                "keyword=正妹",
                "-s",
                f"PTT_BASE_URL={base_url}",
                "-s",
                f"IMAGES_STORE={images}",
                "-s",
                "PTT_ALLOW_PRIVATE_HOSTS=True",
                "-s",
                f"PTT_IMGUR_BASE={base_url}/imgur",
                "-s",
                "AUTOTHROTTLE_ENABLED=False",
                "-s",
                "DOWNLOAD_DELAY=0",
                "-s",
                "LOG_LEVEL=WARNING",
                "-O",
                str(feed),
            ],
            tmp_path,
            "crawl",
        )
    posts = [json.loads(line) for line in feed.read_text(encoding="utf-8").splitlines()]
    assert posts and all(p["date"].startswith("01") for p in posts)
    downloaded = [img for p in posts for img in p.get("images", [])]
    assert downloaded and all((images / img["path"]).is_file() for img in downloaded)

    _run(
        [
            str(BIN / "ptt-curate"),
            "--config",
            "configs/curation.yaml",
            f"feed={feed}",
            f"images={images}",
            f"out={curated}",
        ],
        tmp_path,
        "curate",
    )
    dd = datasets.load_from_disk(str(curated / "dataset"))
    assert set(dd) == {"train", "test"} and len(dd["train"]) >= 2 and len(dd["test"]) >= 1
    face = dd["train"][0]["image"]
    assert face.size == (64, 64) and face.mode == "RGB"
    report = json.loads((curated / "curation_report.json").read_text(encoding="utf-8"))
    assert report["faces"]["kept"] == len(dd["train"]) + len(dd["test"])

    run_dir = tmp_path / "run"
    _run(
        [
            sys.executable,
            "training/train.py",
            "--config",
            "configs/train/demo.yaml",
            f"data.dataset_dir={curated / 'dataset'}",
            f"run_dir={run_dir}",
            "train.max_steps=6",
            "train.batch_size=4",
            "train.log_every_steps=2",
            "train.checkpoint_every_steps=3",
            "train.sample_every_steps=6",
            "train.sample_num_images=2",
            "train.sample_steps=2",
            "eval.heldout_every_steps=3",
            "model.block_out_channels=[8,16,16]",
            "model.norm_num_groups=4",
        ],
        tmp_path,
        "train",
    )
    assert (run_dir / "config.yaml").is_file() and (run_dir / "metrics.jsonl").is_file()
    pipe = DDPMPipeline.from_pretrained(str(run_dir / "pipeline"))
    out = pipe(batch_size=1, num_inference_steps=2, output_type="np").images
    assert out.shape == (1, 64, 64, 3) and np.isfinite(out).all()

    samples = tmp_path / "samples"
    _run(
        [
            str(BIN / "ptt-sample"),
            "--model",
            str(run_dir / "pipeline"),
            "--num-images",
            "3",
            "--out",
            str(samples),
            "--scheduler",
            "ddim",
            "--steps",
            "2",
            "--no-progress",
        ],
        tmp_path,
        "sample",
    )
    files = sorted(p.name for p in samples.glob("*.png"))
    assert files == ["00001.png", "00002.png", "00003.png"]
    assert Image.open(samples / "00001.png").size == (64, 64)

    fid_json = tmp_path / "fid.json"
    _run(
        [
            str(BIN / "ptt-fid"),
            "--gen",
            str(samples),
            "--ref",
            f"{curated / 'dataset'}:test",
            "--substitute",
            "--out-json",
            str(fid_json),
        ],
        tmp_path,
        "fid",
    )
    fid = json.loads(fid_json.read_text(encoding="utf-8"))
    assert fid["comparable"] is False and np.isfinite(fid["fid"]) and fid["n_gen"] == 3
    assert fid["n_ref"] == len(dd["test"])


@pytest.mark.parametrize(
    ("cmd", "needle"),
    [
        (["ptt-curate", "feed=/nonexistent/feed.jsonl", "images=/nonexistent", "out=/tmp/x"], "feed.jsonl"),
        (
            [
                sys.executable,
                "training/train.py",
                "--config",
                "configs/train/demo.yaml",
                "data.dataset_dir=/nonexistent/ds",
            ],
            "/nonexistent/ds",
        ),
        ([sys.executable, "training/train.py", "--config", "configs/train/demo.yaml", "optim.lrr=1"], "optim.lrr"),
        (["ptt-sample", "--model", "/nonexistent/pipe", "--num-images", "1", "--out", "/tmp/x"], "/nonexistent/pipe"),
        (["ptt-fid", "--gen", "/nonexistent/gen", "--ref", "/nonexistent/ref", "--substitute"], "/nonexistent/gen"),
    ],
)
def test_missing_inputs_end_with_a_short_error_naming_them(cmd, needle):
    if not cmd[0].startswith("/"):
        cmd = [str(BIN / cmd[0]), *cmd[1:]]
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    assert needle in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
