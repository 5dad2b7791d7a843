# /// script
# dependencies = ["hf-safety"]
# ///
"""
SEAS (Self-Evolving Adversarial Safety) with a Llama 3 red team and target: a thin script over a YAML recipe.

```bash
# The toy SEAS world: CPU, minutes, no Hub
accelerate launch --config_file recipes/accelerate/cpu.yaml recipes/seas_llama3.py --config recipes/seas/toy.yaml
# Llama-3-8B red team and target, Llama Guard 3 8B judge, QLoRA on one GPU
accelerate launch --config_file recipes/accelerate/single_gpu.yaml recipes/seas_llama3.py \
    --config recipes/seas/llama3-8b-qlora.yaml
```

Any field of the YAML can be overridden on the command line, e.g. `--num_iterations 2 --seeds_per_iteration 8`.
"""

from hf_safety.scripts.seas import main, make_parser


if __name__ == "__main__":
    parser = make_parser()
    script_args, training_args, model_args = parser.parse_args_and_config()
    main(script_args, training_args, model_args)
