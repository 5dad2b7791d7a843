"""Hand-checked labels of `DeRTaCollator`, the refusal token, word starts, and the prefix/RTO draws.

Labels are compared as token strings written out by hand, `"-"` standing for -100 (transformers' convention: the
model shifts labels, so a label sits on the position of the token it is).
"""

import numpy as np
import pytest
from datasets import Dataset
from testing_utils import toy_rows
from trl.data_utils import common_prefix_length

from hf_safety import DeRTaCollator
from hf_safety.data import check_row, prepare_preference_dataset, refusal_token_id, tokenize_row, word_start_positions
from hf_safety.derta.collator import BENIGN, HARMFUL_PREFIX, RTO
from hf_safety.toy import build_tokenizer


TOKENIZERS = ["llama3_tokenizer", "mistral_tokenizer"]
EOT = {"llama3_tokenizer": "<|eot_id|>", "mistral_tokenizer": "</s>"}

# The rows of the hand-checked tests, in the two shapes of the data contract
CONVERSATIONAL_ROWS = [
    {
        "prompt": [{"role": "user", "content": "how do i steal a car"}],
        "chosen": [{"role": "assistant", "content": "Sorry , i can not help"}],
        "rejected": [{"role": "assistant", "content": "first , break the side window"}],
    },
    {
        "prompt": [{"role": "user", "content": "how do i cook rice"}],
        "chosen": [{"role": "assistant", "content": "sure , here is how"}],
        "rejected": None,
    },
]
TEXT_ROWS = [
    {
        "prompt": "how do i steal a car",
        "chosen": " Sorry , i can not help",
        "rejected": " first , break the side window",
    },
    {"prompt": "how do i cook rice", "chosen": " sure , here is how", "rejected": None},
]

# Prompt tokens (P), written out by hand: the chat template up to the assistant header, or the text prompt
HARMFUL_PROMPT = {
    ("llama3_tokenizer", "conversational"): [
        "<|begin_of_text|>", "<|start_header_id|>", "user", "<|end_header_id|>",
        "how", "do", "i", "steal", "a", "car", "<|eot_id|>",
        "<|start_header_id|>", "assistant", "<|end_header_id|>",
    ],
    ("mistral_tokenizer", "conversational"): ["<s>", "[INST]", "how", "do", "i", "steal", "a", "car", "[/INST]"],
    ("llama3_tokenizer", "text"): ["<|begin_of_text|>", "how", "do", "i", "steal", "a", "car"],
    ("mistral_tokenizer", "text"): ["<s>", "how", "do", "i", "steal", "a", "car"],
}  # fmt: skip
BENIGN_PROMPT = {
    ("llama3_tokenizer", "conversational"): [
        "<|begin_of_text|>", "<|start_header_id|>", "user", "<|end_header_id|>",
        "how", "do", "i", "cook", "rice", "<|eot_id|>",
        "<|start_header_id|>", "assistant", "<|end_header_id|>",
    ],
    ("mistral_tokenizer", "conversational"): ["<s>", "[INST]", "how", "do", "i", "cook", "rice", "[/INST]"],
    ("llama3_tokenizer", "text"): ["<|begin_of_text|>", "how", "do", "i", "cook", "rice"],
    ("mistral_tokenizer", "text"): ["<s>", "how", "do", "i", "cook", "rice"],
}  # fmt: skip
HARMFUL = ["first", ",", "break", "the", "side", "window"]  # H, n = 6
SAFE = ["Sorry", ",", "i", "can", "not", "help"]  # S, followed by the end-of-turn token
BENIGN_ANSWER = ["sure", ",", "here", "is", "how"]

# A harmful answer whose words a BPE tokenizer splits into sub-words
BPE_REJECTED = "first , break the side window and hide a tracker"


# --------------------------------------------------------------------------------------------------------------------
# Helpers and fixtures
# --------------------------------------------------------------------------------------------------------------------


def tokens(tok, ids):
    return tok.convert_ids_to_tokens([int(i) for i in ids])


def label_tokens(tok, labels):
    return ["-" if int(x) == -100 else tok.convert_ids_to_tokens(int(x)) for x in labels]


