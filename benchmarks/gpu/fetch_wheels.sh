#!/usr/bin/env bash
# Run HERE (the CPU machine, which reaches PyPI), from anywhere: prepares what the lent GPU machine cannot fetch,
# all in git-ignored folders, for the device tool to carry (run_device.sh's header has the calls):
#   .whl/*.whl                  the wheels of benchmarks/gpu/wheels.txt (CPython 3.12, x86-64; ~10 MB)
#   .whl/cond/*.whl             fallbacks, installed there only where the image's version fails a requirement
#   .whl/peers/                 a copy of ../shared/peers/diffusers_train_unconditional.py (+ README, sha256):
#                               the device tool sends the checkout only, and ../shared is beside it, not in it
#   bench_out/wheels-pyarrow/   only with --with-pyarrow (55 MB): carry it only if preflight asks for it
# Usage: bash benchmarks/gpu/fetch_wheels.sh [--with-pyarrow] [--no-download]
#   --no-download: only the peer copy (e.g. for the CPU dry run of the tests)
set -euo pipefail
cd "$(dirname "$0")/../.."
with_pyarrow=0 download=1
for a in "$@"; do
  case $a in
    --with-pyarrow) with_pyarrow=1 ;;
    --no-download) download=0 ;;
    *) echo "unknown option $a (--with-pyarrow, --no-download)" >&2; exit 2 ;;
  esac
done
# the peer: ../shared beside the checkout, or shared/ inside it
peer_src=""
for d in ../shared/peers shared/peers; do
  [ -f "$d/diffusers_train_unconditional.py" ] && { peer_src=$d; break; }
done
[ -n "$peer_src" ] || { echo "no shared/peers/diffusers_train_unconditional.py beside or in the checkout" >&2; exit 1; }
mkdir -p .whl/peers
cp "$peer_src/diffusers_train_unconditional.py" "$peer_src/README.md" .whl/peers/
chmod u+w .whl/peers/*
(cd .whl/peers && sha256sum diffusers_train_unconditional.py > SHA256SUMS)
echo "peer copied from $peer_src: $(cat .whl/peers/SHA256SUMS)"
[ "$download" = 1 ] || exit 0

plats=()
for p in manylinux_2_28_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64; do
  plats+=(--platform "$p")
done
fetch() {  # fetch DIR REQ: one wheel, no dependencies, for the device's CPython 3.12
  python3 -m pip download -q --disable-pip-version-check --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${plats[@]}" -d "$1" "$2" 2>&1 | grep -v "is ignored: it is neither" || true
  local name=${2%%==*}
  ls "$1" | grep -qi "^${name//-/_}-\|^${name}-" || { echo "could not download $2" >&2; exit 1; }
}
mkdir -p .whl/cond
rm -f .whl/*.whl .whl/cond/*.whl  # one version of each: two would stop the install there
while read -r line; do
  line=${line%%#*}
  line=$(echo "$line" | xargs)
  [ -n "$line" ] || continue
  case $line in
    cond:*) fetch .whl/cond "$(echo "${line#cond:}" | xargs)" ;;
    pyarrow:*)
      if [ "$with_pyarrow" = 1 ]; then
        mkdir -p bench_out/wheels-pyarrow && rm -f bench_out/wheels-pyarrow/*.whl
        fetch bench_out/wheels-pyarrow "$(echo "${line#pyarrow:}" | xargs)"
      fi ;;
    *) fetch .whl "$line" ;;
  esac
done < benchmarks/gpu/wheels.txt
ls -l .whl .whl/cond
[ "$with_pyarrow" = 1 ] && ls -l bench_out/wheels-pyarrow
du -sh .whl
echo "carry: [\".whl\"]$([ "$with_pyarrow" = 1 ] && echo ' (+ "bench_out/wheels-pyarrow" only if preflight asks)')"
