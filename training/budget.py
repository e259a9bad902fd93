"""The time budget (``train.time_budget``): how many optimizer steps fit in a wall-clock budget, re-planned as the
run measures itself. Pure: no torch, no Accelerator; the clock is injected.

The plan. After :data:`WARMUP_STEPS` steps (the first :data:`SKIP_STEPS` of a session are left out: allocation,
autotuning), the trainer knows its seconds per optimizer step. Periodic work (sample grids, held-out loss, FID,
checkpoints) is timed when it happens; until the first evaluation is timed its cost is estimated from the step time
(:func:`eval_prior_s`). With ``remaining`` seconds left at step ``s``, the plan is the largest ``n`` with

    n x (step_s + overhead_per_step) + reserve_s <= remaining x (1 - SAFETY)

where ``reserve_s`` is the last step's evaluation and checkpoint plus the export (about a checkpoint), and the
evaluation and checkpoint seconds measured so far are spread over the steps timed so far. The run ends at
``s + n`` (bounded by max_steps / num_epochs when they are set). The plan is redone at each checkpoint with the
averages measured so far.

The lr schedule follows the plan smoothly: a re-plan at step ``s0`` keeps the decay's progress ``p0`` reached
there and spreads the rest, ``1 - p0``, evenly over the new remaining steps (:meth:`BudgetState.anchor`,
``training.model.lr_lambda(anchor=...)``), so a longer or shorter plan bends the cosine without a jump.

Resume. :class:`BudgetState` rides in the checkpointed ``RunState``: the budget, the seconds spent up to the last
checkpoint, the plan and its anchor. A session cut off continues with what is left; the time between the last
checkpoint and the cut is redone, so it is not counted.

Example::

    from training.budget import BudgetState, parse_duration
    b = BudgetState(budget_s=parse_duration("1h30m"))
    b.observe_steps(steps=20, seconds=10.0)            # 0.5 s per step
    b.replan(step=20, progress=0.0, cap=None, eval_prior_s=30.0, overhead_prior_s=0.03)
    print(b.total_steps)
"""

from __future__ import annotations

import contextlib
import re
import time
from dataclasses import asdict, dataclass, field

__all__ = [
    "BudgetClock",
    "BudgetState",
    "MIN_BUDGET_S",
    "SAFETY",
    "SKIP_STEPS",
    "WARMUP_STEPS",
    "eval_prior_s",
    "parse_duration",
]

SKIP_STEPS = 3  # a session's first steps allocate memory and autotune kernels: not timed
WARMUP_STEPS = 20  # timed steps before the first plan
SAFETY = 0.02  # of the remaining time, kept free: the estimates are averages
MIN_BUDGET_S = 60  # below a minute there is no room for a warm-up, a checkpoint and an export on any machine

_DURATION = re.compile(r"^\s*(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?\s*$")


