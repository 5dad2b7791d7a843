"""[`SafetyEvalConfig`]: every setting of a safety evaluation, in one dataclass that `evaluate_safety`,
`SafetyEvalCallback`, SEAS and the `hf-safety eval` command line all read (the CLI flags and `--config eval.yaml`
come from its fields through TRL's parser)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from transformers import GenerationConfig

from .attacks import DEFAULT_PREFIX_LENGTHS, PREFIX_UNITS, parse_prefix_lengths


BACKENDS = ("transformers", "vllm")


@dataclass
class SafetyEvalConfig:
    r"""
    Configuration of a safety evaluation: which suites, which attacks, which judge, how to generate, where to write.

    Parameters:
        > What to evaluate

        model (`str`, *optional*): Hub id, local folder or registered name (`toy://...`) of the model (the CLI's
            `--model`; Python callers pass the model to `evaluate_safety` instead).
        tokenizer (`str`, *optional*): where to load the tokenizer from (default: the model's folder).
        suites (`list[str]`): known suite names (`xstest`, `advbench`, `harmbench`, ...) or `.csv`/`.jsonl`/`.json`/
            `.parquet` files.
        column_mapping (`list[str]`): `FIELD=COLUMN` pairs for file suites (fields: prompt, behavior, category, label,
            target, id); known suites keep their declared mapping.
        split (`str`, *optional*): the split of Hub suites.
        limit (`int`, *optional*): evaluate only the first `limit` rows of each split (or label) of each suite.

        > Attacks and judging

        attacks (`list[str]`, defaults to `["none"]`): `none`, `prefill`, `prefill:K`, `template`, `template:NAME`,
            `code`, `cipher`, `cipher:NAME`.
        prefix_lengths (`str` or `list[int]`, defaults to `"0,3,6,9,12"`): prefix lengths k of the `prefill` attack.
        prefix_unit (`str`, defaults to `"tokens"`): `"tokens"` (cut on the model's token ids) or `"words"`.
        judge (`str`, defaults to `"refusal-strings"`): a name for `hf_safety.judges.load_judge`.
        refusal_judge (`str`, *optional*): a second judge whose verdicts give the refusal labels.
        judge_mode (`str`, *optional*): for a model judge loaded by name, `"score"` (verdict from one forward pass,
            the judges' default) or `"decode"` (every answer decoded); the report records the path that judged.
        include_prefill_in_response (`bool`, defaults to `False`): the judge reads the forced prefix and the
            continuation (default: the continuation only: the forced text is the attacker's, not the model's).

        > Generation

        batch_size (`int`, defaults to `16`), max_new_tokens (`int`, defaults to `256`), do_sample (`bool`, defaults
            to `False`: greedy), temperature, top_p, seed: the decoding settings (unset fields are filled from the
            checkpoint's `generation_config.json` and recorded in the report as such).
        backend (`str`, defaults to `"transformers"`): or `"vllm"` (`pip install 'hf-safety[vllm]'`).
        use_chat_template (`bool`, *optional*): default: when the tokenizer has one.
        load_in_4bit (`bool`, defaults to `False`): load the model in 4-bit NF4.
        trust_remote_code (`bool`, defaults to `False`): only for checkpoints you have read.

        > Output

        output_dir (`str`, *optional*): where `report.json`, `summary.md`, `records.jsonl` and the plots go. It is
            checked before anything is generated; records are written as each suite x attack is judged.
        overwrite (`bool`, defaults to `False`): replace a previous evaluation in `output_dir`.
        resume (`bool`, defaults to `False`): continue a previous, interrupted evaluation in `output_dir` (finished
            suite x attack blocks are read back from `records.jsonl`, the rest is run).
        model_name (`str`, *optional*): the model's name in the report (default: its name or path).
        confidence (`float`, defaults to `0.95`): level of the Wilson intervals.
        progress (`bool`, defaults to `True`): progress bars.
    """

    model: str | None = field(default=None, metadata={"help": "Hub id, local folder or toy:// name of the model."})
    tokenizer: str | None = field(default=None, metadata={"help": "Tokenizer id/path (default: the model's)."})
    suites: list[str] = field(
        default_factory=list,
        metadata={
            "help": "Known suites (xstest, advbench, harmbench, jailbreakbench, seas) or .csv/.jsonl/.json/.parquet "
            "files.",
            "aliases": ["--suite"],
        },
    )
    column_mapping: list[str] = field(
        default_factory=list,
        metadata={"help": "FIELD=COLUMN pairs for file suites (prompt, behavior, category, label, target, id)."},
    )
    split: str | None = field(default=None, metadata={"help": "Split of Hub suites."})
    limit: int | None = field(default=None, metadata={"help": "First N rows of each split (or label) of each suite."})
    attacks: list[str] = field(
        default_factory=lambda: ["none"],
        metadata={
            "help": "none, prefill, prefill:K, template, template:NAME, code, cipher, cipher:NAME.",
            "aliases": ["--attack"],
        },
    )
    prefix_lengths: str = field(
        default=",".join(str(k) for k in DEFAULT_PREFIX_LENGTHS),
        metadata={"help": "Comma-separated prefix lengths k of the prefill attack, e.g. 0,3,6."},
    )
    prefix_unit: str = field(
        default="tokens", metadata={"help": "Unit of the prefill attack's k.", "choices": list(PREFIX_UNITS)}
    )
    judge: str = field(default="refusal-strings", metadata={"help": "Judge name for hf_safety.judges.load_judge."})
    refusal_judge: str | None = field(default=None, metadata={"help": "Optional judge for the refusal labels."})
    judge_mode: str | None = field(
        default=None,
        metadata={
            "help": "For a model judge loaded by name: 'score' (one forward pass, the default) or 'decode'.",
            "choices": ["score", "decode"],
        },
    )
    include_prefill_in_response: bool = field(
        default=False,
        metadata={
            "help": "The judge reads the forced prefix + the continuation (default: the continuation only).",
            "aliases": ["--judge_prefill", "--judge-prefill"],
        },
    )
    batch_size: int = field(default=16, metadata={"help": "Prompts per generate call."})
    max_new_tokens: int = field(default=256, metadata={"help": "Maximum new tokens per answer."})
    do_sample: bool = field(default=False, metadata={"help": "Sample instead of greedy decoding."})
    temperature: float = field(default=1.0, metadata={"help": "Sampling temperature (with --do_sample)."})
    top_p: float = field(default=1.0, metadata={"help": "Nucleus sampling p (with --do_sample)."})
    seed: int = field(default=0, metadata={"help": "Seed for sampling."})
    backend: str = field(default="transformers", metadata={"help": "Generation backend.", "choices": list(BACKENDS)})
    use_chat_template: bool | None = field(
        default=None, metadata={"help": "Apply the chat template (default: when the tokenizer has one)."}
    )
    load_in_4bit: bool = field(default=False, metadata={"help": "Load the model in 4-bit NF4 (bitsandbytes)."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom model code from the checkpoint."})
    output_dir: str | None = field(default=None, metadata={"help": "Where the report, records and plots go."})
    overwrite: bool = field(default=False, metadata={"help": "Replace a previous evaluation in output_dir."})
    resume: bool = field(default=False, metadata={"help": "Continue an interrupted evaluation in output_dir."})
    model_name: str | None = field(default=None, metadata={"help": "The model's name in the report."})
    confidence: float = field(default=0.95, metadata={"help": "Level of the Wilson confidence intervals."})
    progress: bool = field(default=True, metadata={"help": "Show progress bars."})

    def __post_init__(self):
        if isinstance(self.suites, str):
            self.suites = [self.suites]
        if isinstance(self.attacks, str):
            self.attacks = [self.attacks]
        self.prefix_lengths = (
            parse_prefix_lengths(self.prefix_lengths)
            if isinstance(self.prefix_lengths, str)
            else [int(k) for k in self.prefix_lengths]
        )
        if not self.prefix_lengths:
            raise ValueError("prefix_lengths is empty: give non-negative integers such as [0, 3, 6]")
        if isinstance(self.column_mapping, dict):
            self.column_mapping = [f"{k}={v}" for k, v in self.column_mapping.items()]
        self.column_mapping_dict()  # validates the pairs
        if self.prefix_unit not in PREFIX_UNITS:
            raise ValueError(f"prefix_unit must be one of {PREFIX_UNITS}, got {self.prefix_unit!r}")
        if self.backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {self.backend!r}")
        for name in ("batch_size", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be a positive number of rows, got {self.limit}")
        if not 0 < self.confidence < 1:
            raise ValueError(f"confidence must be in (0, 1), got {self.confidence}")
        if self.overwrite and self.resume:
            raise ValueError(
                "overwrite and resume exclude each other: replace the previous evaluation, or continue it"
            )

    def column_mapping_dict(self) -> dict[str, str] | None:
        """`column_mapping` as `{field: column}` (None when empty)."""
        mapping = {}
        for pair in self.column_mapping:
            key, sep, value = str(pair).partition("=")
            if not sep or not key.strip() or not value.strip():
                raise ValueError(f"column_mapping entries must be FIELD=COLUMN, got {pair!r}")
            mapping[key.strip()] = value.strip()
        return mapping or None

    def generation_config(self) -> GenerationConfig:
        """The `transformers.GenerationConfig` these settings describe."""
        kwargs: dict[str, Any] = dict(do_sample=self.do_sample, max_new_tokens=self.max_new_tokens)
        if self.do_sample:
            kwargs.update(temperature=self.temperature, top_p=self.top_p)
        return GenerationConfig(**kwargs)
