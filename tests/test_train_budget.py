"""The trainer with a time budget and an automatic batch, on the CPU with a tiny real UNet (an injected clock: no
timed tests)."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from training import budget as budget_mod
from training import train as train_mod
from training.config import load_train_config

pytestmark = pytest.mark.usefixtures("fresh_accelerate_state")


@pytest.fixture
def fake_clock(monkeypatch):
    """A clock that moves ``tick`` seconds each time it is read."""
    clock = SimpleNamespace(now=0.0, tick=0.5)

    def read():
        clock.now += clock.tick
        return clock.now

    monkeypatch.setattr(budget_mod, "CLOCK", read)
    return clock


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def run(cfg, ds, run_dir, *extra, resume=None):
    args = ["--config", str(cfg), f"data.dataset_dir={ds}", f"run_dir={run_dir}", "train.log_every_steps=5",
            "train.checkpoint_every_steps=10", *extra]  # fmt: skip
    return train_mod.main(args + (["--resume", resume] if resume else []))


def test_a_time_budget_plans_the_steps_ends_the_lr_decay_and_finishes_inside_it(tiny_cfg, ds16, tmp_path, fake_clock):
    rd = tmp_path / "run"
    assert run(tiny_cfg, ds16, rd, "train.max_steps=null", "train.time_budget=100") == 0
    r = rows(rd)
    plans = [x for x in r if "budget_planned_steps" in x]
    assert plans[0]["step"] == budget_mod.SKIP_STEPS + budget_mod.WARMUP_STEPS  # the first plan ends the warm-up
    assert len(plans) >= 3  # and one at each checkpoint after it
    last_step = max(x["step"] for x in r)
    assert last_step == plans[-1]["budget_planned_steps"] > 30
    actual = next(x for x in r if "budget_actual_s" in x)
    assert actual["budget_actual_s"] <= 100.0
    lrs = [x["lr"] for x in r if "lr" in x]
    assert lrs[-1] < 0.01 * max(lrs)  # the schedule ended at the planned end, not at a provisional one
    assert all(b <= a * 1.0001 for a, b in zip(lrs[1:], lrs[2:], strict=False))  # after the warm-up: no jump up
    assert (rd / "pipeline" / "unet").is_dir()


def test_a_cut_session_resumes_with_what_is_left_of_the_budget(tiny_cfg, ds16, tmp_path, fake_clock):
    rd = tmp_path / "run"
    # the first session is cut after step 30 (a cap stands in for the session's end)
    assert run(tiny_cfg, ds16, rd, "train.max_steps=40", "train.time_budget=100") == 0
    spent_at_30 = next(x for x in rows(rd) if x.get("step") == 30 and "budget_spent_s" in x)["budget_spent_s"]
    assert run(tiny_cfg, ds16, rd, "train.max_steps=null", "train.time_budget=100",
               resume=str(rd / "checkpoints" / "checkpoint-30")) == 0  # fmt: skip
    r = rows(rd)
    resumed = [x for x in r if "budget_planned_steps" in x and x["step"] > 30]
    assert resumed[0]["budget_spent_s"] > spent_at_30  # the spent seconds came back from the checkpoint
    assert resumed[-1]["budget_planned_steps"] > 40
    finals = [x for x in r if "budget_actual_s" in x]
    assert finals[-1]["budget_actual_s"] <= 100.0
    assert max(x["step"] for x in r) == resumed[-1]["budget_planned_steps"]


def test_a_budget_too_short_for_this_machine_is_one_line_naming_the_key_and_minimum(
    tiny_cfg, ds16, tmp_path, fake_clock, capsys
):
    fake_clock.tick = 10.0  # a slow machine: 10 s per clock read
    assert run(tiny_cfg, ds16, tmp_path / "run", "train.max_steps=null", "train.time_budget=60") == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error: ") == 1
    line = err[err.index("error: ") :].splitlines()[0]  # after the progress bar's last update
    assert line.startswith("error: train.time_budget=60: too short for this run here; it needs at least ")


def test_auto_batch_on_the_cpu_keeps_the_presets_batch_and_says_so(tiny_cfg, ds16, tmp_path, caplog):
    rd = tmp_path / "run"
    with caplog.at_level(logging.INFO, logger="ptt.train"):
        assert run(tiny_cfg, ds16, rd, "train.batch_size=auto", "train.max_steps=2", "optim.lr_scaling=sqrt",
                   "optim.reference_batch=4") == 0  # fmt: skip
    assert "train.batch_size=auto: 16 per device (no GPU to probe on the cpu" in caplog.text
    assert "lr 0.006 (sqrt scaling of 0.003 from batch 4 to 16), warm-up 1 steps" in caplog.text
    assert "batch_size: 16" in (rd / "config.yaml").read_text()
    assert not (rd / "autobatch.json").exists()
    assert rows(rd)[0]["lr"] == pytest.approx(0.006)  # warm-up of 1 step: the scaled lr from the first step


def test_auto_batch_on_a_gpu_probes_steps_back_from_out_of_memory_and_writes_the_table(tmp_path, monkeypatch):
    from training import autobatch

    table = {16: 1000.0, 32: 1900.0, 64: 2500.0}

    def measure(cfg, device, batch, **kw):
        if batch not in table:
            raise torch.OutOfMemoryError(f"simulated: batch {batch}")
        return table[batch]

    monkeypatch.setattr(autobatch, "measure_images_per_s", measure)
    cfg = load_train_config(None, ["data.dataset_dir=x", f"run_dir={tmp_path / 'run'}", "train.num_epochs=1",
                                   "train.batch_size=auto"])  # fmt: skip
    gpu = SimpleNamespace(num_processes=1, is_main_process=True, device=SimpleNamespace(type="cuda"))
    resolved = train_mod.resolve_auto_batch(cfg, gpu, 10_000, None, precision="bf16")
    assert resolved.train.batch_size == 64 and cfg.train.batch_size == "auto"
    saved = json.loads((tmp_path / "run" / "autobatch.json").read_text())
    assert saved["chosen"] == 64
    assert [r["batch"] for r in saved["rows"]] == [16, 32, 64, 128]
    assert saved["rows"][-1]["oom"] is True