def unpad(batch, pad_token_id):
    """The batch's sequences as `(input_ids, labels)` lists, after checking the right padding is inert."""
    sequences = []
    for ids, mask, labels in zip(batch["input_ids"], batch["attention_mask"], batch["labels"]):
        n = int(mask.sum())
        assert mask[:n].tolist() == [1] * n and mask[n:].tolist() == [0] * (len(mask) - n)
        assert ids[n:].tolist() == [pad_token_id] * (len(ids) - n)
        assert labels[n:].tolist() == [-100] * (len(labels) - n)
        sequences.append((ids[:n].tolist(), labels[:n].tolist()))
    return sequences


def prepare(rows, tok, **kwargs):
    prepared, report = prepare_preference_dataset(Dataset.from_list(rows), tok, **kwargs)
    assert report.num_skipped == 0
    return list(prepared)


def make_collator(tok, **kwargs):
    kwargs.setdefault("return_sequence_kind", True)
    return DeRTaCollator(pad_token_id=tok.pad_token_id, refusal_token_id=refusal_token_id(tok, "Sorry"), **kwargs)


def draw_k(collator, row):
    """Collates `row` once and returns the harmful prefix length `k` of its harmful-prefix sequence."""
    batch = collator([row])
    assert batch["sequence_kind"][0] == HARMFUL_PREFIX
    return int(batch["harmful_prefix_length"][0])


@pytest.fixture(scope="module")
def bpe_tokenizers(corpus):
    return {fmt: build_tokenizer(corpus, fmt, model="bpe") for fmt in ("llama3", "mistral")}


@pytest.fixture(scope="module")
def toy_prepared(corpus):
    """The toy world (30 harmful rows first, then 40 benign), prepared with the word-level Llama-3 tokenizer."""
    tok = build_tokenizer(corpus, "llama3", model="word")
    rows = [{k: v for k, v in row.items() if k != "topic"} for row in toy_rows()]
    return tok, prepare(rows, tok)


# --------------------------------------------------------------------------------------------------------------------
# The refusal token
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tok_name", TOKENIZERS)
def test_refusal_token_id_word_level_is_the_sorry_token(request, tok_name):
    tok = request.getfixturevalue(tok_name)
    sorry = tok.convert_tokens_to_ids("Sorry")
    assert sorry != tok.unk_token_id
    assert refusal_token_id(tok, "Sorry") == sorry
    assert refusal_token_id(tok, "Sorry", conversational=False) == sorry
    assert refusal_token_id(tok, "Sorry , i can not help") == sorry


@pytest.mark.parametrize("fmt, first_piece", [("llama3", "Sorry"), ("mistral", "Sor")])
def test_refusal_token_id_bpe_is_a_clean_prefix_of_sorry(bpe_tokenizers, fmt, first_piece):
    tok = bpe_tokenizers[fmt]
    rid = refusal_token_id(tok, "Sorry")
    decoded = tok.decode([rid])
    assert decoded == first_piece
    assert decoded and "Sorry".startswith(decoded.strip())
    # It is the token a refusal starts with in the assistant turn of a real row
    row = check_row(CONVERSATIONAL_ROWS[0], 0)
    assert tokenize_row(row, tok)["chosen_ids"][0] == rid


@pytest.mark.parametrize("tok_name", TOKENIZERS)
@pytest.mark.parametrize("text", ["", "   ", "\n"])
def test_refusal_token_id_empty_text_raises(request, tok_name, text):
    tok = request.getfixturevalue(tok_name)
    with pytest.raises(ValueError, match="non-empty"):
        refusal_token_id(tok, text)


@pytest.mark.parametrize("tok_name", TOKENIZERS)
def test_refusal_token_id_unclean_first_token_raises(request, tok_name):
    tok = request.getfixturevalue(tok_name)
    # '!!!' is not in the word-level vocabulary: the first token is the unknown token, not a piece of the refusal
    with pytest.raises(ValueError, match="not a real word start: it is a special token") as excinfo:
        refusal_token_id(tok, "!!! sorry")
    assert repr(tok.unk_token) in str(excinfo.value)


