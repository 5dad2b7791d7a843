"""
Will it fit? Peak GPU memory of a DeRTa, SEAS or SFT run, estimated from the model config alone (`hf-safety plan`).

```python
>>> from hf_safety.plan import estimate_memory
>>> plan = estimate_memory("meta-llama/Meta-Llama-3-8B-Instruct", method="derta", seq_len=2048, micro_batch=1)
>>> plan.total / 2**30, plan.fits(24)
>>> print(plan.format_table(gpu_gb=24))
>>> for suggestion in plan.suggestions(gpu_gb=16): print(suggestion)
```

No weights are downloaded: the config comes from a local folder or `config.json`, from the configs shipped in
`recipes/configs/` (a Hub id that matches one resolves to it offline), or from `AutoConfig.from_pretrained` (the
Hub cache, or the Hub when online). Parameters are counted exactly by building the model on the meta device and
sorting them the way bitsandbytes quantizes them. Everything else is a formula of the config and the settings; each
one is written down in [`estimate_memory`] and was checked, where a CPU can check it, by counting the tensors autograd
saves in a tiny model of the same architecture (`tests/test_plan.py`). The GPU-only parts (CUDA context, allocator,
kernel workspaces, the backward transients) are estimates: compare with a measured peak before trusting a tight fit.

Units: terms are in bytes; tables print GiB (2**30 bytes). A GPU "size" (`--gpu 24`) is read as GiB, which is what
"24 GB", "48 GB" and "80 GB" cards hold (an H100 80GB shows 79.6 GiB; the margin covers the difference).
"""

from .cli import PLAN_USAGE_EXAMPLES, build_parser, describe_settings, main
from .estimate import estimate_memory
from .recipes import MEASURED_RUN_KEYS, plan_for_measured_run, settings_from_recipe
from .seas import judge_model_id
from .settings import GIB, METHODS, OPTIMIZER_STATE_BYTES, QUANTS, MemoryPlan, PlanSettings, Suggestion, Term
from .shapes import (
    LinearShape,
    ModelShapes,
    PlanError,
    load_model_config,
    model_shapes,
    shipped_configs,
    shipped_configs_dir,
)
from .suggest import MIN_SAVING
from .terms import FUSED_HEAD_TOKEN_TILE, FUSED_HEAD_VOCAB_TILE, NF4_BYTES_PER_PARAM
from .terms import _block_saved_per_token as _block_saved_per_token  # tests/test_plan.py checks it against autograd


__all__ = [
    "FUSED_HEAD_TOKEN_TILE",
    "FUSED_HEAD_VOCAB_TILE",
    "GIB",
    "MEASURED_RUN_KEYS",
    "METHODS",
    "MIN_SAVING",
    "NF4_BYTES_PER_PARAM",
    "OPTIMIZER_STATE_BYTES",
    "PLAN_USAGE_EXAMPLES",
    "QUANTS",
    "LinearShape",
    "MemoryPlan",
    "ModelShapes",
    "PlanError",
    "PlanSettings",
    "Suggestion",
    "Term",
    "build_parser",
    "describe_settings",
    "estimate_memory",
    "judge_model_id",
    "load_model_config",
    "main",
    "model_shapes",
    "plan_for_measured_run",
    "settings_from_recipe",
    "shipped_configs",
    "shipped_configs_dir",
]
