#!/usr/bin/env bash
# Download, into .whl/, the small Python packages a GPU host may lack for scripts/gpu_check.sh (its image
# has torch, onnx, onnxruntime, numpy, grpcio, pytest and nvidia-ml-py, but not grpc health/reflection or
# pytest-asyncio, and maybe not the grpcio/protobuf versions the generated code needs). Run it where pip
# can reach a registry; the GPU host installs them offline (gpu_check.sh does, from .whl/).
#
# TensorRT is not among them: its wheels (tensorrt-cu1x + libs) are over a gigabyte, beyond what can be
# carried to a machine without network access. Where TensorRT is absent the check records it.
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${PYVER:-3.12}
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
mkdir -p .whl
pins=$(.venv/bin/python - <<'PY'
from importlib.metadata import version
print(" ".join(f"{p}=={version(p)}" for p in ["grpcio", "grpcio-health-checking", "grpcio-reflection", "protobuf", "pytest-asyncio"]))
PY
)
for pin in $pins; do
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$PYVER" --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform any -d .whl "$pin"
done
ls -la .whl