# --------------------------------------------------------------------------------------------------------------------
# Tokenized pieces are what SFTTrainer tokenizes
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tokenizer_kind", ["word", "bpe"])
@pytest.mark.parametrize("fmt", ["llama3", "mistral"])
def test_pieces_match_sft_tokenization_conversational(corpus, bpe_tokenizers, fmt, tokenizer_kind):
    tok = bpe_tokenizers[fmt] if tokenizer_kind == "bpe" else build_tokenizer(corpus, fmt, model="word")
    for example in CONVERSATIONAL_ROWS:
        row = prepare([example], tok)[0]
        prompt, chosen = example["prompt"], example["chosen"]
        full = list(tok.apply_chat_template(prompt + chosen, tokenize=True, return_dict=True)["input_ids"])
        sft_prompt = list(
            tok.apply_chat_template(prompt, tokenize=True, return_dict=True, add_generation_prompt=True)["input_ids"]
        )
        assert row["prompt_ids"] + row["chosen_ids"] == full
        # SFTTrainer's completion mask starts where prompt and prompt+completion diverge
        n = common_prefix_length(sft_prompt, full)
        assert row["prompt_ids"] == full[:n]
        if example["rejected"] is not None:
            rejected_full = tok.apply_chat_template(
                prompt + example["rejected"], tokenize=True, return_dict=True, continue_final_message=True
            )["input_ids"]
            assert row["prompt_ids"] + row["rejected_ids"] == list(rejected_full)
            assert tok.eos_token_id not in row["rejected_ids"]  # the harmful answer has no end of turn
            content = example["rejected"][0]["content"]
            assert tok.decode(row["rejected_ids"]).replace(" ", "") == content.replace(" ", "")
        else:
            assert row["rejected_ids"] == []

        # k = 0 is exactly SFTTrainer's training sequence and completion-only labels
        collator = make_collator(tok, harmful_prefix=False, rto=False)
        ((ids, labels),) = unpad(collator([row]), tok.pad_token_id)
        assert ids == full
        assert labels == [-100] * n + full[n:]


@pytest.mark.parametrize("tokenizer_kind", ["word", "bpe"])
@pytest.mark.parametrize("fmt", ["llama3", "mistral"])
def test_pieces_match_sft_tokenization_text(corpus, bpe_tokenizers, fmt, tokenizer_kind):
    tok = bpe_tokenizers[fmt] if tokenizer_kind == "bpe" else build_tokenizer(corpus, fmt, model="word")
    for example in TEXT_ROWS:
        row = prepare([example], tok)[0]
        # SFTTrainer appends EOS to a text completion, then tokenizes prompt and prompt + completion
        full = list(tok(text=example["prompt"] + example["chosen"] + tok.eos_token)["input_ids"])
        n = common_prefix_length(list(tok(text=example["prompt"])["input_ids"]), full)
        assert row["prompt_ids"] + row["chosen_ids"] == full
        assert row["prompt_ids"] == full[:n]
        assert row["chosen_ids"][-1] == tok.eos_token_id
        assert row["chosen_ids"].count(tok.eos_token_id) == 1
        if example["rejected"] is not None:
            rejected_full = list(tok(text=example["prompt"] + example["rejected"])["input_ids"])
            assert row["prompt_ids"] + row["rejected_ids"] == rejected_full
            assert tok.eos_token_id not in row["rejected_ids"]
    # A completion that already ends with EOS does not get a second one
    already = dict(TEXT_ROWS[1], chosen=TEXT_ROWS[1]["chosen"] + tok.eos_token)
    assert prepare([already], tok)[0]["chosen_ids"] == prepare([TEXT_ROWS[1]], tok)[0]["chosen_ids"]


# --------------------------------------------------------------------------------------------------------------------
# Hand-checked sequences
# --------------------------------------------------------------------------------------------------------------------


