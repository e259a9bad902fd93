"""Max abs difference between two runs' final weights: the model of the last checkpoint and the exported EMA.

Compares ``<run>/checkpoints/checkpoint-<step>/model*.safetensors`` (the raw model, ``--step``: the highest
step both runs have) and ``<run>/pipeline/unet/diffusion_pytorch_model.safetensors`` (the exported EMA weights),
tensor by tensor in float64 on the CPU. Prints one line per file and a JSON line (``COMPARE {...}``).

Example::

    python benchmarks/gpu/compare_weights.py /tmp/kit/check/bf16_A /tmp/kit/check/bf16_B
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def _steps(run: Path) -> set[int]:
    root = run / "checkpoints"
    return {int(p.name.split("-")[1]) for p in root.glob("checkpoint-*") if p.name.split("-")[1].isdigit()}


def weight_files(run: str | Path, step: int) -> dict[str, Path]:
    run = Path(run)
    files = {
        f"checkpoint-{step}/{p.name}": p
        for p in sorted((run / "checkpoints" / f"checkpoint-{step}").glob("model*.safetensors"))
    }
    ema = run / "pipeline" / "unet" / "diffusion_pytorch_model.safetensors"
    if ema.is_file():
        files["pipeline (EMA)"] = ema
    return files


def max_abs_diff(a: Path, b: Path) -> dict:
    from safetensors.torch import load_file

    ta, tb = load_file(str(a)), load_file(str(b))
    if ta.keys() != tb.keys():
        return {"error": f"different tensors: {sorted(ta.keys() ^ tb.keys())[:5]}"}
    worst, worst_key, ref = 0.0, None, 0.0
    for k in ta:
        if ta[k].shape != tb[k].shape:
            return {"error": f"{k}: shape {tuple(ta[k].shape)} vs {tuple(tb[k].shape)}"}
        d = (ta[k].double() - tb[k].double()).abs().max().item() if ta[k].numel() else 0.0
        ref = max(ref, ta[k].double().abs().max().item() if ta[k].numel() else 0.0)
        if d > worst or worst_key is None:
            worst, worst_key = d, k
    return {"max_abs_diff": worst, "worst_tensor": worst_key, "max_abs_weight": ref, "tensors": len(ta)}


def compare(run_a: str | Path, run_b: str | Path, step: int | None = None) -> dict:
    common = _steps(Path(run_a)) & _steps(Path(run_b))
    if step is None:
        if not common:
            return {"error": f"no checkpoint step common to {run_a} and {run_b}"}
        step = max(common)
    fa, fb = weight_files(run_a, step), weight_files(run_b, step)
    out = {"a": str(run_a), "b": str(run_b), "step": step, "files": {}}
    for name in sorted(fa.keys() | fb.keys()):
        if name not in fa or name not in fb:
            out["files"][name] = {"error": f"only in {'a' if name in fa else 'b'}"}
        else:
            out["files"][name] = max_abs_diff(fa[name], fb[name])
    diffs = [f.get("max_abs_diff") for f in out["files"].values()]
    out["max_abs_diff"] = None if not diffs or None in diffs else max(diffs)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("run_a")
    p.add_argument("run_b")
    p.add_argument("--step", type=int, default=None)
    a = p.parse_args(argv)
    res = compare(a.run_a, a.run_b, a.step)
    for name, f in res.get("files", {}).items():
        print(
            f"{name}: "
            + (
                f["error"]
                if "error" in f
                else f"max abs diff {f['max_abs_diff']:.3e} "
                f"({f['worst_tensor']}; |w| up to {f['max_abs_weight']:.3g}, {f['tensors']} tensors)"
            )
        )
    print("COMPARE " + json.dumps(res))
    return 0 if res.get("max_abs_diff") is not None else 1


if __name__ == "__main__":
    raise SystemExit(main())
