"""The benchmark scripts run end to end at a tiny size and report what they claim (figures are for BENCHMARKS.md,
never asserted here: speed is measured by the benchmarks, not by timed tests)."""

from __future__ import annotations

import dataclasses
import json

import pytest

from tests._bench import load_benchmark


@pytest.fixture(scope="module")
def bench_train():
    return load_benchmark("bench_train")


@pytest.mark.parametrize("bf16", [True, False])
def test_each_ablation_switches_exactly_one_feature(bench_train, bf16):
    full = bench_train.Settings(bf16=bf16, channels_last=True)
    variants = bench_train.ablations(full, with_compile=True, bf16_supported=True)
    assert variants[0] == ("ours", full)
    names = [n for n, _ in variants]
    assert len(set(names)) == len(names)
    switched = set()
    for name, s in variants[1:]:
        diff = [f.name for f in dataclasses.fields(s) if getattr(s, f.name) != getattr(full, f.name)]
        assert len(diff) == 1, (name, diff)
        switched.update(diff)
    assert switched == {f.name for f in dataclasses.fields(full)}  # every feature is measured once


def test_no_bf16_variant_where_the_device_has_no_bf16(bench_train):
    full = bench_train.Settings(bf16=False, channels_last=False, augment=False)
    names = [n for n, _ in bench_train.ablations(full, with_compile=False, bf16_supported=False)]
    assert not any("bf16" in n or "compile" in n or "augmentation" in n for n in names)


def test_bench_train_ablation_runs_and_writes_every_variant(bench_train, tmp_path):
    out = tmp_path / "train.json"
    argv = ["--presets", "demo", "--batch", "2", "--steps", "1", "--rounds", "1", "--warmup", "0", "--ablate"]
    assert bench_train.main([*argv, "--cpu-bf16", "off", "--no-isolated-memory", "--out", str(out)]) == 0
    res = json.loads(out.read_text())["results"][0]
    names = [v["variant"] for v in res["variants"]]
    assert names[0].startswith("baseline") and names[1] == "ours"
    assert "ours, per-sample PIL DataLoader" in names and "ours + loss.item() every step" in names
    assert all(v["images_per_s"] > 0 and len(v["rounds"]) == 1 for v in res["variants"])
    assert res["ours_settings"]["bf16"] is False  # --cpu-bf16 off is obeyed
    assert res["speedup"] == pytest.approx(res["ours_images_per_s"] / res["baseline_images_per_s"], rel=1e-2)
    assert res["parameters"] == 637_043 and res["unet_train_gflops_per_image"] > 0


def test_bench_train_measures_each_variants_memory_alone_in_a_process(bench_train, tmp_path):
    import numpy as np

    ballast = np.ones(1536 * 2**20, dtype=np.uint8)  # 1.5 GB resident in this process: not the variants' memory
    out = tmp_path / "train.json"
    argv = ["--presets", "demo", "--batch", "2", "--steps", "1", "--rounds", "1", "--warmup", "0"]
    assert bench_train.main([*argv, "--cpu-bf16", "off", "--out", str(out)]) == 0
    del ballast
    res = json.loads(out.read_text())["results"][0]
    assert res["peak_mem_kind"] == "process peak RSS above the imports"
    assert [v["variant"] for v in res["variants"]] == ["baseline (diffusers example)", "ours"]
    for v in res["variants"]:  # each one's own: activations and state of a 0.64 M-parameter UNet, not gigabytes
        assert 1 < v["peak_mem_mb"] < 1000, v


def test_bench_sample_counts_unet_evaluations(tmp_path):
    bench_sample = load_benchmark("bench_sample")
    out = tmp_path / "sample.json"
    argv = ["--preset", "tiny", "--cpu-batch", "2", "--cpu-steps", "2,3", "--schedulers", "ddpm,unipc"]
    assert bench_sample.main([*argv, "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    rows = res["cpu"]["rows"]
    assert [(r["scheduler"], r["steps"], r["unet_evals"]) for r in rows] == [
        ("ddpm", 2, 2),
        ("unipc", 2, 2),
        ("ddpm", 3, 3),
        ("unipc", 3, 3),
    ]
    assert res["gpu"].startswith("not measured")


def test_bench_fid_times_both_forms_and_they_agree(tmp_path, capsys):
    bench = load_benchmark("bench_fid")
    out = tmp_path / "fid.json"
    assert bench.main(["--dim", "48", "--sizes", "10:30", "60:60", "--repeats", "1", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [(r["n_gen"], r["n_ref"], r["dim"]) for r in rows] == [(10, 30, 48), (60, 60, 48)]
    for r in rows:
        assert r["ours_s"] > 0 and r["clean_fid_s"] > 0 and r["ours"] > 0
        assert r["rel_diff"] < 1e-6  # the same figure as clean-fid's sqrtm form, rank-deficient (10 < 48) or not
        assert r["kid_ours_s"] > 0 and r["kid_clean_fid_s"] > 0 and r["kid_ours"] > 0
    # whole sets (60:60): one subset, a permutation for clean-fid too, so the KIDs agree (to its float32 round-off)
    assert rows[1]["kid_ours"] == pytest.approx(rows[1]["kid_clean_fid"], rel=1e-4)
    assert "| 10:30 | 48 |" in capsys.readouterr().out
