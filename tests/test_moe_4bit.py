"""MoE experts in 4-bit (GitHub issue 12): transformers 5 keeps experts as fused 3-D parameters that bitsandbytes
leaves in 16/32-bit; `hf_safety.quant` converts them to per-expert `Linear4bit`, and the loaders do it on a 4-bit
load. Tiny models on CPU (bitsandbytes >= 0.49 runs NF4 there)."""

import copy
import logging

import pytest
import torch
from datasets import Dataset
from torch import nn
from transformers import (
    MixtralConfig,
    MixtralForCausalLM,
    OlmoeConfig,
    OlmoeForCausalLM,
    Qwen2MoeConfig,
    Qwen2MoeForCausalLM,
    Qwen3MoeConfig,
    Qwen3MoeForCausalLM,
)


bnb = pytest.importorskip("bitsandbytes")
peft = pytest.importorskip("peft")

from peft import LoraConfig, PeftModel, get_peft_model, prepare_model_for_kbit_training  # noqa: E402
from testing_utils import toy_rows  # noqa: E402

from hf_safety import DeRTaConfig, DeRTaTrainer  # noqa: E402
from hf_safety.hub.push import merge_adapter  # noqa: E402
from hf_safety.models import bnb_4bit_config, fused_experts_layouts, load_model_and_tokenizer  # noqa: E402
from hf_safety.quant import (  # noqa: E402
    SplitExperts,
    find_fused_experts,
    fuse_moe_experts,
    quantize_moe_experts,
    resolve_all_linear,
    split_moe_experts,
)


EXPERT_REGEX = r".*\.experts\.\d+\.(gate_up|down)"
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, num_experts_per_tok=2)


def tiny_mixtral(vocab_size=320, seed=0):
    torch.manual_seed(seed)
    config = MixtralConfig(vocab_size=vocab_size, intermediate_size=128, num_local_experts=4, **TINY)
    return MixtralForCausalLM(config).eval()


@pytest.fixture(scope="module")
def float_model():
    return tiny_mixtral()


@pytest.fixture(scope="module")
def model_4bit(float_model):
    model = copy.deepcopy(float_model)
    assert quantize_moe_experts(model, compute_dtype=torch.float32) == 2 * 4  # layers x experts
    return model


def _ids(vocab_size=320):
    return torch.randint(0, vocab_size, (2, 16), generator=torch.Generator().manual_seed(1))


def _expert_storage_bytes(model):
    """Bytes of every tensor the 4-bit experts hold (packed weights + quantization state), shared tensors once."""
    tensors = {}
    for module in model.modules():
        if isinstance(module, SplitExperts):
            for layer in module.modules():
                if isinstance(layer, bnb.nn.Linear4bit):
                    state = layer.weight.quant_state
                    found = [layer.weight.data, state.absmax, state.code, state.offset]
                    if state.state2 is not None:
                        found += [state.state2.absmax, state.state2.code]
                    tensors.update({t.data_ptr(): t for t in found if isinstance(t, torch.Tensor)})
    return sum(t.numel() * t.element_size() for t in tensors.values())


