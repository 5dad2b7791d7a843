"""THE batched generator, used by the evaluation loop, the model judges and SEAS.

[`generate`] takes prompts as token ids and returns, for each prompt, its `num_return_sequences` continuations in
input order, with:

- length-sorted batches, left padding, `torch.no_grad()`, the model in eval mode and its mode restored afterwards;
- continuations cut before the first stop token (the model's and the tokenizer's EOS ids: Llama-3-Instruct ends a
  turn with `<|eot_id|>` but its base EOS is `<|end_of_text|>`) or at the first of `stop_strings`, with the reason;
- optionally, the probability mass of a token set at the first steps, read from the raw logits (the judges' scores);
- optionally, `row_done`: a per-row early stop decided from the row's continuation so far (a judge's answer settled by
  its first token), so a batch stops decoding as soon as each of its rows is either done or stopped; under plain
  greedy decoding the first step is one forward pass of the model, and only the rows it leaves open go through
  transformers' `generate`, from that pass's KV cache;
- optionally, a [`~hf_safety.prefix_cache.SharedPrefix`]: token ids every input starts with (a judge's policy prompt),
  encoded once and its KV cache copied into each batch, and the longer prefixes groups of inputs share run once per
  batch, so only the rest of each input is computed;
- the *effective* generation settings recorded: transformers 5 fills every field the caller left unset from the
  checkpoint's `generation_config.json` (a Llama-3-Instruct checkpoint turns sampling on at T=0.6), so the config is
  resolved here first, the resolved config is what runs, and it is what [`GenerationOutput.settings`] reports, with
  the fields that came from the checkpoint named.

[`encode_prompt`] turns chat messages (or text) and an optional forced opening of the assistant turn into token ids,
through the data contract's [`~hf_safety.data.tokenize_row`] (the same code DeRTa trains on). vLLM is an optional
backend ([`generate_vllm`], `pip install 'hf-safety[vllm]'`) with the same inputs and outputs.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import (
    Cache,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedTokenizerBase,
    StoppingCriteria,
    StoppingCriteriaList,
)
from trl.trainer.utils import pad

from .data import PreferenceRow, tokenize_row
from .prefix_cache import SharedPrefix, batch_plan, forward_with_cache, padding_limit, positions_from_mask


DEFAULT_MAX_NEW_TOKENS = 256
# Fields a report records when they are set (the rest are transformers' defaults or irrelevant to decoding)
RECORDED_FIELDS = (
    "do_sample",
    "temperature",
    "top_p",
    "top_k",
    "min_p",
    "typical_p",
    "repetition_penalty",
    "no_repeat_ngram_size",
    "num_beams",
    "length_penalty",
    "max_new_tokens",
    "min_new_tokens",
    "num_return_sequences",
    "eos_token_id",
    "stop_strings",
)


@dataclass
class EncodedPrompt:
    """Token ids to feed the model: `input_ids` ends with `forced_ids`, the forced opening of the assistant turn."""

    input_ids: list[int]
    forced_ids: list[int] = field(default_factory=list)


@dataclass
class Sample:
    """
    One generated continuation.

    Attributes:
        prompt_index (`int`): index of its prompt in the inputs.
        sample_index (`int`): which of the prompt's `num_return_sequences` samples it is.
        token_ids (`list[int]`): the generated ids, cut before the first stop token (or at the stop string).
        text (`str`): `token_ids` decoded without special tokens (cut at the stop string, which is removed).
        finish_reason (`str`): `"stop"` (a stop token), `"stop_string"`, `"done"` (`row_done` ended it) or `"length"`
            (`max_new_tokens` reached).
        token_mass (`list[float]`): per step (the first `token_mass_steps`), the probability of the requested token
            set, when one was requested.
    """

    prompt_index: int
    sample_index: int
    token_ids: list[int]
    text: str
    finish_reason: str
    token_mass: list[float] = field(default_factory=list)


@dataclass
class GenerationOutput:
    """
    What [`generate`] returns.

    Attributes:
        samples (`list[list[Sample]]`): `samples[i]` are the continuations of prompt `i`, in sample order.
        settings (`dict`): the generation settings that really ran (see [`generation_settings`]).
    """

    samples: list[list[Sample]]
    settings: dict[str, Any]

    def texts(self) -> list[list[str]]:
        """`texts()[i][j]`: the text of sample `j` of prompt `i`."""
        return [[s.text for s in samples] for samples in self.samples]

    def first(self) -> list[Sample]:
        """The first sample of each prompt (the only one with `num_return_sequences=1`)."""
        return [samples[0] for samples in self.samples]


def default_generation_config(max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS) -> GenerationConfig:
    """Greedy decoding of at most `max_new_tokens` tokens."""
    return GenerationConfig(do_sample=False, max_new_tokens=max_new_tokens)


def _as_list(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def stop_token_ids(
    model: Any, tokenizer: PreTrainedTokenizerBase, generation_config: GenerationConfig | None = None
) -> list[int]:
    """End-of-generation ids: the config's `eos_token_id` if set, else the model's generation config's and the
    tokenizer's."""
    if generation_config is not None and generation_config.eos_token_id is not None:
        return _as_list(generation_config.eos_token_id)
    ids = _as_list(getattr(getattr(model, "generation_config", None), "eos_token_id", None))
    ids += [i for i in _as_list(tokenizer.eos_token_id) if i not in ids]
    return ids


