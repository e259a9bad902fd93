"""Damaged checkpoints: a half-deleted or cut-short latest checkpoint is skipped by
``--resume latest`` with a warning naming the bad file; an explicit damaged checkpoint is a one-line error that
names the file (not "does not fit this config"); rotation renames before it removes."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest

from tests.trainkit import TINY, make_dataset, reset_accelerate_state, run
from training.checkpoint import checkpoint_problem, latest_checkpoint, list_checkpoints

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    reset_accelerate_state()
    root = tmp_path_factory.mktemp("damage")
    cfg = root / "tiny.yaml"
    cfg.write_text(TINY)
    ds = make_dataset(root / "dataset")
    run_dir = root / "base"
    assert run(cfg, ds, run_dir, "train.max_steps=12", "train.checkpoints_keep=3") == 0
    assert [p.name for p in list_checkpoints(run_dir)] == ["checkpoint-4", "checkpoint-8", "checkpoint-12"]
    return cfg, ds, run_dir


def _copy(run_dir: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "run"
    shutil.copytree(run_dir, dst)
    return dst


def _cut(path: Path, frac: float) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * frac)])


def test_whole_checkpoints_have_no_problem(made):
    _, _, run_dir = made
    assert [checkpoint_problem(c) for c in list_checkpoints(run_dir)] == [None, None, None]


def test_each_kind_of_damage_is_named(made, tmp_path):
    _, _, run_dir = made
    ck = _copy(run_dir, tmp_path) / "checkpoints" / "checkpoint-12"
    (ck / "meta.json").write_text("{cut")
    assert checkpoint_problem(ck).startswith(f"{ck / 'meta.json'}: unreadable")
    (ck / "meta.json").write_text((run_dir / "checkpoints" / "checkpoint-12" / "meta.json").read_text())
    (ck / "custom_checkpoint_1.pkl").unlink()
    assert checkpoint_problem(ck) == f"{ck / 'custom_checkpoint_1.pkl'}: missing"
    shutil.copy(run_dir / "checkpoints" / "checkpoint-12" / "custom_checkpoint_1.pkl", ck)
    (ck / "optimizer.bin").write_bytes(b"")
    assert checkpoint_problem(ck) == f"{ck / 'optimizer.bin'}: empty"


@pytest.mark.parametrize("frac", [0.5, 0.0])
def test_resume_latest_skips_a_cut_short_latest_with_a_warning(made, tmp_path, caplog, frac):
    cfg, ds, run_dir = made
    rd = _copy(run_dir, tmp_path)
    bad = rd / "checkpoints" / "checkpoint-12" / "model.safetensors"
    _cut(bad, frac)
    assert "model.safetensors" in checkpoint_problem(bad.parent)
    with caplog.at_level(logging.WARNING):
        assert run(cfg, ds, rd, "train.max_steps=14", "train.checkpoints_keep=3", resume="latest") == 0
    warning = next(r.getMessage() for r in caplog.records if "skipping" in r.getMessage())
    assert str(bad) in warning and "checkpoint-8" in warning
    assert (rd / "checkpoints" / "abandoned-checkpoint-12").is_dir()  # set aside, not deleted
    assert latest_checkpoint(rd).name == "checkpoint-14"


def test_half_deleted_checkpoint_with_meta_is_not_complete(made, tmp_path, caplog):
    """What a kill during the old rotation (a plain rmtree) left: meta.json still there, weights gone."""
    cfg, ds, run_dir = made
    rd = _copy(run_dir, tmp_path)
    ck = rd / "checkpoints" / "checkpoint-12"
    (ck / "model.safetensors").unlink()
    (ck / "optimizer.bin").unlink()
    assert "no model weights" in checkpoint_problem(ck)
    with caplog.at_level(logging.WARNING):
        assert run(cfg, ds, rd, "train.max_steps=10", "train.checkpoints_keep=3", resume="latest") == 0
    assert any("checkpoint-12" in r.getMessage() and "skipping" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("name", ["optimizer.bin", "custom_checkpoint_0.pkl"])
def test_explicit_damaged_checkpoint_names_the_file(made, tmp_path, capsys, name):
    cfg, ds, run_dir = made
    rd = _copy(run_dir, tmp_path)
    bad = rd / "checkpoints" / "checkpoint-8" / name
    _cut(bad, 0.5)
    before = sorted(p.name for p in (rd / "checkpoints").iterdir())
    assert run(cfg, ds, rd, "train.max_steps=12", resume="checkpoint-8") == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(bad) in err and "damaged" in err and "does not fit" not in err
    assert sorted(p.name for p in (rd / "checkpoints").iterdir()) == before  # nothing renamed or removed


def test_every_checkpoint_damaged_is_an_error_not_a_fresh_start(made, tmp_path, capsys):
    cfg, ds, run_dir = made
    rd = _copy(run_dir, tmp_path)
    for ck in list_checkpoints(rd):
        _cut(ck / "model.safetensors", 0.3)
    assert run(cfg, ds, rd, "train.max_steps=12", resume="latest") == 2
    err = capsys.readouterr().err.strip()
    assert "every checkpoint" in err and "damaged" in err and len(err.splitlines()) == 1
    assert len(list_checkpoints(rd)) == 3


def test_rotation_renames_before_removing_and_the_next_save_clears_leftovers(made, tmp_path):
    cfg, ds, run_dir = made
    rd = _copy(run_dir, tmp_path)
    ck = rd / "checkpoints"
    shutil.copytree(ck / "checkpoint-4", ck / ".deleting-checkpoint-2")  # a kill mid-removal, new style
    assert [p.name for p in list_checkpoints(rd)] == ["checkpoint-4", "checkpoint-8", "checkpoint-12"]
    assert run(cfg, ds, rd, "train.max_steps=16", "train.checkpoints_keep=2", resume="latest") == 0
    assert sorted(p.name for p in ck.iterdir()) == ["checkpoint-12", "checkpoint-16"]
