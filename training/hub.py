"""The trainer's pushes to the Hugging Face Hub (config section ``hub``), through ``ptt-push``'s allow-list.

``hub.repo_id`` set: the final exported pipeline (EMA weights, safetensors, ``training_config.yaml``,
``metrics.json``, ``sample_grid.png``, a fresh model card) is pushed at the end of the run, and with
``hub.push_every_checkpoints: N`` also every N-th checkpoint's EMA pipeline. Everything goes through
:func:`evaluation.push.push` -- never optimizer state, never pickles, never a symlink -- on the main process only,
in one background thread, so the other ranks never wait for an upload (a checkpoint push while one is still under
way is skipped and logged). Offline (``HF_HUB_OFFLINE=1``) it says once that it skips; a failed push (no token,
Hub error) is one warning line with the token scrubbed, and the training goes on.

Example::

    pusher = HubPusher(cfg.hub, run_dir, checkpoint_every_steps=1000, enabled=accelerator.is_main_process)
    pusher.at_checkpoint(step, export=lambda folder: export_ema(folder, metrics=None))
    pusher.final(run_dir / "pipeline", step)
    pusher.close()   # waits for the last upload; call it after the ranks are done
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from common.hub import hub_offline
from training.config import HubConfig

__all__ = ["HubPusher", "STAGING_DIR"]

log = logging.getLogger("ptt.train")

STAGING_DIR = "hub_push"  # <run_dir>/hub_push/: a checkpoint's EMA pipeline while it is being uploaded


class HubPusher:
    def __init__(self, hub: HubConfig, run_dir: str | Path, *, checkpoint_every_steps: int, enabled: bool) -> None:
        self.hub, self.run_dir, self.ckpt_every = hub, Path(run_dir), checkpoint_every_steps
        self.active = enabled and hub.repo_id is not None
        self.pushed: list[str] = []
        self._pool: ThreadPoolExecutor | None = None
        self._last: Future | None = None
        if self.active and hub_offline():
            log.info("HF_HUB_OFFLINE is set: skipping the pushes to %s (hub.repo_id)", hub.repo_id)
            self.active = False

    def _busy(self) -> bool:
        return self._last is not None and not self._last.done()

    def _submit(self, folder: Path, message: str, *, staging: bool) -> None:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hub-push")
        self._last = self._pool.submit(self._push, folder, message, staging)

    def _push(self, folder: Path, message: str, staging: bool) -> None:
        from evaluation.push import PushError, push

        if not self.active:  # an earlier push found no token: say it once
            return
        try:
            summary = push(folder, self.hub.repo_id, private=self.hub.private, grid=False,
                           dataset_repo=self.hub.dataset_repo, commit_message=message)  # fmt: skip
            self.pushed.append(summary.get("url") or self.hub.repo_id)
            log.info("hub: pushed %d files to %s (%s): %s", len(summary["files"]), self.hub.repo_id, message,
                     summary.get("url"))  # fmt: skip
        except PushError as exc:
            log.warning("hub: %s not pushed to %s: %s", message, self.hub.repo_id, exc)
            if "token" in str(exc) or "HF_HUB_OFFLINE" in str(exc):
                self.active = False  # it will not get better during this run
        finally:
            if staging:
                shutil.rmtree(folder, ignore_errors=True)

    def at_checkpoint(self, step: int, export: Callable[[Path], None]) -> None:
        """Every ``push_every_checkpoints``-th checkpoint (by step, so resumes keep the rhythm): export and push."""
        every = self.hub.push_every_checkpoints
        if not self.active or every is None or step % (every * self.ckpt_every) != 0:
            return
        if self._busy():
            log.info("hub: the previous push is still under way; the checkpoint at step %d is not pushed", step)
            return
        folder = self.run_dir / STAGING_DIR
        export(folder)
        self._submit(folder, f"ptt-train: EMA pipeline at step {step}", staging=True)

    def final(self, folder: str | Path, step: int) -> None:
        """Push the final exported pipeline (after any checkpoint push still under way)."""
        if self.active:
            self._submit(Path(folder), f"ptt-train: final EMA pipeline at step {step}", staging=False)

    def close(self) -> None:
        """Wait for the uploads still under way (main process, once the other ranks are done)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
