"""
QLoRA training throughput and peak memory of the DeRTa recipes on one GPU, for the four shipped architectures.

Run (on a GPU; nothing is downloaded: each model is built shape-true from `recipes/configs/` with random weights):

    python bench/qlora_gpu.py                                   # the four models, one process each (~10 min, H200)
    python bench/qlora_gpu.py --models llama3-8b mixtral-8x7b   # a subset
    python bench/qlora_gpu.py --cpu --tiny                      # smoke run on CPU: tiny variants, same code path

Options: `--models` (llama3-8b, mistral-7b, mixtral-8x7b, llama3-70b), `--seq-len` (default 2048; 256 with `--tiny`),
`--micro-batch` (rows; default: the recipe's), `--steps` (timed steps, default 6), `--warmup-steps` (default 2),
`--num-layers K` (build the first K layers and scale to the full depth; default 8 for llama3-70b and the full depth
for the others; 0 = the full depth for all), `--output` (default `bench/results/qlora_gpu_<gpu>.json`), `--in-process`
(no process per model), `--timeout` (seconds per process), `--cpu`, `--tiny`. A model whose process fails (e.g. out
of memory) is recorded with its `error` and the others still run.

The GPU image has torch, transformers, accelerate and peft but not trl, bitsandbytes or datasets. Fetch their wheels
where PyPI is reachable, carry them in `wheels/` and install them with the project (the image's torch is kept):

    pip download --no-deps trl bitsandbytes datasets -d wheels/   # and any of datasets' own deps the image lacks
    bash bench/gpu_setup.sh                                       # wheels/*, then `pip install --no-deps -e .`

What runs, per model (in its own process, so that memory figures are its own):

- the model: `recipes/configs/<model>` (llama3-70b: its first K layers), built on the meta device, then one decoder
  layer at a time given random bf16 weights, every `nn.Linear` but the lm_head quantized at once to bitsandbytes
  NF4 + double quantization (the recipe's `get_quantization_config`); Mixtral's fused experts converted to 4-bit
  per-expert layers by `hf_safety.quant.quantize_moe_experts` (`experts_4bit` says whether they were);
- the training: a `DeRTaTrainer` with the recipe's LoRA config, micro-batch, optimizer and activation checkpointing
  (gradient accumulation 1), `--warmup-steps` + `--steps` steps;
- the data: synthetic pre-tokenized harmful rows, a prompt of 64 tokens (T/4 if shorter) and a harmful and a safe
  answer that each fill the sequence to T = `--seq-len`, so each row gives two sequences of exactly T tokens (RTO,
  and harmful-prefix MLE with an empty prefix): DeRTa's worst case, for which the recipes' estimates are written.

Recorded: `tokens_per_s` (input tokens of the timed steps / their wall time, synchronized); `peak_memory_gib` and
`reserved_memory_gib` over all steps (`torch.cuda.max_memory_allocated` / `max_memory_reserved`, reset once the model
is built: weights, LoRA, optimizer state and activations count); `lora_mfu` = tokens/s x (4N + 12·L·h·T) / peak and `mfu_6n`
(6N instead of 4N), with N the parameters in matmuls per token (non-embedding + lm_head; Mixtral: the active ones, 2
of 8 experts and the router), L layers, h = heads x head_dim, peak = the dense bf16 FLOP/s of the part `nvidia-smi`
names (H100 SXM and H200 989.4e12, H100 PCIe 756e12; printed; an unknown part gets no MFU). With `--num-layers K`
the model is built at K/2 and at K layers, and step time and memory are extrapolated linearly in depth to the full
depth (`scaled_to_layers`; both measurements are kept under `measured`). The JSON is a list of runs, one per model.
"""

from __future__ import annotations

import os
import sys


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import argparse  # noqa: E402
import copy  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's hf_safety, installed or not
RESULTS = ROOT / "bench" / "results"
GiB = 2**30
PROMPT_TOKENS = 64  # at most; a quarter of the sequence when that is shorter
TINY_DEPTH = 4  # --tiny: the depth the tiny variants stand for (llama3-70b builds 2 of them and scales to 4)


@dataclass(frozen=True)
class ModelSpec:
    hub_id: str
    recipe: str
    chat_format: str
    default_layers: int | None = None  # build this many layers and scale to the full depth

    @property
    def config_dir(self) -> Path:
        from hf_safety.plan import shipped_configs

        return shipped_configs()[self.hub_id].parent


