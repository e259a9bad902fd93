#!/usr/bin/env bash
# The whole ptt-faces road, offline on CPU, on the embedded mini-board (run by `make demo`).
# Every stage is the real command a user types; only the base URL points at the loopback mirror.
# A second run starts clean: the previous demo_out/ is removed first, so runs never mix.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${DEMO_OUT:-demo_out}"
# DEMO_TRAIN_ARGS: extra key=value overrides for the training stage (the README test runs the demo at tiny size).
read -r -a TRAIN_ARGS <<< "${DEMO_TRAIN_ARGS:-}"
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1

# FID with clean-fid's Inception when it is on disk (`make demo` installs the `weights` extra), else the labelled
# substitute; a damaged weights file stops the demo (never silently replaced by the substitute).
WRC=0; INCEPTION=$(python -m common.weights_cli path inception) || WRC=$?
if [ "$WRC" -eq 0 ]; then
  FID_ARGS=(); TRAIN_FID=(); FID_WHAT="clean-fid's Inception, $INCEPTION"
elif [ "$WRC" -eq 1 ]; then  # the line above said how to get it
  FID_ARGS=(--substitute); TRAIN_FID=(eval.fid_extractor=substitute)
  FID_WHAT="offline substitute features; not comparable to published FID"
else
  exit 2  # a damaged weights file: its one error line is above
fi

if [ -e "$OUT" ]; then echo "demo: removing the previous $OUT/ (each demo starts clean)"; rm -rf "$OUT"; fi
mkdir -p "$OUT"
START=$(date +%s)
stage() { echo; echo "=== [$(( $(date +%s) - START ))s] $*"; }

stage "0/5 serve the embedded mini-board on loopback"
ptt-mirror --port 0 --url-file "$OUT/mirror_url" > "$OUT/mirror.log" 2>&1 &
MIRROR_PID=$!
trap 'kill $MIRROR_PID 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [ -s "$OUT/mirror_url" ] && break; sleep 0.1; done
[ -s "$OUT/mirror_url" ] || { echo "demo: the mirror did not start; see $OUT/mirror.log" >&2; exit 1; }
BASE_URL=$(cat "$OUT/mirror_url")
echo "mirror at $BASE_URL"

stage "1/5 crawl: scrapy crawl ptt_beauty"
scrapy crawl ptt_beauty -a start_date=2024-01-01 -a end_date=2024-01-31 -a keyword=正妹 \
  -s PTT_BASE_URL="$BASE_URL" -s IMAGES_STORE="$OUT/images" -s PTT_ALLOW_PRIVATE_HOSTS=True -s PTT_IMGUR_BASE="$BASE_URL/imgur" \
  -s PTT_STATS_FILE="$OUT/crawl_stats.json" \
  -s LOG_FILE="$OUT/crawl.log" -O "$OUT/feed.jsonl"
echo "feed: $(wc -l < "$OUT/feed.jsonl") posts -> $OUT/feed.jsonl (log: $OUT/crawl.log)"

stage "2/5 curate: ptt-curate"
ptt-curate --config configs/curation.yaml feed="$OUT/feed.jsonl" images="$OUT/images" out="$OUT/curated"
ptt-curate review "$OUT/curated" > "$OUT/review_page.txt"

stage "3/5 train: accelerate launch training/train.py"
accelerate launch --num_processes 1 --num_machines 1 --mixed_precision no --dynamo_backend no \
  training/train.py --config configs/train/demo.yaml data.dataset_dir="$OUT/curated/dataset" run_dir="$OUT/run" \
  ${TRAIN_FID[@]+"${TRAIN_FID[@]}"} ${TRAIN_ARGS[@]+"${TRAIN_ARGS[@]}"}

stage "4/5 sample: ptt-sample"
ptt-sample --model "$OUT/run/pipeline" --num-images 16 --out "$OUT/samples" --scheduler ddim --steps 50 --seed 0

stage "5/5 score: ptt-fid ($FID_WHAT)"
ptt-fid --gen "$OUT/samples" --ref "$OUT/curated/dataset:test" ${FID_ARGS[@]+"${FID_ARGS[@]}"} \
  --cache-dir "$OUT/fid_cache" --out-json "$OUT/fid.json"

kill $MIRROR_PID 2>/dev/null || true
stage "summary"
python scripts/demo_summary.py "$OUT"