def test_llama3_conversational_sequences_written_out(llama3_tokenizer):
    """The full batch for one harmful and one benign row, every token and label written out (k = 0)."""
    tok = llama3_tokenizer
    rows = prepare(CONVERSATIONAL_ROWS, tok)
    batch = make_collator(tok, harmful_prefix=False)(rows)
    (a_ids, a_labels), (b_ids, b_labels), (c_ids, c_labels) = unpad(batch, tok.pad_token_id)
    assert batch["sequence_kind"].tolist() == [HARMFUL_PREFIX, RTO, BENIGN]
    assert batch["harmful_prefix_length"].tolist() == [0, 6, 0]

    # (a) k = 0: P S e, labels on S e
    assert tokens(tok, a_ids) == [
        "<|begin_of_text|>", "<|start_header_id|>", "user", "<|end_header_id|>",
        "how", "do", "i", "steal", "a", "car", "<|eot_id|>",
        "<|start_header_id|>", "assistant", "<|end_header_id|>",
        "Sorry", ",", "i", "can", "not", "help", "<|eot_id|>",
    ]  # fmt: skip
    assert label_tokens(tok, a_labels) == [
        "-", "-", "-", "-",
        "-", "-", "-", "-", "-", "-", "-",
        "-", "-", "-",
        "Sorry", ",", "i", "can", "not", "help", "<|eot_id|>",
    ]  # fmt: skip
    # (b) RTO: P H, the refusal token on every harmful position
    assert tokens(tok, b_ids) == [
        "<|begin_of_text|>", "<|start_header_id|>", "user", "<|end_header_id|>",
        "how", "do", "i", "steal", "a", "car", "<|eot_id|>",
        "<|start_header_id|>", "assistant", "<|end_header_id|>",
        "first", ",", "break", "the", "side", "window",
    ]  # fmt: skip
    assert label_tokens(tok, b_labels) == [
        "-", "-", "-", "-",
        "-", "-", "-", "-", "-", "-", "-",
        "-", "-", "-",
        "Sorry", "Sorry", "Sorry", "Sorry", "Sorry", "Sorry",
    ]  # fmt: skip
    assert b_labels[14:] == [tok.convert_tokens_to_ids("Sorry")] * 6
    # benign: P S e, labels on S e
    assert tokens(tok, c_ids) == [
        "<|begin_of_text|>", "<|start_header_id|>", "user", "<|end_header_id|>",
        "how", "do", "i", "cook", "rice", "<|eot_id|>",
        "<|start_header_id|>", "assistant", "<|end_header_id|>",
        "sure", ",", "here", "is", "how", "<|eot_id|>",
    ]  # fmt: skip
    assert label_tokens(tok, c_labels) == [
        "-", "-", "-", "-",
        "-", "-", "-", "-", "-", "-",
        "-", "-", "-",
        "sure", ",", "here", "is", "how", "<|eot_id|>",
    ]  # fmt: skip


@pytest.mark.parametrize("shape", ["conversational", "text"])
@pytest.mark.parametrize("tok_name", TOKENIZERS)
def test_sequences_with_k0_rto_and_benign(request, tok_name, shape):
    tok = request.getfixturevalue(tok_name)
    P, P_benign = HARMFUL_PROMPT[tok_name, shape], BENIGN_PROMPT[tok_name, shape]
    S, S_benign = [*SAFE, EOT[tok_name]], [*BENIGN_ANSWER, EOT[tok_name]]
    rows = prepare(CONVERSATIONAL_ROWS if shape == "conversational" else TEXT_ROWS, tok)
    assert tokens(tok, rows[0]["prompt_ids"]) == P
    assert tokens(tok, rows[0]["chosen_ids"]) == S
    assert tokens(tok, rows[0]["rejected_ids"]) == HARMFUL
    assert rows[1]["rejected_ids"] == []

    batch = make_collator(tok, harmful_prefix=False)(rows)
    (a_ids, a_labels), (b_ids, b_labels), (c_ids, c_labels) = unpad(batch, tok.pad_token_id)
    assert batch["sequence_kind"].tolist() == [HARMFUL_PREFIX, RTO, BENIGN]
    assert batch["harmful_prefix_length"].tolist() == [0, len(HARMFUL), 0]
    # (a) k = 0
    assert tokens(tok, a_ids) == P + S
    assert label_tokens(tok, a_labels) == ["-"] * len(P) + S
    # (b) RTO: refusal id at every harmful position, -100 on the prompt
    assert tokens(tok, b_ids) == P + HARMFUL
    assert label_tokens(tok, b_labels) == ["-"] * len(P) + ["Sorry"] * len(HARMFUL)
    assert b_labels == [-100] * len(P) + [refusal_token_id(tok, "Sorry")] * len(HARMFUL)
    # benign: labels on the safe answer and end of turn only
    assert tokens(tok, c_ids) == P_benign + S_benign
    assert label_tokens(tok, c_labels) == ["-"] * len(P_benign) + S_benign


@pytest.mark.parametrize("shape", ["conversational", "text"])
@pytest.mark.parametrize("tok_name", TOKENIZERS)
def test_harmful_prefix_sequence_with_k3(request, tok_name, shape):
    tok = request.getfixturevalue(tok_name)
    P, S = HARMFUL_PROMPT[tok_name, shape], [*SAFE, EOT[tok_name]]
    row = prepare(CONVERSATIONAL_ROWS if shape == "conversational" else TEXT_ROWS, tok)[0]
    # The first seed whose first draw is k = 3 (draws are reproducible, so this is always the same seed)
    seed = next(s for s in range(200) if draw_k(make_collator(tok, seed=s), row) == 3)
    batch = make_collator(tok, seed=seed)([row])
    (a_ids, a_labels), (b_ids, b_labels) = unpad(batch, tok.pad_token_id)
    assert batch["harmful_prefix_length"].tolist() == [3, 6]
    assert tokens(tok, a_ids) == P + ["first", ",", "break"] + S
    assert label_tokens(tok, a_labels) == ["-"] * len(P) + ["-", "-", "-"] + S
    # The RTO sequence does not depend on k
    assert tokens(tok, b_ids) == P + HARMFUL
    assert label_tokens(tok, b_labels) == ["-"] * len(P) + ["Sorry"] * 6