def parse_duration(value: str | int | float) -> float:
    """Seconds in ``value``: "45m", "2h", "1h30m", "90s", "3600" or a number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a duration; write e.g. 45m, 2h, 1h30m or seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip().lower()
        m = _DURATION.match(text)
        if re.fullmatch(r"\d+(?:\.\d+)?", text):
            seconds = float(text)
        elif text and m and any(m.groups()):
            h, mi, s = (float(g) if g else 0.0 for g in m.groups())
            seconds = h * 3600 + mi * 60 + s
        else:
            raise ValueError(f"{value!r} is not a duration; write e.g. 45m, 2h, 1h30m or seconds")
    if seconds <= 0:
        raise ValueError(f"{value!r} must be a positive duration")
    return seconds


def eval_prior_s(step_s: float, *, batch_size: int, images_x_steps: float) -> float:
    """A first guess of an evaluation's seconds before one is timed: ``images_x_steps`` sampled images times sampler
    steps, in batches of ``batch_size``; each sampler step of a batch is a forward pass, about a third of a training
    step (forward + backward + update) at the same batch."""
    return images_x_steps / batch_size * step_s / 3.0


@dataclass
class BudgetState:
    """The budget's part of the run state (saved in every checkpoint through ``RunState``)."""

    budget_s: float
    spent_s: float = 0.0  # wall seconds up to the last checkpoint, over every session
    total_steps: int | None = None  # the plan: None until the first one
    anchor_step: int | None = None  # the lr decay restarts its spread here ...
    anchor_progress: float = 0.0  # ... from this fraction of the decay
    step_s: float | None = None  # mean seconds per optimizer step (training only)
    timed_steps: int = 0
    eval_total_s: float = 0.0  # periodic evaluations (grids, held-out loss, FID): seconds, count, the longest
    evals: int = 0
    eval_max_s: float = 0.0
    ckpt_total_s: float = 0.0
    ckpts: int = 0
    plans: list = field(default_factory=list)  # the last plans: [step, planned total, estimated end in seconds]

    # -- measurements --
    def observe_steps(self, *, steps: int, seconds: float) -> None:
        if steps <= 0:
            return
        total = (self.step_s or 0.0) * self.timed_steps + seconds
        self.timed_steps += steps
        self.step_s = total / self.timed_steps

    def observe_eval(self, seconds: float) -> None:
        self.eval_total_s += seconds
        self.evals += 1
        self.eval_max_s = max(self.eval_max_s, seconds)

    def observe_checkpoint(self, seconds: float) -> None:
        self.ckpt_total_s += seconds
        self.ckpts += 1

    @property
    def ckpt_s(self) -> float:
        return self.ckpt_total_s / self.ckpts if self.ckpts else 0.0

    # -- the plan --
    def per_step_s(self, *, overhead_prior_s: float) -> float:
        """Seconds per step, evaluation and checkpoints included: their measured seconds spread over the timed
        steps once an evaluation has run, else ``overhead_prior_s`` per step."""
        overhead = overhead_prior_s
        if self.evals and self.timed_steps:
            overhead = (self.eval_total_s + self.ckpt_total_s) / self.timed_steps
        return (self.step_s or 0.0) + overhead

    def reserve_s(self, *, eval_prior_s: float) -> float:
        """The end: the last evaluation (the longest seen, else the prior), the final checkpoint and the export
        (about another checkpoint)."""
        return (self.eval_max_s if self.evals else eval_prior_s) + 2.0 * self.ckpt_s

    def minimum_s(self, *, elapsed_s: float, eval_prior_s: float) -> float:
        """The shortest budget that fits what ran so far, one more step and the end."""
        return self.spent_s + elapsed_s + (self.step_s or 0.0) + self.reserve_s(eval_prior_s=eval_prior_s)

    def replan(
        self, *, step: int, progress: float, cap: int | None, eval_prior_s: float, overhead_prior_s: float,
        elapsed_s: float = 0.0,
    ) -> int:  # fmt: skip
        """Set (and return) the planned total steps from ``step``, with ``elapsed_s`` of this session not yet in
        ``spent_s``; ``progress`` is the lr decay's fraction reached at ``step`` under the previous plan."""
        remaining = self.budget_s - self.spent_s - elapsed_s
        reserve = self.reserve_s(eval_prior_s=eval_prior_s)
        usable = remaining * (1.0 - SAFETY) - reserve
        per = self.per_step_s(overhead_prior_s=overhead_prior_s)
        more = int(usable // per) if per > 0 and usable > 0 else 0
        total = max(step + 1, step + more if cap is None else min(cap, step + more))
        if total != self.total_steps:
            self.anchor_step, self.anchor_progress = step, progress
        self.total_steps = total
        est_end = self.spent_s + elapsed_s + (total - step) * per + reserve
        self.plans.append([step, total, round(est_end, 1)])
        del self.plans[:-20]  # the last few: metrics.jsonl has them all
        return total

    @property
    def anchor(self) -> tuple[int, float] | None:
        return None if self.anchor_step is None else (self.anchor_step, self.anchor_progress)

    def state_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_state_dict(cls, state: dict) -> BudgetState:
        return cls(**state)


# The clock the trainer's budget reads; tests put a fake one here (no timed tests).
CLOCK = time.perf_counter


class BudgetClock:
    """One session's timing of a :class:`BudgetState`: step time outside the timed evaluation and checkpoint
    sections (:meth:`timed`), the session's elapsed seconds, and when the first plan is due."""

    def __init__(self, state: BudgetState, *, clock=None) -> None:
        self.state = state
        self.clock = clock or CLOCK
        self.t0 = self.last = self.clock()
        self.accounted = self.t0  # session time up to here is in state.spent_s
        self.paused = 0.0
        self.session_steps = 0  # steps ended in this session
        self.planned = False  # a plan was made in this session (at its start on --resume, or after the warm-up)

    def after_step(self) -> bool:
        """Record one optimizer step's time; True when this session's warm-up is timed: a plan is due."""
        now = self.clock()
        dt, self.last = now - self.last - self.paused, now
        self.paused = 0.0
        self.session_steps += 1
        if self.session_steps > SKIP_STEPS:
            self.state.observe_steps(steps=1, seconds=max(dt, 0.0))
        return self.session_steps == SKIP_STEPS + WARMUP_STEPS

    @contextlib.contextmanager
    def timed(self, kind: str):
        """Time an ``eval`` or ``checkpoint`` section (left out of the step time, counted in its own mean)."""
        t0 = self.clock()
        try:
            yield
        finally:
            seconds = self.clock() - t0
            self.paused += seconds
            if kind == "eval":
                self.state.observe_eval(seconds)
            else:
                self.state.observe_checkpoint(seconds)

    def elapsed_s(self) -> float:
        """This session's seconds not yet in ``state.spent_s``."""
        return self.clock() - self.accounted

    def account(self) -> None:
        """Move this session's seconds so far into ``state.spent_s`` (before a checkpoint is written)."""
        now = self.clock()
        self.state.spent_s += now - self.accounted
        self.accounted = now
