"""The detection workers: a pool of processes running ``curation.photos.process_photo`` over a run's photos.

:func:`iter_results` yields one result per task, in task order, with a progress bar: in this process when
``workers <= 1``, else in a pool of forked processes that die with their parent (even by ``kill -9``). A worker
that dies (out of memory) is a one-line :class:`curation.inputs.CurationError`; the cache makes the rerun resume.

Example::

    from curation.config import CurationConfig
    from curation.workers import iter_results
    for res in iter_results([("photo.jpg", "<sha1>", None)], CurationConfig(), workers=1):
        print(res["status"])
"""

from __future__ import annotations

import os
import signal
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from multiprocessing import get_all_start_methods, get_context
from typing import Any

import cv2

from curation import photos
from curation.config import CurationConfig
from curation.inputs import CurationError

__all__ = ["iter_results"]

_TASK: dict[str, Any] = {}  # this worker's config and thread count, set by _init_worker


def _die_with_parent(parent_pid: int) -> None:
    """Make this worker exit when the process that started it dies, even by ``kill -9`` or the OOM killer (which
    give the pool no chance to stop its workers): an orphan would keep detecting forever and hold the parent's
    stdout open, so ``ptt-curate ... | tee log`` would never return. Linux: the kernel sends SIGKILL on the
    parent's death (``prctl(PR_SET_PDEATHSIG)``); everywhere: a thread polls the parent pid once a second."""
    import threading

    if sys.platform.startswith("linux"):
        try:
            import ctypes

            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass  # the watchdog below still works
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _init_worker(cfg_json: str, threads: int, parent_pid: int | None = None) -> None:
    if parent_pid is not None:
        _die_with_parent(parent_pid)
        # Ctrl-C reaches the whole process group: the parent alone answers it (one line) and stops the workers;
        # a worker of its own would print a KeyboardInterrupt traceback per process
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    photos.forget_models()
    _TASK.clear()
    _TASK["cfg"] = CurationConfig.model_validate_json(cfg_json)
    _TASK["threads"] = threads


def _worker(args: tuple[str, str, dict | None]) -> dict:
    path, sha1, cached = args
    try:
        return photos.process_photo(path, sha1, cached, _TASK["cfg"], _TASK["threads"])
    except ValueError as exc:  # degenerate landmarks: no usable face; reject the photo, keep going
        return {"sha1": sha1, "status": "no_face", "detail": f"ValueError: {exc}"}
    except cv2.error as exc:  # an image OpenCV cannot process (odd shape or depth): reject it, keep going
        return {"sha1": sha1, "status": "unreadable", "detail": f"cv2.error: {str(exc).strip().splitlines()[-1]}"}


def _stop(pool: ProcessPoolExecutor) -> None:
    """Cancel the queued photos and kill the workers (their results would be thrown away anyway)."""
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in list((getattr(pool, "_processes", None) or {}).values()):  # no public handle on the workers
        proc.kill()


def iter_results(tasks: list[tuple[str, str, dict | None]], cfg: CurationConfig, workers: int):
    """``process_photo``'s result for each ``(path, sha1, cached)`` task, in order."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(tasks), desc="curate", unit="photo", mininterval=1.0, disable=None)
    cfg_json = cfg.model_dump_json()
    try:
        if workers <= 1 or len(tasks) <= 1:
            _init_worker(cfg_json, 0)
            for t in tasks:
                yield _worker(t)
                bar.update()
        else:
            ctx = get_context("fork" if "fork" in get_all_start_methods() else "spawn")
            with ProcessPoolExecutor(
                workers, mp_context=ctx, initializer=_init_worker, initargs=(cfg_json, 1, os.getpid())
            ) as pool:
                try:
                    for r in pool.map(_worker, tasks, chunksize=max(1, min(8, len(tasks) // (workers * 4)))):
                        yield r
                        bar.update()
                except BrokenProcessPool:
                    raise CurationError(
                        f"a detection worker died after {bar.n} of {len(tasks)} photos (out of memory?); "
                        "run again to resume from the cache, with fewer workers or a lower filters.max_image_pixels"
                    ) from None
                except BaseException:  # Ctrl-C, an error downstream, the generator closed: stop now, not after
                    _stop(pool)  # every queued photo (the pool's exit would wait for them)
                    raise
    finally:
        bar.close()
