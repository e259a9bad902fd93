#!/usr/bin/env bash
# Run HERE (the CPU machine, which reaches PyPI), from the repo root: downloads the wheels listed in
# benchmarks/gpu/wheels.txt for the lent GPU machine (x86-64, CPython 3.12) into .whl/ (git-ignored), for the
# device tool to carry. Then: run(command="bash benchmarks/gpu/run_device.sh all", carry=[".whl"]).
set -euo pipefail
cd "$(dirname "$0")/../.."
mkdir -p .whl
plats=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  plats+=(--platform "$p")
done
grep -v '^#' benchmarks/gpu/wheels.txt | grep . | while read -r req; do
  python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${plats[@]}" -d .whl "$req"
done
ls -l .whl
du -sh .whl
