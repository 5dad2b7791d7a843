"""`hf-safety plan` / `hf_safety.plan`: the memory planner against published anchors, against what autograd saves in
tiny models on CPU, against measured GPU peaks in bench/results/ (when there are any), and its errors."""

import json
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM, LlamaConfig, MixtralConfig

from hf_safety.cli import main as cli_main
from hf_safety.plan import (
    GIB,
    MEASURED_RUN_KEYS,
    PlanError,
    PlanSettings,
    _block_saved_per_token,
    estimate_memory,
    load_model_config,
    model_shapes,
    plan_for_measured_run,
    settings_from_recipe,
    shipped_configs,
)
from hf_safety.plan.seas import judge_model_id


LLAMA_8B = "meta-llama/Meta-Llama-3-8B-Instruct"
LLAMA_70B = "meta-llama/Meta-Llama-3-70B-Instruct"
MISTRAL_7B = "mistralai/Mistral-7B-Instruct-v0.3"
MIXTRAL = "mistralai/Mixtral-8x7B-Instruct-v0.1"
RESULTS = Path(__file__).resolve().parents[1] / "bench" / "results"


def test_shipped_configs_are_found():
    assert {LLAMA_8B, LLAMA_70B, MISTRAL_7B, MIXTRAL} <= set(shipped_configs())
    config, source = load_model_config(LLAMA_8B.upper())  # Hub ids resolve to the shipped config, any case
    assert config.hidden_size == 4096 and "recipes/configs" in source


# ---------------------------------------------------------------------------------------------------------------------
# Published anchors (shared/notes/anchors-eval-perf.md §C)


@pytest.mark.parametrize(
    "model, floor_gb", [(LLAMA_8B, 5.7), (LLAMA_70B, 39.5), (MIXTRAL, 24.5)], ids=["8B", "70B", "8x7B"]
)
def test_nf4_weights_reproduce_the_published_floors(model, floor_gb):
    plan = estimate_memory(model, method="sft")
    assert plan.weights / 1e9 == pytest.approx(floor_gb, rel=0.15)


def test_mixtral_experts_stay_bf16_without_the_conversion():
    shapes = model_shapes(MIXTRAL)
    assert shapes.num_experts == 8 and shapes.expert_params == 32 * 8 * 3 * 4096 * 14336  # exact, from the meta model
    stock = estimate_memory(MIXTRAL, method="sft", experts_bf16=True, lora_experts=False)
    assert stock.weights / 1e9 > 90  # ≈ 45 B expert params in bf16: transformers 5 + bitsandbytes alone
    assert not stock.fits(80)


def test_torchtune_qlora_anchor():
    """torchtune README: Llama-3.1-8B QLoRA on one RTX 4090, batch 2, packed seq 2048, activation checkpointing,
    LoRA r 8 (dropout 0) on q/k/v/o + MLP: 7.4 GiB. Planned for this project's stack (TRL fused LM head, bitsandbytes
    NF4, PEFT, no torch.compile), compared as torch's allocated peak (no CUDA context, no margin)."""
    plan = estimate_memory(
        "meta-llama/Llama-3.1-8B-Instruct",  # same shapes as the shipped Llama-3-8B config
        method="sft",
        seq_len=2048,
        micro_batch=2,
        lora_r=8,
        lora_dropout=0.0,
        padded=False,
        gradient_checkpointing=True,
    )
    assert plan.peak_allocated / GIB == pytest.approx(7.4, rel=0.15)


def _measured_runs():
    """Runs with a measured GPU peak in bench/results/*.json: a list of runs (bench/qlora_gpu.py) or {"runs": [...]};
    failed runs, CPU runs (no peak) and --tiny smoke runs (not the shipped shapes) are left out."""
    runs = []
    for path in sorted(RESULTS.glob("*.json")):
        data = json.loads(path.read_text())
        rows = data.get("runs", []) if isinstance(data, dict) else data if isinstance(data, list) else []
        for index, run in enumerate(rows):
            if isinstance(run, dict) and run.get("peak_memory_gib") and not run.get("tiny") and "error" not in run:
                runs.append(pytest.param(run, id=f"{path.stem}-{run.get('model', index)}"))
    return runs or [
        pytest.param(
            None,
            marks=pytest.mark.skip(
                reason="no measured GPU peak in bench/results/ (bench/qlora_gpu.py writes one per model on a GPU)"
            ),
        )
    ]


