#!/usr/bin/env bash
# GPU check (issue #25), at most ~8 minutes on one GPU: installs the project with TensorFlow's CUDA build into
# .venv-gpu (pinned by constraints.txt, tensorflow-cpu swapped for tensorflow[and-cuda] of the same version), then
# runs benchmarks/gpu_check.py: devices, precision, extract img/s, two fine-tune epochs' s/epoch.
# Offline: WHEELS=/folder/of/wheels (pip download of the same requirements) installs from there only.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
export PIPELINE_DATA_MIRROR=${PIPELINE_DATA_MIRROR:-$(realpath "$SHARED/mirror")}
export KERAS_HOME=${KERAS_HOME:-$PWD/.cache/keras_home}
mkdir -p "$KERAS_HOME" && cp -rn "$SHARED/keras_home/models" "$KERAS_HOME/" && chmod -R u+w "$KERAS_HOME"
TF=$(sed -n 's/^tensorflow_cpu==//p' constraints.txt)
PIP_FROM=(${WHEELS:+--no-index --find-links "$WHEELS"})
test -x .venv-gpu/bin/python || python3 -m venv .venv-gpu
.venv-gpu/bin/pip install --quiet "${PIP_FROM[@]}" -c constraints.txt -e .
.venv-gpu/bin/pip uninstall --quiet -y tensorflow-cpu
.venv-gpu/bin/pip install --quiet "${PIP_FROM[@]}" "tensorflow[and-cuda]==$TF"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || echo "nvidia-smi: no GPU here"
timeout 420 .venv-gpu/bin/python benchmarks/gpu_check.py
