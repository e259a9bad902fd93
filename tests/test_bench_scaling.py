"""bench_scaling's pure parts: which runs it plans, the trainer keys it passes, and the second-seed rule."""

from __future__ import annotations

import pytest

from benchmarks import bench_scaling as bs
from training.config import derived_figures, load_train_config


def test_the_reference_batch_runs_once_and_every_other_batch_once_per_rule():
    plan = bs.runs([16, 64], ["none", "sqrt", "linear"])
    assert plan == [("b16-none", 16, "none"), ("b64-none", 64, "none"), ("b64-sqrt", 64, "sqrt"),
                    ("b64-linear", 64, "linear")]  # fmt: skip


def test_the_overrides_drive_the_trainers_own_scaling():
    cfg = load_train_config(None, ["data.dataset_dir=x", "train.max_steps=10", *bs.overrides(64, "sqrt")])
    assert cfg.optim.lr_scaling == "sqrt" and cfg.optim.reference_batch == 16
    assert derived_figures(cfg, 1000, 1)["lr"].startswith("0.002 (sqrt scaling of 0.001 from batch 16 to 64)")


def test_second_seeds_go_to_the_runs_within_the_tolerance_of_the_best():
    finals = {"a": 60.0, "b": 65.0, "c": 67.0}
    assert bs.best_within(finals, 0.10) == ["a", "b"]
    assert bs.best_within(finals, 0.0) == ["a"]


def test_the_table_has_one_row_per_regime_batch_and_rule_with_the_seed_mean():
    rows = [
        {"regime": "steps", "batch_size": 64, "rule": "sqrt", "final_fd": fd, "budget_images": 9600, "steps": 150,
         "train_s": 1.0}
        for fd in (60.0, 70.0)
    ]  # fmt: skip
    md = bs.table(rows, floor=3.2)
    assert "| steps | 64 | sqrt | 0.002 | 9,600 | 150 | 60.000 / 70.000 | 65.000 |" in md
    assert md.count("\n| steps |") == 1  # one data row for the two seeds


if __name__ == "__main__":
    pytest.main([__file__])