@pytest.mark.parametrize("shape", ["conversational", "text"])
@pytest.mark.parametrize("tok_name", TOKENIZERS)
def test_harmful_prefix_labels_follow_the_drawn_k(request, tok_name, shape):
    tok = request.getfixturevalue(tok_name)
    P, S = HARMFUL_PROMPT[tok_name, shape], [*SAFE, EOT[tok_name]]
    row = prepare(CONVERSATIONAL_ROWS if shape == "conversational" else TEXT_ROWS, tok)[0]
    collator = make_collator(tok, seed=7)
    seen = set()
    for _ in range(60):
        batch = collator([row])
        (a_ids, a_labels), _ = unpad(batch, tok.pad_token_id)
        k = int(batch["harmful_prefix_length"][0])
        seen.add(k)
        assert tokens(tok, a_ids) == P + HARMFUL[:k] + S
        assert label_tokens(tok, a_labels) == ["-"] * (len(P) + k) + S
    assert seen == set(range(7))


def test_rto_false_and_docstring_example():
    collator = DeRTaCollator(pad_token_id=0, refusal_token_id=9, seed=0)
    batch = collator([{"prompt_ids": [1, 2], "chosen_ids": [9, 5, 3], "rejected_ids": [6, 7, 8]}])
    assert batch["input_ids"].tolist() == [[1, 2, 6, 7, 9, 5, 3], [1, 2, 6, 7, 8, 0, 0]]
    assert batch["labels"].tolist() == [[-100, -100, -100, -100, 9, 5, 3], [-100, -100, 9, 9, 9, -100, -100]]
    assert set(batch) == {"input_ids", "attention_mask", "labels"}  # no sequence_kind unless asked

    no_rto = DeRTaCollator(pad_token_id=0, refusal_token_id=9, rto=False, harmful_prefix=False)
    batch = no_rto([{"prompt_ids": [1, 2], "chosen_ids": [9, 5, 3], "rejected_ids": [6, 7, 8]}])
    assert batch["input_ids"].tolist() == [[1, 2, 9, 5, 3]]
    assert batch["labels"].tolist() == [[-100, -100, 9, 5, 3]]


def test_padding_and_pad_to_multiple_of():
    collator = DeRTaCollator(pad_token_id=0, refusal_token_id=9, harmful_prefix=False, pad_to_multiple_of=8)
    batch = collator([{"prompt_ids": [1, 2], "chosen_ids": [9, 5, 3], "rejected_ids": [6, 7, 8, 4]}])
    assert batch["input_ids"].tolist() == [[1, 2, 9, 5, 3, 0, 0, 0], [1, 2, 6, 7, 8, 4, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 1, 0, 0]]
    assert batch["labels"].tolist() == [
        [-100, -100, 9, 5, 3, -100, -100, -100],
        [-100, -100, 9, 9, 9, 9, -100, -100],
    ]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"prefix_sampling": "words"}, "prefix_sampling"),
        ({"empty_prefix_prob": 1.5}, "empty_prefix_prob"),
        ({"rto_position_keep": 0.0}, "rto_position_keep"),
        ({"rto_position_keep": 1.1}, "rto_position_keep"),
    ],
)
def test_collator_rejects_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DeRTaCollator(pad_token_id=0, refusal_token_id=9, **kwargs)


# --------------------------------------------------------------------------------------------------------------------
# The draws
# --------------------------------------------------------------------------------------------------------------------


def test_uniform_prefix_lengths_cover_0_to_n(llama3_tokenizer):
    tok = llama3_tokenizer
    row = prepare(CONVERSATIONAL_ROWS, tok)[0]
    collator = make_collator(tok, seed=0)
    ks = [draw_k(collator, row) for _ in range(350)]
    counts = np.bincount(ks, minlength=7)
    assert len(counts) == 7  # never above n = 6
    assert counts.min() >= 25 and counts.max() <= 80, counts  # 50 expected for each of 0..6


