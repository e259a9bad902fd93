"""benchmarks/bench_peers_quality.py: its equal-wall-clock arithmetic and table, the one-line error when the peer is
missing and may not be installed, and a tiny end-to-end run of both trainers (real digits, our real trainer, the
real peer; CPU, about a minute). Offline: the end-to-end test skips when the peer was never installed."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from tests._bench import load_benchmark

pytest.importorskip("sklearn", reason="the quality benchmark's digits ship with scikit-learn (test extra)")

ROOT = Path(__file__).resolve().parents[1]


bpq = load_benchmark("bench_peers_quality")

OURS = {
    "name": "ours",
    "params_m": 1.06,
    "train_s": 100.0,
    "curve": [
        {"images_seen": 4800, "fd": 900.0, "train_s": 50.0},
        {"images_seen": 9600, "fd": 800.0, "train_s": 100.0},
    ],
}
PEER = {
    "name": "peer",
    "params_m": 2.44,
    "train_s": 250.0,
    "curve": [
        {"images_seen": 4800, "fd": 700.0, "train_s": 90.0},
        {"images_seen": 9600, "fd": 300.0, "train_s": 250.0},
    ],
}


def test_equal_wall_clock_takes_the_latest_checkpoint_within_the_faster_trainers_time():
    assert bpq.at_equal_wall_clock(PEER["curve"], 100.0)["fd"] == 700.0
    assert bpq.at_equal_wall_clock(PEER["curve"], 89.0) is None
    rows = {r["name"]: r for r in bpq.comparison_rows([OURS, PEER])}
    assert rows["ours"]["equal_s"] == rows["peer"]["equal_s"] == 100.0
    assert (rows["ours"]["fd_at_equal_s"], rows["ours"]["images_at_equal_s"]) == (800.0, 9600)
    assert (rows["peer"]["fd_at_equal_s"], rows["peer"]["images_at_equal_s"]) == (700.0, 4800)
    assert rows["peer"]["final_fd"] == 300.0


def test_table_has_one_column_per_checkpoint_and_names_the_proxy():
    md = bpq.table([OURS, PEER], floor=3.2)
    assert "not a face FID" in md and "**3.200**" in md
    assert "| FD at 4,800 images | FD at 9,600 images |" in md
    assert "| peer | 2.44 M | 700.00 (90 s) | 300.00 (250 s) | 250 |" in md
    assert "| peer | 700.00 | 4800 |" in md  # at equal wall-clock


def test_missing_peer_without_install_is_one_error_line(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "peer_pkgs" not in p])
    monkeypatch.delitem(sys.modules, "denoising_diffusion_pytorch", raising=False)
    if importlib.util.find_spec("denoising_diffusion_pytorch") is not None:
        pytest.skip("the peer is installed in this environment itself")
    with pytest.raises(SystemExit) as exc:
        bpq.import_peer(tmp_path / "empty", install=False)
    msg = str(exc.value)
    assert msg.startswith("error: the peer is not installed") and "\n" not in msg
    assert "pip install" in msg and "denoising-diffusion-pytorch==" in msg and "--no-deps" in msg


def test_pip_that_cannot_reach_the_registry_is_one_error_line(tmp_path, monkeypatch):
    """The automatic install, with pip kept off every index (as offline): one ``error:`` line with the command."""
    monkeypatch.setattr(sys, "path", [p for p in sys.path if "peer_pkgs" not in p])
    monkeypatch.delitem(sys.modules, "denoising_diffusion_pytorch", raising=False)
    if importlib.util.find_spec("denoising_diffusion_pytorch") is not None:
        pytest.skip("the peer is installed in this environment itself")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "no_wheels"))
    with pytest.raises(SystemExit) as exc:
        bpq.import_peer(tmp_path / "pkgs", install=True)
    msg = str(exc.value)
    assert msg.startswith("error: pip could not install the peer into") and "\n" not in msg
    assert "pip install --disable-pip-version-check -q --no-deps --target" in msg
    assert not (tmp_path / "pkgs" / "denoising_diffusion_pytorch").exists()


def test_fast_recipe_is_the_fast_presets_recipe(tmp_path):
    """The recipe the benchmark trains as ``fast`` is what configs/train/fast.yaml sets (no drift)."""
    over = bpq.bq.variant_overrides(
        "fast", bpq.ours_recipes()["fast"], dataset_dir=tmp_path, run_dir=tmp_path, images=960, points=2, seed=0
    )
    ours = bpq.bq.load_train_config(None, over)
    preset = bpq.bq.load_train_config(ROOT / "configs" / "train" / "fast.yaml", [f"data.dataset_dir={tmp_path}"])
    for part, key in [
        ("noise", "prediction_type"),
        ("noise", "beta_schedule"),
        ("loss", "min_snr_gamma"),
        ("optim", "lr"),
        ("optim", "lr_warmup_steps"),
    ]:
        assert getattr(getattr(ours, part), key) == getattr(getattr(preset, part), key), f"{part}.{key}"
    assert bpq.ours_recipes()["defaults"] == []


def _peer_installed() -> bool:
    return (bpq.DEFAULT_PEER_PKGS / "denoising_diffusion_pytorch").is_dir() or (
        importlib.util.find_spec("denoising_diffusion_pytorch") is not None
    )


@pytest.mark.skipif(
    not _peer_installed(),
    reason="the peer is not installed: run `python benchmarks/bench_peers_quality.py` once where PyPI is reachable "
    "(it pip-installs denoising-diffusion-pytorch into bench_out/peer_pkgs)",
)
def test_end_to_end_tiny_run_scores_both_trainers(tmp_path, keep_process_settings):
    out = tmp_path / "pq"
    argv = ["--out", str(out), "--images", "64", "--points", "2", "--num-images", "40", "--curve-steps", "4"]
    assert bpq.main([*argv, "--peer-dim", "8", "--no-install"]) == 0
    info = json.loads((out / "peers_quality.json").read_text())
    names = ["ptt-faces (defaults)", "ptt-faces (fast)", "denoising-diffusion-pytorch (dim 8)"]
    assert [r["name"] for r in info["results"]] == names
    for r in info["results"]:
        assert [p["images_seen"] for p in r["curve"]] == [32, 64]
        assert all(p["fd"] > info["floor"] > 0 for p in r["curve"])  # 4 steps are far from real digits
        assert 0 < r["curve"][0]["train_s"] <= r["curve"][1]["train_s"] == r["train_s"]
    assert len(list((out / "digits_png").glob("*.png"))) == 1797 - 40  # the train split
    assert "denoising-diffusion-pytorch (dim 8)" in (out / "table.md").read_text()
