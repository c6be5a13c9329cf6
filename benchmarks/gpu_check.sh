#!/usr/bin/env bash
# GPU check of the multi-GPU training path (benchmarks/gpu_check.py; docs/performance.md, "GPU check").
#
#   benchmarks/gpu_check.sh wheels   # here, with the project's .venv: the wheels a bare GPU machine lacks -> .whl/
#   benchmarks/gpu_check.sh [ARGS]   # there (torch, CUDA and no network): install .whl/ into /tmp/site, run the
#                                    # check with ARGS, results in $OUT (or benchmarks/results/) as gpu-check.json
#
# The wheels are this checkout (synthembed, --no-deps) and the same versions as .venv of the packages the train
# stage imports that such a machine lacks or holds in older versions; mistral-common is carried for its tokenizer
# file only. pydantic-core is the one compiled package: fetched for the GPU machine's Python (PYTHON_VERSION).
set -euo pipefail
cd "$(dirname "$0")/.."
WHEELS=.whl
CARRIED="deepspeed hjson pydantic pydantic-core annotated-types typing-inspection datasets dill multiprocess
platformdirs transformers sentence-transformers peft accelerate mistral-common"

if [[ "${1:-}" == wheels ]]; then
  PY=.venv/bin/python
  rm -rf "$WHEELS" && mkdir -p "$WHEELS"
  "$PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WHEELS" . deepspeed=="$("$PY" -c \
    "import importlib.metadata as m; print(m.version('deepspeed'))")"  # deepspeed ships no wheel of its own
  for package in $CARRIED; do
    [[ "$package" == deepspeed ]] && continue
    version=$("$PY" -c "import importlib.metadata as m; print(m.version('$package'))")
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version "${PYTHON_VERSION:-3.12}" \
      --implementation cp --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$WHEELS" \
      "$package==$version"
  done
  du -sh "$WHEELS"
  exit 0
fi

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$WHEELS"/*.whl
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false
results=${OUT:-benchmarks/results}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 benchmarks/gpu_check.py --wheels "$WHEELS" --output "$results/gpu-check.json" "$@"
