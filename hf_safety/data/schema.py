"""The data contract: preference rows (`prompt`, `chosen`, `rejected`) and plain conversational rows (`messages`).

Every check raises [`InvalidRowError`], which names the row index and the field, so that a bad row in a dataset of
100k rows can be found and fixed. Trainers catch it to skip rows when the user asks for it (`skip_invalid_rows=True`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any


Messages = list[dict[str, str]]


class InvalidRowError(ValueError):
    """A row of a dataset that breaks the data contract. Carries `row` (index in the dataset), `field` and `reason`."""

    def __init__(self, row: int, field: str, reason: str):
        self.row = row
        self.field = field
        self.reason = reason
        super().__init__(f"row {row}, field '{field}': {reason}")


def text_field(row: dict[str, Any], index: int, name: str) -> str:
    """`row[name]` as a non-empty string, or an [`InvalidRowError`] naming the row and the field."""
    value = row.get(name)
    if value is None:
        raise InvalidRowError(index, name, "missing")
    if not isinstance(value, str):
        raise InvalidRowError(index, name, f"expected a string, got {type(value).__name__}")
    if not value.strip():
        raise InvalidRowError(index, name, "empty")
    return value


@dataclass
class PreferenceRow:
    """
    A validated row: `prompt` (str or messages), `chosen` (str or assistant messages), `rejected` or None.

    A plain conversational row (`messages`) keeps its whole conversation in `messages`: it is trained as SFTTrainer
    trains `messages` data (every token, or the assistant tokens with `assistant_only_loss`); `prompt` and `chosen`
    then hold what precedes the last assistant message and that message. `tools` and `chat_template_kwargs` are the
    row's columns of the same names, passed to the chat template as SFTTrainer passes them.
    """

    prompt: str | Messages
    chosen: str | Messages
    rejected: str | Messages | None
    messages: Messages | None = None
    tools: list | None = None
    chat_template_kwargs: dict[str, Any] | None = None

    @property
    def is_conversational(self) -> bool:
        return isinstance(self.prompt, list)

    @property
    def is_harmful(self) -> bool:
        return self.rejected is not None


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, (str, list)) and len(value) == 0)


def _check_messages(value: list, row: int, name: str) -> Messages:
    for i, message in enumerate(value):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRowError(row, name, f"message {i} is not a dict with a string 'role'")
        if not isinstance(message.get("content"), str):
            raise InvalidRowError(row, name, f"message {i} has no string 'content'")
    return value


def _check_text_or_messages(value: Any, row: int, name: str, conversational: bool) -> str | Messages:
    """Checks a required field (`prompt` or `chosen`); `conversational` says whether the prompt is a message list."""
    if _is_empty(value) or (isinstance(value, str) and not value.strip()):
        raise InvalidRowError(row, name, "missing or empty")
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        if name != "prompt" and not conversational:
            raise InvalidRowError(row, name, "a list of messages needs a conversational `prompt` (a list of messages)")
        messages = _check_messages(value, row, name)
        if not any(m["content"].strip() for m in messages):
            raise InvalidRowError(row, name, "missing or empty")
        return messages
    raise InvalidRowError(row, name, f"expected a string or a list of chat messages, got {type(value).__name__}")


def _all_empty_messages(value: Any) -> bool:
    """Whether `value` is a list of well-formed messages whose contents are all blank (an empty optional field)."""
    return isinstance(value, list) and all(
        isinstance(m, dict) and isinstance(m.get("content"), str) and not m["content"].strip() for m in value
    )


def _as_assistant_messages(value: str | Messages) -> Messages:
    return [{"role": "assistant", "content": value}] if isinstance(value, str) else value


def check_row(example: dict[str, Any], row: int) -> PreferenceRow:
    """
    Validates one row of the data contract and returns it normalised.

    A row is either a preference row (`prompt`, `chosen`, optional `rejected`; text or conversational, like TRL's
    preference format) or a plain conversational SFT row (`messages`), taken as benign: its prompt is every message
    before the last assistant message, and `chosen` is that message. In a conversational row, a string `chosen` or
    `rejected` is taken as the assistant's message. `rejected` that is absent, None or empty marks a benign row.

    Raises:
        [`InvalidRowError`]: naming `row` and the field at fault.
    """
    prompt = example.get("prompt")
    messages = example.get("messages")
    # A `messages` row: a non-empty `messages` and no prompt, or any row of a dataset with no `prompt` column (so that
    # an empty `messages` is reported as such, not as a missing prompt)
    if _is_empty(prompt) and (not _is_empty(messages) or ("messages" in example and "prompt" not in example)):
        if _is_empty(messages):
            raise InvalidRowError(row, "messages", "missing or empty")
        if not isinstance(messages, list):
            raise InvalidRowError(row, "messages", f"expected a list of chat messages, got {type(messages).__name__}")
        _check_messages(messages, row, "messages")
        last = max((i for i, m in enumerate(messages) if m["role"] == "assistant"), default=None)
        if last is None or last == 0:
            raise InvalidRowError(row, "messages", "needs a user turn followed by an assistant message")
        if not messages[last]["content"].strip():
            raise InvalidRowError(row, "messages", "the last assistant message is empty")
        return PreferenceRow(
            prompt=messages[:last],
            chosen=[messages[last]],
            rejected=None,
            messages=messages,
            **_template_args(example, row),
        )

    prompt = _check_text_or_messages(prompt, row, "prompt", conversational=False)
    conversational = isinstance(prompt, list)
    chosen = _check_text_or_messages(example.get("chosen"), row, "chosen", conversational)
    rejected = example.get("rejected")
    if _is_empty(rejected) or (isinstance(rejected, str) and not rejected.strip()) or _all_empty_messages(rejected):
        rejected = None
    else:
        rejected = _check_text_or_messages(rejected, row, "rejected", conversational)
    if conversational:
        chosen, rejected = _as_assistant_messages(chosen), rejected and _as_assistant_messages(rejected)
    return PreferenceRow(prompt=prompt, chosen=chosen, rejected=rejected, **_template_args(example, row))


def _template_args(example: dict[str, Any], row: int) -> dict[str, Any]:
    """The row's `tools` (a list, or a JSON string of one, as TRL accepts) and `chat_template_kwargs`."""
    tools = example.get("tools")
    if isinstance(tools, str):
        try:
            tools = json.loads(tools)
        except json.JSONDecodeError as err:
            raise InvalidRowError(row, "tools", f"not valid JSON: {err}") from err
    if tools is not None and not isinstance(tools, list):
        raise InvalidRowError(row, "tools", f"expected a list of tool definitions, got {type(tools).__name__}")
    kwargs = example.get("chat_template_kwargs")
    if kwargs is not None and not isinstance(kwargs, dict):
        raise InvalidRowError(row, "chat_template_kwargs", f"expected a dict, got {type(kwargs).__name__}")
    return {"tools": tools or None, "chat_template_kwargs": kwargs or None}