@pytest.mark.parametrize("run", _measured_runs())
def test_measured_gpu_peaks(run):
    """Each measured run (`peak_memory_gib` = torch.cuda.max_memory_allocated, and the other MEASURED_RUN_KEYS) is
    within 15% of the plan's allocated peak."""
    assert set(MEASURED_RUN_KEYS) <= set(run)
    plan = plan_for_measured_run(run)
    assert plan.peak_allocated / GIB == pytest.approx(run["peak_memory_gib"], rel=0.15)


# ---------------------------------------------------------------------------------------------------------------------
# The activation formula against what autograd saves (CPU, tiny models of the same architectures)


def _saved_bytes_per_token(model, tokens=64, batch=2, autocast=False, padded=True):
    """Bytes autograd saves per token in block 1 of `model`, leaving out parameters, weight casts and what block 0
    saved too (the attention mask, cos/sin: shared by all blocks)."""
    torch.manual_seed(0)
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    saved = {0: {}, 1: {}}
    layers = model.get_base_model().model.layers if hasattr(model, "get_base_model") else model.model.layers

    def wrap(layer, index):
        forward = layer.forward

        def pack(tensor):
            key = tensor.untyped_storage().data_ptr()
            # under autocast, the bf16 casts of the fp32 adapters are saved too: weights, not activations
            if key not in params and (not autocast or tensor.shape[0] in (batch, batch * tokens)):
                saved[index][key] = tensor.untyped_storage().nbytes()
            return tensor

        def hooked(*args, **kwargs):
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
                return forward(*args, **kwargs)

        layer.forward = hooked

    wrap(layers[0], 0)
    wrap(layers[1], 1)
    ids = torch.randint(0, model.config.vocab_size, (batch, tokens))
    mask = torch.ones(batch, tokens, dtype=torch.long)
    if padded:
        mask[0, :5] = 0  # left padding, as the collators make
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        model(input_ids=ids, attention_mask=mask)
    return sum(size for key, size in saved[1].items() if key not in saved[0]) / (batch * tokens)


def _tiny(config_class, **kwargs):
    values = dict(
        hidden_size=256,
        intermediate_size=704,
        num_attention_heads=8,
        num_key_value_heads=2,
        num_hidden_layers=2,
        vocab_size=1000,
    )
    values.update(kwargs)
    return config_class(**values)


def _lora(model, settings, target_modules="all-linear"):
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(
        model, LoraConfig(r=settings.lora_r, lora_dropout=settings.lora_dropout, target_modules=target_modules)
    )
    if settings.quant == "nf4":  # TRL casts the adapters of a quantized model to bf16
        for param in model.parameters():
            if param.requires_grad:
                param.data = param.data.to(torch.bfloat16)
    model.enable_input_require_grads()
    return model


@pytest.mark.parametrize(
    "settings",
    [
        PlanSettings(lora_r=8, lora_dropout=0.0),
        PlanSettings(lora_r=8, lora_dropout=0.0, padded=False),  # no mask: SDPA takes the KV heads as they are
        PlanSettings(lora_r=8, lora_dropout=0.05),
        PlanSettings(lora_r=8, lora_dropout=0.0, quant="bf16"),  # fp32 adapters (PEFT default) under bf16 autocast
        PlanSettings(lora_r=0, quant="bf16"),  # full fine-tuning
    ],
    ids=["qlora-like", "no-padding", "lora-dropout", "fp32-adapters", "full-ft"],
)
def test_block_activations_match_autograd_on_cpu(settings):
    config = _tiny(LlamaConfig)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model = _lora(model, settings) if settings.lora_r else model.train()
    autocast = settings.quant == "bf16" and settings.lora_r > 0
    measured = _saved_bytes_per_token(model, autocast=autocast, padded=settings.padded)
    expected = _block_saved_per_token(model_shapes(config), settings)
    if settings.lora_r and settings.lora_dropout:  # CPU dropout keeps a bf16 mask (2 B/element), CUDA a bool (1 B)
        expected += 3 * 256 + 256 + 2 * 256 + 704
    assert measured == pytest.approx(expected, rel=0.03)


