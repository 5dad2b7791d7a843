#!/usr/bin/env bash
# Sets up the GPU image for bench/qlora_gpu.py. The image has torch, transformers, accelerate and peft; trl,
# bitsandbytes and datasets come as wheels carried in wheels/ (the machine has no PyPI), fetched beforehand with
#   pip download --no-deps trl bitsandbytes datasets -d wheels/
# (add any of datasets' own dependencies the image lacks: `pip check` below names them).
# Nothing is resolved from an index and the image's torch is never replaced.
#   bash bench/gpu_setup.sh [WHEELS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
wheels="${1:-wheels}"
shopt -s nullglob
files=("$wheels"/*.whl)
if [ ${#files[@]} -eq 0 ]; then
    echo "no wheels in $wheels/: fetch them with 'pip download --no-deps trl bitsandbytes datasets -d $wheels/'" >&2
    exit 1
fi
python -m pip install --no-index --no-deps "${files[@]}"
python -m pip install --no-index --no-deps --no-build-isolation -e . ||
    echo "installing the project failed; bench/qlora_gpu.py imports hf_safety from this checkout anyway" >&2
python -m pip check || echo "pip check reports missing dependencies (above): carry their wheels too" >&2
python - <<'EOF'
import bitsandbytes, datasets, peft, torch, transformers, trl

import hf_safety

print(f"torch {torch.__version__} (CUDA {torch.version.cuda}, available: {torch.cuda.is_available()}), "
      f"transformers {transformers.__version__}, trl {trl.__version__}, peft {peft.__version__}, "
      f"bitsandbytes {bitsandbytes.__version__}, datasets {datasets.__version__}, hf_safety from {hf_safety.__file__}")
EOF
