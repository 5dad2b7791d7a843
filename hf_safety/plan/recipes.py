"""Plans from elsewhere: the settings of a training recipe YAML, and the plan of a measured run of `bench/results/`."""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any

from .estimate import estimate_memory
from .settings import MemoryPlan, PlanSettings
from .shapes import PlanError, _repo_root


# A run with a measured peak in bench/results/*.json (a list of runs, or {"runs": [...]}), as `bench/qlora_gpu.py`
# writes them: the keys [`plan_for_measured_run`] needs. `peak_memory_gib` is `torch.cuda.max_memory_allocated()` /
# 2**30; `model` a Hub id, a config path or a short name with the run's `recipe` (or `hub_id`) giving the model.
MEASURED_RUN_KEYS = ("model", "seq_len", "micro_batch", "lora_r", "gradient_checkpointing", "quant", "peak_memory_gib")


def settings_from_recipe(path: str | os.PathLike) -> tuple[str | None, dict[str, Any]]:
    """
    `(model, settings)` from a training recipe YAML (the TrlParser recipes in `recipes/derta/`, `recipes/seas/`):
    `model_name_or_path`, `red_team_model_name_or_path`, `load_in_4bit` / `bnb_4bit_quant_type` /
    `use_bnb_nested_quant`, `use_peft` / `lora_r` / `lora_dropout`, `max_length`, `per_device_train_batch_size`,
    `activation_checkpointing` (or `gradient_checkpointing`), `optim`, and SEAS's judge and generation settings.
    The method is `seas` when the recipe has SEAS fields, `derta` when it has DeRTa fields.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise PlanError(f"recipe {str(path)!r} not found")
    recipe = yaml.safe_load(path.read_text()) or {}
    if not isinstance(recipe, dict):
        raise PlanError(f"recipe {path} is not a YAML mapping")
    out: dict[str, Any] = {}
    if "red_team_model_name_or_path" in recipe or "num_iterations" in recipe or "judge" in recipe:
        out["method"] = "seas"
    elif any(key in recipe for key in ("rto", "harmful_prefix", "refusal_text", "rto_weight")):
        out["method"] = "derta"
    if recipe.get("load_in_8bit"):
        raise PlanError(f"{path}: load_in_8bit is not modelled (nf4 or bf16)")
    if recipe.get("load_in_4bit"):
        if recipe.get("bnb_4bit_quant_type", "nf4") != "nf4":
            raise PlanError(f"{path}: bnb_4bit_quant_type {recipe['bnb_4bit_quant_type']!r} is not modelled (nf4)")
        out["quant"] = "nf4"
        out["double_quant"] = bool(recipe.get("use_bnb_nested_quant", False))
    else:
        out["quant"] = "bf16"
    if recipe.get("use_peft", False):
        out["lora_r"] = int(recipe.get("lora_r", 16))
        out["lora_dropout"] = float(recipe.get("lora_dropout", 0.05))
    else:
        out["lora_r"] = 0
        if out["quant"] == "nf4":
            raise PlanError(f"{path}: load_in_4bit without use_peft (a 4-bit model cannot be fully fine-tuned)")
    mapping = {
        "max_length": "seq_len",
        "per_device_train_batch_size": "micro_batch",
        "optim": "optim",
        "judge": "judge",
        "generation_batch_size": "generation_batch_size",
        "judge_batch_size": "judge_batch_size",
        "num_adversarial_prompts": "num_adversarial_prompts",
        "num_responses": "num_responses",
        "red_team_max_new_tokens": "red_team_max_new_tokens",
        "target_max_new_tokens": "target_max_new_tokens",
        "red_team_model_name_or_path": "red_team_model",
    }
    for key, name in mapping.items():
        if recipe.get(key) is not None:
            out[name] = recipe[key]
    for key in ("activation_checkpointing", "gradient_checkpointing"):
        if recipe.get(key) is not None:
            out["gradient_checkpointing"] = bool(recipe[key])
            break
    targets = recipe.get("lora_target_parameters")
    if targets:
        out["lora_experts"] = True
    return recipe.get("model_name_or_path"), out


def plan_for_measured_run(run: dict[str, Any]) -> MemoryPlan:
    """
    The plan of a measured run of `bench/results/*.json`, to compare with its `peak_memory_gib`. Needs the keys
    [`MEASURED_RUN_KEYS`]; reads the run's `recipe` (relative to the checkout) for what the run does not record
    (LoRA dropout, targets), then the run's own values: `method` (default derta), `optim`, `quant` (`"nf4"`/`"bf16"`
    or bench/qlora_gpu.py's `{"quant_type", "double_quant", ...}`), `experts_4bit`, `sequences_per_micro_batch` and
    `tokens_per_step` (fewer tokens than sequences x seq_len: padded; more: DeRTa's fused sequences, counted as
    that many seq_len-long sequences), `derta_form`, and any [`PlanSettings`] field.
    """
    missing = [key for key in MEASURED_RUN_KEYS if key not in run]
    if missing:
        raise PlanError(f"measured run lacks {missing}: {run}")
    model, settings = None, {}
    if run.get("recipe"):
        recipe = Path(run["recipe"])
        model, settings = settings_from_recipe(recipe if recipe.is_absolute() else _repo_root() / recipe)
    name = str(run["model"])
    if run.get("hub_id") or "/" in name or model is None:
        model = run.get("hub_id") or name
    settings.update(
        method=run.get("method", settings.get("method", "derta")),
        seq_len=run["seq_len"],
        micro_batch=run["micro_batch"],
        lora_r=run["lora_r"],
        gradient_checkpointing=bool(run["gradient_checkpointing"]),
    )
    quant = run["quant"]
    if isinstance(quant, dict):
        settings.update(quant=quant.get("quant_type", "nf4"), double_quant=bool(quant.get("double_quant", True)))
    elif quant:
        settings["quant"] = quant
    if run.get("optim"):
        settings["optim"] = run["optim"]
    if run.get("experts_4bit") is not None:
        settings["experts_bf16"] = not run["experts_4bit"]
    sequences, tokens = run.get("sequences_per_micro_batch"), run.get("tokens_per_step")
    if sequences:
        per_row = sequences / run["micro_batch"]
        if tokens:  # DeRTa's fused sequence (prompt + harmful + safe answer) is longer than seq_len
            per_row = max(per_row, tokens / (run["micro_batch"] * run["seq_len"]))
        settings["sequences_per_row"] = max(1, math.ceil(per_row - 1e-9))
        if tokens:  # a fused batch carries its 4-D mask even without padding
            settings["padded"] = run.get("derta_form") == "fused" or tokens < sequences * run["seq_len"]
    fields = {f.name for f in dataclasses.fields(PlanSettings)}
    settings.update({key: value for key, value in run.items() if key in fields and key not in settings})
    return estimate_memory(model, **settings)