def test_moe_block_activations_match_autograd_on_cpu():
    """Mixtral layout of transformers 5 (fused bf16 experts), LoRA on attention only."""
    config = _tiny(MixtralConfig, num_local_experts=4, num_experts_per_tok=2)
    settings = PlanSettings(lora_r=8, lora_dropout=0.0, experts_bf16=True, lora_experts=False)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model = _lora(model, settings, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"])
    measured = _saved_bytes_per_token(model)
    expected = _block_saved_per_token(model_shapes(config), settings)
    assert measured == pytest.approx(expected, rel=0.05)


# ---------------------------------------------------------------------------------------------------------------------
# Plans and suggestions


def test_derta_counts_two_sequences_per_row_and_checkpointing_saves_memory():
    derta = estimate_memory(LLAMA_8B, method="derta")
    sft = estimate_memory(LLAMA_8B, method="sft")
    assert derta.activations > 1.8 * sft.activations
    no_gc = estimate_memory(LLAMA_8B, method="derta", gradient_checkpointing=False)
    assert no_gc.activations > 5 * derta.activations
    assert derta.total == sum(term.bytes for term in derta.terms) and derta.peak_allocated < derta.total


def test_fused_lm_head_never_builds_the_logits():
    fused = estimate_memory(LLAMA_8B, method="derta", micro_batch=4)
    full = estimate_memory(LLAMA_8B, method="derta", micro_batch=4, fused_lm_head=False)
    tokens = 4 * 2 * 2048
    assert full.lm_head == tokens * 128256 * 10 and fused.lm_head < full.lm_head / 10


def test_seas_peak_is_the_largest_phase():
    plan = estimate_memory(LLAMA_8B, method="seas")
    assert set(plan.phases) == {"attack", "red team DPO", "target DPO"}
    assert plan.total == max(phase.total for phase in plan.phases.values())
    assert plan.phases[plan.phase] is plan
    attack = plan.phases["attack"]
    assert attack.judge / 1e9 == pytest.approx(16.06, rel=0.01)  # Llama Guard 3 8B in bf16, resident
    assert attack.generation > 0 and plan.phases["target DPO"].activations > 0
    # the red team went through prepare_model_for_kbit_training: its embeddings, head and norms are fp32
    assert plan.phases["red team DPO"].weights == plan.phases["target DPO"].weights
    assert attack.weights > 2 * estimate_memory(LLAMA_8B, method="sft").weights
    no_judge = estimate_memory(LLAMA_8B, method="seas", judge="refusal-strings")
    assert no_judge.phases["attack"].judge == 0 and no_judge.total < plan.total


def test_suggestions_lower_the_estimate_and_say_which_fit():
    plan = estimate_memory(LLAMA_8B, method="derta", micro_batch=8, gradient_checkpointing=False)
    assert not plan.fits(24)
    suggestions = plan.suggestions(24)
    assert suggestions and all(s.total < plan.total for s in suggestions)
    changed = {key for s in suggestions for key in s.settings}
    assert {"micro_batch", "gradient_checkpointing", "seq_len", "lora_dropout"} <= changed
    for suggestion in suggestions:
        replanned = estimate_memory(
            LLAMA_8B, PlanSettings(method="derta", micro_batch=8, gradient_checkpointing=False), **suggestion.settings
        )
        assert replanned.total == suggestion.total and suggestion.fits == replanned.fits(24)
    assert any(s.fits for s in suggestions)


def test_seas_on_a_small_gpu_suggests_a_smaller_judge():
    plan = estimate_memory(LLAMA_8B, method="seas")
    changes = {key: value for s in plan.suggestions(24) for key, value in s.settings.items()}
    assert changes.get("judge") == "llama-guard-3-1b" and changes.get("judge_quant") == "nf4"


def test_fsdp_shards_the_weights():
    one = estimate_memory(LLAMA_70B, method="derta")
    two = estimate_memory(LLAMA_70B, method="derta", num_gpus=2)
    assert two.weights < 0.6 * one.weights and two.activations == one.activations


def test_invalid_settings_say_how_to_fix_them():
    with pytest.raises(PlanError, match="cannot be fully fine-tuned"):
        PlanSettings(lora_r=0, quant="nf4")
    with pytest.raises(PlanError, match="optim 'adam' is not modelled"):
        PlanSettings(optim="adam")


def test_config_sources(tmp_path):
    values = json.loads(shipped_configs()[MISTRAL_7B].read_text())
    (tmp_path / "config.json").write_text(json.dumps(values))
    by_folder = estimate_memory(tmp_path, method="sft")
    by_file = estimate_memory(tmp_path / "config.json", method="sft")
    by_id = estimate_memory(MISTRAL_7B, method="sft")
    assert by_folder.total == by_file.total == by_id.total
    assert estimate_memory(_tiny(LlamaConfig), method="sft").weights > 0  # a config object
    twin, source = load_model_config("meta-llama/Llama-Guard-3-8B")
    assert twin.num_hidden_layers == 32 and "same shapes" in source


@pytest.mark.parametrize(
    "judge, published",
    [  # parameter counts of the base checkpoints (Gemma 2 2B/9B/27B, Gemma 2B), embeddings tied
        ("shieldgemma-2b", 2_614_341_888),
        ("shieldgemma-9b", 9_241_705_984),
        ("shieldgemma-27b", 27_227_128_320),
        ("strongreject-finetuned", 2_506_172_416),
    ],
)
def test_newer_guards_are_planned_offline(judge, published):
    config, source = load_model_config(judge_model_id(judge))
    assert "built-in shapes" in source and model_shapes(config).total_params == published
    plan = estimate_memory(LLAMA_8B, method="seas", judge=judge, judge_quant="bf16")
    assert plan.phases["attack"].judge == pytest.approx(2 * published, rel=0.01)  # resident in bf16


# ---------------------------------------------------------------------------------------------------------------------
# The command


def test_cli_table_and_fit(capsys):
    assert cli_main(["plan", "--model", LLAMA_8B, "--method", "derta", "--gpu", "24"]) == 0
    out = capsys.readouterr().out
    assert "weights" in out and "activations" in out and "fits yes" in out


def test_cli_too_small_gpu_exits_1_with_suggestions(capsys):
    code = cli_main(["plan", "--model", LLAMA_70B, "--method", "derta", "--gpu", "24", "--micro-batch", "4"])
    out = capsys.readouterr().out
    assert code == 1 and "fits NO" in out and "to fit:" in out and "FSDP" in out


def test_cli_json(capsys):
    assert cli_main(["plan", "--model", MIXTRAL, "--method", "seas", "--gpu", "80", "--json"]) in (0, 1)
    plan = json.loads(capsys.readouterr().out)
    assert plan["method"] == "seas" and set(plan["phases"]) == {"attack", "red team DPO", "target DPO"}
    assert plan["fits"] == (plan["total_bytes"] <= 80 * GIB) and "suggestions" in plan


def test_cli_unknown_model_names_the_shipped_configs(capsys):
    assert cli_main(["plan", "--model", "no-such-org/no-such-model", "--gpu", "24"]) == 2
    err = capsys.readouterr().err
    assert "not found" in err and LLAMA_8B in err and MIXTRAL in err
    assert cli_main(["plan", "--model", "./no/such/folder", "--gpu", "24"]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_cli_unknown_model_type(tmp_path, capsys):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "not-a-real-arch", "hidden_size": 8}))
    assert cli_main(["plan", "--model", str(tmp_path), "--gpu", "24"]) == 2
    err = capsys.readouterr().err
    assert "unknown model type 'not-a-real-arch'" in err and LLAMA_8B in err


