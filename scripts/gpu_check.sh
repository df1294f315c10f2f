#!/usr/bin/env bash
# The GPU check, as one command: every GPU test, then a short engine benchmark (batch 1/8/32/64, each
# engine, in-process and through the server), written to docs/gpu-results.md. Target: under 5 minutes.
#
#   bash scripts/gpu_check.sh            # on a GPU host, from the repository root
#
# It also runs on a host without a GPU: the GPU tests skip and the report says plainly what could not
# run and why (no CUDA, no TensorRT, no onnxruntime-gpu, a missing Python package...).
#
# Python: $PYTHON, else .venv/bin/python when it imports torch, else python3. The repository and the SDK
# (clients/python) go on PYTHONPATH, so nothing needs installing. Wheels in .whl/ (made on a machine with
# a registry by scripts/gpu_wheels.sh) are installed into /tmp/inferd-site first: that is how a GPU host
# without network access gets grpcio-health-checking, grpcio-reflection and pytest-asyncio.
#
# Outputs: docs/gpu-results.md, and in $OUT (or .cache/gpu-check) the junit XML, the raw JSON and the logs.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
OUT_DIR=${OUT:-$ROOT/.cache/gpu-check}
mkdir -p "$OUT_DIR"
TEST_TIMEOUT=${GPU_TEST_TIMEOUT:-150}
BENCH_TIMEOUT=${GPU_BENCH_TIMEOUT:-130}
started=$(date +%s)

if [ -n "${PYTHON:-}" ]; then
  py=$PYTHON
elif [ -x .venv/bin/python ] && .venv/bin/python -c 'import torch' 2>/dev/null; then
  py=.venv/bin/python
else
  py=python3
fi

if compgen -G ".whl/*.whl" >/dev/null; then
  echo "== installing carried wheels from .whl/ into /tmp/inferd-site"
  "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/inferd-site .whl/*.whl \
    || echo "warning: some carried wheels did not install"
  export PYTHONPATH=/tmp/inferd-site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$ROOT:$ROOT/clients/python${PYTHONPATH:+:$PYTHONPATH}
export PYTHONUNBUFFERED=1

echo "== environment ($py)"
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,memory.used --format=csv
"$py" - <<'PY'
import importlib, importlib.util
for name in ["numpy", "grpc", "grpc_health.v1", "grpc_reflection.v1alpha", "google.protobuf", "pytest",
             "pytest_asyncio", "onnx", "onnxruntime", "torch", "tensorrt", "pynvml"]:
    if importlib.util.find_spec(name.split(".")[0]) is None:
        print(f"  {name:24} MISSING")
        continue
    try:
        module = importlib.import_module(name)
        print(f"  {name:24} {getattr(module, '__version__', 'ok')}")
    except Exception as exc:
        print(f"  {name:24} BROKEN: {str(exc).splitlines()[0][:150]}")
PY

echo "== GPU tests (pytest -m gpu tests/gpu, limit ${TEST_TIMEOUT}s)"
timeout "$TEST_TIMEOUT" "$py" -m pytest -m gpu tests/gpu -q -ra -p no:cacheprovider \
  --junitxml="$OUT_DIR/gpu-tests.xml" 2>&1 | tee "$OUT_DIR/gpu-tests.log"
tests_rc=${PIPESTATUS[0]}
[ "$tests_rc" = 124 ] && echo "the GPU tests ran past ${TEST_TIMEOUT}s and were stopped"

echo "== engine benchmark (python -m bench.gpu, limit ${BENCH_TIMEOUT}s)"
timeout "$BENCH_TIMEOUT" "$py" -W ignore -m bench.gpu --output docs/gpu-results.md --json "$OUT_DIR/gpu-results.json" \
  --junit "$OUT_DIR/gpu-tests.xml" 2>&1 | tee "$OUT_DIR/bench.log"
bench_rc=${PIPESTATUS[0]}
if [ "$bench_rc" != 0 ]; then
  # The report must still say what happened.
  {
    echo "# GPU check results"
    echo
    echo "**The benchmark did not finish** (exit status $bench_rc$( [ "$bench_rc" = 124 ] && echo ": stopped after ${BENCH_TIMEOUT}s")); the GPU tests exited with $tests_rc."
    echo
    echo '```'
    tail -n 40 "$OUT_DIR/bench.log"
    echo '```'
  } > docs/gpu-results.md
fi
cp docs/gpu-results.md "$OUT_DIR/" 2>/dev/null || true
echo "== done in $(( $(date +%s) - started ))s: GPU tests exit $tests_rc, benchmark exit $bench_rc; see docs/gpu-results.md"
[ "$tests_rc" = 0 ] || [ "$tests_rc" = 5 ] || exit "$tests_rc"
exit "$bench_rc"
