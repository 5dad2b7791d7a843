"""Prefix caching for the one generator and the judges' forward passes: token prefixes that several inputs of a call
share are run once and their KV cache reused.

Two levels:

- [`SharedPrefix`]: the prefix every input of a call starts with (a judge's policy prompt), run once with batch size 1
  and copied into each batch;
- prefix groups ([`prefix_groups`]): inputs that share a longer prefix among themselves (ShieldGemma's principles of one
  (prompt, response) pair; SEAS's m answers to one adversarial prompt; HarmBench's generations of one behavior). Each
  group's extra shared tokens are run once per batch that holds members of it ([`SharedPrefix.for_batch`]), and
  its members compute only the rest.

A batch's rows are laid out `[call prefix | group prefix, left-padded | rest of the input]`; padding is masked and
positions count real tokens only (the attention mask's cumulative sum, as transformers' `generate` computes them), so
each row sees exactly its own tokens at their own positions: the same outputs as without caching, up to float rounding.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import Cache
from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer
from trl.trainer.utils import pad


# A group gets its own cached pass when its members share at least this many tokens after the call's prefix
MIN_GROUP_PREFIX = 16
# Groups are formed among this many neighbours at most (in sorted order): bounds the partition's cost
MAX_GROUP_SIZE = 64
# Cache layers whose `update` builds new tensors (torch.cat) instead of writing into the ones they hold
_APPENDING_LAYERS = (DynamicLayer, DynamicSlidingWindowLayer)


def accepts_argument(model: Any, name: str) -> bool:
    """Whether `model.forward` names the argument `name` (e.g. `logits_to_keep`); for a PEFT model, its base model's
    forward (PEFT passes the keyword arguments it does not name through to it)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return name in inspect.signature(base.forward).parameters


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Position ids that count real tokens only, as transformers' `generate` computes them from an attention mask
    (padding, which is masked, gets 1): padding anywhere in a row leaves its tokens at their unpadded positions."""
    return (mask.cumsum(-1) - 1).masked_fill(mask == 0, 1)


@torch.no_grad()
def forward_with_cache(model: Any, input_ids: torch.Tensor, **kwargs: Any) -> tuple[Any, Cache]:
    """`model(input_ids, use_cache=True, **kwargs)`, with the LM head at the last position only when the model takes
    `logits_to_keep`; the output and the KV cache it returns."""
    if accepts_argument(model, "logits_to_keep"):
        kwargs.setdefault("logits_to_keep", 1)
    out = model(input_ids=input_ids, use_cache=True, **kwargs)
    return out, getattr(out, "cache", None) or out.past_key_values


def common_prefix_length(inputs: Sequence[Sequence[int]]) -> int:
    """Length of the longest token prefix all `inputs` share, capped so that every input keeps at least one token of
    its own (the position whose next-token logits are read); 0 for fewer than two inputs."""
    if len(inputs) < 2:
        return 0
    first, limit = inputs[0], min(len(x) for x in inputs) - 1
    length = 0
    while length < limit and all(x[length] == first[length] for x in inputs):
        length += 1
    return length


def attention_window(model: Any) -> int | None:
    """The sliding attention window of `model`'s layers (Mistral, Gemma 2, ...), or `None` when every layer sees the
    whole sequence."""
    config = model.config.get_text_config()
    window = getattr(config, "sliding_window", None)
    layer_types = getattr(config, "layer_types", None)
    if not window or (layer_types is not None and "sliding_attention" not in layer_types):
        return None
    return int(window)


def padding_limit(model: Any) -> int | None:
    """The longest row, padding included, that padding inside cannot change: local attention (a sliding window, or
    Llama 4's attention chunks) counts padded positions, so a row must fit in one window or chunk; `None` when every
    layer sees the whole sequence."""
    config = model.config.get_text_config()
    layer_types = getattr(config, "layer_types", None)
    chunk = getattr(config, "attention_chunk_size", None)
    if layer_types is not None and "chunked_attention" not in layer_types:
        chunk = None
    limits = [int(x) for x in (attention_window(model), chunk) if x]
    return min(limits) if limits else None


def fresh_copy(cache: Cache) -> Cache:
    """A copy of `cache` that can be extended or have rows selected without touching `cache`. Dynamic layers append
    by concatenation and select rows by indexing, never in place, so their copy shares the tensors (no copy at batch
    size 1); other layers are copied whole."""
    layers = getattr(cache, "layers", None)
    if layers is not None and all(type(layer) in _APPENDING_LAYERS for layer in layers):
        copied = copy.copy(cache)
        copied.layers = [copy.copy(layer) for layer in layers]
        return copied
    return copy.deepcopy(cache)


def prefix_groups(
    inputs: Sequence[Sequence[int]],
    start: int,
    min_length: int = MIN_GROUP_PREFIX,
    max_size: int = MAX_GROUP_SIZE,
) -> list[tuple[list[int], int]]:
    """
    Partitions the inputs into groups that share a prefix beyond their first `start` tokens.

    The inputs are sorted by their tokens after `start` (so inputs sharing a prefix are neighbours) and cut into runs
    of neighbours that maximise the tokens saved, `(members - 1) * shared` summed over groups, where `shared` is the
    run's common length after `start` (capped so that each member keeps a token of its own) and counts only when it
    is at least `min_length`. Answers to one prompt thus form one group, unless merging them with the answers to
    prompts that open alike (a shorter common prefix, more members) saves more tokens. Counted once per group: a group
    spread over several batches runs its prefix once per batch.

    Returns:
        `list[tuple[list[int], int]]`: `(member indices, shared tokens after start)` per group, covering every input
        once; a group of one shares 0 tokens.
    """
    order = sorted(range(len(inputs)), key=lambda i: list(inputs[i][start:]))
    # link[k]: tokens that sorted inputs k-1 and k share after `start`, each keeping one of its own
    link = [0] * len(order)
    for k in range(1, len(order)):
        a, b = inputs[order[k - 1]], inputs[order[k]]
        limit = min(len(a), len(b)) - 1
        n = start
        while n < limit and a[n] == b[n]:
            n += 1
        link[k] = n - start
    # best[k]: most tokens saved over the first k sorted inputs; cut[k]: where the last group of that best starts
    best, cut = [0] * (len(order) + 1), [0] * (len(order) + 1)
    for k in range(1, len(order) + 1):
        best[k], cut[k] = best[k - 1], k - 1
        shared = None
        for j in range(k - 2, max(k - max_size, 0) - 1, -1):  # the group is sorted inputs j..k-1
            shared = link[j + 1] if shared is None else min(shared, link[j + 1])
            if shared < min_length:
                break
            if best[j] + (k - 1 - j) * shared > best[k]:
                best[k], cut[k] = best[j] + (k - 1 - j) * shared, j
    groups: list[tuple[list[int], int]] = []
    k = len(order)
    while k > 0:
        j = cut[k]
        members = order[j:k]
        groups.append((members, min(link[j + 1 : k]) if len(members) > 1 else 0))
        k = j
    return groups[::-1]


@dataclass
class PrefixBatch:
    """
    The cached part of one batch (see [`SharedPrefix.for_batch`]).

    Attributes:
        cache (`Cache`): the KV cache of the rows' cached tokens.
        ids (`torch.Tensor`): `[rows, width]`, the cached tokens: the call's prefix, then each row's group prefix
            left-padded to the batch's longest.
        mask (`torch.Tensor`): `[rows, width]`, 1 on real tokens, 0 on padding.
        lengths (`list[int]`): per row, how many of its own tokens are cached (real positions of its next token).
        group_pass (`tuple`, *optional*): the group prefixes run for it, with their cache, ids and mask; the next
            batch reuses it when it holds no other group (at batch size 1 a group's members follow one another).
    """

    cache: Cache
    ids: torch.Tensor
    mask: torch.Tensor
    lengths: list[int]
    group_pass: tuple | None = None


@dataclass
class SharedPrefix:
    """
    Token ids that every input of a call starts with, and their KV cache, computed once with batch size 1.

    [`cache_for`] hands each batch its own copy, repeated to the batch size, so the shared cache is never written to.
    A batch then runs only its inputs' remaining tokens, at positions `len(ids)` onwards, with an attention mask that
    covers the prefix. [`for_batch`] also runs, once per batch, the longer prefix each group of its rows shares (see
    [`prefix_groups`]). It works with any model whose cache supports `batch_repeat_interleave` and
    `batch_select_indices` (transformers' `DynamicCache`, full or sliding-window layers), on any device and dtype,
    quantized or not.

    Attributes:
        ids (`list[int]`): the prefix's token ids.
        cache (`Cache`): the model's KV cache after `ids`.
    """

    ids: list[int]
    cache: Cache

    @classmethod
    @torch.no_grad()
    def build(cls, model: Any, ids: Sequence[int]) -> SharedPrefix:
        """Runs `model` once over `ids` and keeps its cache."""
        device = next(model.parameters()).device
        _, cache = forward_with_cache(model, torch.tensor([list(ids)], dtype=torch.long, device=device))
        return cls(list(ids), cache)

    def __len__(self) -> int:
        return len(self.ids)

    def cache_for(self, batch_size: int) -> Cache:
        """A fresh copy of the prefix cache with `batch_size` rows (see [`fresh_copy`])."""
        cache = fresh_copy(self.cache)
        if batch_size > 1:
            cache.batch_repeat_interleave(batch_size)
        return cache

    @torch.no_grad()
    def for_batch(
        self, model: Any, group_ids: Sequence[Sequence[int]], pad_id: int, previous: PrefixBatch | None = None
    ) -> PrefixBatch:
        """
        The cache of one batch whose row `r` has the tokens `group_ids[r]` cached after the call's prefix (its group's
        shared tokens; empty for a row in no group). Each distinct group prefix is run once, in one forward pass over
        the batch's groups, left-padded, unless the `previous` batch's pass ran them all; the rows then take their
        group's cache rows.
        """
        rows, n = len(group_ids), len(self.ids)
        prefix_ids = torch.tensor([self.ids] * rows, dtype=torch.long)
        if not any(group_ids):
            return PrefixBatch(self.cache_for(rows), prefix_ids, torch.ones_like(prefix_ids), [n] * rows)
        wanted = list(dict.fromkeys(tuple(ids) for ids in group_ids))  # () for rows in no group: all padding
        group_pass = previous.group_pass if previous is not None else None
        if group_pass is None or not set(wanted) <= set(group_pass[0]):
            group_pass = self._run_groups(model, wanted, pad_id)
        distinct, kept, ids, mask = group_pass
        index = torch.tensor([distinct.index(tuple(x)) for x in group_ids], dtype=torch.long)
        cache = fresh_copy(kept)
        cache.batch_select_indices(index.to(next(model.parameters()).device))
        return PrefixBatch(
            cache,
            torch.cat([prefix_ids, ids[index]], dim=1),
            torch.cat([torch.ones_like(prefix_ids), mask[index]], dim=1),
            [n + len(x) for x in group_ids],
            group_pass,
        )

    def _run_groups(
        self, model: Any, distinct: list[tuple[int, ...]], pad_id: int
    ) -> tuple[list[tuple[int, ...]], Cache, torch.Tensor, torch.Tensor]:
        """One forward pass over the group prefixes `distinct` after the call's prefix, left-padded; their cache, ids
        and mask."""
        n = len(self.ids)
        ids = pad([torch.tensor(x, dtype=torch.long) for x in distinct], pad_id, padding_side="left")
        mask = pad([torch.ones(len(x), dtype=torch.long) for x in distinct], 0, padding_side="left")
        full_mask = torch.cat([torch.ones(len(distinct), n, dtype=torch.long), mask], dim=1)
        # the prefix before the padding keeps padded rows' queries finite, so the cached padding never holds NaN
        device = next(model.parameters()).device
        _, cache = forward_with_cache(
            model,
            ids.to(device),
            attention_mask=full_mask.to(device),
            position_ids=positions_from_mask(full_mask)[:, n:].to(device),
            cache=self.cache_for(len(distinct)),
        )
        return distinct, cache, ids, mask

    def check(self, inputs: Sequence[Sequence[int]]) -> None:
        """Raises `ValueError` unless every input starts with the prefix and has at least one token after it."""
        n = len(self.ids)
        for i, x in enumerate(inputs):
            if len(x) <= n or list(x[:n]) != self.ids:
                raise ValueError(f"input {i} does not start with the shared prefix or has no token after it")


def batch_plan(
    inputs: Sequence[Sequence[int]],
    prefix: SharedPrefix | None,
    batch_size: int,
    *,
    longest_first: bool,
    groups: bool = True,
    window: int | None = None,
    extra_tokens: int = 0,
) -> tuple[list[int], list[int]]:
    """
    The order in which to batch `inputs` and, per input, how many tokens after the call's prefix its group shares (0
    without groups). Inputs are sorted by the tokens left to compute after the cached ones (`longest_first` or
    shortest first), and members of a group stay next to each other so that they share batches.

    Groups are used only when they compute fewer tokens, padding included ([`padded_tokens`]), than the same inputs
    batched by length without them: a group's members whose rests differ much (ShieldGemma's principles of a short
    conversation) would pad to the longest. They are formed only with a `prefix` (see [`SharedPrefix.for_batch`]),
    and not when a sliding attention `window` could be shorter than a padded row plus `extra_tokens` (new tokens):
    padding inside the window would count against it.
    """
    start = len(prefix) if prefix is not None else 0
    longest = max(map(len, inputs), default=0)
    alone = [([i], 0) for i in range(len(inputs))]
    plan = _order(inputs, alone, longest_first)
    if prefix is None or not groups or (window is not None and 2 * longest - start + extra_tokens > window):
        return plan
    grouped = _order(inputs, prefix_groups(inputs, start), longest_first)
    if padded_tokens(inputs, *grouped, start, batch_size) < padded_tokens(inputs, *plan, start, batch_size):
        return grouped
    return plan


def _order(
    inputs: Sequence[Sequence[int]], found: list[tuple[list[int], int]], longest_first: bool
) -> tuple[list[int], list[int]]:
    """Groups sorted by the tokens their rows still compute (a group's answers are not padded to a long ungrouped
    input), members by length; the order and each input's shared length."""
    sign = -1 if longest_first else 1
    found = sorted(found, key=lambda group: sign * (max(len(inputs[i]) for i in group[0]) - group[1]))
    order, shared = [], [0] * len(inputs)
    for members, length in found:
        order += sorted(members, key=lambda i: sign * len(inputs[i]))
        for i in members:
            shared[i] = length
    return order, shared


def padded_tokens(
    inputs: Sequence[Sequence[int]], order: Sequence[int], shared: Sequence[int], start: int, batch_size: int
) -> int:
    """
    Tokens the forward passes of a batch plan compute after the call's prefix, padding included: per batch, its
    distinct group prefixes (padded to the longest, plus a padding row for rows in no group; not again when the
    previous batch ran them all) and its rows' rests (padded to the longest).
    """
    total, previous = 0, set()
    for k in range(0, len(order), batch_size):
        rows = order[k : k + batch_size]
        wanted = {tuple(inputs[i][start : start + shared[i]]) for i in rows}
        if not any(shared[i] for i in rows):
            previous = set()
        elif not wanted <= previous:
            total += len(wanted) * max(shared[i] for i in rows)
            previous = wanted
        total += len(rows) * max(len(inputs[i]) - start - shared[i] for i in rows)
    return total


__all__ = [
    "MIN_GROUP_PREFIX",
    "PrefixBatch",
    "SharedPrefix",
    "accepts_argument",
    "attention_window",
    "batch_plan",
    "common_prefix_length",
    "forward_with_cache",
    "fresh_copy",
    "padded_tokens",
    "padding_limit",
    "positions_from_mask",
    "prefix_groups",
]
