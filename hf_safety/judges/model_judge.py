"""Machinery shared by the model-based judges (Llama Guard, HarmBench, WildGuard, sequence classifiers).

Judge models load through the package's one loader (`hf_safety.models`: Hub id or local path, optional 4-bit NF4,
`trust_remote_code` off) and run in one of two ways:

- [`ModelJudge.generate`]: greedy decoding through the one batched generator (`hf_safety.generation`) with a fixed
  configuration (the checkpoint's own `generation_config.json` cannot turn sampling or a repetition penalty on). While
  generating, the probability mass of a chosen token set (e.g. the tokens that begin "unsafe") is recorded for the
  first few steps from the raw logits, so judges get a score without a second forward pass; `row_done` ends rows whose
  answer is settled early (Llama Guard's score-only path: a `safe` first token), the others decode on.
- [`ModelJudge.next_token_probs`] / [`ModelJudge.next_token`]: one forward pass, the next-token distribution after each
  input (optionally followed by forced tokens), whole or reduced to a few tokens' odds and the greedy choice. Greedy
  decoding's first token is its argmax, so a guard whose whole answer is one token (HarmBench's and ShieldGemma's
  `Yes`/`No`, the StrongREJECT evaluator's grade) is judged without decoding.

Both are batched by length (longest first for decoding, shortest first for scoring; results in input order) and, with
`shared_prefix` (the default), encode the longest token prefix common to a call's inputs (the guard's policy prompt)
once and reuse its KV cache in every batch, and with `prefix_groups` (the default) also the longer prefix that a group
of inputs shares (ShieldGemma's principles of one pair, SEAS's answers to one prompt), once per batch (see
[`~hf_safety.prefix_cache`]). Batches are padded, not packed: padding-free batches would need a varlen attention
backend and cannot share the prefix cache.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase
from trl.trainer.utils import pad

from ..generation import generate
from ..models import load_model_and_tokenizer, load_tokenizer, model_name
from ..prefix_cache import SharedPrefix, accepts_argument, batch_plan, common_prefix_length, padding_limit
from .base import Judge


JUDGE_MODES = ("score", "decode")


def check_judge_mode(judge_mode: str) -> str:
    """Returns `judge_mode` if it is `"score"` (one forward pass, the verdict read from the first answer token's
    probabilities) or `"decode"` (greedy decoding of the whole answer); raises `ValueError` otherwise."""
    if judge_mode not in JUDGE_MODES:
        raise ValueError(f"judge_mode must be one of {JUDGE_MODES}, got {judge_mode!r}")
    return judge_mode


@dataclass
class NextToken:
    """
    What [`ModelJudge.next_token`] reads from one forward pass per input.

    Attributes:
        probs (`torch.Tensor`): float32, CPU, `[inputs, len(token_ids)]`: the softmax over the whole vocabulary at the
            requested token ids.
        greedy (`list[int]`): per input, the most likely next token over the whole vocabulary.
    """

    probs: torch.Tensor
    greedy: list[int]


@dataclass
class GenerationResult:
    """
    One greedy generation.

    Attributes:
        text (`str`): the generated text, special tokens skipped.
        token_ids (`list[int]`): the generated ids, up to (not including) the first end-of-sequence id.
        step_mass (`list[float]`): per step (the first few), the probability of the requested token set.
        finish_reason (`str`): why it ended (see [`~hf_safety.generation.Sample`]); `"done"` when `row_done` ended it.
    """

    text: str
    token_ids: list[int]
    step_mass: list[float] = field(default_factory=list)
    finish_reason: str = "stop"


class ModelJudge(Judge):
    """
    Base class of the judges that run a Hugging Face model. Subclasses build prompts, call [`generate`] or
    [`classify`], and parse the result.

    Args:
        model (`str`, `os.PathLike` or `PreTrainedModel`): a loaded model, or a Hub id / local folder to load.
        tokenizer (`PreTrainedTokenizerBase`, `str`, *optional*): required with a loaded model; otherwise loaded from
            `model` unless given.
        task (`str`, defaults to `"causal-lm"`): the auto class used to load `model` by name.
        batch_size (`int`, defaults to `8`): prompts per forward/generate call.
        shared_prefix (`bool`, defaults to `True`): encode the token prefix that all inputs of a call share once and
            reuse its KV cache across the batches (same outputs up to float rounding; see [`next_token_probs`]).
        prefix_groups (`bool`, defaults to `True`): with `shared_prefix`, inputs that share a longer prefix among
            themselves (ShieldGemma's principles of one pair, SEAS's answers to one adversarial prompt) are batched
            together and that prefix is run once per batch (see [`~hf_safety.prefix_cache.prefix_groups`]).
        dtype, device_map, load_in_4bit, bnb_4bit_compute_dtype, trust_remote_code, revision, model_kwargs: see
            [`load_model_and_tokenizer`]; ignored for an already-loaded model.

    The model is put in eval mode, and a tokenizer without a pad token gets its eos (or unk) token as pad token (pad
    positions are masked, so the choice does not change outputs). The tokenizer's `padding_side` is left alone:
    batches are left-padded by [`generate`] itself.
    """

    def __init__(
        self,
        model: str | os.PathLike | PreTrainedModel,
        tokenizer: PreTrainedTokenizerBase | str | os.PathLike | None = None,
        *,
        task: str = "causal-lm",
        batch_size: int = 8,
        shared_prefix: bool = True,
        prefix_groups: bool = True,
        dtype: torch.dtype | str = "auto",
        device_map: str | dict | None = None,
        load_in_4bit: bool = False,
        bnb_4bit_compute_dtype: torch.dtype | None = None,
        trust_remote_code: bool = False,
        revision: str | None = None,
        model_kwargs: dict[str, Any] | None = None,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if isinstance(model, (str, os.PathLike)):
            model, tokenizer = load_model_and_tokenizer(
                model,
                task,
                tokenizer=tokenizer,
                dtype=dtype,
                device_map=device_map,
                load_in_4bit=load_in_4bit,
                bnb_4bit_compute_dtype=bnb_4bit_compute_dtype,
                trust_remote_code=trust_remote_code,
                revision=revision,
                model_kwargs=model_kwargs,
            )
        elif tokenizer is None:
            raise ValueError("pass the tokenizer together with an already-loaded model")
        elif not isinstance(tokenizer, PreTrainedTokenizerBase):
            tokenizer = load_tokenizer(tokenizer, trust_remote_code=trust_remote_code)
        if tokenizer.pad_token_id is None:  # generation pads; the pad id is masked out, so eos (or unk) is safe
            tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
            if tokenizer.pad_token_id is None:
                raise ValueError("the judge tokenizer has no pad, eos or unk token to pad batches with")
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size
        self.shared_prefix = shared_prefix
        self.prefix_groups = prefix_groups
        self._token_sets: dict[str, list[int]] = {}
        self._kept_prefix: SharedPrefix | None = None

    @property
    def model_name(self) -> str:
        """The model's `name_or_path` (Hub id or folder), or its class name for an in-memory model."""
        return model_name(self.model)

    @property
    def quantization(self) -> str:
        """`"4-bit nf4"`, `"8-bit"` or the model dtype, for reports."""
        config = getattr(self.model.config, "quantization_config", None)
        if config is not None:
            get = config.get if isinstance(config, dict) else lambda key, default=None: getattr(config, key, default)
            if get("load_in_4bit"):
                return f"4-bit {get('bnb_4bit_quant_type', 'fp4')}"
            if get("load_in_8bit"):
                return "8-bit"
            return str(get("quant_method", "quantized"))
        return str(self.model.dtype).replace("torch.", "")

    @property
    def judge_path(self) -> str:
        """How verdicts are computed, for reports: `"score-only"` (judges with `judge_mode="score"`: the verdict read
        from the first answer token's logits) or `"decode"` (greedy decoding), with `"+shared-prefix"` when the inputs'
        common prefix is encoded once (`shared_prefix`)."""
        path = "score-only" if getattr(self, "judge_mode", "decode") == "score" else "decode"
        return f"{path}+shared-prefix" if self.shared_prefix else path

    # -- tokens -------------------------------------------------------------------------------------------------------

    def token_ids_where(self, key: str, predicate: Callable[[str], bool]) -> list[int]:
        """Ids of the vocabulary tokens whose decoded text satisfies `predicate` (cached under `key`)."""
        if key not in self._token_sets:
            vocab_size = len(self.tokenizer)
            texts = self.tokenizer.batch_decode([[i] for i in range(vocab_size)], skip_special_tokens=False)
            special = set(self.tokenizer.all_special_ids)
            self._token_sets[key] = [i for i, text in enumerate(texts) if i not in special and predicate(text)]
        return self._token_sets[key]

    def single_token_id(self, text: str, needed_by: str) -> int:
        """The id of the vocabulary token `text` (as a model card reads `tokenizer.get_vocab()[text]`), else of the one
        token it encodes to; `ValueError` naming `needed_by` when it is more than one token."""
        token_id = self.tokenizer.get_vocab().get(text)
        if token_id is None:
            ids = self.tokenizer.encode(text, add_special_tokens=False)
            if len(ids) != 1:
                raise ValueError(f"the tokenizer has no single token {text!r}; {needed_by} needs one")
            token_id = ids[0]
        return int(token_id)

    @property
    def _device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    # -- running --------------------------------------------------------------------------------------------------------

    def generate(
        self,
        texts: Sequence[str],
        *,
        max_new_tokens: int,
        add_special_tokens: bool = True,
        score_token_ids: Sequence[int] | None = None,
        score_steps: int = 8,
        forced_ids: Sequence[int] = (),
        row_done: Callable[[list[int]], bool] | None = None,
        shared_prefix: bool | None = None,
    ) -> list[GenerationResult]:
        """
        Greedy generation for each text through the shared generator (length-sorted batches of `batch_size`, left
        padding, no grad); results in input order.

        Args:
            texts (`Sequence[str]`): full judge prompts.
            max_new_tokens (`int`): generation budget.
            add_special_tokens (`bool`, defaults to `True`): `False` for prompts that already hold the BOS token (e.g.
                rendered by a chat template).
            score_token_ids (`Sequence[int]`, *optional*): token set whose probability is recorded per step.
            score_steps (`int`, defaults to `8`): how many first steps to record.
            forced_ids (`Sequence[int]`, *optional*): token ids appended to every text (the answer's forced opening;
                not part of the results' text or ids).
            row_done (`Callable[[list[int]], bool]`, *optional*): ends a row early from its generated ids so far (see
                [`~hf_safety.generation.generate`]): the score-only path stops rows settled by their first answer
                token, and the others decode on from the same KV cache.
            shared_prefix (`bool`, *optional*): reuse the KV cache of the texts' common token prefix (default:
                `self.shared_prefix`).
        """
        config = GenerationConfig(
            max_new_tokens=max_new_tokens,
            do_sample=False,
            num_beams=1,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
        )
        inputs = self._encode(texts, add_special_tokens, forced_ids)
        output = generate(
            self.model,
            self.tokenizer,
            inputs,
            config,
            batch_size=self.batch_size,
            token_mass_ids=score_token_ids,
            token_mass_steps=score_steps,
            shared_prefix=self._prefix_of(inputs, shared_prefix),
            prefix_groups=self.prefix_groups,
            row_done=row_done,
        )
        return [GenerationResult(s.text, s.token_ids, s.token_mass, s.finish_reason) for s in output.first()]

    def next_token_probs(
        self,
        texts: Sequence[str],
        *,
        add_special_tokens: bool = True,
        forced_ids: Sequence[int] = (),
        shared_prefix: bool | None = None,
    ) -> torch.Tensor:
        """
        Next-token probabilities after each text, from one forward pass per batch (no decoding).

        Args:
            texts (`Sequence[str]`): full judge prompts.
            add_special_tokens (`bool`, defaults to `True`): `False` for prompts that already hold the BOS token.
            forced_ids (`Sequence[int]`, *optional*): token ids appended to every text before reading the next token
                (e.g. Llama Guard 3's leading blank line, which its answers always start with).
            shared_prefix (`bool`, *optional*): `None` uses `self.shared_prefix`. When on, the longest token prefix
                common to all inputs is run once (batch size 1) and its KV cache reused by every batch, so each batch
                computes only the rest of its inputs.

        Returns:
            `torch.Tensor`: float32, CPU, `[len(texts), vocab]`: the softmax over the whole vocabulary at the position
            after each text's tokens and `forced_ids`, in input order. Batches of `batch_size` are formed from the
            inputs sorted by length and right-padded (the rows' last real positions are read), so short inputs do not
            pay for long ones. Row `i` equals what greedy decoding of `texts[i]` (with `forced_ids` forced) sees at its
            first free step, up to float rounding. A whole vocabulary per input: judges that need a few tokens' odds
            use [`next_token`], which keeps only those.
        """
        out = torch.empty(len(texts), self.model.config.get_text_config().vocab_size)
        for rows, probs in self._next_token_batches(texts, add_special_tokens, forced_ids, shared_prefix):
            out[rows] = probs.cpu()
        return out

    def next_token(
        self,
        texts: Sequence[str],
        token_ids: Sequence[int],
        *,
        add_special_tokens: bool = True,
        forced_ids: Sequence[int] = (),
        shared_prefix: bool | None = None,
    ) -> NextToken:
        """
        What [`next_token_probs`] gives, reduced batch by batch to what a judge reads: the probabilities of
        `token_ids` and the most likely token (greedy decoding's first choice), so a call over many inputs holds a few
        numbers per input instead of a vocabulary (a 256k-token vocabulary is 1 MB per input in float32).
        """
        ids = torch.tensor([int(i) for i in token_ids], dtype=torch.long)
        probs = torch.empty(len(texts), len(ids))
        greedy = torch.empty(len(texts), dtype=torch.long)
        for rows, batch in self._next_token_batches(texts, add_special_tokens, forced_ids, shared_prefix):
            probs[rows] = batch[:, ids.to(batch.device)].cpu()
            greedy[rows] = batch.argmax(-1).cpu()
        return NextToken(probs, greedy.tolist())

    @torch.no_grad()
    def _next_token_batches(
        self,
        texts: Sequence[str],
        add_special_tokens: bool,
        forced_ids: Sequence[int],
        shared_prefix: bool | None,
    ) -> Iterator[tuple[list[int], torch.Tensor]]:
        """Per length-sorted batch: the indices of its inputs and their next-token softmax (float32, on the model's
        device, `[rows, vocab]`); see [`next_token_probs`]."""
        if not texts:
            return
        inputs = self._encode(texts, add_special_tokens, forced_ids)
        prefix = self._prefix_of(inputs, shared_prefix)
        device, pad_id = self._device, self.tokenizer.pad_token_id
        keep_logits = accepts_argument(self.model, "logits_to_keep")
        order, group_lengths = batch_plan(
            inputs,
            prefix,
            self.batch_size,
            longest_first=False,
            groups=self.prefix_groups,
            window=padding_limit(self.model),
        )
        cached = None  # the last batch's cached part (its group pass serves the next batch when it can)
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            kwargs: dict[str, Any] = {"use_cache": prefix is not None}
            done = [0] * len(rows)  # each row's tokens already in the cache
            if prefix is not None:  # [prefix | group prefix, left-padded | rest, right-padded]
                groups = [inputs[i][len(prefix) : len(prefix) + group_lengths[i]] for i in rows]
                cached = prefix.for_batch(self.model, groups, pad_id, previous=cached)
                kwargs["cache"], done = cached.cache, cached.lengths
            rest = [torch.tensor(inputs[i][done[r] :], dtype=torch.long) for r, i in enumerate(rows)]
            ids = pad(rest, pad_id, padding_side="right")
            mask = pad([torch.ones(len(x), dtype=torch.long) for x in rest], 0, padding_side="right")
            if prefix is not None:
                mask = torch.cat([cached.mask, mask], dim=1)
            last = torch.tensor([len(x) - 1 for x in rest])
            positions = last.unique()  # sorted; only these positions go through the LM head
            if keep_logits:
                kwargs["logits_to_keep"] = positions.to(device)
            logits = self.model(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                position_ids=(torch.tensor(done)[:, None] + torch.arange(ids.shape[1])).to(device),
                **kwargs,
            ).logits
            column = torch.searchsorted(positions, last) if logits.shape[1] == len(positions) else last
            yield rows, torch.softmax(logits[torch.arange(len(rows)), column.to(logits.device)].float(), dim=-1)

    def _encode(self, texts: Sequence[str], add_special_tokens: bool, forced_ids: Sequence[int]) -> list[list[int]]:
        """Each text's token ids followed by `forced_ids`."""
        encoded = self.tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]
        return [list(ids) + [int(i) for i in forced_ids] for ids in encoded]

    def _prefix_of(self, inputs: Sequence[Sequence[int]], shared_prefix: bool | None) -> SharedPrefix | None:
        """The inputs' common prefix with its KV cache, if sharing is on and they have one. The last prefix built is
        kept and reused while it still starts every input (the policy prompt, from call to call and from the score
        pass to the rows it decodes): the judge's weights do not change."""
        use = self.shared_prefix if shared_prefix is None else shared_prefix
        length = common_prefix_length(inputs) if use else 0
        if not length:
            return None
        ids = list(inputs[0][:length])
        kept = self._kept_prefix
        if kept is None or ids[: len(kept)] != kept.ids:
            kept = self._kept_prefix = SharedPrefix.build(self.model, ids)
        return kept

    @torch.no_grad()
    def classify(self, texts: Sequence[str], text_pairs: Sequence[str] | None = None) -> torch.Tensor:
        """Class probabilities (`[len(texts), num_labels]`, float32, CPU) of a sequence-classification model."""
        probs = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            pairs = list(text_pairs[start : start + self.batch_size]) if text_pairs is not None else None
            encoded = self.tokenizer(batch, pairs, padding=True, truncation=True, return_tensors="pt")
            encoded = {key: value.to(self._device) for key, value in encoded.items()}
            logits = self.model(**encoded).logits.float()
            probs.append(torch.sigmoid(logits) if logits.shape[-1] == 1 else torch.softmax(logits, dim=-1))
        return torch.cat(probs).cpu()

    def first_visible_step(self, result: GenerationResult) -> int | None:
        """Index of the first generated token whose text is not whitespace (LG3 opens with blank lines), or `None`."""
        for step, token_id in enumerate(result.token_ids):
            if self.tokenizer.decode([token_id], skip_special_tokens=True).strip():
                return step
        return None