MODELS = {
    "llama3-8b": ModelSpec("meta-llama/Meta-Llama-3-8B-Instruct", "recipes/derta/llama3-8b-qlora.yaml", "llama3"),
    "mistral-7b": ModelSpec("mistralai/Mistral-7B-Instruct-v0.3", "recipes/derta/mistral-7b-qlora.yaml", "mistral"),
    "mixtral-8x7b": ModelSpec(
        "mistralai/Mixtral-8x7B-Instruct-v0.1", "recipes/derta/mixtral-8x7b-qlora.yaml", "mistral"
    ),
    "llama3-70b": ModelSpec(
        "meta-llama/Meta-Llama-3-70B-Instruct", "recipes/derta/llama3-70b-qlora.yaml", "llama3", default_layers=8
    ),
}

# Dense bf16 tensor FLOP/s by part name, most specific first (H100 NVL: 835e12 per GPU)
PEAK_FLOPS = (("H200", 989.4e12), ("H100 NVL", 835e12), ("H100 PCIe", 756e12), ("H100", 989.4e12), ("A100", 312e12))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    parser.add_argument(
        "--seq-len",
        type=int,
        default=None,
        help="tokens per sequence (default: 2048, the recipes' max_length; --tiny 256)",
    )
    parser.add_argument("--micro-batch", type=int, default=None, help="rows per step (default: the recipe's)")
    parser.add_argument("--steps", type=int, default=6, help="timed training steps")
    parser.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first")
    parser.add_argument(
        "--num-layers",
        type=int,
        default=None,
        help="build the first K layers (and K/2) and scale to the full depth; 0 = full depth",
    )
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default bench/results/qlora_gpu_<gpu>)")
    parser.add_argument("--in-process", action="store_true", help="run every model in this process")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per model process")
    parser.add_argument("--cpu", action="store_true", help="run on CPU (smoke test; no memory figures)")
    parser.add_argument("--tiny", action="store_true", help="tiny variants of the architectures (smoke test)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)  # internal: MODEL:LAYERS:RESULT_PATH
    args = parser.parse_args(argv)
    if args.seq_len is None:
        args.seq_len = 256 if args.tiny else 2048
    return args


# -- the device -------------------------------------------------------------------------------------------------------


def gpu_name() -> str:
    """The GPU's name as `nvidia-smi` gives it (torch's name when nvidia-smi is missing)."""
    import torch

    index = torch.cuda.current_device()
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader", "-i", str(index)],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        return out.stdout.strip().splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError):
        return torch.cuda.get_device_name(index)


def peak_flops(name: str) -> float | None:
    return next((flops for part, flops in PEAK_FLOPS if part.lower() in name.lower()), None)


def gpu_slug(name: str) -> str:
    """`h200`, `h100-sxm`, `h100-pcie`, ... for the results file name."""
    lowered = name.lower().replace("nvidia", "")
    if "h100" in lowered:
        kind = "pcie" if "pcie" in lowered else "nvl" if "nvl" in lowered else "sxm"
        return f"h100-{kind}"
    match = re.search(r"\b([a-z]\d{2,4}[a-z]?)\b", lowered)
    return match.group(1) if match else re.sub(r"[^a-z0-9]+", "-", lowered).strip("-")


# -- FLOPs ------------------------------------------------------------------------------------------------------------


def matmul_params(config) -> int:
    """Parameters in matmuls per token: attention, MLP (MoE: the top-k experts and the router) and the lm_head."""
    d = config.hidden_size
    head_dim = getattr(config, "head_dim", None) or d // config.num_attention_heads
    q = config.num_attention_heads * head_dim
    kv = config.num_key_value_heads * head_dim
    attention = d * q + 2 * d * kv + q * d
    experts = getattr(config, "num_local_experts", None)
    mlp = 3 * d * config.intermediate_size
    if experts:
        mlp = config.num_experts_per_tok * mlp + d * experts
    return config.num_hidden_layers * (attention + mlp) + config.vocab_size * d


def flops_per_token(config, seq_len: int, weight_factor: int) -> float:
    """`weight_factor`·N + 12·L·h·T (PaLM, appendix B): 4N for LoRA on a frozen base, 6N for full training."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    attention = 12 * config.num_hidden_layers * config.num_attention_heads * head_dim * seq_len
    return weight_factor * matmul_params(config) + attention


# -- the model --------------------------------------------------------------------------------------------------------


def model_config(name: str, args: argparse.Namespace):
    """The shipped config of `name` at full depth (`--tiny`: its tiny variant, `TINY_DEPTH` layers deep)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(MODELS[name].config_dir)
    if args.tiny:
        sys.path.insert(0, str(ROOT / "tests"))
        from testing_utils import tiny_variant

        config = tiny_variant(config, num_hidden_layers=TINY_DEPTH)
    return config


def _materialize(module, device, dtype, quant, std: float) -> None:
    """Random weights, on `device`, for the meta parameters of `module`: `Linear4bit` weights quantized at once."""
    import bitsandbytes as bnb
    import torch

    for sub in module.modules():
        for name, param in list(sub.named_parameters(recurse=False)):
            if param.device.type != "meta":
                continue
            if isinstance(sub, bnb.nn.Linear4bit) and name == "weight":
                weight = torch.empty(sub.out_features, sub.in_features, dtype=dtype, device=device).normal_(0, std)
                sub.weight = bnb.nn.Params4bit(
                    weight,
                    requires_grad=False,
                    quant_type=quant.bnb_4bit_quant_type,
                    compress_statistics=quant.bnb_4bit_use_double_quant,
                    quant_storage=quant.bnb_4bit_quant_storage,
                ).to(device)
                continue
            value = torch.empty(param.shape, dtype=dtype, device=device)
            value.fill_(1.0) if param.dim() == 1 else value.normal_(0, std)  # norms: 1, matrices: N(0, std)
            sub._parameters[name] = torch.nn.Parameter(value, requires_grad=False)
        for name, buffer in list(sub.named_buffers(recurse=False)):
            if buffer is not None and buffer.device != device:
                sub._buffers[name] = buffer.to(device)


def build_qlora_model(config, quant, device, dtype):
    """
    A causal LM of `config` with random weights, in bitsandbytes 4-bit as `from_pretrained(...,
    quantization_config=quant)` would load it (every `nn.Linear` but the lm_head), built one decoder layer at a time
    so that at most one layer exists in 16-bit; fused MoE experts are converted with
    `hf_safety.quant.quantize_moe_experts` when that module is available. Returns `(model, experts_4bit)`
    (`experts_4bit` is None for a dense model).
    """
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM
    from transformers.integrations.bitsandbytes import replace_with_bnb_linear
    from transformers.utils.quantization_config import QuantizationMethod

    from hf_safety.quant import find_fused_experts, quantize_moe_experts

    with init_empty_weights(include_buffers=False):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    replace_with_bnb_linear(model, modules_to_not_convert=["lm_head"], quantization_config=quant)
    std = getattr(config, "initializer_range", 0.02)
    moe = bool(getattr(config, "num_local_experts", None))
    for layer in model.model.layers:
        _materialize(layer, device, dtype, quant, std)
        if moe:
            quantize_moe_experts(
                layer,
                compute_dtype=quant.bnb_4bit_compute_dtype,
                quant_type=quant.bnb_4bit_quant_type,
                double_quant=quant.bnb_4bit_use_double_quant,
                quant_storage=quant.bnb_4bit_quant_storage,
            )
    _materialize(model, device, dtype, quant, std)  # embeddings, final norm, lm_head
    if any(p.device.type == "meta" for p in model.parameters()):
        raise RuntimeError("parameters left on the meta device")
    model.is_loaded_in_4bit = True  # as the bitsandbytes quantizer marks a loaded model
    model.quantization_method = QuantizationMethod.BITS_AND_BYTES
    experts_4bit = not find_fused_experts(model) if moe else None
    return model, experts_4bit


def synthetic_rows(num_rows: int, seq_len: int, vocab_size: int, seed: int = 0):
    """Pre-tokenized harmful rows (the data contract's tokenized columns) giving two `seq_len`-token sequences (naive
    form; the fused form makes one sequence of prompt + harmful answer + 1 + safe answer of them)."""
    import torch
    from datasets import Dataset

    generator = torch.Generator().manual_seed(seed)

    def ids(n: int) -> list[int]:
        return torch.randint(3, vocab_size, (n,), generator=generator).tolist()

    prompt = min(PROMPT_TOKENS, seq_len // 4)
    answer = seq_len - prompt
    rows = [
        {"row_index": i, "prompt_ids": ids(prompt), "chosen_ids": ids(answer), "rejected_ids": ids(answer)}
        for i in range(num_rows)
    ]
    return Dataset.from_list(rows)


# -- one measurement (one process) ------------------------------------------------------------------------------------


def recipe_args(spec: ModelSpec, args: argparse.Namespace, output_dir: str):
    """The recipe as its script parses it, with the bench's steps, sequence length and device on top."""
    from hf_safety.scripts.derta import make_parser

    steps = args.warmup_steps + args.steps
    cli = ["--config", str(ROOT / spec.recipe), "--output_dir", output_dir, "--max_steps", str(steps)]
    cli += ["--gradient_accumulation_steps", "1", "--max_length", str(args.seq_len), "--logging_steps", str(steps)]
    # the safe answer fills the sequence, so the harmful prefix is empty whatever the sampling
    cli += ["--prefix_length_sampling", "uniform", "--save_strategy", "no", "--report_to", "none"]
    cli += ["--disable_tqdm", "true", "--push_to_hub", "false"]
    if args.micro_batch:
        cli += ["--per_device_train_batch_size", str(args.micro_batch)]
    if args.cpu:  # paged optimizers need CUDA
        cli += ["--use_cpu", "true", "--bf16", "false", "--optim", "adamw_torch"]
    return make_parser().parse_args_and_config(cli)


def measure(name: str, num_layers: int | None, args: argparse.Namespace) -> dict:
    """Builds `name` (with `num_layers` layers; None: all), trains, and returns the figures."""
    import bitsandbytes
    import peft
    import torch
    import transformers
    import trl
    from transformers import TrainerCallback
    from trl import get_peft_config, get_quantization_config

    from hf_safety import DeRTaTrainer
    from hf_safety.toy import build_tokenizer

    spec = MODELS[name]
    device = torch.device("cpu") if args.cpu else torch.device("cuda", torch.cuda.current_device())
    config = model_config(name, args)
    if num_layers:
        config.num_hidden_layers = min(num_layers, config.num_hidden_layers)

    class StepTimer(TrainerCallback):
        """Wall time from one step's end to the next (data, forward, backward, optimizer, callbacks), synchronized."""

        def __init__(self):
            self.ends: list[float] = []

        def _now(self) -> float:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            return time.perf_counter()

        def on_train_begin(self, *_, **__):
            self.ends = [self._now()]

        def on_step_end(self, *_, **__):
            self.ends.append(self._now())

        @property
        def times(self) -> list[float]:
            return [end - start for start, end in zip(self.ends, self.ends[1:])]

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        _, training_args, model_args = recipe_args(spec, args, tmp)
        quant = get_quantization_config(model_args)
        dtype = getattr(torch, model_args.dtype)
        model, experts_4bit = build_qlora_model(config, quant, device, dtype)
        built_s = time.perf_counter() - started
        micro_batch = training_args.per_device_train_batch_size
        rows = synthetic_rows(micro_batch * training_args.max_steps, args.seq_len, config.vocab_size)
        tokenizer = build_tokenizer(["Sorry , i can not help"], chat_format=spec.chat_format)
        timer = StepTimer()
        trainer = DeRTaTrainer(
            model=model,
            args=training_args,
            train_dataset=rows,
            processing_class=tokenizer,
            peft_config=get_peft_config(model_args),
            callbacks=[timer],
        )
        batch = trainer.data_collator([trainer.train_dataset[i] for i in range(micro_batch)])
        # the trainer's own count of input tokens (the fused form's mask is 4-D)
        sequences, tokens = len(batch["sequence_kind"]), int(trainer._prepare_attention_mask(dict(batch)))
        if device.type == "cuda":  # from here on: what training holds (the build's 16-bit temporaries are gone)
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        trainer.train()
        timed = timer.times[args.warmup_steps :]
        result = {
            "model": name,
            "hub_id": spec.hub_id,
            "recipe": spec.recipe,
            "num_layers": config.num_hidden_layers,
            "micro_batch": micro_batch,
            "derta_form": trainer.derta_form,
            "sequences_per_micro_batch": sequences,
            "tokens_per_step": tokens,
            "lora_r": model_args.lora_r,
            "lora_target_modules": model_args.lora_target_modules,
            "trainable_params": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
            "gradient_checkpointing": bool(training_args.gradient_checkpointing),
            "optim": getattr(training_args.optim, "value", str(training_args.optim)),
            "quant": {
                "quant_type": quant.bnb_4bit_quant_type,
                "double_quant": quant.bnb_4bit_use_double_quant,
                "compute_dtype": str(quant.bnb_4bit_compute_dtype).replace("torch.", ""),
                "quant_storage": str(quant.bnb_4bit_quant_storage).replace("torch.", ""),
            },
            "experts_4bit": experts_4bit,
            "step_times_s": timer.times,
            "step_time_s": sum(timed) / len(timed),
            "tokens_per_s": tokens * len(timed) / sum(timed),
            "peak_memory_gib": torch.cuda.max_memory_allocated(device) / GiB if device.type == "cuda" else None,
            "reserved_memory_gib": torch.cuda.max_memory_reserved(device) / GiB if device.type == "cuda" else None,
            "build_s": built_s,
            "wall_s": time.perf_counter() - started,
            "losses": [log["loss"] for log in trainer.state.log_history if "loss" in log],
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peft": peft.__version__,
            "bitsandbytes": bitsandbytes.__version__,
            "trl": trl.__version__,
        }
    return result


# -- runs: one model, at one depth or two (scaled) ------------------------------------------------------------------


def depths(name: str, args: argparse.Namespace) -> tuple[int | None, ...]:
    """The depths to build: `(None,)` for the full model, `(K/2, K)` to scale to the full depth."""
    k = args.num_layers
    if k is None:
        k = MODELS[name].default_layers
        if k and args.tiny:
            k = TINY_DEPTH // 2
    if not k:
        return (None,)
    if k < 2:
        raise ValueError("--num-layers must be at least 2 (the model is built at K/2 and K layers)")
    return (k // 2, k)


def run_process(name: str, layers: int | None, args: argparse.Namespace, argv: list[str]) -> dict:
    """`measure` in a fresh process (its memory figures are its own)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        worker = [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", f"{name}:{layers or 0}:{out}"]
        subprocess.run(worker, check=True, timeout=args.timeout)
        return json.loads(out.read_text())


def failed(name: str, error: Exception, device: dict, args: argparse.Namespace) -> dict:
    return {"model": name, "method": "derta", "gpu": device["gpu"], "seq_len": args.seq_len, "error": str(error)}


def combine(name: str, measured: list[dict], full_config, device: dict, args: argparse.Namespace) -> dict:
    """One result row for a model: the measurement, or the linear extrapolation in depth of two of them."""
    last = measured[-1]
    row = {
        "model": name,
        "method": "derta",
        "gpu": device["gpu"],
        "gpu_name": device["name"],
        "peak_flops": device["peak_flops"],
        "seq_len": args.seq_len,
        **{
            k: last[k] for k in ("micro_batch", "derta_form", "sequences_per_micro_batch", "tokens_per_step", "lora_r")
        },
        **{k: last[k] for k in ("gradient_checkpointing", "quant", "experts_4bit", "optim", "recipe")},
        "num_layers_built": last["num_layers"],
        "scaled_to_layers": None,
    }
    tokens = last["tokens_per_step"]
    step_time, peak, reserved = last["step_time_s"], last["peak_memory_gib"], last["reserved_memory_gib"]
    if len(measured) == 2 and last["num_layers"] < full_config.num_hidden_layers:
        first, depth = measured[0], full_config.num_hidden_layers

        def extrapolate(key):
            if first[key] is None:
                return None
            slope = (last[key] - first[key]) / (last["num_layers"] - first["num_layers"])
            if slope < 0:  # noise (a loaded machine): more layers never cost less; keep the deeper measurement
                row.setdefault("scaling_warnings", []).append(f"{key} fell with depth: not extrapolated")
                slope = 0.0
            return last[key] + slope * (depth - last["num_layers"])

        step_time, peak, reserved = (
            extrapolate("step_time_s"),
            extrapolate("peak_memory_gib"),
            extrapolate("reserved_memory_gib"),
        )
        row["scaled_to_layers"] = depth
        row["scaling"] = (
            f"step time and memory measured at {first['num_layers']} and {last['num_layers']} layers, extrapolated "
            f"linearly in depth to {depth}"
        )
    config = full_config if row["scaled_to_layers"] else measured_config(full_config, last["num_layers"])
    tokens_per_s = tokens / step_time
    row.update(
        tokens_per_s=tokens_per_s,
        step_time_s=step_time,
        peak_memory_gib=peak,
        reserved_memory_gib=reserved,
        matmul_params=matmul_params(config),
        lora_flops_per_token=flops_per_token(config, args.seq_len, 4),
        lora_mfu=None,
        mfu_6n=None,
    )
    if device["peak_flops"]:
        row["lora_mfu"] = tokens_per_s * row["lora_flops_per_token"] / device["peak_flops"]
        row["mfu_6n"] = tokens_per_s * flops_per_token(config, args.seq_len, 6) / device["peak_flops"]
    row["measured"] = [
        {k: m[k] for k in ("num_layers", "tokens_per_s", "step_time_s", "peak_memory_gib", "reserved_memory_gib")}
        | {"trainable_params": m["trainable_params"], "build_s": m["build_s"], "wall_s": m["wall_s"]}
        for m in measured
    ]
    row.update({k: last[k] for k in ("torch", "transformers", "peft", "bitsandbytes", "trl")})
    row["tiny"] = args.tiny
    row["steps"], row["warmup_steps"] = args.steps, args.warmup_steps
    return row


def measured_config(config, num_layers: int):
    config = copy.deepcopy(config)
    config.num_hidden_layers = num_layers
    return config


def format_table(rows: list[dict]) -> str:
    def num(value, spec):
        return "-" if value is None else format(value, spec)

    lines = [
        f"{'model':<14}{'layers':>12}{'rows x seq':>12}{'tok/s':>10}{'peak GiB':>10}{'reserved':>10}"
        f"{'LoRA-MFU':>10}{'6N-MFU':>9}  experts 4-bit",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"{r['model']:<14}  failed: {r['error']}")
            continue
        layers = str(r["num_layers_built"])
        if r["scaled_to_layers"]:
            layers = f"{r['measured'][0]['num_layers']},{r['num_layers_built']}->{r['scaled_to_layers']}"
        mfu = (num(r["lora_mfu"] and 100 * r["lora_mfu"], ".1f"), num(r["mfu_6n"] and 100 * r["mfu_6n"], ".1f"))
        lines.append(
            f"{r['model']:<14}{layers:>12}{str(r['micro_batch']) + ' x ' + str(r['seq_len']):>12}"
            f"{r['tokens_per_s']:>10.1f}{num(r['peak_memory_gib'], '.1f'):>10}{num(r['reserved_memory_gib'], '.1f'):>10}"
            f"{mfu[0]:>10}{mfu[1]:>9}  {'-' if r['experts_4bit'] is None else r['experts_4bit']}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.worker:  # one measurement in this process, written for the parent
        name, layers, out = args.worker.split(":", 2)
        Path(out).write_text(json.dumps(measure(name, int(layers) or None, args)))
        return []

    import torch

    if args.cpu:
        device = {"gpu": "cpu", "name": "cpu", "peak_flops": None}
    else:
        if not torch.cuda.is_available():
            raise SystemExit("no CUDA device: run on a GPU, or pass --cpu --tiny for the smoke run")
        name = gpu_name()
        device = {"gpu": gpu_slug(name), "name": name, "peak_flops": peak_flops(name)}
    flops = f"{device['peak_flops']:.4g} FLOP/s dense bf16" if device["peak_flops"] else "peak unknown: no MFU"
    print(f"device: {device['name']} ({flops}); models: {', '.join(args.models)}; seq {args.seq_len}")
    output = args.output or RESULTS / f"qlora_gpu_{device['gpu']}{'_tiny' if args.tiny else ''}.json"
    rows = []
    for name in args.models:
        measured = []
        try:
            for layers in depths(name, args):
                print(f"{name}: building {layers or 'all'} layers ...", flush=True)
                if args.in_process:
                    measured.append(measure(name, layers, args))
                else:
                    measured.append(run_process(name, layers, args, argv))
        except (subprocess.SubprocessError, OSError) as err:  # the process failed (OOM, timeout): go on
            rows.append(failed(name, err, device, args))
            print(f"{name}: FAILED ({err})", flush=True)
        else:
            rows.append(combine(name, measured, model_config(name, args), device, args))
            print(format_table(rows[-1:]).splitlines()[-1], flush=True)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(rows, indent=2) + "\n")  # after each model: a crash keeps what was measured
    print()
    print(format_table(rows))
    for row in rows:
        if row.get("scaled_to_layers"):
            print(f"{row['model']}: {row['scaling']}" + "".join(f"; {w}" for w in row.get("scaling_warnings", [])))
    print(f"wrote {output}")
    return rows


if __name__ == "__main__":
    main()
