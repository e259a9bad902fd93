#!/usr/bin/env bash
# Run ON the lent GPU machine (device tool), from the repo root, with the wheels of fetch_wheels.sh carried:
#   run(command="bash benchmarks/gpu/run_device.sh check train", carry=[".whl"], timeout_s=600)
#   run(command="bash benchmarks/gpu/run_device.sh ablate", carry=[".whl"], timeout_s=600)
#   run(command="bash benchmarks/gpu/run_device.sh sample", carry=[".whl"], timeout_s=600)
# Each step writes its JSON and log to $OUT (the device tool brings them back; bench_out/gpu without it).
# Steps: check (versions, CUDA, a 2-step ablation of the demo preset, 40 steps of the trainer in bf16 +
# channels_last + compile and bf16 sampling, all on the GPU), train (seed001 preset, batch 128: baseline vs
# ours in bf16 + channels_last + fused AdamW, then ours + torch.compile), ablate (one variant per feature),
# sample (seed001-like UNet, batch 256, bf16, every scheduler and step count), all (check train sample).
set -uo pipefail
cd "$(dirname "$0")/../.."
OUT=${OUT:-bench_out/gpu}
mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    || { echo "installing the carried wheels failed: rerun benchmarks/gpu/fetch_wheels.sh here"; exit 1; }
  export PYTHONPATH=/tmp/site
fi
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(check)
[ "${steps[0]}" = all ] && steps=(check train sample)
rc=0
for step in "${steps[@]}"; do
  echo "=== $step ($(date -u +%H:%M:%S))"
  case $step in
    check)
      nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/nvidia-smi.txt"
      python3 - <<'PY' 2>&1 | tee "$OUT/check.log" || rc=1
import importlib, torch
for m in ("torch", "diffusers", "datasets", "accelerate", "pydantic", "pyarrow", "huggingface_hub", "numpy"):
    print(m, importlib.import_module(m).__version__)
assert torch.cuda.is_available(), "no CUDA device"
print("cuda", torch.version.cuda, torch.cuda.get_device_name(0))
from benchmarks.bench_train import main
main(["--presets", "demo", "--batch", "8", "--steps", "2", "--rounds", "1", "--ablate", "--out", "/tmp/check.json"])
PY
      # the trainer's and the sampler's own CUDA paths: bf16, channels_last, fused AdamW, compile, then bf16 sampling
      python3 -c "from training.data import write_crops_dataset; write_crops_dataset('/tmp/ds', n=256, size=64, test=16)" \
        && python3 -m training.train --config configs/train/demo.yaml data.dataset_dir=/tmp/ds run_dir=/tmp/run \
          train.max_steps=40 train.batch_size=64 train.mixed_precision=bf16 train.channels_last=true \
          train.compile=true train.log_with=none train.sample_every_steps=20 2>&1 | tail -20 | tee "$OUT/check_train.log" \
        && python3 -m evaluation.sample --model /tmp/run/pipeline --num-images 64 --batch-size 64 --dtype bf16 \
          --scheduler dpmsolver++ --out /tmp/samples 2>&1 | tail -3 | tee "$OUT/check_sample.log" \
        && cp /tmp/run/samples/step-40.png "$OUT/check_grid.png" || rc=1
      ;;
    train)
      python3 benchmarks/bench_train.py --presets seed001 --batch 128 --steps 20 --rounds 3 --warmup 3 \
        --out "$OUT/train_seed001.json" 2>&1 | tee "$OUT/train_seed001.log" || rc=1
      python3 benchmarks/bench_train.py --presets seed001 --batch 128 --steps 20 --rounds 3 --warmup 3 --compile \
        --out "$OUT/train_seed001_compile.json" 2>&1 | tee "$OUT/train_seed001_compile.log" || rc=1
      ;;
    ablate)
      python3 benchmarks/bench_train.py --presets seed001 --batch 128 --steps 10 --rounds 3 --warmup 3 --ablate \
        --out "$OUT/train_ablate.json" 2>&1 | tee "$OUT/train_ablate.log" || rc=1
      ;;
    sample)
      python3 benchmarks/bench_sample.py --skip-cpu --gpu-batch 256 --gpu-dtype bf16 --gpu-steps 10,20,50,100 \
        --repeats 2 --out "$OUT/sample.json" 2>&1 | tee "$OUT/sample.log" || rc=1
      ;;
    *) echo "unknown step $step (check, train, ablate, sample, all)"; rc=2 ;;
  esac
done
exit $rc
