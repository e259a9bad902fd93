"""Pure units of the batch and time planning: lr scaling rules, the time-budget planner and the auto-batch choice."""

from __future__ import annotations

import math

import pytest

from common.configio import ConfigError
from training.autobatch import choose_batch, measure_images_per_s, probe_batches
from training.budget import SKIP_STEPS, WARMUP_STEPS, BudgetClock, BudgetState, parse_duration
from training.checkpoint import RunState
from training.config import OptimConfig, derived_figures, load_train_config
from training.model import lr_lambda
from training.scaling import scaled_optim

BASE = ["data.dataset_dir=x", "train.max_steps=10"]


# -- lr scaling --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rule", "batch", "lr", "warmup"),
    [("none", 64, 1.0e-3, 50), ("sqrt", 64, 2.0e-3, 12), ("linear", 32, 2.0e-3, 25), ("linear", 8, 5.0e-4, 100)],
)
def test_scaled_optim_scales_lr_and_keeps_the_warm_up_in_images(rule, batch, lr, warmup):
    o = scaled_optim(OptimConfig(lr=1.0e-3, lr_warmup_steps=50, lr_scaling=rule), batch)
    assert o.lr == pytest.approx(lr)
    assert o.lr_warmup_steps == warmup


def test_the_reference_batch_is_the_preset_and_derived_figures_report_the_scaled_lr():
    cfg = load_train_config(None, [*BASE, "optim.lr_scaling=linear", "optim.reference_batch=32",
                                   "train.batch_size=16", "train.grad_accum_steps=2"])  # fmt: skip
    figs = derived_figures(cfg, 1000, world=2)  # effective batch 64 = 2 x reference
    assert figs["effective_batch"] == 64
    assert figs["lr"].startswith("0.0006 (linear scaling of 0.0003 from batch 32 to 64)")
    assert cfg.optim.lr == pytest.approx(3.0e-4)  # the config keeps the preset's value


def test_a_bad_rule_names_the_key():
    with pytest.raises(ConfigError, match="optim.lr_scaling"):
        load_train_config(None, [*BASE, "optim.lr_scaling=cubic"])


# -- config: auto batch and budget -------------------------------------------------------------------------------


def test_auto_batch_with_accumulation_is_one_line_and_auto_alone_is_accepted():
    with pytest.raises(ConfigError, match="train.batch_size=auto .* set train.grad_accum_steps=1"):
        load_train_config(None, [*BASE, "train.batch_size=auto", "train.grad_accum_steps=4"])
    cfg = load_train_config(None, [*BASE, "train.batch_size=auto"])
    assert cfg.train.batch_size == "auto"
    assert derived_figures(cfg, 160, 1)["effective_batch"] == 16  # the documented stand-in until probed
    with pytest.raises(ConfigError, match="train.batch_size"):
        load_train_config(None, [*BASE, "train.batch_size=0"])


@pytest.mark.parametrize(("text", "seconds"), [("45m", 2700), ("2h", 7200), ("1h30m", 5400), ("90s", 90), (600, 600),
                                               ("3600", 3600), (" 1h 5m ", 3900)])  # fmt: skip
def test_durations_parse(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["2 hours", "h", "", "-5m", 0, "1d"])
def test_a_bad_duration_is_refused(bad):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_budget_config_errors_name_the_key_and_the_minimum_and_budget_alone_bounds_the_run():
    with pytest.raises(ConfigError, match=r"train.time_budget.*minimum of 60 s"):
        load_train_config(None, ["data.dataset_dir=x", "train.time_budget=30s"])
    with pytest.raises(ConfigError, match="train.time_budget.*not a duration"):
        load_train_config(None, ["data.dataset_dir=x", "train.time_budget=soon"])
    with pytest.raises(ConfigError, match=r"train.max_steps or train.num_epochs \(or train.time_budget\)"):
        load_train_config(None, ["data.dataset_dir=x", "train.seed=1"])
    cfg = load_train_config(None, ["data.dataset_dir=x", "train.time_budget=1h30m"])
    assert cfg.train.time_budget_s == 5400


# -- the time-budget planner -------------------------------------------------------------------------------------


def test_the_plan_fits_steps_evaluations_and_the_end_inside_the_budget():
    b = BudgetState(budget_s=1000.0)
    b.observe_steps(steps=10, seconds=5.0)  # 0.5 s/step
    total = b.replan(step=20, progress=0.0, cap=None, eval_prior_s=40.0, overhead_prior_s=0.1, elapsed_s=100.0)
    # (1000 - 100) x 0.98 = 882 s usable, less the final 40 s evaluation: 842 s at 0.6 s/step -> 1403 steps
    assert total == 20 + math.floor((900 * 0.98 - 40.0) / 0.6)
    assert b.plans[-1][2] <= 1000.0
    assert b.replan(step=20, progress=0.0, cap=500, eval_prior_s=40.0, overhead_prior_s=0.1, elapsed_s=100.0) == 500