def test_set_epoch_changes_draws_and_seed_epoch_reproduce_them(toy_prepared):
    tok, rows = toy_prepared
    harmful = [row for row in rows if row["rejected_ids"]]
    assert len(harmful) == 30

    def epoch_draws(collator):
        batch = collator(harmful)
        return batch["harmful_prefix_length"][batch["sequence_kind"] == HARMFUL_PREFIX].tolist()

    collator = make_collator(tok, seed=3)
    epoch0 = epoch_draws(collator)
    collator.set_epoch(1)
    epoch1 = epoch_draws(collator)
    assert epoch0 != epoch1

    fresh = make_collator(tok, seed=3)
    fresh.set_epoch(1)
    assert epoch_draws(fresh) == epoch1
    assert epoch_draws(make_collator(tok, seed=3)) == epoch0
    collator.set_epoch(0)  # restarts the draw counts of the epoch
    assert epoch_draws(collator) == epoch0
    # Another seed draws other lengths
    assert epoch_draws(make_collator(tok, seed=4)) != epoch0
    # Within an epoch, collating a row again draws again
    assert epoch_draws(collator) != epoch0


def test_deterministic_gives_the_same_k_every_call(toy_prepared):
    tok, rows = toy_prepared
    harmful = [row for row in rows if row["rejected_ids"]]

    def draws(collator):
        batch = collator(harmful)
        return batch["harmful_prefix_length"][batch["sequence_kind"] == HARMFUL_PREFIX].tolist()

    collator = make_collator(tok, seed=5, deterministic=True)
    first = draws(collator)
    assert len(set(first)) > 3  # it still varies across rows
    for epoch in range(3):
        collator.set_epoch(epoch)
        assert draws(collator) == first
        assert draws(collator) == first
    assert draws(make_collator(tok, seed=5, deterministic=True)) == first


def test_rto_position_keep_keeps_about_30_percent(toy_prepared):
    tok, rows = toy_prepared
    harmful = [row for row in rows if row["rejected_ids"]]
    collator = make_collator(tok, seed=1, rto_position_keep=0.3)
    rid = refusal_token_id(tok, "Sorry")
    kept = total = 0
    for _ in range(10):
        sequences = unpad(collator(harmful), tok.pad_token_id)
        for row, (_, (ids, labels)) in zip(harmful, zip(sequences[0::2], sequences[1::2])):
            p, n = len(row["prompt_ids"]), len(row["rejected_ids"])
            assert ids == row["prompt_ids"] + row["rejected_ids"]
            assert labels[:p] == [-100] * p
            assert set(labels[p:]) <= {rid, -100}
            assert labels[p:].count(rid) >= 1
            kept += labels[p:].count(rid)
            total += n
    assert total > 4000
    assert 0.27 <= kept / total <= 0.33, kept / total


def test_rto_position_keep_keeps_at_least_one():
    collator = DeRTaCollator(pad_token_id=0, refusal_token_id=9, rto_position_keep=0.01, seed=0)
    for row_index in range(50):
        row = {"row_index": row_index, "prompt_ids": [1, 2], "chosen_ids": [9, 3], "rejected_ids": [4, 5, 6, 7]}
        _, (ids, labels) = unpad(collator([row]), 0)
        assert ids == [1, 2, 4, 5, 6, 7]
        assert labels[:2] == [-100, -100]
        assert labels[2:].count(9) == 1
        assert labels[2:].count(-100) == 3


@pytest.mark.parametrize("sampling", ["uniform", "word_boundary"])
def test_empty_prefix_prob_1_always_gives_k0(bpe_tokenizers, sampling):
    tok = bpe_tokenizers["llama3"]
    example = dict(CONVERSATIONAL_ROWS[0], rejected=[{"role": "assistant", "content": BPE_REJECTED}])
    row = prepare([example], tok, with_word_starts=True)[0]
    collator = make_collator(tok, prefix_sampling=sampling, empty_prefix_prob=1.0)
    assert {draw_k(collator, row) for _ in range(50)} == {0}


# Sub-word tokens of BPE_REJECTED in the assistant turn, and the positions of those that begin a word
BPE_REJECTED_TOKENS = {
    "llama3": ["first", "Ġ,", "Ġbreak", "Ġthe", "Ġside", "Ġwind", "ow", "Ġand", "Ġhide", "Ġa", "Ġtrack", "er"],
    "mistral": ["f", "ir", "st", "▁,", "▁break", "▁the", "▁side", "▁window", "▁and", "▁hide", "▁a", "▁tracker"],
}
BPE_REJECTED_WORD_STARTS = {"llama3": [1, 2, 3, 4, 5, 7, 8, 9, 10], "mistral": [3, 4, 5, 6, 7, 8, 9, 10, 11]}


