"""The refusal token: the first token of a refusal text as the tokenizer writes it at the start of an answer, checked
to be a real word start, and matched against how the dataset's safe answers really start."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from .schema import PreferenceRow
from .tokenize import tokenize_row


_PROBE_PROMPT = "Tell me something."


def _check_word_start(tokenizer: PreTrainedTokenizerBase, token_id: int, refusal_text: str) -> str:
    """The token's text, or `ValueError` unless it is a real start of the refusal's first word: not a special token,
    with a letter in it, and not a one-letter fragment of a longer word (`S` of "Sorry" is also the start of "Sure")."""
    text = tokenizer.decode([token_id])
    word = refusal_text.strip().split()[0]
    piece = text.strip()
    problem = None
    if token_id in tokenizer.all_special_ids:
        problem = "it is a special token"
    elif not any(ch.isalpha() for ch in piece):
        problem = "it has no letter (punctuation or whitespace)"
    elif len(piece) == 1 and len(word) > 1:
        problem = f"it is a one-letter fragment of {word!r}, shared with every word that starts with {piece!r}"
    elif not word.startswith(piece):
        problem = f"it is not the start of {word!r}"
    if problem:
        raise ValueError(
            f"refusal_text={refusal_text!r} gives the RTO target {text!r} (id {token_id}), which is not a real word "
            f"start: {problem}. Use a refusal that begins with a whole word this tokenizer has as one token, e.g. "
            "'Sorry' or 'I'."
        )
    return text


def refusal_token_id(tokenizer: PreTrainedTokenizerBase, refusal_text: str, conversational: bool = True) -> int:
    """
    Returns the id of the first token of `refusal_text` at the start of an assistant answer, derived from the
    tokenizer (through its chat template when `conversational`), never hard-coded. For Meta-Llama-3-Instruct and
    "Sorry" this is the id of `Sorry` (19701).

    Raises:
        `ValueError`: if `refusal_text` is empty, or its first token is not a real start of its first word (a
        special token, punctuation, a one-letter fragment, or glued to something else by the template), so that the
        RTO target would not mean "start refusing". The message shows the token.
    """
    if not refusal_text or not refusal_text.strip():
        raise ValueError("`refusal_text` must be a non-empty string, e.g. 'Sorry'.")
    prompt = [{"role": "user", "content": _PROBE_PROMPT}] if conversational else _PROBE_PROMPT + "\n"
    row = PreferenceRow(
        prompt=prompt,
        chosen=[{"role": "assistant", "content": refusal_text}] if conversational else refusal_text,
        rejected=None,
    )
    answer_ids = tokenize_row(row, tokenizer)["chosen_ids"]
    if not answer_ids:
        raise ValueError(f"`refusal_text`={refusal_text!r} tokenizes to nothing at the start of an answer.")
    _check_word_start(tokenizer, answer_ids[0], refusal_text)
    return answer_ids[0]


def refusal_token_from_data(
    tokenizer: PreTrainedTokenizerBase, refusal_text: str, probe_id: int, safe_answer_first_ids: Sequence[int]
) -> tuple[int, str]:
    """
    The RTO target as the dataset's safe answers (to harmful prompts) really start, and a sentence saying how it was
    chosen.

    `probe_id` is [`refusal_token_id`]'s token. Text data often write answers with a leading space (`" Sorry"`),
    which many tokenizers turn into another token than `"Sorry"`: among the first tokens of the safe answers, the
    most common one that spells the refusal's first word is the target, and the choice is explained when it differs
    from the probe. When no safe answer starts with the refusal, the probe is kept and the sentence says so.
    """
    word = refusal_text.strip().split()[0]
    probe_text = tokenizer.decode([probe_id]).strip()
    counts = Counter(i for i in safe_answer_first_ids if tokenizer.decode([i]).strip() == probe_text)
    total = len(safe_answer_first_ids)
    if not counts:
        return probe_id, (
            f"none of the {total} safe answers checked starts with {word!r}; the RTO target stays "
            f"{tokenizer.decode([probe_id])!r} (id {probe_id})"
        )
    token_id, n = counts.most_common(1)[0]
    text = _check_word_start(tokenizer, token_id, refusal_text)
    if token_id == probe_id:
        return token_id, f"{n} of {total} safe answers checked start with it"
    return token_id, (
        f"taken from the data: {n} of {total} safe answers checked start with {text!r} (id {token_id}), while "
        f"refusal_text={refusal_text!r} alone tokenizes to {tokenizer.decode([probe_id])!r} (id {probe_id})"
    )
