#!/usr/bin/env bash
# README's main job on Fashion-MNIST, timed per stage: VAE, priors, comparison report.
#   bash benchmarks/end_to_end.sh [WORKDIR]   (default runs/e2e_fashion_mnist; must not exist)
# Prints one line per stage and a SUMMARY line. Needs the Debian dataset-fashion-mnist
# package or TFDS access (see docs/training.md, "Data, offline").
set -euo pipefail
cd "$(dirname "$0")/.."
W="${1:-runs/e2e_fashion_mnist}"
if [ -e "$W" ]; then echo "error: $W exists; end_to_end times a fresh run" >&2; exit 2; fi
PY="${PYTHON:-python}"
declare -A T
stage() {  # stage NAME COMMAND...
  local name=$1; shift
  local t0=$SECONDS
  "$@"
  T[$name]=$((SECONDS - t0))
  printf 'stage %-6s %6d s\n' "$name" "${T[$name]}"
}
stage vae    "$PY" train.py --config configs/fashion_mnist.py --workdir "$W" --config.stage=vae
stage priors "$PY" train.py --config configs/fashion_mnist.py --workdir "$W" --config.stage=prior
stage sample "$PY" sample.py --workdir "$W"
total=$((T[vae] + T[priors] + T[sample]))
printf 'SUMMARY end_to_end fashion_mnist: vae %d s, priors %d s, sample %d s, total %d min %d s (target <= 20 min)\n' \
  "${T[vae]}" "${T[priors]}" "${T[sample]}" $((total / 60)) $((total % 60))
