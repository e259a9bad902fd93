#!/usr/bin/env bash
# GPU kit (the GPU rows of BENCHMARKS.md): run ON the lent NVIDIA H200 (device tool), from the repo root, with .whl carried.
#
# ---- PLAN: 15 minutes of device time in all (machine start, idle and transfers included) ------------------------
# Here first (CPU, no device time):
#   bash benchmarks/gpu/fetch_wheels.sh     # .whl/: wheels the image lacks (~10 MB) + the peer's copy in .whl/peers/
#   OUT=/tmp/o KIT_TINY=1 KIT_NO_WHEELS=1 PYTHON=.venv/bin/python nice -n 10 bash benchmarks/gpu/run_device.sh all
#       (optional CPU dry run, tiny sizes, the same code paths; 2026-12-01 on 2 shared cores: 7.6 min, exit 0:
#       preflight 16 s, check 191 s, profile 42 s, peer 152 s, sample 56 s; tests/test_gpu_kit.py is the fast check)
# Then, back to back (the second while the machine is still warm, 30 s):
#   1. run(command="bash benchmarks/gpu/run_device.sh preflight check profile", carry=[".whl"], timeout_s=480)
#        ~1.5 min machine start + ~5 min: preflight 0.5 (wheels, versions, smoke test), check ~3.5 (demo UNet:
#        bf16+channels_last+fused AdamW+compile via python -m training.train; fp16+grad scaler via accelerate
#        launch; SIGTERM / kill + --resume latest vs uninterrupted, max abs diff; DDPMPipeline.from_pretrained bf16
#        and every scheduler; the sampler CLI), profile ~1 (attention_unet batch 128 bf16: torch.profiler, 10 steps,
#        and the levers: channels_last, batch 256, each SDPA backend)
#   2. run(command="bash benchmarks/gpu/run_device.sh peer sample", carry=[".whl"], timeout_s=540)
#        ~6 min: peer ~4.5 (diffusers' train_unconditional.py vs ours, batch 128, bf16, attention_unet with and without
#        torch.compile, diffusers_example; images/s, ratio, MFU vs a bf16 matmul measured in the call, peak
#        memory), sample ~1.5 (attention_unet UNet, batch 256, bf16, each scheduler at its default steps; ddpm 1000)
#   3. give_back()
#   Expected total ~13 min; ~2 min margin (the tool also caps a call's limit at the device time left; peer.json is
#   rewritten after each preset, so a call cut short still returns what ran). Files come back under files_at (at most 8 a call): run.log, summary.md
#   (every step's markdown table), check.json, check_grid.png, profile.json, profile.txt / peer.json, sample.json.
# If preflight says pyarrow fails datasets' requirement: here `bash benchmarks/gpu/fetch_wheels.sh --with-pyarrow`,
#   then call 1 again with carry=[".whl", "bench_out/wheels-pyarrow"] (55 MB more; 64 MiB is the limit).
# If call 1 fails in check: fix here (CPU test), then call 2 as planned, and `run_device.sh check` alone last.
# One call for everything (if the session has one call left): `run_device.sh all` (timeout_s=600; ~10.5 min: too
#   tight for 10 minutes of command time unless PEER_ARGS trims it: command="PEER_ARGS='--variants ours' bash
#   benchmarks/gpu/run_device.sh all").
# ---------------------------------------------------------------------------------------------------------------
# Steps: preflight, check, profile, peer, sample, all (= preflight check profile peer sample), and the older
#   bench_train.py rows: train (attention_unet batch 128, in-process baseline vs ours, then + compile), ablate.
# Environment: OUT (the device tool sets it; default bench_out/gpu), PYTHON (default python3: the image's, which
#   holds torch 2.11; never install torch there), KIT_TINY=1 (CPU dry run: tiny sizes), KIT_NO_WHEELS=1 (skip the
#   wheel install: the CPU venv has the packages), PEER_ARGS / CHECK_ARGS / PROFILE_ARGS / SAMPLE_ARGS (appended).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-bench_out/gpu}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
SITE=${KIT_SITE:-/tmp/site}
TINY=${KIT_TINY:-}
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
main() {
pipi() { "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$@"; }

if [ -z "${KIT_NO_WHEELS:-}" ]; then
  if ! ls .whl/*.whl >/dev/null 2>&1; then
    echo "no .whl/*.whl: run benchmarks/gpu/fetch_wheels.sh on the CPU machine and carry .whl"; return 1
  fi
  stamp=$(ls -l .whl/*.whl .whl/cond/*.whl bench_out/wheels-pyarrow/*.whl 2>/dev/null | sha1sum | cut -c1-40)
  if [ "$(cat "$SITE/.kit-stamp" 2>/dev/null)" != "$stamp" ]; then  # a warm machine keeps /tmp/site
    rm -rf "$SITE"
    pipi .whl/*.whl || { echo "installing the carried wheels failed"; return 1; }
    extra=$(PYTHONPATH="$SITE:$PYTHONPATH" "$PY" benchmarks/gpu/preflight.py needed "$SITE" .whl/cond \
      bench_out/wheels-pyarrow)
    if [ -n "$extra" ]; then
      echo "fallback wheels (the image's version fails a requirement): $extra"
      # shellcheck disable=SC2086
      pipi $extra || { echo "installing the fallback wheels failed"; return 1; }
    fi
    echo "$stamp" >"$SITE/.kit-stamp"
  fi
  export PYTHONPATH="$SITE:$PYTHONPATH"
fi

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(preflight check)
[ "${steps[0]}" = all ] && steps=(preflight check profile peer sample)
if [ -n "$TINY" ]; then
  check_args=(--tiny --jobs 1)
  profile_args=(--preset demo --batch 4 --steps 2 --warmup 1)
  peer_args=(--presets demo --batch 4 --steps 6 --skip 2 --log-every 2 --variants ours)
  sample_args=(--preset demo --batch 2 --steps-scale 0.003)
  train_args=(--presets demo --batch 4 --steps 1 --rounds 1 --warmup 1 --no-isolated-memory)
else
  check_args=() profile_args=() peer_args=() sample_args=()
  train_args=(--presets attention_unet --batch 128 --steps 20 --rounds 3 --warmup 3)
fi
# shellcheck disable=SC2206
{ check_args+=(${CHECK_ARGS:-}); profile_args+=(${PROFILE_ARGS:-}); peer_args+=(${PEER_ARGS:-})
  sample_args+=(${SAMPLE_ARGS:-}); }
rc=0
summary=()
for step in "${steps[@]}"; do
  t0=$(date +%s)
  echo "=== $step ($(date -u +%H:%M:%S))"
  case $step in
    preflight)
      nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.max.sm,power.limit --format=csv \
        2>/dev/null || echo "nvidia-smi: not here"
      "$PY" benchmarks/gpu/preflight.py check "$SITE" || { echo "preflight failed: stopping (see above)"; return 1; }
      ;;
    check) "$PY" benchmarks/gpu/check_run.py --out "$OUT" "${check_args[@]}" || rc=1 ;;
    profile) "$PY" benchmarks/gpu/profile_step.py --out "$OUT" "${profile_args[@]}" || rc=1 ;;
    peer) "$PY" benchmarks/bench_peer.py --out "$OUT" "${peer_args[@]}" || rc=1 ;;
    sample) "$PY" benchmarks/gpu/sample_defaults.py --out "$OUT" "${sample_args[@]}" || rc=1 ;;
    train)
      "$PY" benchmarks/bench_train.py "${train_args[@]}" --out "$OUT/train.json" || rc=1
      "$PY" benchmarks/bench_train.py "${train_args[@]}" --compile --out "$OUT/train_compile.json" || rc=1
      ;;
    ablate) "$PY" benchmarks/bench_train.py "${train_args[@]}" --ablate --out "$OUT/train_ablate.json" || rc=1 ;;
    *) echo "unknown step $step (preflight, check, profile, peer, sample, train, ablate, all)"; rc=2 ;;
  esac
  summary+=("$step: $(($(date +%s) - t0)) s")
  echo "=== $step done in $(($(date +%s) - t0)) s (rc so far $rc)"
done
echo "=== steps: ${summary[*]}; exit $rc"
ls -l "$OUT"
return $rc
}
main "$@" 2>&1 | tee -a "$OUT/run.log"
exit "${PIPESTATUS[0]}"