def test_cli_recipe_settings(tmp_path, capsys):
    recipe = {
        "model_name_or_path": MISTRAL_7B,
        "load_in_4bit": True,
        "use_bnb_nested_quant": True,
        "use_peft": True,
        "lora_r": 32,
        "lora_dropout": 0.0,
        "max_length": 1024,
        "per_device_train_batch_size": 4,
        "activation_checkpointing": True,
        "optim": "paged_adamw_8bit",
        "rto": True,
    }
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe))
    model, settings = settings_from_recipe(path)
    assert model == MISTRAL_7B
    assert settings == {
        "method": "derta",
        "quant": "nf4",
        "double_quant": True,
        "lora_r": 32,
        "lora_dropout": 0.0,
        "seq_len": 1024,
        "micro_batch": 4,
        "optim": "paged_adamw_8bit",
        "gradient_checkpointing": True,
    }
    assert cli_main(["plan", "--recipe", str(path), "--micro-batch", "1", "--json"]) == 0  # the flag wins
    plan = json.loads(capsys.readouterr().out)
    assert plan["settings"]["micro_batch"] == 1 and plan["settings"]["lora_r"] == 32 and plan["method"] == "derta"


def test_shipped_derta_recipe_plans():
    model, settings = settings_from_recipe(
        Path(__file__).resolve().parents[1] / "recipes" / "derta" / "llama3-8b-qlora.yaml"
    )
    assert estimate_memory(model, **settings).method == "derta"


