"""benchmarks/bench_samplers.py: choosing the default sampler, the rank correlation, and a tiny end-to-end run
(real digits, real trainer, real samplers; CPU, about a minute)."""

from __future__ import annotations

import json

import pytest

from tests._bench import load_benchmark

pytest.importorskip("sklearn", reason="the quality benchmark's digits ship with scikit-learn (test extra)")

bs = load_benchmark("bench_samplers")


def _row(model, sampler, steps, evaluations, fd):
    ref = (sampler, steps) == ("ddpm", 1000)
    return {"model": model, "sampler": sampler, "steps": steps, "evaluations": evaluations, "fd": fd, "reference": ref}


def test_pick_default_is_the_cheapest_within_tolerance_on_every_model():
    rows = [_row("a", "ddpm", 1000, 1000, 10.0), _row("b", "ddpm", 1000, 1000, 20.0)]
    rows += [_row("a", "fast", 10, 10, 10.4), _row("b", "fast", 10, 10, 22.0)]  # b: +10%, fails
    rows += [_row("a", "fast", 20, 20, 10.4), _row("b", "fast", 20, 20, 20.9)]  # both within 5%
    rows += [_row("a", "good", 25, 25, 9.0), _row("b", "good", 25, 25, 19.0)]  # better, but dearer
    rows += [_row("a", "huge", 60, 60, 5.0), _row("b", "huge", 60, 60, 5.0)]  # over 50 evaluations
    rows += [_row("a", "ddpm", 15, 15, 12.0), _row("b", "ddpm", 15, 15, 24.0)]  # fewer DDPM steps: a candidate
    got = bs.pick_default(rows)
    assert (got["sampler"], got["steps"], got["met"]) == ("fast", 20, True)
    assert got["worst_ratio"] == pytest.approx(1.045)
    # none within 5%: the smallest worst-model ratio, reported as missed
    miss = bs.pick_default([r for r in rows if r["sampler"] != "fast" and r["sampler"] != "good"] + [
        _row("a", "x", 10, 10, 11.0), _row("b", "x", 10, 10, 21.6), _row("a", "y", 15, 15, 10.8),
        _row("b", "y", 15, 15, 22.4)])  # fmt: skip
    assert (miss["sampler"], miss["met"]) == ("x", False) and miss["worst_ratio"] == pytest.approx(1.10)


def test_spearman_rank_correlation():
    assert bs.spearman([1.0, 2.0, 3.0, 4.0], [10.0, 20.0, 30.0, 40.0]) == pytest.approx(1.0)
    assert bs.spearman([1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert bs.spearman([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0]) == pytest.approx(0.8)


@pytest.mark.slow
def test_end_to_end_tiny_run_writes_table_default_and_rank_check(tmp_path, caplog, keep_process_settings):
    out = tmp_path / "s"
    args = ["--out", str(out), "--images", "64", "--points", "2", "--num-images", "20", "--rank-images", "10",
            "--speed-images", "2", "--batch-size", "20", "--evals", "2", "--samplers", "dpm2_sde", "heun_karras",
            "--ddpm-steps", "4"]  # fmt: skip
    assert bs.main(args) == 0
    info = json.loads((out / "samplers.json").read_text())
    assert {r["model"] for r in info["rows"]} == {"x0", "x0_early", "eps"}
    assert info["x0_early_step"] == 2 and info["final_step"] == 4
    heun = [r for r in info["rows"] if r["sampler"] == "heun_karras"]
    assert {(r["steps"], r["evaluations"]) for r in heun} == {(1, 1)}  # Heun: 2 evaluations a step, 1 on the last
    assert info["default"]["sampler"] in ("dpm2_sde", "heun_karras") and info["default"]["evaluations"] <= 2
    assert [p["step"] for p in info["rank"]["points"]] == [2, 4] and -1 <= info["rank"]["spearman"] <= 1
    assert [r["sampler"] for r in info["speed"]] == ["ddpm", info["default"]["sampler"]]
    md = (out / "samplers.md").read_text()
    assert "not a face FID" in md and "real-data floor" in md and "| dpm2_sde |" in md and "Spearman" in md
    assert (out / "samplers.png").stat().st_size > 1000
    # a second run reuses the trained models and the scored rows (nothing is trained or sampled again)
    caplog.clear()
    with caplog.at_level("INFO", logger="bench_samplers"):
        assert bs.main([*args, "--reuse", "--no-speed"]) == 0
    text = caplog.text
    assert "x0: reusing" in text and "eps: reusing" in text and " FD " not in text
    assert json.loads((out / "samplers.json").read_text())["rows"] == info["rows"]
