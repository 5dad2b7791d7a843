"""`DeRTaCollator`: builds DeRTa's two kinds of training sequences from tokenized preference rows, fresh per batch."""

from __future__ import annotations

import dataclasses
import zlib
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from transformers.data.data_collator import DataCollatorMixin
from trl.trainer.utils import pad


# Values of the `sequence_kind` tensor (FUSED: a harmful row's (a) and (b) as one sequence, `derta_form="fused"`)
BENIGN, HARMFUL_PREFIX, RTO, FUSED = 0, 1, 2, 3
PREFIX_SAMPLING = ("uniform", "word_boundary")
DERTA_FORMS = ("naive", "fused")


@dataclass
class _Record:
    """One training sequence of a batch, with what its mask, labels and metrics need."""

    input_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    branch_start: int  # queries from here on (a fused row's `x S`) see the keys before `visible` and the branch
    visible: int
    label_is_rto: list[bool]
    sequence_kind: int
    harmful_prefix_length: int

    @property
    def attention(self) -> list[int]:
        return [1] * len(self.input_ids)

    def unscored_first_label(self) -> _Record:
        """The record with its first label dropped: packed after another sequence, position 0 would be predicted
        from that sequence's last token (a causal LM never scores a sequence's first label anyway)."""
        return dataclasses.replace(self, labels=[-100] + self.labels[1:])


def _pack(records: list[_Record], capacity: int) -> list[list[_Record]]:
    """Best-fit decreasing: the records in as few rows of at most `capacity` tokens as it finds."""
    rows: list[list[_Record]] = []
    room: list[int] = []
    for record in sorted(records, key=lambda r: -len(r.input_ids)):
        size = len(record.input_ids)
        fits = [i for i, left in enumerate(room) if left >= size]
        if fits:
            best = min(fits, key=lambda i: room[i])
            rows[best].append(record)
            room[best] -= size
        else:
            rows.append([record])
            room.append(capacity - size)
    return rows