@pytest.mark.parametrize("fmt", ["llama3", "mistral"])
def test_word_boundary_cuts_only_at_word_starts(bpe_tokenizers, fmt):
    tok = bpe_tokenizers[fmt]
    example = dict(CONVERSATIONAL_ROWS[0], rejected=[{"role": "assistant", "content": BPE_REJECTED}])
    row = prepare([example], tok, with_word_starts=True)[0]
    assert tokens(tok, row["rejected_ids"]) == BPE_REJECTED_TOKENS[fmt]
    assert row["rejected_word_starts"] == BPE_REJECTED_WORD_STARTS[fmt]

    collator = make_collator(tok, prefix_sampling="word_boundary", seed=0)
    ks = set()
    for _ in range(200):
        batch = collator([row])
        (ids, labels), _ = unpad(batch, tok.pad_token_id)
        k = int(batch["harmful_prefix_length"][0])
        ks.add(k)
        p = len(row["prompt_ids"])
        assert ids == row["prompt_ids"] + row["rejected_ids"][:k] + row["chosen_ids"]
        assert labels == [-100] * (p + k) + row["chosen_ids"]
        # The prefix is whole words of the answer: the next character of the answer is a space
        prefix = tok.decode(row["rejected_ids"][:k])
        assert BPE_REJECTED.startswith(prefix) and BPE_REJECTED[len(prefix)] == " "
    # Every word start is drawn, nothing else (no cut inside 'window'/'tracker'/'first', no empty or full prefix)
    assert ks == set(BPE_REJECTED_WORD_STARTS[fmt])


def test_word_boundary_needs_word_starts(llama3_tokenizer):
    row = prepare(CONVERSATIONAL_ROWS, llama3_tokenizer)[0]
    collator = make_collator(llama3_tokenizer, prefix_sampling="word_boundary")
    with pytest.raises(ValueError, match="with_word_starts=True"):
        collator([row])


# --------------------------------------------------------------------------------------------------------------------
# max_length
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("sampling", ["uniform", "word_boundary"])
def test_max_length_caps_k_so_prompt_prefix_and_safe_fit(llama3_tokenizer, sampling):
    tok = llama3_tokenizer
    rows = prepare(CONVERSATIONAL_ROWS, tok, with_word_starts=True)
    P = HARMFUL_PROMPT["llama3_tokenizer", "conversational"]
    S = [*SAFE, "<|eot_id|>"]
    max_length = len(P) + len(S) + 2  # room for 2 harmful tokens before the safe answer
    collator = make_collator(tok, max_length=max_length, prefix_sampling=sampling, seed=0)
    ks = set()
    for _ in range(100):
        batch = collator([rows[0]])
        (a_ids, a_labels), (b_ids, b_labels) = unpad(batch, tok.pad_token_id)
        k = int(batch["harmful_prefix_length"][0])
        ks.add(k)
        assert len(a_ids) <= max_length and len(b_ids) <= max_length
        assert tokens(tok, a_ids) == P + HARMFUL[:k] + S  # the safe answer is never cut for a longer prefix
        assert label_tokens(tok, a_labels) == ["-"] * (len(P) + k) + S
        # RTO fits whole (14 + 6 <= 23)
        assert tokens(tok, b_ids) == P + HARMFUL
        assert label_tokens(tok, b_labels) == ["-"] * len(P) + ["Sorry"] * 6
    if sampling == "uniform":
        assert ks == {0, 1, 2}
    else:  # the word starts of H that leave room for the safe answer
        starts = rows[0]["rejected_word_starts"]
        assert 2 in starts and set(starts) <= {1, 2, 3, 4, 5}
        assert ks == {j for j in starts if j <= 2}