def resolve_generation_config(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    generation_config: GenerationConfig | None = None,
    *,
    num_return_sequences: int | None = None,
    stop_strings: Sequence[str] | None = None,
) -> tuple[GenerationConfig, list[str]]:
    """
    The generation config that will really run, and the names of the fields that came from the model's own
    generation config (its `generation_config.json`).

    Precedence is transformers': fields the caller set > the model's generation config > transformers' defaults.
    Stop ids (see [`stop_token_ids`]) and the pad id are filled in; `max_new_tokens` defaults to
    `DEFAULT_MAX_NEW_TOKENS` when neither the caller nor the checkpoint set a length.
    """
    config = copy.deepcopy(generation_config) if generation_config is not None else default_generation_config()
    if num_return_sequences is not None:
        config.num_return_sequences = num_return_sequences
    if stop_strings:
        config.stop_strings = list(stop_strings)
    stops = stop_token_ids(model, tokenizer, config)
    config.eos_token_id = stops or None
    if config.pad_token_id is None:
        if tokenizer.pad_token_id is None and not stops:
            raise ValueError("the tokenizer has neither a pad token nor an EOS token to pad batches with")
        config.pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else stops[0]
    if config.max_new_tokens is None and config.max_length is None:
        config.max_new_tokens = DEFAULT_MAX_NEW_TOKENS
    before = config.to_dict()
    model_config = getattr(model, "generation_config", None)
    if model_config is not None:
        config.update(**model_config.to_dict(), defaults_only=True)
        config.update(**model_config._get_default_generation_params(), defaults_only=True)
        defaults = model_config._get_default_generation_params()
        after = config.to_dict()
        from_model = sorted(
            key
            for key in RECORDED_FIELDS
            if before.get(key) is None and after.get(key) is not None and after.get(key) != defaults.get(key)
        )
    else:
        from_model = []
    if config.max_new_tokens is not None:
        config.max_length = None  # max_new_tokens wins; a filled-in default max_length would only raise a warning
    if config.min_new_tokens is not None and not config.min_length:
        config.min_length = None  # likewise for the filled-in default min_length=0 next to min_new_tokens
    return config, from_model


def generation_settings(config: GenerationConfig, from_model: Sequence[str] = (), **extra: Any) -> dict[str, Any]:
    """The settings a report records: the decoding fields of the resolved `config` that are set (sampling fields only
    when sampling), which of them came from the checkpoint (`from_checkpoint`), and `extra` (backend, batch size...)."""
    settings: dict[str, Any] = {}
    for key in RECORDED_FIELDS:
        value = getattr(config, key, None)
        if value is None or (key in ("temperature", "top_p", "top_k", "min_p", "typical_p") and not config.do_sample):
            continue
        settings[key] = list(value) if isinstance(value, tuple) else value
    from_checkpoint = [key for key in from_model if key in settings]
    if from_checkpoint:
        settings["from_checkpoint"] = from_checkpoint
    settings.update({k: v for k, v in extra.items() if v is not None})
    return settings


class _TokenMassRecorder(LogitsProcessor):
    """Records softmax(scores)[:, token_ids].sum() for the first `steps` steps; leaves the scores unchanged."""

    def __init__(self, token_ids: Sequence[int], steps: int):
        self.token_ids = torch.tensor(sorted(set(token_ids)), dtype=torch.long)
        self.steps = steps
        self.masses: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if len(self.masses) < self.steps:
            self.masses.append(_token_mass(scores, self.token_ids))
        return scores


