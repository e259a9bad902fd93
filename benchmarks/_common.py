"""Shared helpers of the benchmark scripts: the machine description every result JSON carries.

Example::

    from benchmarks._common import machine
    print(machine(gpu="not used"))   # {'cpu': 'AMD EPYC ...', 'cores': 2, 'python': '3.11.7', ...}
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
from pathlib import Path


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else ``platform.processor()`` ('' when unknown)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or ""


def nvidia_gpu_name() -> str:
    """The first GPU's name as ``nvidia-smi`` reports it; 'none' without nvidia-smi or a GPU."""
    if not shutil.which("nvidia-smi"):
        return "none"
    r = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
    return r.stdout.strip() or "none"


def machine(**extra) -> dict:
    """CPU, cores, Python and the 1-minute load average at start, plus ``extra`` (gpu, library versions, ...)."""
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),  # other jobs on the same cores skew the figures
        **extra,
    }


def proc_status_kb(field: str) -> int | None:
    """A ``/proc/self/status`` figure in kB (``VmRSS``, ``VmHWM``, ...); None off Linux.

    ``VmHWM`` is this process's own peak RSS; ``getrusage``'s ru_maxrss is not: across fork + exec it starts at the
    parent's RSS, which makes a child measured from a big benchmark process read as big as its parent.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return None


def write_json(path: str | os.PathLike, obj) -> Path:
    """Write a benchmark's result atomically (the project's one atomic-write helper), creating its folder."""
    from common.fileio import atomic_write

    atomic_write(path, json.dumps(obj, ensure_ascii=False, indent=2) + "\n")
    return Path(path)


def run_logged(cmd: list[str], log: Path, *, timeout: float, cwd: Path | None = None) -> tuple[int | str, float]:
    """Run ``cmd`` with its stdout and stderr in ``log``: (exit status, or ``"timeout"``, and wall seconds)."""
    import time

    t0 = time.perf_counter()
    with open(log, "w") as fh:
        try:
            rc: int | str = subprocess.run(
                cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            rc = "timeout"
    return rc, time.perf_counter() - t0


def log_tail(path: Path, n: int = 25) -> str:
    """The last ``n`` lines of a log ('' when it cannot be read)."""
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""