def test_plan_for_a_bench_qlora_gpu_row():
    """The row bench/qlora_gpu.py writes per model: a short name and the recipe, bitsandbytes' quant settings."""
    row = {
        "model": "llama3-8b",
        "method": "derta",
        "recipe": "recipes/derta/llama3-8b-qlora.yaml",
        "seq_len": 2048,
        "micro_batch": 2,
        "sequences_per_micro_batch": 4,
        "tokens_per_step": 4 * 2048,
        "lora_r": 16,
        "gradient_checkpointing": True,
        "optim": "paged_adamw_32bit",
        "quant": {"quant_type": "nf4", "double_quant": True, "compute_dtype": "bfloat16"},
        "experts_4bit": False,
        "peak_memory_gib": 10.0,
    }
    plan = plan_for_measured_run(row)
    settings = plan.settings
    assert plan.context["shapes"].hidden_size == 4096 and settings.micro_batch == 2 and settings.sequences_per_row == 2
    assert (
        settings.quant == "nf4"
        and settings.double_quant
        and not settings.padded
        and settings.optim == "paged_adamw_32bit"
    )


def test_plan_for_a_fused_derta_row_counts_its_longer_sequences():
    # DeRTa's fused form: one sequence per harmful row, longer than seq_len (prompt + harmful + 1 + safe answer), with a
    # 4-D mask: planned as the seq_len-long sequences its tokens fill, with the mask's KV repeat
    row = {
        "model": "llama3-8b",
        "method": "derta",
        "recipe": "recipes/derta/llama3-8b-qlora.yaml",
        "seq_len": 2048,
        "micro_batch": 2,
        "derta_form": "fused",
        "sequences_per_micro_batch": 2,
        "tokens_per_step": 2 * (512 + 1536 + 1 + 1536),
        "lora_r": 16,
        "gradient_checkpointing": True,
        "quant": "nf4",
        "peak_memory_gib": 10.0,
    }
    settings = plan_for_measured_run(row).settings
    assert settings.sequences_per_row == 2 and settings.padded
    naive = plan_for_measured_run({**row, "derta_form": "naive", "sequences_per_micro_batch": 4})
    assert naive.settings.sequences_per_row == 2