def test_measured_evaluations_replace_the_prior_and_an_exhausted_budget_ends_next_step():
    b = BudgetState(budget_s=1000.0)
    b.observe_steps(steps=100, seconds=50.0)
    b.observe_eval(20.0)
    b.observe_eval(40.0)
    b.observe_checkpoint(5.0)
    assert b.per_step_s(overhead_prior_s=99.0) == pytest.approx(0.5 + 65.0 / 100)
    assert b.reserve_s(eval_prior_s=99.0) == pytest.approx(40.0 + 2 * 5.0)
    b.spent_s = 990.0
    assert b.replan(step=300, progress=0.5, cap=None, eval_prior_s=1.0, overhead_prior_s=0.0) == 301


def test_a_replan_bends_the_lr_decay_without_a_jump_and_ends_it_at_the_new_total():
    old, new, s0 = 1000, 600, 400
    kw = {"warmup_steps": 50, "schedule": "cosine"}
    before = lr_lambda(s0, total_steps=old, **kw)
    from training.model import decay_progress

    anchor = (s0, decay_progress(s0, warmup_steps=50, total_steps=old))
    assert lr_lambda(s0, total_steps=new, anchor=anchor, **kw) == pytest.approx(before)
    assert lr_lambda(s0 + 1, total_steps=new, anchor=anchor, **kw) == pytest.approx(before, rel=0.02)
    assert lr_lambda(new, total_steps=new, anchor=anchor, **kw) == pytest.approx(0.0, abs=1e-12)
    assert lr_lambda(s0, total_steps=new, **kw) < before * 0.7  # without the anchor: a jump


def test_the_clock_times_steps_without_evaluations_and_plans_after_the_warm_up():
    now = [0.0]
    state = BudgetState(budget_s=600.0)
    clock = BudgetClock(state, clock=lambda: now[0])
    due = []
    for i in range(SKIP_STEPS + WARMUP_STEPS):
        now[0] += 5.0 if i < SKIP_STEPS else 1.0  # slow first steps are not timed
        if i == 10:
            with clock.timed("eval"):
                now[0] += 30.0
        due.append(clock.after_step())
    assert due[-1] and not any(due[:-1])
    assert state.step_s == pytest.approx(1.0)
    assert state.evals == 1 and state.eval_total_s == pytest.approx(30.0)
    clock.account()
    assert state.spent_s == pytest.approx(now[0])


def test_the_budget_rides_in_the_run_state():
    st = RunState()
    st.budget = BudgetState(budget_s=7200.0, spent_s=1234.5, total_steps=900, anchor_step=300, anchor_progress=0.2)
    back = RunState()
    back.load_state_dict(st.state_dict())
    assert back.budget == st.budget
    old = RunState()
    old.load_state_dict({"step": 3})  # a checkpoint from before the budget existed
    assert old.budget is None


# -- the auto batch ----------------------------------------------------------------------------------------------


class SimulatedOOM(RuntimeError):
    pass


def fake_device(table: dict[int, float], fits_up_to: int):
    calls = []

    def measure(batch: int) -> float:
        calls.append(batch)
        if batch > fits_up_to:
            raise SimulatedOOM(f"batch {batch}")
        return table[batch]

    return measure, calls


def test_the_probe_doubles_until_out_of_memory_and_picks_the_smallest_within_ten_percent():
    table = {16: 900.0, 32: 1700.0, 64: 2600.0, 128: 3000.0, 256: 3100.0}
    measure, calls = fake_device(table, fits_up_to=256)
    rows = probe_batches(measure, start=16, limit=1024, oom_errors=(SimulatedOOM,))
    assert calls == [16, 32, 64, 128, 256, 512]
    assert rows[-1] == {"batch": 512, "images_per_s": None, "oom": True}
    assert choose_batch(rows) == 128  # 3000 >= 0.9 x 3100; 2600 is not


def test_a_flat_device_keeps_the_small_batch_and_the_limit_stops_the_probe():
    measure, calls = fake_device({16: 1000.0, 32: 1050.0, 64: 1080.0}, fits_up_to=10**6)
    rows = probe_batches(measure, start=16, limit=64, oom_errors=(SimulatedOOM,))
    assert calls == [16, 32, 64]
    assert choose_batch(rows) == 16


def test_out_of_memory_at_the_first_batch_is_an_error_other_errors_propagate():
    measure, _ = fake_device({}, fits_up_to=0)
    rows = probe_batches(measure, start=16, limit=1024, oom_errors=(SimulatedOOM,))
    with pytest.raises(ValueError, match="even batch 16 ran out of memory"):
        choose_batch(rows)

    def broken(batch):
        raise KeyError("not an out-of-memory error")

    with pytest.raises(KeyError):
        probe_batches(broken, start=16, limit=64, oom_errors=(SimulatedOOM,))


def test_the_cuda_measurement_runs_a_real_tiny_step_on_the_cpu():
    import torch

    tiny = [
        "model.block_out_channels=[8,16]",
        "model.norm_num_groups=4",
        "model.layers_per_block=1",
        "model.down_block_types=[DownBlock2D,DownBlock2D]",
        "model.up_block_types=[UpBlock2D,UpBlock2D]",
    ]
    cfg = load_train_config(None, ["data.dataset_dir=x", "train.max_steps=1", "data.resolution=8", *tiny])
    rate = measure_images_per_s(cfg, torch.device("cpu"), 4, steps=1, warmup=1)
    assert rate > 0
