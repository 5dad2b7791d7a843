"""`hf-safety plan`: the plan as a table (or JSON), the argparse flags of [`PlanSettings`], and the exit status."""

from __future__ import annotations

import dataclasses
import json

from .estimate import estimate_memory
from .recipes import settings_from_recipe
from .settings import GIB, METHODS, OPTIMIZER_STATE_BYTES, QUANTS, MemoryPlan, PlanSettings
from .shapes import PlanError
from .terms import _count


def describe_settings(plan: MemoryPlan) -> str:
    s, shapes = plan.settings, plan.context.get("shapes") or plan.shapes
    weights = "bf16 weights" if s.quant == "bf16" else f"QLoRA {'NF4 + double quant' if s.double_quant else 'NF4'}"
    if shapes.num_experts:
        weights += ", experts " + ("bf16" if s.experts_bf16 or s.quant == "bf16" else "NF4")
    tuning = "full fine-tuning" if s.lora_r == 0 else f"LoRA r {s.lora_r} (dropout {s.lora_dropout:g})"
    parts = [
        {"derta": "DeRTa", "seas": "SEAS", "sft": "SFT"}[s.method],
        weights,
        tuning,
        f"seq-len {s.seq_len}",
        f"micro-batch {s.micro_batch}",
        "gradient checkpointing " + ("on" if s.gradient_checkpointing else "off"),
        s.optim,
    ]
    if s.method == "seas":
        parts.append(f"judge {s.judge} ({s.judge_quant})")
    if s.num_gpus > 1:
        parts.append(f"{s.num_gpus} GPUs (FSDP)")
    return ", ".join(parts)


def _format_table(plan: MemoryPlan, gpu_gb: float | None, suggestions: bool) -> str:
    shapes = plan.context.get("shapes") or plan.shapes
    lines = [
        f"{plan.model}: {shapes.model_type}, {_count(shapes.total_params)} params "
        f"(config: {plan.context.get('source', '?')})",
        describe_settings(plan),
        "",
    ]
    phases = plan.phases or {plan.phase: plan}
    keys = [
        key
        for key in MemoryPlan._LABELS
        if any(getattr(p, key) or key in ("weights", "activations") for p in phases.values())
    ]
    labels = {term.key: term.label for phase in phases.values() for term in phase.terms}
    width = max(len(labels.get(key, key)) for key in keys) + 2
    if len(phases) > 1:
        header = f"{'GiB':<{width}}" + "".join(f"{name + (' *' if name == plan.phase else ''):>16}" for name in phases)
        lines.append(header)
        for key in keys:
            lines.append(
                f"{labels.get(key, key):<{width}}"
                + "".join(f"{getattr(p, key) / GIB:>16.2f}" for p in phases.values())
            )
        lines.append(f"{'total':<{width}}" + "".join(f"{p.total / GIB:>16.2f}" for p in phases.values()))
        lines.append(f"(* peak phase: {plan.phase})")
        lines.append("")
        lines.append(f"how ({plan.phase}):")
        for term in plan.terms:
            if term.how:
                lines.append(f"  {term.label}: {term.how}")
    else:
        lines.append(f"{'term':<{width}}{'GiB':>8}   how")
        for term in plan.terms:
            lines.append(f"{term.label:<{width}}{term.gib:>8.2f}   {term.how}")
        lines.append(
            f"{'total':<{width}}{plan.total / GIB:>8.2f}   peak allocated by torch {plan.peak_allocated / GIB:.2f} GiB"
        )
    if gpu_gb is not None:
        verdict = "yes" if plan.fits(gpu_gb) else "NO"
        lines.append("")
        lines.append(
            f"GPU {gpu_gb:g} GiB: fits {verdict} "
            f"({'headroom' if plan.fits(gpu_gb) else 'short by'} {abs(plan.headroom(gpu_gb)) / GIB:.2f} GiB)"
        )
    for note in dict.fromkeys(plan.notes):
        lines.append(f"note: {note}")
    if suggestions and gpu_gb is not None:
        found = plan.suggestions(gpu_gb)
        if found:
            lines.append("")
            lines.append("to fit:" if not plan.fits(gpu_gb) else "to use the room:")
            for suggestion in found:
                mark = "fits" if suggestion.fits else "    "
                lines.append(f"  {mark}  {suggestion.total / GIB:6.1f} GiB  {suggestion.change}")
        elif not plan.fits(gpu_gb):
            lines.append("")
            lines.append("no single change found that lowers the peak; use a GPU with more memory")
    return "\n".join(lines)