def _token_mass(scores: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """Per row, the softmax probability (float32, whole vocabulary) of the tokens `token_ids`, summed; on the CPU."""
    probs = torch.softmax(scores.float(), dim=-1)
    return probs[:, token_ids.to(probs.device)].sum(-1).cpu()


class _RowDone(StoppingCriteria):
    """Ends each row for which `row_done(continuation so far)` is true (rows that met a stop token are not asked
    again), and remembers how long its continuation was then."""

    def __init__(self, row_done: Callable[[list[int]], bool], start: int, stops: Sequence[int]):
        self.row_done = row_done
        self.start = start
        self.stops = set(stops)
        self.lengths: dict[int, int] = {}

    def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
        for row, ids in enumerate(input_ids[:, self.start :].tolist()):
            if row not in self.lengths and not self.stops.intersection(ids) and self.row_done(ids):
                self.lengths[row] = len(ids)
        done = torch.zeros(input_ids.shape[0], dtype=torch.bool)
        done[list(self.lengths)] = True
        return done.to(input_ids.device)


# Generation config fields whose defaults leave greedy decoding's first token the raw logits' argmax
_NO_PROCESSOR = {
    "repetition_penalty": (None, 1.0),
    "encoder_repetition_penalty": (None, 1.0),
    "guidance_scale": (None, 1.0),
    "num_beams": (None, 1),
}
_UNSET = (
    "do_sample",
    "no_repeat_ngram_size",
    "min_new_tokens",
    "min_length",
    "suppress_tokens",
    "begin_suppress_tokens",
    "bad_words_ids",
    "forced_bos_token_id",
    "forced_eos_token_id",
    "sequence_bias",
    "exponential_decay_length_penalty",
    "watermarking_config",
    "remove_invalid_values",
    "token_healing",
    "prompt_lookup_num_tokens",
)


def _plain_greedy(config: GenerationConfig) -> bool:
    """Whether `config` decodes greedily with no logits processor, so its first token is the logits' argmax."""
    return all(getattr(config, key, None) in allowed for key, allowed in _NO_PROCESSOR.items()) and not any(
        getattr(config, key, None) for key in _UNSET
    )


def _generate_rows(
    model: Any,
    ids: torch.Tensor,
    mask: torch.Tensor,
    extra: dict[str, Any],
    config: GenerationConfig,
    row_done: Callable[[list[int]], bool] | None,
    stops: list[int],
    token_mass_ids: Sequence[int] | None,
    token_mass_steps: int,
    tokenizer: PreTrainedTokenizerBase | None,
    seen: int = 0,
) -> list[tuple[list[int], int | None, list[float]]]:
    """One batch through transformers' `generate`: per output row, its generated ids (up to `max_new_tokens`), where
    `row_done` ended it (or `None`) and the token masses recorded. The last `seen` tokens of `ids` count as already
    generated (for `row_done` and in the ids returned)."""
    device = next(model.parameters()).device
    recorder = _TokenMassRecorder(token_mass_ids, token_mass_steps) if token_mass_ids and token_mass_steps else None
    start = ids.shape[1] - seen
    ended = _RowDone(row_done, start, stops) if row_done is not None else None
    with torch.no_grad():
        out = model.generate(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            generation_config=config,
            logits_processor=LogitsProcessorList([recorder]) if recorder else None,
            stopping_criteria=StoppingCriteriaList([ended]) if ended else None,
            tokenizer=tokenizer,
            **extra,
        )
    masses = torch.stack(recorder.masses, dim=1).tolist() if recorder and recorder.masses else None
    return [
        (generated, ended.lengths.get(r) if ended is not None else None, masses[r] if masses is not None else [])
        for r, generated in enumerate(out[:, start:].tolist())
    ]


@torch.no_grad()
def _settle_first_step(
    model: Any,
    ids: torch.Tensor,
    mask: torch.Tensor,
    cache: Cache | None,
    config: GenerationConfig,
    row_done: Callable[[list[int]], bool],
    stops: list[int],
    token_mass_ids: Sequence[int] | None,
    token_mass_steps: int,
) -> list[tuple[list[int], int | None, list[float]]]:
    """
    What [`_generate_rows`] returns under plain greedy decoding with `row_done`, without `generate` for the rows the
    first token settles: one forward pass over the batch (the uncached part of `ids`, positions from the mask as
    `generate` computes them) gives every row's first token and its token mass; rows it ends (a stop token, `row_done`,
    or a budget of one token) are done, and the others continue through `generate` from that pass's cache, seeing
    their first token as generated.
    """
    device = next(model.parameters()).device
    start = cache.get_seq_length() if cache is not None else 0
    out, cache = forward_with_cache(
        model,
        ids[:, start:].to(device),
        attention_mask=mask.to(device),
        position_ids=positions_from_mask(mask)[:, start:].to(device),
        **({"cache": cache} if cache is not None else {}),
    )
    scores = out.logits[:, -1]
    first = scores.argmax(-1).tolist()
    first_mass = (
        _token_mass(scores, torch.tensor(sorted(set(token_mass_ids)), dtype=torch.long)).tolist()
        if token_mass_ids and token_mass_steps
        else None
    )
    rows: list[tuple[list[int], int | None, list[float]]] = []
    unsettled = []
    for r, token in enumerate(first):
        masses = [first_mass[r]] if first_mass is not None else []
        done = token not in stops and row_done([token])
        rows.append(([token], 1 if done else None, masses))
        if token not in stops and not done and config.max_new_tokens > 1:
            unsettled.append(r)
    if unsettled:
        cache.batch_select_indices(torch.tensor(unsettled, device=device))
        rest = copy.deepcopy(config)
        rest.max_new_tokens = config.max_new_tokens - 1
        index = torch.tensor(unsettled)
        more = _generate_rows(
            model,
            torch.cat([ids[index], torch.tensor([[first[r]] for r in unsettled])], dim=1),
            torch.cat([mask[index], torch.ones(len(unsettled), 1, dtype=mask.dtype)], dim=1),
            {"cache": cache},
            rest,
            row_done,
            stops,
            token_mass_ids,
            token_mass_steps - 1,
            None,
            seen=1,  # `row_done` sees each row's first token as part of its continuation
        )
        for r, (generated, done_at, masses) in zip(unsettled, more):
            rows[r] = (generated, done_at, rows[r][2] + masses)
    return rows


def _cut(
    ids: list[int],
    stops: list[int],
    stop_strings: Sequence[str],
    tokenizer: PreTrainedTokenizerBase,
    done_at: int | None = None,
) -> tuple[list[int], str, str]:
    """The continuation cut before its first stop token (or after its first `done_at` tokens, when `row_done` ended
    it), its text cut at the first stop string, and the reason."""
    if done_at is not None:
        ids, reason = ids[:done_at], "done"
    else:
        end = next((j for j, token in enumerate(ids) if token in stops), None)
        reason = "length" if end is None else "stop"
        ids = ids if end is None else ids[:end]
    text = tokenizer.decode(ids, skip_special_tokens=True)
    hits = [(text.find(s), s) for s in stop_strings if s and s in text]
    if hits:
        position = min(hits)[0]
        text, reason = text[:position], "stop_string"
        # keep the ids whose text lies before the stop string
        while ids and len(tokenizer.decode(ids, skip_special_tokens=True)) > position:
            ids = ids[:-1]
    return ids, text, reason


def generate(
    model: Any,
    tokenizer: PreTrainedTokenizerBase,
    inputs: Sequence[Sequence[int]],
    generation_config: GenerationConfig | None = None,
    *,
    batch_size: int = 16,
    num_return_sequences: int | None = None,
    stop_strings: Sequence[str] | None = None,
    token_mass_ids: Sequence[int] | None = None,
    token_mass_steps: int = 8,
    shared_prefix: SharedPrefix | None = None,
    prefix_groups: bool = True,
    row_done: Callable[[list[int]], bool] | None = None,
    seed: int | None = None,
    progress: bool = False,
    desc: str = "generating",
) -> GenerationOutput:
    """
    Continuations of `inputs` (lists of token ids), batched with left padding; see the module docstring.

    Args:
        model: a causal LM (`PreTrainedModel`, PEFT-wrapped or not).
        tokenizer: its tokenizer (pad/EOS ids, decoding, stop strings).
        inputs: one list of token ids per prompt.
        generation_config: default: greedy, `DEFAULT_MAX_NEW_TOKENS` new tokens. Unset fields are filled from the
            model's generation config, as transformers does, and recorded as such.
        batch_size: prompts per `generate` call (each brings `num_return_sequences` rows).
        num_return_sequences: samples per prompt (overrides the config's); needs sampling (or beams) to differ.
        stop_strings: generation stops at the first of these; the text is cut before it.
        token_mass_ids: a token set whose probability is recorded at each of the first `token_mass_steps` steps.
        shared_prefix: a [`SharedPrefix`] that every input starts with: its cached keys and values are reused and
            only the rest of each input is computed (inputs are left-padded after the prefix). Needs
            `num_return_sequences=1`.
        prefix_groups: with a `shared_prefix`, inputs that share a longer prefix among themselves are batched together
            and that prefix is run once per batch (see [`~hf_safety.prefix_cache.prefix_groups`]).
        row_done: called after each step with a row's continuation so far (token ids) until the row ends; returning
            `True` ends it there, with `finish_reason="done"` (e.g. a judge whose answer is settled by its first
            token: its batch stops as soon as every row is settled or stopped, and the unsettled rows decode on from
            the same KV cache). With plain greedy decoding (no sampling, beams, stop strings or logits processors)
            the first step is a plain forward pass and only the rows still open are handed to `generate`.
        seed: seeds torch before generating (reproducible sampling); recorded.
        progress: a tqdm bar over batches, labelled `desc`.

    Returns:
        A [`GenerationOutput`]: `samples[i][j]` is sample `j` of prompt `i`.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    config, from_model = resolve_generation_config(
        model, tokenizer, generation_config, num_return_sequences=num_return_sequences, stop_strings=stop_strings
    )
    n = config.num_return_sequences or 1
    if n < 1:
        raise ValueError(f"num_return_sequences must be >= 1, got {n}")
    window = padding_limit(model)
    if shared_prefix is not None:
        if n != 1:
            raise ValueError("a shared prefix needs num_return_sequences=1")
        shared_prefix.check(inputs)
        longest = max(map(len, inputs), default=0) + (config.max_new_tokens or 0)
        if window is not None and longest > window:
            # the left padding between the prefix and the rest would count inside the window or chunk: no sharing
            shared_prefix = None
    stops = _as_list(config.eos_token_id)
    strings = list(config.stop_strings or [])
    if isinstance(config.stop_strings, str):
        strings = [config.stop_strings]
    settings = generation_settings(config, from_model, batch_size=batch_size, seed=seed)
    if seed is not None:
        torch.manual_seed(seed)
    order, group_lengths = batch_plan(
        inputs,
        shared_prefix,
        batch_size,
        longest_first=True,
        groups=prefix_groups,
        window=window,
        extra_tokens=config.max_new_tokens or 0,
    )
    samples: list[list[Sample]] = [[] for _ in inputs]
    # a judge's early stop under plain greedy decoding: the first step is one forward pass, and only the rows it does
    # not settle go through transformers' generate, from that pass's cache
    settle_first = row_done is not None and n == 1 and not strings and config.max_new_tokens and _plain_greedy(config)
    was_training = model.training
    model.eval()
    cached = None  # the last batch's cached part (its group pass serves the next batch when it can)
    try:
        for start in tqdm(range(0, len(order), batch_size), desc=desc, disable=not progress, leave=False):
            rows = order[start : start + batch_size]
            extra: dict[str, Any] = {}
            if shared_prefix is not None:
                # [prefix | group prefix | rest], each left-padded; positions follow the mask
                skip = len(shared_prefix)
                groups = [list(inputs[i])[skip : skip + group_lengths[i]] for i in rows]
                cached = shared_prefix.for_batch(model, groups, config.pad_token_id, previous=cached)
                extra["cache"] = cached.cache
            batch = [list(inputs[i])[cached.lengths[r] if cached else 0 :] for r, i in enumerate(rows)]
            ids = pad([torch.tensor(x, dtype=torch.long) for x in batch], config.pad_token_id, padding_side="left")
            mask = pad([torch.ones(len(x), dtype=torch.long) for x in batch], 0, padding_side="left")
            if cached is not None:
                ids, mask = torch.cat([cached.ids, ids], dim=1), torch.cat([cached.mask, mask], dim=1)
            if settle_first:
                rows_out = _settle_first_step(
                    model, ids, mask, extra.get("cache"), config, row_done, stops, token_mass_ids, token_mass_steps
                )
            else:
                rows_out = _generate_rows(
                    model, ids, mask, extra, config, row_done, stops, token_mass_ids, token_mass_steps,
                    tokenizer if strings else None,
                )  # fmt: skip
            # generate returns the n samples of each input next to each other: row r is input r // n, sample r % n
            for r, (generated, done_at, masses) in enumerate(rows_out):
                prompt_index = rows[r // n]
                token_ids, text, reason = _cut(generated, stops, strings, tokenizer, done_at)
                mass = masses[: max(len(token_ids), 1)]
                samples[prompt_index].append(Sample(prompt_index, r % n, token_ids, text, reason, mass))
    finally:
        model.train(was_training)
    return GenerationOutput(samples, settings)


def generate_vllm(
    llm: Any,
    tokenizer: PreTrainedTokenizerBase,
    inputs: Sequence[Sequence[int]],
    generation_config: GenerationConfig | None = None,
    *,
    num_return_sequences: int | None = None,
    stop_strings: Sequence[str] | None = None,
    seed: int | None = None,
    progress: bool = False,
    trust_remote_code: bool = False,
) -> GenerationOutput:
    """
    The same as [`generate`] with vLLM (`pip install 'hf-safety[vllm]'`): `llm` is a `vllm.LLM` or a model path/id
    to load into one. Greedy unless `generation_config.do_sample`; temperature, top-p, top-k, repetition penalty,
    `max_new_tokens`, `num_return_sequences` and stop strings carry over.
    """
    try:
        from vllm import LLM, SamplingParams
    except ImportError as err:
        raise ImportError("the vLLM backend needs vllm: pip install 'hf-safety[vllm]'") from err
    config, _ = resolve_generation_config(
        None, tokenizer, generation_config, num_return_sequences=num_return_sequences, stop_strings=stop_strings
    )
    if not isinstance(llm, LLM):
        llm = LLM(model=str(llm), trust_remote_code=trust_remote_code)
    stops = _as_list(config.eos_token_id)
    n = config.num_return_sequences or 1
    sampling: dict[str, Any] = {
        "n": n,
        "max_tokens": config.max_new_tokens,
        "stop_token_ids": stops,
        "stop": list(config.stop_strings or []) or None,
        "repetition_penalty": config.repetition_penalty or 1.0,
        "seed": seed,
    }
    if config.do_sample:
        sampling.update(temperature=config.temperature or 1.0, top_p=config.top_p or 1.0)
        if config.top_k and config.top_k > 0:
            sampling["top_k"] = config.top_k
    else:
        sampling.update(temperature=0.0)
    outputs = llm.generate(
        [{"prompt_token_ids": list(ids)} for ids in inputs], SamplingParams(**sampling), use_tqdm=progress
    )
    samples = []
    for i, out in enumerate(outputs):
        row = []
        for j, completion in enumerate(out.outputs):
            ids = [t for t in completion.token_ids if t not in stops]
            reason = {"stop": "stop", "length": "length"}.get(completion.finish_reason, completion.finish_reason)
            if reason == "stop" and completion.stop_reason is not None and isinstance(completion.stop_reason, str):
                reason = "stop_string"
            row.append(Sample(i, j, ids, completion.text, reason))
        samples.append(row)
    return GenerationOutput(samples, generation_settings(config, backend="vllm", seed=seed))


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase,
    messages: str | list[dict[str, str]],
    prefill: str | None = None,
    prefill_tokens: int | None = None,
    use_chat_template: bool | None = None,
) -> EncodedPrompt:
    """
    Token ids of a prompt: the chat template with the assistant header (or, without a chat template, the messages'
    text joined by blank lines), then the forced opening of the assistant turn: all of `prefill`, or its first
    `prefill_tokens` tokens as the tokenizer writes them inside the assistant turn (cut on token ids, never on a
    re-tokenized string).
    """
    if isinstance(messages, str):
        messages = [{"role": "user", "content": messages}]
    if use_chat_template is None:
        use_chat_template = tokenizer.chat_template is not None
    if use_chat_template:
        text_or_messages: Any = messages
        answer: Any = [{"role": "assistant", "content": prefill or ""}]
    else:
        text_or_messages = "\n\n".join(m["content"] for m in messages)
        answer = prefill or ""
    if not prefill:
        if use_chat_template:
            ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=True)
            ids = ids["input_ids"]
        else:
            ids = tokenizer(text=text_or_messages)["input_ids"]
        return EncodedPrompt(list(ids), [])
    pieces = tokenize_row(PreferenceRow(prompt=text_or_messages, chosen=answer, rejected=answer), tokenizer)
    forced = pieces["rejected_ids"]
    if prefill_tokens is not None:
        forced = forced[:prefill_tokens]
    return EncodedPrompt(pieces["prompt_ids"] + forced, forced)