@dataclass
class SkipReport:
    """
    What preparing a dataset did besides tokenizing: rows skipped (`skip_invalid_rows=True`: each row's index, field
    and reason), rows truncated to fit `max_length` (index, field, detail), and the numbers of harmful and benign rows
    (None for a streamed dataset, whose rows are only seen as they are batched).
    """

    dataset_name: str
    num_rows: int = 0
    skipped: list[tuple[int, str, str]] = field(default_factory=list)
    truncated: list[tuple[int, str, str]] = field(default_factory=list)
    num_harmful: int | None = None
    num_benign: int | None = None

    @property
    def num_skipped(self) -> int:
        return len(self.skipped)

    @property
    def num_truncated(self) -> int:
        return len(self.truncated)

    def by_field(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for _, name, _ in self.skipped:
            counts[name] = counts.get(name, 0) + 1
        return counts

    def __str__(self) -> str:
        parts = []
        if not self.skipped:
            parts.append(f"{self.dataset_name} dataset: all {self.num_rows} rows valid")
        else:
            first = "; ".join(f"row {r}, field '{f}': {why}" for r, f, why in self.skipped[:5])
            more = f" (+{self.num_skipped - 5} more)" if self.num_skipped > 5 else ""
            parts.append(
                f"{self.dataset_name} dataset: skipped {self.num_skipped} of {self.num_rows} rows "
                f"(by field: {self.by_field()}): {first}{more}"
            )
        if self.truncated:
            first = "; ".join(f"row {r}, field '{f}': {why}" for r, f, why in self.truncated[:3])
            more = f" (+{self.num_truncated - 3} more)" if self.num_truncated > 3 else ""
            parts.append(f"{self.num_truncated} rows truncated to fit max_length: {first}{more}")
        return "; ".join(parts)