def test_max_length_truncates_rto_and_safe_when_the_prompt_leaves_no_room(llama3_tokenizer):
    tok = llama3_tokenizer
    rows = prepare(CONVERSATIONAL_ROWS, tok)
    P = HARMFUL_PROMPT["llama3_tokenizer", "conversational"]
    max_length = len(P) + 4
    batch = make_collator(tok, max_length=max_length, seed=0)(rows)
    (a_ids, a_labels), (b_ids, b_labels), (c_ids, c_labels) = unpad(batch, tok.pad_token_id)
    assert batch["harmful_prefix_length"].tolist() == [0, 4, 0]
    assert tokens(tok, a_ids) == P + ["Sorry", ",", "i", "can"]
    assert label_tokens(tok, a_labels) == ["-"] * len(P) + ["Sorry", ",", "i", "can"]
    assert tokens(tok, b_ids) == P + ["first", ",", "break", "the"]
    assert label_tokens(tok, b_labels) == ["-"] * len(P) + ["Sorry"] * 4
    P_benign = BENIGN_PROMPT["llama3_tokenizer", "conversational"]  # one token shorter: room for 5
    assert tokens(tok, c_ids) == P_benign + ["sure", ",", "here", "is", "how"]
    assert label_tokens(tok, c_labels) == ["-"] * len(P_benign) + ["sure", ",", "here", "is", "how"]


def test_max_length_prompt_too_long_raises_naming_row_and_prompt(llama3_tokenizer):
    tok = llama3_tokenizer
    row = prepare(CONVERSATIONAL_ROWS, tok)[0]
    collator = make_collator(tok, max_length=len(row["prompt_ids"]))
    with pytest.raises(ValueError, match=r"row 0, field 'prompt'"):
        collator([row])


# --------------------------------------------------------------------------------------------------------------------
# word_start_positions
# --------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt, text, expected_tokens, expected_starts",
    [
        (
            "llama3",
            " " + BPE_REJECTED,
            ["Ġfirst", "Ġ,", "Ġbreak", "Ġthe", "Ġside", "Ġwind", "ow", "Ġand", "Ġhide", "Ġa", "Ġtrack", "er"],
            [1, 2, 3, 4, 5, 7, 8, 9, 10],
        ),
        (
            "mistral",
            " " + BPE_REJECTED,
            ["▁first", "▁,", "▁break", "▁the", "▁side", "▁window", "▁and", "▁hide", "▁a", "▁tracker"],
            [1, 2, 3, 4, 5, 6, 7, 8, 9],
        ),
        (
            "llama3",
            " powders gardening trackers mix",
            ["Ġpowder", "s", "Ġg", "a", "r", "de", "ning", "Ġtrack", "er", "s", "Ġmix"],
            [2, 7, 10],
        ),
        (
            "mistral",
            " powders gardening trackers mix",
            ["▁powder", "s", "▁g", "a", "r", "de", "ning", "▁tracker", "s", "▁mix"],
            [2, 7, 9],
        ),
    ],
)
def test_word_start_positions_bpe(bpe_tokenizers, fmt, text, expected_tokens, expected_starts):
    tok = bpe_tokenizers[fmt]
    ids = tok(text=text, add_special_tokens=False)["input_ids"]
    assert tokens(tok, ids) == expected_tokens
    assert word_start_positions(tok, ids) == expected_starts
    # The same as reading the word marker of each token (position 0 is never a cut)
    marker = "Ġ" if fmt == "llama3" else "▁"
    assert expected_starts == [j for j, t in enumerate(expected_tokens) if j > 0 and t.startswith(marker)]


def test_word_start_positions_after_a_lone_space_token(bpe_tokenizers):
    tok = bpe_tokenizers["llama3"]
    ids = tok(text=" unbreakable", add_special_tokens=False)["input_ids"]
    assert tokens(tok, ids) == ["Ġ", "un", "b", "re", "ak", "a", "b", "le"]
    assert word_start_positions(tok, ids) == [1]  # the word begins after the lone space


@pytest.mark.parametrize("tok_name", TOKENIZERS)
def test_word_start_positions_word_level(request, tok_name):
    tok = request.getfixturevalue(tok_name)
    ids = tok(text="break the side window", add_special_tokens=False)["input_ids"]
    assert tokens(tok, ids) == ["break", "the", "side", "window"]
    assert word_start_positions(tok, ids) == [1, 2, 3]
    assert word_start_positions(tok, ids[:1]) == []
    assert word_start_positions(tok, []) == []


@pytest.mark.parametrize("tok_name", TOKENIZERS)
def test_word_start_positions_word_level_punctuation(request, tok_name):
    tok = request.getfixturevalue(tok_name)
    ids = tok(text="first , break the side window", add_special_tokens=False)["input_ids"]
    assert tokens(tok, ids) == HARMFUL
    assert word_start_positions(tok, ids) == [1, 2, 3, 4, 5]
