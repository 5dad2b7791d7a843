"""bench/qlora_gpu.py off the GPU: its FLOP and part bookkeeping, the 4-bit models it builds from the shipped configs
(tiny variants, on CPU) and its `--cpu --tiny` smoke run, depth extrapolation included."""

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from testing_utils import tiny_variant
from transformers import AutoConfig

from hf_safety.models import bnb_4bit_config


ROOT = Path(__file__).parent.parent
spec = importlib.util.spec_from_file_location("qlora_gpu", ROOT / "bench" / "qlora_gpu.py")
qlora_gpu = sys.modules["qlora_gpu"] = importlib.util.module_from_spec(spec)
spec.loader.exec_module(qlora_gpu)


@pytest.mark.parametrize(
    "name, flops, slug",
    [
        ("NVIDIA H100 80GB HBM3", 989.4e12, "h100-sxm"),
        ("NVIDIA H100 PCIe", 756e12, "h100-pcie"),
        ("NVIDIA H200", 989.4e12, "h200"),
        ("NVIDIA A100-SXM4-80GB", 312e12, "a100"),
        ("NVIDIA GeForce RTX 4090", None, "geforce-rtx-4090"),
    ],
)
def test_gpu_parts(name, flops, slug):
    assert qlora_gpu.peak_flops(name) == flops
    assert qlora_gpu.gpu_slug(name).startswith(slug.split("-")[0]) and (
        flops is None or qlora_gpu.gpu_slug(name) == slug
    )


@pytest.mark.parametrize("model, billions", [("llama3-8b", 7.50), ("llama3-70b", 69.5), ("mixtral-8x7b", 12.75)])
def test_matmul_params_match_the_anchors(model, billions):
    # notes/anchors-eval-perf.md, B.3: N = non-embedding + lm_head (Mixtral: active, 2 of 8 experts)
    config = AutoConfig.from_pretrained(qlora_gpu.MODELS[model].config_dir)
    assert qlora_gpu.matmul_params(config) / 1e9 == pytest.approx(billions, rel=0.01)
    lora = qlora_gpu.flops_per_token(config, 2048, 4)
    assert lora == 4 * qlora_gpu.matmul_params(config) + 12 * config.num_hidden_layers * config.hidden_size * 2048


@pytest.mark.parametrize("model", list(qlora_gpu.MODELS))
def test_builds_the_architecture_in_4bit(model):
    pytest.importorskip("bitsandbytes")
    from bitsandbytes.nn import Linear4bit

    config = tiny_variant(AutoConfig.from_pretrained(qlora_gpu.MODELS[model].config_dir))
    quant = bnb_4bit_config(torch.bfloat16)
    built, experts_4bit = qlora_gpu.build_qlora_model(config, quant, torch.device("cpu"), torch.bfloat16)
    linears = {n: m for n, m in built.named_modules() if isinstance(m, torch.nn.Linear)}
    assert not isinstance(linears.pop("lm_head"), Linear4bit)
    assert linears and all(isinstance(m, Linear4bit) for m in linears.values())
    assert all(m.weight.quant_state.nested for m in linears.values())  # double quantization
    if config.model_type == "mixtral":
        assert experts_4bit in (True, False)  # False only while hf_safety.quant is missing
        if experts_4bit:
            assert sum(".experts." in n for n in linears) == 2 * 8 * config.num_hidden_layers
    else:
        assert experts_4bit is None
    logits = built(input_ids=torch.tensor([[3, 4, 5, 6]])).logits
    assert logits.shape == (1, 4, config.vocab_size) and torch.isfinite(logits).all()


def test_cpu_tiny_smoke_run_scales_depth(tmp_path):
    pytest.importorskip("bitsandbytes")
    out = tmp_path / "qlora_gpu_cpu.json"
    rows = qlora_gpu.main(
        ["--cpu", "--tiny", "--in-process", "--models", "llama3-70b", "--seq-len", "64", "--micro-batch", "1"]
        + ["--steps", "1", "--warmup-steps", "1", "--output", str(out)]
    )
    assert json.loads(out.read_text()) == rows
    (row,) = rows
    keys = "model method gpu seq_len micro_batch lora_r gradient_checkpointing quant experts_4bit tokens_per_s"
    keys += " peak_memory_gib reserved_memory_gib lora_mfu mfu_6n num_layers_built scaled_to_layers torch transformers"
    keys += " peft bitsandbytes"
    assert set(keys.split()) <= set(row)
    assert row["model"] == "llama3-70b" and row["method"] == "derta" and row["gpu"] == "cpu"
    # the recipe's LoRA, checkpointing and 4-bit settings; one harmful row = DeRTa's fused sequence (the default):
    # prompt 16 + harmful answer 48 + 1 + safe answer 48 tokens (the naive form's two 64-token sequences, fused)
    assert row["lora_r"] == 16 and row["gradient_checkpointing"] and row["quant"]["quant_type"] == "nf4"
    assert row["derta_form"] == "fused"
    assert row["sequences_per_micro_batch"] == 1 and row["tokens_per_step"] == 16 + 48 + 1 + 48
    # built at 1 and 2 layers, extrapolated to the tiny variant's 4
    assert [m["num_layers"] for m in row["measured"]] == [1, 2]
    assert row["num_layers_built"] == 2 and row["scaled_to_layers"] == 4
    assert math.isfinite(row["tokens_per_s"]) and row["tokens_per_s"] > 0
    assert row["peak_memory_gib"] is None and row["lora_mfu"] is None  # CPU: no CUDA memory, no peak FLOP/s