def test_every_expert_is_4bit_and_the_router_is_untouched(float_model, model_4bit):
    assert find_fused_experts(float_model) == ["model.layers.0.mlp.experts", "model.layers.1.mlp.experts"]
    assert find_fused_experts(model_4bit) == []
    assert all(p.dim() < 3 for p in model_4bit.parameters())  # no 3-D (fused) expert weight left
    for layer, original in zip(model_4bit.model.layers, float_model.model.layers):
        experts = layer.mlp.experts
        assert isinstance(experts, SplitExperts) and len(experts) == 4
        for expert in experts:
            for proj, shape in ((expert.gate_up, (256, 64)), (expert.down, (64, 128))):
                assert isinstance(proj, bnb.nn.Linear4bit) and proj.bias is None
                weight = proj.weight
                assert isinstance(weight, bnb.nn.Params4bit) and weight.bnb_quantized and not weight.requires_grad
                assert weight.dtype == torch.uint8 and weight.shape == (shape[0] * shape[1] // 2, 1)  # 2 per byte
                assert tuple(weight.quant_state.shape) == shape and weight.quant_state.quant_type == "nf4"
                assert weight.quant_state.nested  # double quantization
        router = layer.mlp.gate.weight
        assert type(router) is nn.Parameter and router.dtype == torch.float32
        assert torch.equal(router, original.mlp.gate.weight)


def test_logits_match_the_dequantized_and_the_float_model(float_model, model_4bit):
    ids = _ids()
    dequantized = copy.deepcopy(model_4bit)
    assert fuse_moe_experts(dequantized) == 2
    assert type(dequantized.model.layers[0].mlp.experts).__name__ == "MixtralExperts"
    assert dequantized.model.layers[0].mlp.experts.gate_up_proj.shape == (4, 256, 64)
    quantized = copy.deepcopy(model_4bit).train()  # train mode: bitsandbytes' dequantize + matmul path on CPU
    with torch.no_grad():
        reference, exact, fp = dequantized(ids).logits, quantized(ids).logits, float_model(ids).logits
        packed = model_4bit(ids).logits  # eval + no grad: bitsandbytes' repacked bf16 CPU kernel where available
    # Same math as the fused forward: equal to the fused model with the dequantized weights, up to float error
    torch.testing.assert_close(exact, reference, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(packed, reference, rtol=0, atol=5e-3)  # bf16 compute
    # Against the float weights: NF4 + double quantization of N(0, 0.02) weights has ~9% relative RMS error per
    # weight (measured 0.092); an expert multiplies three such matrices (~√3 · 9% ≈ 16% on its output), and the
    # residual stream and unquantized embeddings dilute it to ~2% of the logits (measured 0.021).
    weight = float_model.model.layers[0].mlp.experts.gate_up_proj[1]
    relative = (dequantized.model.layers[0].mlp.experts.gate_up_proj[1] - weight).norm() / weight.norm()
    assert 0.05 < relative < 0.12
    hidden = torch.randn(1, 32, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        block, block_4bit = float_model.model.layers[0].mlp(hidden), quantized.model.layers[0].mlp(hidden)
    assert (block_4bit - block).norm() / block.norm() < 0.25
    assert (exact - fp).norm() / fp.norm() < 0.05


def test_expert_memory_is_about_a_quarter_of_bf16(float_model):
    model = copy.deepcopy(float_model)  # fresh: a CPU inference forward repacks the weights for its bf16 kernel
    quantize_moe_experts(model)
    stored = _expert_storage_bytes(model)
    bf16 = 2 * 4 * (256 * 64 + 64 * 128) * 2  # layers x experts x params x 2 bytes
    # 4 bits per weight (1/4 of bf16), one uint8 absmax per 64 weights (double quantization: 1/128 of bf16), and per
    # Linear4bit about 1.1 KB of constants (NF4 code, offset, float32 absmax per 256 blocks, the 256-entry code of
    # the second quantization): 30.2% of bf16 at this tiny size, 25.8% at Mixtral-8x7B's (90.2 GB -> 23.3 GB).
    linear_layers = 2 * 4 * 2
    assert 0.25 * bf16 < stored <= bf16 / 4 + bf16 / 128 + linear_layers * 1100
    assert stored < 0.31 * bf16


def test_lora_all_linear_lands_on_attention_and_experts_not_router_or_head(model_4bit):
    all_linear = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
    # PEFT alone: "all-linear" picks the 4-bit experts, and (v4 parity on Mixtral) the router's weight as well
    raw = get_peft_model(copy.deepcopy(model_4bit), copy.deepcopy(all_linear))
    raw_targets = {name for name, m in raw.named_modules() if hasattr(m, "lora_A")}
    assert any(name.endswith("experts.3.down") for name in raw_targets)
    assert any(name.endswith("mlp.gate") for name in raw_targets)
    # resolve_all_linear (what DeRTaTrainer / SEASTrainer apply): attention + experts, no router, no head
    model = prepare_model_for_kbit_training(copy.deepcopy(model_4bit), use_gradient_checkpointing=False)
    model = get_peft_model(model, resolve_all_linear(all_linear, model))
    targeted = {name.removeprefix("base_model.model.") for name, m in model.named_modules() if hasattr(m, "lora_A")}
    layer = "model.layers.1"
    assert {f"{layer}.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj", "o_proj")} <= targeted
    assert {f"{layer}.mlp.experts.{i}.{p}" for i in range(4) for p in ("gate_up", "down")} <= targeted
    assert len(targeted) == 2 * (4 + 4 * 2)
    assert not any(name.endswith(("mlp.gate", "lm_head")) for name in targeted)
    assert resolve_all_linear(all_linear, tiny_mixtral()) is all_linear  # nothing to resolve without SplitExperts
    # Back-propagation reaches the experts' LoRA weights; the 4-bit base and the router stay frozen
    model.train()
    model(input_ids=_ids(), labels=_ids()).loss.backward()
    expert_grads = [p.grad for n, p in model.named_parameters() if ".experts." in n and "lora_B" in n]
    assert len(expert_grads) == 16 and all(g is not None for g in expert_grads)
    assert sum(bool(g.abs().sum() > 0) for g in expert_grads) >= 12  # every expert that got tokens
    frozen = [p for n, p in model.named_parameters() if "lora_" not in n]
    assert all(not p.requires_grad and p.grad is None for p in frozen)


def test_regex_targets_the_experts_and_the_adapter_saves_reloads_and_merges(float_model, model_4bit, tmp_path):
    model = get_peft_model(copy.deepcopy(model_4bit), LoraConfig(r=4, target_modules=EXPERT_REGEX))
    for name, param in model.named_parameters():
        if "lora_B" in name:  # a trained-looking adapter (B starts at zero)
            nn.init.normal_(param, std=0.02, generator=torch.Generator().manual_seed(3))
    targeted = [name for name, m in model.named_modules() if hasattr(m, "lora_A")]
    assert len(targeted) == 2 * 4 * 2 and all(".mlp.experts." in name for name in targeted)
    model.save_pretrained(tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(copy.deepcopy(model_4bit), tmp_path / "adapter")
    ids = _ids()
    model.train(), reloaded.train()
    with torch.no_grad():
        torch.testing.assert_close(reloaded(input_ids=ids).logits, model(input_ids=ids).logits)
    # Merge (into the 4-bit experts, requantized), fuse back to the checkpoint layout, save and load as usual
    merged = reloaded.merge_and_unload()
    assert fuse_moe_experts(merged) == 2 and find_fused_experts(merged)
    merged.save_pretrained(tmp_path / "merged")
    again = MixtralForCausalLM.from_pretrained(tmp_path / "merged").eval()
    with torch.no_grad():
        adapted, loaded = model(input_ids=ids).logits, again(ids).logits
    # the adapter moves the logits by ~5% here; requantizing the merged weights costs NF4 rounding again (~2%)
    assert (loaded - adapted).norm() / adapted.norm() < 0.05
    # Exact merge into the full-precision base: split its experts the same way (nn.Linear), load, merge, fuse
    base = copy.deepcopy(float_model)
    assert split_moe_experts(base) == 8 and isinstance(base.model.layers[0].mlp.experts[0].down, nn.Linear)
    on_float = PeftModel.from_pretrained(base, tmp_path / "adapter").eval()
    with torch.no_grad():
        unmerged = on_float(input_ids=ids).logits
        merged = on_float.merge_and_unload()
        assert fuse_moe_experts(merged) == 2
        torch.testing.assert_close(merged(ids).logits, unmerged, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "config_class, model_class, extra",
    [
        (Qwen2MoeConfig, Qwen2MoeForCausalLM, dict(moe_intermediate_size=32, shared_expert_intermediate_size=64)),
        (Qwen3MoeConfig, Qwen3MoeForCausalLM, dict(moe_intermediate_size=32, head_dim=16)),
        (OlmoeConfig, OlmoeForCausalLM, dict()),
    ],
)
def test_other_fused_expert_architectures(config_class, model_class, extra):
    torch.manual_seed(0)
    config = config_class(vocab_size=128, intermediate_size=64, num_experts=4, **TINY, **extra)
    model = model_class(config).eval()
    assert quantize_moe_experts(model, compute_dtype=torch.float32) == 8
    assert all(p.dim() < 3 for p in model.parameters())
    dequantized = copy.deepcopy(model)
    fuse_moe_experts(dequantized)
    ids = _ids(128)
    with torch.no_grad():
        torch.testing.assert_close(model.train()(ids).logits, dequantized(ids).logits, rtol=1e-5, atol=1e-6)


def test_unknown_layout_raises_or_is_left_with_a_warning(caplog):
    from transformers.models.gpt_oss.modeling_gpt_oss import GptOssConfig, GptOssExperts

    config = GptOssConfig(hidden_size=64, intermediate_size=64, num_local_experts=4)
    model = nn.ModuleDict({"experts": GptOssExperts(config)})
    assert find_fused_experts(model) == ["experts"]
    with pytest.raises(ValueError, match=r"experts \(GptOssExperts\): parameters .*gate_up_proj_bias"):
        quantize_moe_experts(model)
    with caplog.at_level(logging.WARNING):
        assert quantize_moe_experts(model, strict=False) == 0
    assert "they stay as they are" in caplog.text and isinstance(model["experts"], GptOssExperts)

    class RemoteCodeExperts(nn.Module):  # the right shapes, but a forward nobody checked
        def __init__(self):
            super().__init__()
            self.gate_up_proj = nn.Parameter(torch.zeros(4, 16, 8))
            self.down_proj = nn.Parameter(torch.zeros(4, 8, 8))

    with pytest.raises(ValueError, match="its forward is unknown"):
        quantize_moe_experts(nn.ModuleDict({"experts": RemoteCodeExperts()}))


@pytest.fixture
def saved_mixtral(llama3_tokenizer, tmp_path):
    path = tmp_path / "tiny-mixtral"
    tiny_mixtral(vocab_size=len(llama3_tokenizer)).save_pretrained(path)
    llama3_tokenizer.save_pretrained(path)
    return str(path)


def test_loader_quantizes_the_experts_of_a_4bit_load(saved_mixtral):
    assert list(fused_experts_layouts(saved_mixtral).values()) == [None, None]  # meta skeleton, no weights
    model, _ = load_model_and_tokenizer(saved_mixtral, load_in_4bit=True)
    assert type(model.model.layers[0].self_attn.q_proj).__name__ == "Linear4bit"  # by transformers
    assert isinstance(model.model.layers[0].mlp.experts, SplitExperts)  # by hf_safety
    assert model.model.layers[0].mlp.experts[0].gate_up.compute_dtype == torch.float32  # bnb config on CPU
    assert model.is_loaded_in_4bit and {p.device.type for p in model.parameters()} == {"cpu"}
    plain, _ = load_model_and_tokenizer(saved_mixtral)
    assert find_fused_experts(plain)  # a 16/32-bit load keeps the checkpoint's layout


def test_derta_step_on_4bit_mixtral_by_path_trains_only_lora(saved_mixtral, tmp_path, cpu_args):
    rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in toy_rows()[::6]]
    quantization = bnb_4bit_config(torch.float32)
    trainer = DeRTaTrainer(
        model=saved_mixtral,
        args=DeRTaConfig(
            output_dir=str(tmp_path / "out"),
            max_steps=1,
            learning_rate=1e-2,
            model_init_kwargs={"dtype": torch.float32},
            **cpu_args,
        ),
        train_dataset=Dataset.from_list(rows),
        quantization_config=quantization,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM"),
    )
    assert trainer.args.model_init_kwargs == {"dtype": torch.float32}  # used by the loader, left to the user
    base = trainer.model.get_base_model()
    assert isinstance(base.model.layers[0].mlp.experts, SplitExperts)
    assert type(base.model.layers[0].mlp.experts[0].down.base_layer).__name__ == "Linear4bit"
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()}
    trainer.train()
    after = dict(trainer.model.named_parameters())
    changed = {n for n, p in before.items() if not torch.equal(p, after[n].detach())}
    assert changed and all("lora_" in n for n in changed)
    assert not any(".mlp.gate." in n and "lora_" in n for n in before)  # "all-linear": no LoRA on the router
    assert any(".experts." in n for n in changed) and any("self_attn" in n for n in changed)
    assert all(torch.isfinite(torch.tensor(e["loss"])) for e in trainer.state.log_history if "loss" in e)
    # `hf-safety push --merged`: the adapter merges into the full-precision base (split, merge, fuse back)
    trainer.save_model(str(tmp_path / "adapter"))
    merged = MixtralForCausalLM.from_pretrained(merge_adapter(tmp_path / "adapter", tmp_path / "merged")).eval()
    assert find_fused_experts(merged) and not any("lora" in name for name, _ in merged.named_parameters())
    base = MixtralForCausalLM.from_pretrained(saved_mixtral).eval()
    assert split_moe_experts(base) == 8
    unmerged = PeftModel.from_pretrained(base, tmp_path / "adapter")  # the same weights, not merged
    ids = _ids(merged.config.vocab_size)
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, unmerged(input_ids=ids).logits, rtol=1e-5, atol=1e-5)
