#!/usr/bin/env bash
# Runs every benchmark in turn (`make bench`); each prints a table and writes JSON under bench_out/.
# The settings are the ones BENCHMARKS.md reports; run a script alone with --help for its options.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p bench_out
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
echo "=== crawl";    python benchmarks/bench_crawl.py
echo "=== curation"; python benchmarks/bench_curation.py --photos 60 --repeats 2
echo "=== train";    python benchmarks/bench_train.py --presets homework_unet --batch 16 --steps 3 --rounds 3 --ablate
echo "=== sample";   python benchmarks/bench_sample.py --preset tiny --cpu-batch 8 --cpu-steps 10,20 --repeats 2
echo "=== quality";  python benchmarks/bench_quality.py --short   # proxy FD per images seen (416 s on the shared 2-core machine)
echo "=== peers";    python benchmarks/bench_peers_quality.py   # + lucidrains' denoising-diffusion-pytorch (pip-installs it into bench_out/peer_pkgs)
echo "=== fid";      python benchmarks/bench_fid.py   # the Frechet distance: ours against clean-fid's sqrtm form
