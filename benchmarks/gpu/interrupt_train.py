"""The trainer (``training.train.main``, unmodified), interrupted right after it has written one checkpoint.

For the resume check of ``check_run.py``: ``--interrupt-after N`` acts once ``checkpoint-N`` is complete on disk:

* ``--interrupt-how sigterm``: sends this process SIGTERM, so the trainer's own handler checkpoints at the end of
  the next step and exits 0 (the path a scheduler's preemption takes);
* ``--interrupt-how kill``: ends the process at once with status 137, no clean-up (a crash or ``kill -9``).

Every other argument goes to the trainer as given. Works under ``python`` and ``accelerate launch``::

    python benchmarks/gpu/interrupt_train.py --interrupt-after 20 --interrupt-how sigterm --config ... k=v ...
    accelerate launch --num_processes 1 benchmarks/gpu/interrupt_train.py --interrupt-after 20 \\
        --interrupt-how kill --config ...
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], add_help=False)
    p.add_argument("--interrupt-after", type=int, required=True, help="the checkpoint step to act after")
    p.add_argument("--interrupt-how", choices=("sigterm", "kill"), default="sigterm")
    args, rest = p.parse_known_args(sys.argv[1:] if argv is None else argv)

    import training.train as trainer

    original = trainer.save_checkpoint

    def save_then_interrupt(accelerator, run_dir, *, step, **kwargs):
        path = original(accelerator, run_dir, step=step, **kwargs)
        if step == args.interrupt_after:
            print(f"interrupt_train: checkpoint-{step} written; {args.interrupt_how} now", flush=True)
            if args.interrupt_how == "kill":
                sys.stderr.flush()
                os._exit(137)
            os.kill(os.getpid(), signal.SIGTERM)
        return path

    trainer.save_checkpoint = save_then_interrupt  # the name train() calls (imported into training.train)
    return trainer.main(rest)


if __name__ == "__main__":
    raise SystemExit(main())
