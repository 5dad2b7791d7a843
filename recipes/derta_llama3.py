# /// script
# dependencies = ["hf-safety"]
# ///
"""
DeRTa (Decoupled Refusal Training) on Llama 3 and friends: a thin script over a YAML recipe.

```bash
# The toy world: CPU, a few minutes, no Hub
accelerate launch --config_file recipes/accelerate/cpu.yaml recipes/derta_llama3.py --config recipes/derta/toy.yaml
# Meta-Llama-3-8B-Instruct, QLoRA on one GPU
accelerate launch --config_file recipes/accelerate/single_gpu.yaml recipes/derta_llama3.py \
    --config recipes/derta/llama3-8b-qlora.yaml
```

Any field of the YAML can be overridden on the command line, e.g. `--max_steps 10 --rto_weight 0.5`.
"""

from hf_safety.scripts.derta import main, make_parser


if __name__ == "__main__":
    parser = make_parser()
    script_args, training_args, model_args = parser.parse_args_and_config()
    main(script_args, training_args, model_args)
