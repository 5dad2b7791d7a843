"""Every recipe against the architecture it trains, offline: parsed by its script's parser, its model resolved to a
shipped config (recipes/configs), the model built shape-true on the meta device, the 4-bit and LoRA settings as TRL
resolves them, and one 4-bit LoRA backward step of a tiny variant of the architecture on CPU."""

import re
from functools import partial
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora import LoraLayer
from testing_utils import tiny_variant
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM
from trl import get_peft_config, get_quantization_config

from hf_safety.models import from_pretrained_4bit_experts
from hf_safety.models import meta_model as package_meta_model
from hf_safety.plan import shipped_configs
from hf_safety.quant import SplitExpert, SplitExperts, find_fused_experts, resolve_all_linear
from hf_safety.scripts import derta, seas
from hf_safety.toy import TOY_SEAS_MODELS, TOY_UNSAFE_MODEL


RECIPES = Path(__file__).parent.parent / "recipes"
PARSERS = {"derta": derta.make_parser, "seas": seas.make_parser}
DATA = {"derta": "recipes/data/derta-mix.yaml", "seas": "recipes/data/seas-seeds.yaml"}
# Parameters of the published checkpoints, in billions
PARAMETERS = {
    "meta-llama/Meta-Llama-3-8B-Instruct": 8.03,
    "meta-llama/Meta-Llama-3-70B-Instruct": 70.55,
    "mistralai/Mistral-7B-Instruct-v0.3": 7.25,
    "mistralai/Mixtral-8x7B-Instruct-v0.1": 46.70,
}
ATTENTION = {f"self_attn.{p}_proj" for p in "qkvo"}
# What LoRA must cover in each decoder layer (Mixtral: its experts as hf_safety.quant converts them, never the router)
LORA_PER_LAYER = {
    "llama": ATTENTION | {f"mlp.{p}_proj" for p in ("gate", "up", "down")},
    "mistral": ATTENTION | {f"mlp.{p}_proj" for p in ("gate", "up", "down")},
    "mixtral": ATTENTION | {f"mlp.experts.{i}.{p}" for i in range(8) for p in ("gate_up", "down")},
}
ROUTER = "mlp.gate"

ALL = sorted(path for method in PARSERS for path in (RECIPES / method).glob("*.yaml"))
QLORA = [path for path in ALL if path.stem != "toy"]


def recipe_id(path: Path) -> str:
    return f"{path.parent.name}/{path.stem}"


def parse(path: Path):
    """A fresh parser per recipe (a TrlParser keeps the values of a parsed YAML as its defaults); bf16 is set for the
    GPU and cannot be validated on a CPU-only machine."""
    return PARSERS[path.parent.name]().parse_args_and_config(
        ["--config", str(path), "--bf16", "false", "--use_cpu", "true"]
    )


def architecture(path: Path, model_name: str) -> str:
    """The shipped config a recipe trains: its model, or for SEAS's SFT'd T0/R0 the `# architecture:` line."""
    if model_name in PARAMETERS:
        return model_name
    match = re.search(r"^# architecture: (\S+)", path.read_text(), re.M)
    assert match, f"{path.name}: {model_name!r} is not a shipped config and no '# architecture:' line names one"
    return match.group(1)


def shipped_config(hub_id: str):
    return AutoConfig.from_pretrained(shipped_configs()[hub_id].parent)


