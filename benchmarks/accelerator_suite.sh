#!/usr/bin/env bash
# The speed benchmarks at their accelerator settings, then the main job, in one go: the command
# to run on a GPU/TPU host. Each part is time-limited and logged; one that fails or runs out of
# time is reported and the rest still run. The limits are sized for a GPU: on a CPU the rolled
# convolutions (XLA:CPU runs them ~10x slower than unrolled) overrun them.
#   bash benchmarks/accelerator_suite.sh [FASHION_IDX_DIR] [MNIST_IDX_DIR] [OUT_DIR]
# Defaults: /usr/share/datasets/fashion-mnist, ../shared/data/mnist (beside the repository),
# a fresh directory under /tmp; OUT_DIR must not exist (the main job would resume an old run).
# SUITE_SECONDS=N: the main job gets what is left of N seconds (default: 30 minutes for it).
# Prints each part's SUMMARY line at the end (logs in OUT_DIR/<part>.log, the main job's
# per-stage table in OUT_DIR/main_job.log and OUT_DIR/main_job/accelerator_run.json).
set -uo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
FASHION="$(realpath -m "${1:-/usr/share/datasets/fashion-mnist}")"
MNIST="$(realpath -m "${2:-$REPO/../shared/data/mnist}")"
if [ -n "${3:-}" ]; then
  OUT="$(realpath -m "$3")"
  if [ -e "$OUT" ]; then echo "error: $OUT exists; the suite times fresh runs" >&2; exit 2; fi
  mkdir -p "$OUT"
else
  OUT="$(mktemp -d /tmp/accelerator_suite.XXXXXX)"
fi
cd "$REPO"
PY="${PYTHON:-python}"
ACCEL="--steps_per_call 0 --unroll=false"  # one rolled lax.scan per epoch
part() {  # part NAME SECONDS COMMAND...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  echo "== $name: $*"
  timeout -k 30 "$limit" "$@" 2>&1 | tee "$OUT/$name.log"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc after $((SECONDS - t0)) s" | tee -a "$OUT/$name.log"
}
part conv_b128 150 "$PY" benchmarks/train_throughput.py --arch conv --batch 128 --epochs 20 $ACCEL \
  --idx_dir "$FASHION" --torch_compile
part conv_b512 90 "$PY" benchmarks/train_throughput.py --arch conv --batch 512 --epochs 40 $ACCEL --idx_dir "$FASHION"
part conv_b512_bf16 90 "$PY" benchmarks/train_throughput.py --arch conv --batch 512 --epochs 40 $ACCEL \
  --idx_dir "$FASHION" --dtype bfloat16
part mlp_b128 90 "$PY" benchmarks/train_throughput.py --arch mlp --batch 128 --epochs 20 $ACCEL --idx_dir "$MNIST"
part pixelcnn_fit 90 "$PY" benchmarks/prior_fit_throughput.py --config configs/fashion_mnist.py:accelerator \
  --prior pixelcnn --latents 32768 --epochs 5
left=$(( ${SUITE_SECONDS:-0} > 0 ? ${SUITE_SECONDS:-0} - SECONDS - 20 : 1800 ))
if (( left < 60 )); then
  echo "== main_job: skipped, ${left} s left of SUITE_SECONDS=${SUITE_SECONDS:-0}" | tee "$OUT/main_job.log"
else
  part main_job "$left" "$PY" benchmarks/accelerator.py --config configs/fashion_mnist.py:accelerator \
    --workdir "$OUT/main_job" --config.data.idx_dir="$FASHION"
fi
echo; echo "== summary ($OUT)"
grep -h "^SUMMARY\|^== .*exit\|^== .*skipped\|^| " "$OUT"/*.log