@dataclass
class DeRTaCollator(DataCollatorMixin):
    """
    Data collator for Decoupled Refusal Training ([DeRTa](https://huggingface.co/papers/2407.09121)).

    Each example is a tokenized preference row with `prompt_ids`, `chosen_ids` (safe answer + end of turn) and
    `rejected_ids` (harmful answer, no end of turn; empty or absent for a benign row), as made by
    [`~hf_safety.data.prepare_preference_dataset`]. Labels follow transformers' convention (the model shifts them);
    `P` prompt, `H = h1..hn` harmful answer, `S` safe answer with end of turn, `R` the refusal token:

    - (a) harmful-prefix MLE, `k` sampled in `0..n`: input `P h1..hk S`, labels on `S` only. Emitted for every
      harmful row; with `harmful_prefix=False`, `k = 0` (plain SFT on the safe answer).
    - (b) RTO, when `rto=True`: input `P h1..hn`, label `R` at every harmful position (or a random `rto_position_keep`
      fraction of them, at least one), so "after the prompt and any number of harmful tokens, the next token is R".
    - a benign row: input `P S`, labels on `S`; a row with `chosen_labels` (an SFT-format row: no prompt, `S` the
      whole sequence) takes those labels, as SFTTrainer would train it.

    The prefix lengths and kept RTO positions are drawn again each time a row is collated, from a generator keyed by
    `(seed, epoch, row_index, draw)`: a run is reproducible, each epoch sees new cuts, and a resumed run draws what
    the uninterrupted run would have drawn (the trainer calls [`set_epoch`] at each epoch, like
    `DistributedSampler.set_epoch`). With `deterministic=True` (evaluation) the draw depends on `(seed, row_index)`
    only.

    Usable on its own with any `Trainer` (keep the tokenized columns with `remove_unused_columns=False`); it returns
    `input_ids`, `attention_mask`, `labels`, and with `return_sequence_kind=True` also `sequence_kind` (0 benign,
    1 harmful prefix, 2 RTO, per sequence) and `harmful_prefix_length`, which [`DeRTaTrainer`] uses to log and weight
    the two losses.

    With `derta_form="fused"` ([`DeRTaTrainer`]'s default where the model can take it) a harmful row with both (a) and (b) becomes one sequence `P H x S`
    (`sequence_kind` 3), with the same draws: `H` carries (b)'s RTO labels, `x` is a copy of the token just before `S`
    in (a) (the last of `P h1..hk`; it takes no label) and `S` carries (a)'s labels. `x` and `S` see only
    `P h1..h(k-1)`, `x` and the earlier tokens of `S`, with (a)'s position ids, so every labelled position sees what it
    sees in (a) or (b): the loss and gradients are those of the naive form, while `P h1..hk` is computed once. (`x` is
    needed because the state after `P h1..hk` predicts both `R` and the first token of `S`.) The batch then has a
    boolean `attention_mask` of shape `(batch, 1, T, T)` (True: may attend; rows padded on the right), `position_ids`
    and, with `return_sequence_kind=True`, `label_is_rto` (per token: the label is an RTO target). The model must take
    a custom 4-D mask and `position_ids` (sdpa; eager after turning the mask additive, as [`DeRTaTrainer`] does). A
    fused sequence is at most `len(P) + len(H) + 1 + len(S)` tokens, so it may exceed `max_length`.

    With `padding_free=True` the sequences are packed one after the other (see the argument), with
    `position_ids` and, with `return_sequence_kind=True`, `label_is_rto`; `sequence_kind` and `harmful_prefix_length`
    stay per sequence.

    Args:
        pad_token_id (`int`): token id used to pad `input_ids`.
        refusal_token_id (`int`): RTO target, see [`~hf_safety.data.refusal_token_id`] (may be `None` with
            `rto=False`).
        harmful_prefix (`bool`, defaults to `True`): sample a harmful prefix for (a); `False` keeps `k = 0`.
        rto (`bool`, defaults to `True`): emit the RTO sequence (b) for each harmful row.
        prefix_sampling (`str`, defaults to `"uniform"`): `"uniform"` draws `k` uniformly in `0..n` tokens;
            `"word_boundary"` draws a cut at a word start strictly inside the answer (needs `rejected_word_starts`),
            as the reference implementation cuts words.
        empty_prefix_prob (`float`, defaults to `0.0`): probability of forcing `k = 0` before sampling.
        rto_position_keep (`float`, defaults to `1.0`): fraction of harmful positions labelled `R` (1.0 = every one).
        max_length (`int`, *optional*): sequences are kept within it: `k` is capped so `P`, the prefix and `S` fit; `S`
            and `H` are cut from the right only when the prompt leaves no other room.
        seed (`int`, defaults to `42`): seed of the draws.
        deterministic (`bool`, defaults to `False`): draws depend only on `(seed, row_index)`.
        pad_to_multiple_of (`int`, *optional*): pad the batch length to a multiple of this.
        return_sequence_kind (`bool`, defaults to `False`): also return `sequence_kind` and `harmful_prefix_length`.
        derta_form (`str`, defaults to `"naive"`): `"naive"` (two sequences per harmful row, any model) or
            `"fused"` (one tree-masked sequence; the model must take a 4-D mask).
        sliding_window (`int`, *optional*): with `derta_form="fused"`, the model's attention window (e.g. Mistral's
            `sliding_window`), applied on the position ids since a custom mask replaces the model's own.
        padding_free (`bool`, defaults to `False`): put the batch's sequences one after the other with `position_ids`
            restarting at each sequence (TRL's `padding_free`; the first label of each sequence is dropped, as a
            causal LM never scores it). Naive form: one row and no `attention_mask`, so the model separates the
            sequences by their position ids (with flash attention, through `cu_seq_lens_q/k` as TRL passes them).
            Fused form: rows of at most the batch's longest sequence (best-fit decreasing), each with its tree mask,
            one block per sequence: a 4-D mask costs the square of its row's length, so one long row would cost more
            attention than it saves in padding.

    Example:
    ```python
    >>> collator = DeRTaCollator(pad_token_id=0, refusal_token_id=9, seed=0)
    >>> batch = collator([{"prompt_ids": [1, 2], "chosen_ids": [9, 5, 3], "rejected_ids": [6, 7, 8]}])
    >>> batch["input_ids"].tolist()  # (a) prompt, harmful prefix (k = 2 here), safe answer; (b) prompt, harmful answer
    [[1, 2, 6, 7, 9, 5, 3], [1, 2, 6, 7, 8, 0, 0]]
    >>> batch["labels"].tolist()  # (a) the safe answer; (b) the refusal token at each harmful position
    [[-100, -100, -100, -100, 9, 5, 3], [-100, -100, 9, 9, 9, -100, -100]]
    ```
    """

    pad_token_id: int
    refusal_token_id: int | None
    harmful_prefix: bool = True
    rto: bool = True
    prefix_sampling: str = "uniform"
    empty_prefix_prob: float = 0.0
    rto_position_keep: float = 1.0
    max_length: int | None = None
    seed: int = 42
    deterministic: bool = False
    pad_to_multiple_of: int | None = None
    return_sequence_kind: bool = False
    derta_form: str = "naive"
    sliding_window: int | None = None
    padding_free: bool = False
    return_tensors: str = "pt"

    def __post_init__(self):
        if self.rto and self.refusal_token_id is None:
            raise ValueError("rto=True needs a refusal_token_id (see hf_safety.data.refusal_token_id)")
        if self.prefix_sampling not in PREFIX_SAMPLING:
            raise ValueError(f"prefix_sampling must be one of {PREFIX_SAMPLING}, got {self.prefix_sampling!r}")
        if not 0.0 <= self.empty_prefix_prob <= 1.0:
            raise ValueError(f"empty_prefix_prob must be in [0, 1], got {self.empty_prefix_prob}")
        if not 0.0 < self.rto_position_keep <= 1.0:
            raise ValueError(f"rto_position_keep must be in (0, 1], got {self.rto_position_keep}")
        if self.derta_form not in DERTA_FORMS:
            raise ValueError(f"derta_form must be one of {DERTA_FORMS}, got {self.derta_form!r}")
        self.epoch = 0
        self._draws: Counter = Counter()

    def set_epoch(self, epoch: int) -> None:
        """Starts the draws of `epoch` (each row's draw count restarts at 0)."""
        self.epoch = int(epoch)
        self._draws.clear()

    def _generator(self, example: dict[str, Any]) -> np.random.Generator:
        row = example.get("row_index")
        if row is None:  # rows tokenized by the user: key on their content
            row = zlib.crc32(np.asarray(example["prompt_ids"] + example["rejected_ids"], dtype=np.int64).tobytes())
        if self.deterministic:
            return np.random.default_rng([self.seed, 2**32, row])
        draw = self._draws[row]
        self._draws[row] += 1
        return np.random.default_rng([self.seed, self.epoch, row, draw])

    def _sample_prefix_length(self, example: dict[str, Any], k_max: int, rng: np.random.Generator) -> int:
        if not self.harmful_prefix or k_max == 0 or rng.random() < self.empty_prefix_prob:
            return 0
        if self.prefix_sampling == "uniform":
            return int(rng.integers(0, k_max + 1))
        if "rejected_word_starts" not in example:
            raise ValueError(
                "prefix_sampling='word_boundary' needs a `rejected_word_starts` column "
                "(prepare_preference_dataset(..., with_word_starts=True))."
            )
        cuts = [j for j in example["rejected_word_starts"] if j <= k_max]
        return int(rng.choice(cuts)) if cuts else 0

    def build_sequences(self, example: dict[str, Any]) -> list[tuple[list[int], list[int], int, int]]:
        """Returns the sequences for one row as `(input_ids, labels, sequence_kind, harmful_prefix_length)`."""
        prompt, safe = list(example["prompt_ids"]), list(example["chosen_ids"])
        harmful = list(example.get("rejected_ids") or [])
        room = None if self.max_length is None else self.max_length - len(prompt)
        if room is not None and room <= 0:
            raise ValueError(
                f"row {example.get('row_index', '?')}, field 'prompt': prompt is {len(prompt)} tokens, "
                f"max_length is {self.max_length}"
            )
        if room is not None:
            safe = safe[:room]
        ignore = [-100] * len(prompt)
        if not harmful:
            # an SFT-format row carries its own labels (-100 where SFTTrainer would not train)
            labels = list(example.get("chosen_labels") or [])[: len(safe)] or safe
            return [(prompt + safe, ignore + labels, BENIGN, 0)]

        rng = self._generator(example)
        k_max = len(harmful) if room is None else max(0, min(len(harmful), room - len(safe)))
        k = self._sample_prefix_length(example, k_max, rng)
        sequences = [(prompt + harmful[:k] + safe, ignore + [-100] * k + safe, HARMFUL_PREFIX, k)]
        if self.rto:
            harmful = harmful if room is None else harmful[:room]
            keep = np.ones(len(harmful), dtype=bool)
            if self.rto_position_keep < 1.0:
                keep = rng.random(len(harmful)) < self.rto_position_keep
                if not keep.any():
                    keep[rng.integers(len(harmful))] = True
            rto_labels = [self.refusal_token_id if kept else -100 for kept in keep]
            sequences.append((prompt + harmful, ignore + rto_labels, RTO, len(harmful)))
        return sequences

    @staticmethod
    def fuse(prefix: tuple, rto: tuple) -> tuple[list[int], list[int], list[int], int, int]:
        """
        Fuses a harmful row's sequences (a) `P h1..hk S` and (b) `P H` (as `build_sequences` returns them) into
        `P H x S`. Returns `(input_ids, labels, position_ids, branch_start, visible)`: tokens from `branch_start` on
        (`x S`) see the tokens before `visible` and the branch up to themselves; the others are causal.
        """
        ids_a, labels_a, _, k = prefix
        ids_b, labels_b, _, n = rto
        p, branch_start = len(ids_b) - n, len(ids_b)
        safe_ids, safe_labels = ids_a[p + k :], labels_a[p + k :]
        visible = p + k - 1  # position of `x`, the token before `S` in (a)
        if visible < 0:  # empty prompt and prefix: `S` starts the sequence in (a), its first label is never scored
            branch, visible, safe_labels = [], 0, [-100] * min(1, len(safe_labels)) + safe_labels[1:]
        else:
            branch = [ids_a[visible]]
        position_ids = [*range(branch_start), *range(visible, visible + len(branch) + len(safe_ids))]
        labels = labels_b + [-100] * len(branch) + safe_labels
        return ids_b + branch + safe_ids, labels, position_ids, branch_start, visible

    def _records(self, examples: list[dict[str, Any]]) -> list[_Record]:
        """The batch's sequences: one per benign row, two per harmful row (naive) or one fused sequence (fused)."""
        records = []
        for example in examples:
            sequences = self.build_sequences(example)
            if self.derta_form == "fused" and len(sequences) == 2:
                ids, labels, positions, start, visible = self.fuse(*sequences)
                is_rto = [True] * start + [False] * (len(ids) - start)
                records.append(_Record(ids, labels, positions, start, visible, is_rto, FUSED, sequences[0][3]))
                continue
            for ids, labels, kind, k in sequences:
                n = len(ids)
                records.append(_Record(ids, labels, list(range(n)), n, n, [kind == RTO] * n, kind, k))
        return records

    def _tree_mask(self, records: list[_Record], position_ids: torch.Tensor, length: int) -> torch.Tensor:
        """
        Boolean `(length, length)` mask of one row holding `records` one after the other (right-padded): causal inside
        each record, nothing across records; a fused record's branch (`x S`) sees only the keys before `visible` and
        itself. Padding queries attend to real keys only.
        """
        record_of = torch.full((length,), -1)
        local = torch.arange(length)
        start = torch.full((length,), length)
        visible = torch.full((length,), length)
        offset = 0
        for index, record in enumerate(records):
            span = slice(offset, offset + len(record.input_ids))
            record_of[span], local[span] = index, torch.arange(len(record.input_ids))
            start[span], visible[span] = record.branch_start, record.visible
            offset += len(record.input_ids)
        q, kv = torch.arange(length)[:, None], torch.arange(length)[None, :]
        same = (record_of[:, None] == record_of[None, :]) & (record_of[:, None] >= 0)
        branch = (
            (local[:, None] < start[:, None])
            | (local[None, :] < visible[:, None])
            | (local[None, :] >= start[:, None])
        )
        mask = same & (kv <= q) & branch
        # Padding attends to real tokens only (never to itself, so it is not counted as input; a row is never empty):
        # all of them in the padded layout, the row's first token when several sequences share the row
        padding = record_of[:, None] < 0
        mask |= padding & ((record_of[None, :] >= 0) if len(records) == 1 else (kv == 0))
        if self.sliding_window is not None:
            mask &= position_ids[:, None] - position_ids[None, :] < self.sliding_window
        return mask

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        records = self._records(examples)
        fused = any(record.sequence_kind == FUSED for record in records)
        if self.padding_free:  # sequences one after the other, position ids restarting per sequence
            records = [record.unscored_first_label() for record in records]
            # the naive form: one row (the model splits it by position ids; flash attention without any waste). The
            # fused form's mask is dense, quadratic in a row's length: rows as long as the longest sequence instead
            rows = _pack(records, max(len(r.input_ids) for r in records)) if fused else [records]
        else:
            rows = [[record] for record in records]

        def column(name, value):
            tensors = [torch.tensor([x for record in row for x in getattr(record, name)]) for row in rows]
            return pad(tensors, value, padding_side="right", pad_to_multiple_of=self.pad_to_multiple_of)

        input_ids, labels, position_ids = column("input_ids", self.pad_token_id), column("labels", -100), None
        output = {"input_ids": input_ids}
        if fused or self.padding_free:
            position_ids = column("position_ids", 0)
            output["position_ids"] = position_ids
        if fused:  # the tree mask, per row
            masks = [self._tree_mask(row, pos, input_ids.shape[1]) for row, pos in zip(rows, position_ids)]
            output["attention_mask"] = torch.stack(masks)[:, None]
        elif self.padding_free:
            # no mask: the model separates the sequences by their position ids (flash attention through these
            # sequence boundaries, as TRL's padding-free collator passes them)
            lengths = [len(record.input_ids) for record in records]
            padding = input_ids.shape[1] - sum(lengths)
            lengths += [1] * padding  # padding tokens stand alone
            boundaries = torch.tensor([0, *np.cumsum(lengths)], dtype=torch.int32)
            output["cu_seq_lens_q"] = output["cu_seq_lens_k"] = boundaries
            output["max_length_q"] = output["max_length_k"] = max(lengths)
        else:
            output["attention_mask"] = column("attention", 0)
        output["labels"] = labels
        if self.return_sequence_kind:
            output["sequence_kind"] = torch.tensor([record.sequence_kind for record in records])
            output["harmful_prefix_length"] = torch.tensor([record.harmful_prefix_length for record in records])
            if fused or self.padding_free:
                output["label_is_rto"] = column("label_is_rto", False)
        return output