def meta_model(config):
    """The model on the meta device (shapes, no memory), fused MoE experts laid out one `nn.Linear` pair per expert
    as `hf_safety.quant` converts them (`SplitExperts`, there in 4-bit; `split_moe_experts` needs real weights)."""
    model = package_meta_model(config)
    for name in find_fused_experts(model):
        fused = model.get_submodule(name)
        num_experts, two_inter, hidden = fused.gate_up_proj.shape
        with torch.device("meta"):
            split = [
                SplitExpert(nn.Linear(hidden, two_inter, bias=False), nn.Linear(two_inter // 2, hidden, bias=False))
                for _ in range(num_experts)
            ]
        model.set_submodule(name, SplitExperts(split, fused.act_fn))
    return model


def lora_per_layer(model, layer: int = 0) -> set[str]:
    """Names, relative to decoder layer `layer`, of the modules a PEFT model carries LoRA on."""
    prefix = f".layers.{layer}."
    names = [name for name, module in model.named_modules() if isinstance(module, LoraLayer)]
    return {name.split(prefix, 1)[1] for name in names if prefix in name}


def header(path: Path) -> str:
    """The comment above the first setting, as one line."""
    text = path.read_text()
    return re.sub(r"\s*\n#\s*", " ", text[: text.index("\nmodel_name_or_path:")])


@pytest.mark.parametrize("path", ALL, ids=recipe_id)
def test_recipe_parses_and_names_its_model(path):
    script_args, training_args, model_args = parse(path)
    method = path.parent.name
    if path.stem == "toy":
        names = [model_args.model_name_or_path, getattr(script_args, "red_team_model_name_or_path", None)]
        assert set(filter(None, names)) <= {TOY_UNSAFE_MODEL, *TOY_SEAS_MODELS}
        return
    assert architecture(path, model_args.model_name_or_path) in PARAMETERS
    if method == "seas":  # red team and target: one architecture, SFT'd placeholders for the user's R0 and T0
        assert script_args.red_team_model_name_or_path.endswith("-seas-r0")
        assert model_args.model_name_or_path.endswith("-seas-t0")
    assert script_args.dataset_name == DATA[method] and (RECIPES.parent / script_args.dataset_name).is_file()
    assert training_args.gradient_checkpointing and training_args.max_length == 2048
    assert model_args.dtype == "bfloat16" and model_args.use_peft and model_args.lora_r == 16

    # The header: the named GPU, how to launch, the estimate and the effective batch it states
    text = header(path)
    assert re.search(r"one (24|48|80) GB GPU|one H200 \(141 GB\)", text), path.name
    config_file = re.search(r"--config_file (recipes/accelerate/\S+\.yaml)", text).group(1)
    assert (RECIPES.parent / config_file).is_file()
    assert f"--config recipes/{method}/{path.name}" in text
    assert re.search(r"Peak memory, estimate \(not measured[^)]*\): [\d.]+ GiB", text)
    assert re.search(rf"checked with: hf-safety plan --recipe recipes/{method}/{re.escape(path.name)}\b", text)
    micro, accumulation, effective = map(
        int, re.search(r"(\d+) (?:rows?|pairs?) x (\d+) accumulation = (\d+)", text).groups()
    )
    assert (micro, accumulation) == (
        training_args.per_device_train_batch_size,
        training_args.gradient_accumulation_steps,
    )
    assert micro * accumulation == effective


@pytest.mark.parametrize("hub_id", PARAMETERS)
def test_shipped_config_builds_shape_true_on_meta(hub_id):
    model = meta_model(shipped_config(hub_id))
    assert all(p.device.type == "meta" for p in model.parameters())
    assert sum(p.numel() for p in model.parameters()) / 1e9 == pytest.approx(PARAMETERS[hub_id], rel=0.01)


@pytest.mark.parametrize("path", QLORA, ids=recipe_id)
def test_quantization_is_nf4_double_quant_bf16(path):
    _, _, model_args = parse(path)
    quant = get_quantization_config(model_args)
    assert quant.load_in_4bit and quant.bnb_4bit_quant_type == "nf4" and quant.bnb_4bit_use_double_quant
    assert quant.bnb_4bit_compute_dtype == torch.bfloat16
    assert quant.bnb_4bit_quant_storage == torch.uint8  # bfloat16 only under FSDP (see the recipes' comment)


@pytest.mark.parametrize("path", QLORA, ids=recipe_id)
def test_lora_targets_exist_in_the_architecture(path):
    # Resolved as the trainers resolve them (hf_safety's "all-linear" for a split MoE, then PEFT with its transformers-5
    # rewrites) on the real layer shapes, 2 layers on the meta device
    _, _, model_args = parse(path)
    config = shipped_config(architecture(path, model_args.model_name_or_path))
    depth = config.num_hidden_layers
    config.num_hidden_layers = 2
    model = meta_model(config)
    model = get_peft_model(model, resolve_all_linear(get_peft_config(model_args), model), low_cpu_mem_usage=True)
    resolved = model.peft_config["default"]
    assert not resolved.target_parameters, resolved.target_parameters  # no raw nn.Parameter (router, fused experts)
    assert lora_per_layer(model, 0) == lora_per_layer(model, 1) == LORA_PER_LAYER[config.model_type]
    names = {name for name, module in model.named_modules() if isinstance(module, LoraLayer)}
    assert not any(name.endswith(("lm_head", ROUTER)) for name in names)
    # The LoRA size the recipe's memory estimate uses ("...(207M params x 12 B...")
    lora = sum(p.numel() for name, p in model.named_parameters() if "lora_" in name) * depth / 2
    stated = int(re.search(r"LoRA [\d.]+ \((\d+)M params", header(path)).group(1))
    assert lora / 1e6 == pytest.approx(stated, abs=1)


def test_mixtral_all_linear_takes_the_router_without_the_trainers_resolution():
    # Why the Mixtral recipes' "all-linear" relies on hf_safety's trainers: plain PEFT on transformers 5 rewrites it for
    # Mixtral's v4 layout and adds the router as a target parameter (which lora_dropout > 0 then refuses)
    config = tiny_variant(shipped_config("mistralai/Mixtral-8x7B-Instruct-v0.1"))
    lora = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM")
    model = get_peft_model(meta_model(config), lora, low_cpu_mem_usage=True)
    assert "gate.weight" in model.peft_config["default"].target_parameters
    assert any(name.endswith(ROUTER) for name, module in model.named_modules() if isinstance(module, LoraLayer))


def same_tiny_run() -> list[list[Path]]:
    """The QLoRA recipes grouped by what their tiny variant runs (model type and LoRA/4-bit settings): the 8B and 70B
    Llama recipes, for one, make the same tiny model."""
    groups: dict[tuple, list[Path]] = {}
    for path in QLORA:
        _, _, model_args = parse(path)
        model_type = shipped_config(architecture(path, model_args.model_name_or_path)).model_type
        settings = (model_args.lora_target_modules, model_args.lora_r, model_args.lora_dropout, model_args.dtype)
        groups.setdefault((model_type, repr(settings)), []).append(path)
    return list(groups.values())


@pytest.mark.parametrize("paths", same_tiny_run(), ids=lambda paths: "+".join(map(recipe_id, paths)))
def test_tiny_variant_trains_in_4bit_with_the_recipe_lora(paths, tmp_path):
    pytest.importorskip("bitsandbytes")
    path = paths[0]
    from bitsandbytes.nn import Linear4bit

    _, training_args, model_args = parse(path)
    config = tiny_variant(shipped_config(architecture(path, model_args.model_name_or_path)))
    moe = config.model_type == "mixtral"
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    # loaded as DeRTaTrainer and SEASTrainer load a model by path (MoE experts in 4-bit too) and take the LoRA config
    load = partial(from_pretrained_4bit_experts, AutoModelForCausalLM.from_pretrained)
    quant = get_quantization_config(model_args)
    model = load(str(tmp_path), quantization_config=quant, dtype=model_args.dtype, device_map="cpu")
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=training_args.gradient_checkpointing_kwargs)
    model.enable_input_require_grads()
    model = get_peft_model(model, resolve_all_linear(get_peft_config(model_args), model))

    assert lora_per_layer(model, 0) == LORA_PER_LAYER[config.model_type]
    lora_layers = {name: m for name, m in model.named_modules() if isinstance(m, LoraLayer)}
    assert all(isinstance(m.get_base_layer(), Linear4bit) for m in lora_layers.values())
    assert not any(name.endswith(("lm_head", ROUTER)) for name in lora_layers)
    if moe:  # every expert in 4-bit, none left fused in 16-bit
        assert not find_fused_experts(model)
        experts = [m for name, m in model.named_modules() if ".experts." in name and isinstance(m, Linear4bit)]
        assert len(experts) == 2 * 8 * config.num_hidden_layers
        base = [
            type(p).__name__ for name, p in model.named_parameters() if ".experts." in name and ".lora_" not in name
        ]
        assert base and set(base) == {"Params4bit"}

    input_ids = torch.randint(3, config.vocab_size, (2, 32), generator=torch.Generator().manual_seed(0))
    model(input_ids=input_ids, labels=input_ids).loss.backward()
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    with_grad = {name for name, p in model.named_parameters() if p.grad is not None}
    assert trainable and all(".lora_" in name for name in trainable)
    assert with_grad <= trainable
    assert {name for name in trainable if "self_attn" in name} <= with_grad  # every token passes attention
    if moe:  # the routed experts got gradients (an expert no token was routed to gets none)
        assert any(".experts." in name for name in with_grad)
