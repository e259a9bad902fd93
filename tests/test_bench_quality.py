"""benchmarks/bench_quality.py: its pure helpers, its checkpoint reader against the trainer's export, and a tiny
end-to-end run (real digits, real trainer, real samplers; CPU, well under a minute)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from tests._bench import load_benchmark

pytest.importorskip("sklearn", reason="the quality benchmark's digits ship with scikit-learn (test extra)")

bq = load_benchmark("bench_quality")


def test_split_is_fixed_disjoint_and_complete():
    tr, te = bq.split_indices(1797, 500, seed=0)
    assert len(te) == 500 and len(tr) == 1297
    assert not set(tr) & set(te) and set(tr) | set(te) == set(range(1797))
    tr2, te2 = bq.split_indices(1797, 500, seed=0)
    assert (te == te2).all() and (tr == tr2).all()
    with pytest.raises(ValueError, match="test-images"):
        bq.split_indices(10, 10)


def test_digits_to_u8_maps_0_16_to_0_255():
    out = bq.digits_to_u8(np.array([[0.0, 8.0, 16.0]]))
    assert out.dtype == np.uint8 and out.tolist() == [[0, 128, 255]]


def test_budget_steps_splits_the_budget_into_even_checkpoints():
    assert bq.budget_steps(28_800, 16, 6) == (1800, 300)
    assert bq.budget_steps(28_800, 32, 6) == (900, 150)  # same images seen at a bigger batch
    steps, every = bq.budget_steps(100, 16, 3)
    assert steps == every * 3 and steps * 16 >= 100


def test_variant_overrides_validate_and_carry_the_budget(tmp_path):
    over = bq.variant_overrides(
        "batch32", ["train.batch_size=32"], dataset_dir=tmp_path, run_dir=tmp_path / "r", images=9600, points=3, seed=1
    )
    cfg = bq.load_train_config(None, over)
    assert cfg.train.batch_size == 32 and cfg.train.max_steps * 32 == 9600
    assert cfg.train.checkpoint_every_steps * 3 == cfg.train.max_steps and cfg.train.checkpoints_keep == 3
    assert cfg.data.resolution == 8 and cfg.augment.enabled is False and cfg.train.seed == 1
    for name, (_, extra) in bq.VARIANTS.items():  # every variant is a valid trainer config
        bq.load_train_config(
            None,
            bq.variant_overrides(name, extra, dataset_dir=tmp_path, run_dir=tmp_path, images=960, points=2, seed=0),
        )


def test_combine_winners_takes_the_best_of_each_family_that_beats_defaults():
    finals = {"defaults": 10.0, "pred_v": 8.0, "pred_x0": 7.0, "cosine": 9.8, "lr1e-3": 12.0, "ema0.99": 6.0}
    fams = {n: f for n, (f, _) in bq.VARIANTS.items()}
    assert bq.combine_winners(finals, families=fams, threshold=0.05) == ["ema0.99", "pred_x0"]
    assert bq.combine_winners({"defaults": 1.0, "pred_v": 1.2}, families=fams) == []


def test_cheapest_within_and_first_reaching():
    rows = [
        {"scheduler": "ddim", "steps": 5, "fd": 20.0},
        {"scheduler": "ddim", "steps": 20, "fd": 10.5},
        {"scheduler": "unipc", "steps": 10, "fd": 10.9},
        {"scheduler": "unipc", "steps": 20, "fd": 10.1},
    ]
    assert bq.cheapest_within(rows, 10.0) == rows[2]  # 10 steps, within 10% of 10.0
    assert bq.cheapest_within(rows, 5.0) is None
    assert bq.first_reaching([(300, 9.0), (100, 20.0), (200, 12.0)], 12.0) == 200
    assert bq.first_reaching([(100, 20.0)], 12.0) is None


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    return bq.write_digits_dataset(tmp_path_factory.mktemp("q") / "digits", test=50)


def test_digits_dataset_is_the_curated_format(digits):
    import datasets

    dd = datasets.load_from_disk(str(digits))
    assert sorted(dd) == ["test", "train"] and len(dd["test"]) == 50 and len(dd["train"]) == 1747
    assert type(dd["train"].features["image"]).__name__ == "Image"
    u8 = bq.load_images(str(digits), split="train", resolution=8)
    assert tuple(u8.shape) == (1747, 3, 8, 8) and int(u8.max()) == 255


def test_checkpoint_reader_matches_the_trainers_ema_export(digits, tmp_path):
    import torch
    from diffusers import UNet2DModel

    run = tmp_path / "run"
    cfg = bq.load_train_config(
        None,
        bq.variant_overrides(
            "defaults", ["ema.decay=0.9"], dataset_dir=digits, run_dir=run, images=64, points=2, seed=0
        ),
    )
    assert bq.train(cfg) == 0
    got = [(step, [p.detach().clone() for p in unet.parameters()]) for step, unet in bq._checkpoint_unets(run)]
    assert [s for s, _ in got] == [2, 4]
    exported = UNet2DModel.from_pretrained(str(run / "pipeline"), subfolder="unet")
    for a, b in zip(got[-1][1], exported.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    assert any(not torch.equal(a, b) for a, b in zip(got[0][1], got[1][1], strict=True))  # two distinct points


def test_end_to_end_tiny_run_writes_curves_table_and_floor(tmp_path, capsys, keep_process_settings):
    out = tmp_path / "q"
    rc = bq.main(
        [
            "--out",
            str(out),
            "--variants",
            "defaults",
            "--images",
            "64",
            "--points",
            "2",
            "--no-combo",
            "--second-seed-within",
            "0",
            "--sampler-steps",
            "2",
            "--ddpm-steps",
            "4",
            "--num-images",
            "40",
        ]
    )
    assert rc == 0
    info = json.loads((out / "quality.json").read_text())
    assert 0 < info["floor"] < info["results"][0]["final_fd"]  # 4 training steps are far from real digits
    assert info["feature_net_test_accuracy"] > 0.8
    rows = list(csv.DictReader((out / "curves.csv").open()))
    assert [int(r["images_seen"]) for r in rows] == [32, 64]
    assert {r["scheduler"] for r in csv.DictReader((out / "samplers.csv").open())} == {"ddpm", *bq.SAMPLERS}
    for name in ("curves.png", "samplers.png"):
        assert (out / name).stat().st_size > 1000
    md = (out / "table.md").read_text()
    assert "not a face FID" in md and "Real-data floor" in md and "| defaults |" in md
    assert "real-data floor" in capsys.readouterr().out