PLAN_USAGE_EXAMPLES = """examples:
  hf-safety plan --model meta-llama/Meta-Llama-3-8B-Instruct --method derta --gpu 24
  hf-safety plan --recipe recipes/derta/llama3-8b-qlora.yaml --gpu 24
  hf-safety plan --model mistralai/Mixtral-8x7B-Instruct-v0.1 --method seas --gpu 80 --json
  hf-safety plan --model path/to/config.json --method sft --gpu 48 --quant bf16 --lora-r 0

exit status: 0 fits (or no --gpu), 1 does not fit (suggestions printed), 2 bad input"""


def _help(name: str) -> str:
    return next(f.metadata["help"] for f in dataclasses.fields(PlanSettings) if f.name == name)


def build_parser():
    import argparse

    parser = argparse.ArgumentParser(
        prog="hf-safety plan",
        description="Will it fit? Peak GPU memory of a DeRTa / SEAS / SFT run from the model config alone (no "
        "weights downloaded): the terms, whether it fits the GPU, and what to change if it does not.",
        epilog=PLAN_USAGE_EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model", help="Hub id, local folder or config.json (Hub ids of recipes/configs/ resolve offline)"
    )
    parser.add_argument("--recipe", help="a training recipe YAML: its model, seq-len, batch, LoRA, quant, optim")
    parser.add_argument("--method", choices=METHODS, help=_help("method") + " Default: derta, or the recipe's.")
    parser.add_argument("--gpu", type=float, help="GPU memory in GiB (24, 48, 80, ...); without it, no verdict")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    flags = {
        "seq_len": int,
        "micro_batch": int,
        "lora_r": int,
        "lora_dropout": float,
        "quant": str,
        "optim": str,
        "num_gpus": int,
        "judge": str,
        "judge_quant": str,
        "red_team_model": str,
        "generation_batch_size": int,
        "num_adversarial_prompts": int,
        "num_responses": int,
        "red_team_prompt_tokens": int,
        "red_team_max_new_tokens": int,
        "target_max_new_tokens": int,
        "judge_batch_size": int,
        "judge_prompt_tokens": int,
        "judge_max_new_tokens": int,
        "sequences_per_row": int,
        "cuda_context_gib": float,
        "fragmentation": float,
    }
    choices = {"quant": QUANTS, "judge_quant": QUANTS, "optim": tuple(OPTIMIZER_STATE_BYTES)}
    for name, kind in flags.items():
        parser.add_argument(
            "--" + name.replace("_", "-"), dest=name, type=kind, choices=choices.get(name), help=_help(name)
        )
    for name in ("gradient_checkpointing", "double_quant", "lora_experts", "fused_lm_head", "padded"):
        parser.add_argument(
            "--" + name.replace("_", "-"), dest=name, action=argparse.BooleanOptionalAction, help=_help(name)
        )
    parser.add_argument(
        "--experts-bf16", dest="experts_bf16", action="store_true", default=None, help=_help("experts_bf16")
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """`hf-safety plan`: prints the plan (or `--json`); exit status 0 fits, 1 does not fit, 2 bad input."""
    import sys

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        model, settings = None, {}
        if args.recipe:
            model, settings = settings_from_recipe(args.recipe)
        model = args.model or model
        if not model:
            parser.error("--model is required (a Hub id, a local folder or config.json), or --recipe with a model")
        fields = {f.name for f in dataclasses.fields(PlanSettings)}
        settings.update({key: value for key, value in vars(args).items() if key in fields and value is not None})
        plan = estimate_memory(model, **settings)
    except PlanError as err:
        hint = ""
        if args.recipe and "not found" in str(err) and not (args.model and args.red_team_model):
            hint = (
                "\n(--recipe: the models are the recipe's; SEAS recipes name your SFT'd R0/T0, so plan with their base "
                "model: --model BASE_ID --red-team-model BASE_ID)"
            )
        print(f"hf-safety plan: error: {err}{hint}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(plan.to_dict(args.gpu), indent=2))
    else:
        print(plan.format_table(args.gpu))
    return 0 if args.gpu is None or plan.fits(args.gpu) else 1
