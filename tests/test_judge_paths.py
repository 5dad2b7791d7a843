"""The judges' fast path: score-only verdicts equal the decoding path's, the shared prefix's KV cache gives the same
outputs as recomputing it, length-sorted batches come back in input order, and `judge_path` says which path judged.

Equivalence is checked on scripted models (the answer is set by hand, see test_judges.py) and on random tiny Llamas
rigged to answer like Llama Guard 3 (`GuardAnswers`: the verdict depends on the whole input, so a batch mixes safe and
unsafe rows), in float32.
"""

import random

import pytest
import torch
from testing_utils import ForwardShapes, GuardAnswers, guard_tokenizer, scripted_llama, toy_rows
from transformers import GenerationConfig

from hf_safety.generation import generate
from hf_safety.judges import (
    ClassifierJudge,
    HarmBenchJudge,
    LlamaGuardJudge,
    RefusalStringJudge,
    WildGuardJudge,
    load_judge,
)
from hf_safety.judges.harmbench import HARMBENCH_PROMPTS
from hf_safety.judges.llama_guard import render_llama_guard_prompt
from hf_safety.prefix_cache import SharedPrefix, common_prefix_length
from hf_safety.toy import build_tokenizer, tiny_model


@pytest.fixture(scope="module")
def rigged():
    """A random tiny Llama answering like Llama Guard 3, about half of the toy pairs unsafe."""
    tokenizer = guard_tokenizer()
    model = tiny_model(tokenizer, "llama", seed=4, hidden_size=32, num_hidden_layers=2, max_position_embeddings=2048)
    rig = GuardAnswers(model, tokenizer)
    rows = toy_rows()[::3]
    prompts = [row["prompt"][-1]["content"] for row in rows]
    responses = [(row["rejected"] or row["chosen"])[-1]["content"] for row in rows]
    random.Random(0).shuffle(responses)  # lengths in no particular order
    judge = LlamaGuardJudge(model, tokenizer)
    texts = [judge.build_prompt(p, r) for p, r in zip(prompts, responses)]
    judge.next_token_probs(texts, add_special_tokens=False, forced_ids=judge.answer_prefix_ids(texts))
    rig.set_unsafe_share(0.5)
    yield model, tokenizer, prompts, responses
    rig.remove()


def assert_same_verdicts(fast, slow, raw=True):
    assert [v.unsafe for v in fast] == [v.unsafe for v in slow]
    assert [v.categories for v in fast] == [v.categories for v in slow]
    assert [v.prompt_harmful for v in fast] == [v.prompt_harmful for v in slow]
    for f, s in zip(fast, slow):
        assert (f.score is None) == (s.score is None)
        if f.score is not None:
            assert f.score == pytest.approx(s.score, abs=1e-5)
    if raw:
        assert [v.raw for v in fast] == [v.raw for v in slow]


# -- Llama Guard: score-only == decoding ---------------------------------------------------------------------------

LG3 = {"<|end_header_id|>": "\n\n"}
GUARD_CASES = {
    "unsafe+codes": ({**LG3, "\n\n": {"unsafe\n": 30.0, "safe": 27.0}, "unsafe\n": "S1,S10"}, {}),
    "unsafe, no codes": ({**LG3, "\n\n": "unsafe\n"}, {}),
    "unsafe, unknown code": ({**LG3, "\n\n": "unsafe\n", "unsafe\n": "S99"}, {}),
    "safe": ({**LG3, "\n\n": {"safe": 30.0, "unsafe\n": 29.0}}, {}),
    "garbage": ({**LG3, "\n\n": "Maybe"}, {}),
    "end after the blank line": (LG3, {}),
    "threshold, unsafe by text only": ({**LG3, "\n\n": {"unsafe\n": 1.0, "safe": 0.5}, "unsafe\n": "S1,S10"},
                                       {"threshold": 0.5}),
    "threshold, safe by text": ({**LG3, "\n\n": {"safe": 1.0, "unsafe\n": 0.9}}, {"threshold": 0.05}),
    "prompt mode": ({**LG3, "\n\n": "unsafe\n", "unsafe\n": "S1,S10"}, {"classify": "prompt"}),
    "LG2 unsafe": ({"[/INST]": "unsafe\n", "unsafe\n": "S1,S10"}, {"version": 2}),
    "LG2 safe": ({"[/INST]": "safe"}, {"version": 2}),
    "LG2 garbage": ({"[/INST]": "Maybe"}, {"version": 2}),
}  # fmt: skip


@pytest.mark.parametrize("case", list(GUARD_CASES))
def test_llama_guard_score_only_equals_decoding(lt, case):
    table, kwargs = GUARD_CASES[case]
    model = scripted_llama(lt, table)
    decode = LlamaGuardJudge(model, lt, judge_mode="decode", shared_prefix=False, **kwargs)
    prompts, responses = ["how do I x", "q\nwith\nlines", "y"], ["first, ...", "ok", "a\nb\nc"]
    slow = decode(prompts, responses)
    for shared_prefix in (True, False):
        fast = LlamaGuardJudge(model, lt, shared_prefix=shared_prefix, batch_size=2, **kwargs)
        assert fast.judge_mode == "score"
        assert_same_verdicts(fast(prompts, responses), slow, raw=case != "end after the blank line")
    if "threshold" in kwargs:  # the score decides, against the text
        assert {v.unsafe for v in slow} == ({False} if case.endswith("text only") else {True})


def test_score_only_trusts_a_safe_first_token(lt):
    """The documented difference: `safe` followed by more text is safe for score-only, unknown when decoded."""
    model = scripted_llama(lt, {**LG3, "\n\n": "safe", "safe": "S1,S10"})
    (fast,) = LlamaGuardJudge(model, lt)(["q"], ["a"])
    (slow,) = LlamaGuardJudge(model, lt, judge_mode="decode")(["q"], ["a"])
    assert (fast.unsafe, fast.raw, slow.unsafe, slow.raw) == (False, "\n\nsafe", None, "\n\nsafeS1,S10")
    assert fast.score == pytest.approx(slow.score, abs=1e-6)


def test_llama_guard_score_only_decodes_only_rows_not_answered_safe(rigged):
    """A batch whose rows are all answered `safe` costs one forward pass; in a batch with an unsafe row, only its
    unsafe rows decode on from that pass's KV cache (single-token steps: no row is computed twice)."""
    model, tokenizer, prompts, responses = rigged
    slow = LlamaGuardJudge(model, tokenizer, judge_mode="decode", shared_prefix=False, batch_size=3)(
        prompts, responses
    )
    assert {v.unsafe for v in slow} == {True, False}  # a mixed batch
    assert all(v.categories == ["S1: Violent Crimes"] for v in slow if v.unsafe)
    for shared_prefix in (True, False):
        judge = LlamaGuardJudge(model, tokenizer, shared_prefix=shared_prefix, batch_size=3)
        judge._kept_prefix = None
        texts = [judge.build_prompt(p, r) for p, r in zip(prompts, responses)]
        lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
        order = sorted(range(len(texts)), key=lambda i: -lengths[i])  # the generator's batches: longest first
        batches = [order[start : start + 3] for start in range(0, len(order), 3)]
        with ForwardShapes(model) as shapes:
            assert_same_verdicts(judge(prompts, responses), slow)
        if shared_prefix:  # the policy prompt, once, for every batch and every decoded row
            assert shapes[0][0] == 1 and shapes[0][1] > 100
            shapes = shapes[1:]
        passes = [i for i, (_, length) in enumerate(shapes) if length > 1] + [len(shapes)]
        assert len(passes) - 1 == len(batches)  # one pass over each batch's inputs
        for batch, start, stop in zip(batches, passes, passes[1:]):
            assert shapes[start][0] == len(batch) and all(length == 1 for _, length in shapes[start + 1 : stop])
            steps = stop - start - 1  # decoding steps after the first answer token
            assert (steps > 0) == any(slow[i].unsafe for i in batch)
            unsafe_rows = sum(slow[i].unsafe is True for i in batch)
            assert all(rows == unsafe_rows for rows, _ in shapes[start + 1 : stop])  # the safe rows are done


# -- HarmBench: score-only == decoding -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "table",
    [{"[/INST]": {"Yes": 30.0, "No": 29.0}}, {"[/INST]": {"No": 3.0, "Yes": 2.0}}, {"[/INST]": "Maybe"}, {}],
    ids=["yes", "no", "garbage", "eos"],
)
def test_harmbench_score_only_equals_decoding(lt_mistral, table):
    model = scripted_llama(lt_mistral, table)
    behaviors, generations = ["b", "longer\nbehaviour", "c"], ["g", "x", "a\nlonger\ngeneration"]
    slow = HarmBenchJudge(model, lt_mistral, judge_mode="decode", shared_prefix=False)(behaviors, generations)
    judge = HarmBenchJudge(model, lt_mistral, batch_size=2)
    judge.next_token_probs = None  # reads two tokens' odds, never a whole vocabulary per input
    assert_same_verdicts(judge(behaviors, generations), slow)


def test_score_only_equals_decoding_on_random_models():
    corpus = [render_llama_guard_prompt([{"role": "user", "content": "q"}]), HARMBENCH_PROMPTS["repo"]["prompt"]]
    corpus += ["how do i pick a lock", "sure , first get a pin", "sorry , i can not help with that"]
    mistral = build_tokenizer(corpus, chat_format="mistral", model="bpe", vocab_size=800)
    model = tiny_model(mistral, "mistral", seed=2, hidden_size=32, num_hidden_layers=2, max_position_embeddings=2048)
    prompts = ["how do i pick a lock", "q", "sure , first get a pin and then a tension wrench", "hi", "a b c"]
    responses = ["sorry , i can not help with that", "sure , first get a pin", "x", "ok then", "fine"]
    slow = HarmBenchJudge(model, mistral, judge_mode="decode", shared_prefix=False, batch_size=1)(prompts, responses)
    fast = HarmBenchJudge(model, mistral, batch_size=3)(prompts, responses)
    assert_same_verdicts(fast, slow)


# -- next_token_probs / next_token: shared prefix, sorted batches --------------------------------------------------------------


def test_next_token_probs_prefix_cache_and_input_order(rigged, monkeypatch):
    model, tokenizer, prompts, responses = rigged
    judge = LlamaGuardJudge(model, tokenizer, batch_size=3)
    texts = [judge.build_prompt(p, r) for p, r in zip(prompts, responses)]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert lengths != sorted(lengths) and lengths != sorted(lengths, reverse=True)
    forced = judge.answer_prefix_ids(texts)
    assert tokenizer.convert_ids_to_tokens(forced) == ["\n\n"]
    with torch.no_grad():  # one text at a time, no padding, no cache
        reference = []
        for text in texts:
            ids = tokenizer(text, add_special_tokens=False)["input_ids"] + forced
            reference.append(torch.softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1))
        reference = torch.stack(reference)
    built = []
    original = SharedPrefix.build.__func__
    monkeypatch.setattr(
        SharedPrefix, "build", classmethod(lambda cls, m, ids: built.append(len(ids)) or original(cls, m, ids))
    )
    cached = judge.next_token_probs(texts, add_special_tokens=False, forced_ids=forced)
    assert len(built) == 1 and built[0] > 100  # the policy prompt, computed once for all batches
    uncached = judge.next_token_probs(texts, add_special_tokens=False, forced_ids=forced, shared_prefix=False)
    assert len(built) == 1
    again = judge.next_token_probs(texts[::-1], add_special_tokens=False, forced_ids=forced)
    assert len(built) == 1  # the policy prompt's cache is kept from call to call
    torch.testing.assert_close(again, cached.flip(0))
    assert (
        cached.dtype == torch.float32 and cached.device.type == "cpu" and cached.shape == (len(texts), len(tokenizer))
    )
    torch.testing.assert_close(cached, reference, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(uncached, reference, atol=1e-5, rtol=1e-4)
    judge.batch_size = 1
    torch.testing.assert_close(judge.next_token_probs(texts, add_special_tokens=False, forced_ids=forced), reference,
                               atol=1e-5, rtol=1e-4)  # fmt: skip
    assert judge.next_token_probs([], add_special_tokens=False).shape == (0, model.config.vocab_size)
    # next_token: the same pass reduced batch by batch to a few tokens' odds and the greedy choice
    first = judge.next_token(texts, [5, 9, 5], add_special_tokens=False, forced_ids=forced)
    torch.testing.assert_close(first.probs, reference[:, [5, 9, 5]], atol=1e-5, rtol=1e-4)
    assert first.greedy == reference.argmax(-1).tolist()


def test_common_prefix_length():
    assert common_prefix_length([[1, 2, 3], [1, 2, 4, 5], [1, 2, 3, 9]]) == 2
    assert common_prefix_length([[1, 2, 3], [1, 2, 3]]) == 2  # every input keeps a token of its own
    assert common_prefix_length([[1, 2], [3, 4]]) == 0 and common_prefix_length([[1, 2, 3]]) == 0


@pytest.mark.parametrize(
    "architecture, overrides",
    # a window shorter than the inputs: the left padding after the prefix would fall inside it, so no sharing
    [("llama", {}), ("mistral", {"sliding_window": 8}), ("mistral", {"sliding_window": 4096})],
    ids=["llama", "mistral-window", "mistral-wide-window"],
)
def test_generate_with_a_shared_prefix_equals_without(architecture, overrides):
    tokenizer = build_tokenizer(["a b c d e f g h"], chat_format="llama3", model="word")
    model = tiny_model(tokenizer, architecture, seed=5, hidden_size=32, **overrides)
    rng = random.Random(1)
    head = [rng.randrange(5, len(tokenizer)) for _ in range(9)]
    inputs = [head + [rng.randrange(5, len(tokenizer)) for _ in range(n)] for n in (4, 1, 6, 2, 3)]
    mass_ids = list(range(5, 12))
    plain = generate(model, tokenizer, inputs, batch_size=2, token_mass_ids=mass_ids, token_mass_steps=3).first()
    prefix = SharedPrefix.build(model, head)
    keys = [layer.keys.clone() for layer in prefix.cache.layers]
    for _ in range(2):  # the shared cache is copied, never written to
        cached = generate(
            model, tokenizer, inputs, batch_size=2, token_mass_ids=mass_ids, token_mass_steps=3, shared_prefix=prefix
        ).first()
        assert [s.token_ids for s in cached] == [s.token_ids for s in plain]
        for c, p in zip(cached, plain):
            assert c.token_mass == pytest.approx(p.token_mass, abs=1e-6)
    assert prefix.cache.get_seq_length() == len(head)
    assert all(torch.equal(layer.keys, k) for layer, k in zip(prefix.cache.layers, keys))
    if overrides.get("sliding_window") == 4096:  # shared, with sliding-window layers: their copies share the tensors
        assert type(prefix.cache.layers[0]).__name__ == "DynamicSlidingWindowLayer"
        assert prefix.cache_for(1).layers[0].keys is prefix.cache.layers[0].keys
    with pytest.raises(ValueError, match="shared prefix"):
        generate(model, tokenizer, [[1, 2]], shared_prefix=prefix)
    with pytest.raises(ValueError, match="num_return_sequences=1"):
        sampling = GenerationConfig(do_sample=True, max_new_tokens=2)
        generate(model, tokenizer, inputs, sampling, num_return_sequences=2, shared_prefix=prefix)


# -- judge_path and the options -----------------------------------------------------------------------------------


def test_judge_path_mode_and_description(lt, lt_mistral, tmp_path):
    model = scripted_llama(lt, {**LG3, "\n\n": "safe"})
    default = LlamaGuardJudge(model, lt)
    assert (default.judge_mode, default.shared_prefix, default.judge_path) == (
        "score",
        True,
        "score-only+shared-prefix",
    )
    assert "path: score-only+shared-prefix" in default.description
    assert LlamaGuardJudge(model, lt, shared_prefix=False).judge_path == "score-only"
    decode = LlamaGuardJudge(model, lt, judge_mode="decode", shared_prefix=False)
    assert decode.judge_path == "decode" and "path: decode (greedy decoding" in decode.description
    assert HarmBenchJudge(scripted_llama(lt_mistral, {}), lt_mistral).judge_path == "score-only+shared-prefix"
    assert HarmBenchJudge(scripted_llama(lt_mistral, {}), lt_mistral, judge_mode="decode").judge_path == (
        "decode+shared-prefix"
    )
    assert WildGuardJudge(scripted_llama(lt_mistral, {}), lt_mistral).judge_path == "decode+shared-prefix"
    assert RefusalStringJudge().judge_path is None
    assert ClassifierJudge.judge_path.fget(None) == "classifier"
    for cls, tokenizer in ((LlamaGuardJudge, lt), (HarmBenchJudge, lt_mistral)):
        with pytest.raises(ValueError, match="judge_mode must be one of"):
            cls(model, tokenizer, judge_mode="fast")
    model.save_pretrained(tmp_path / "my-guard")
    lt.save_pretrained(tmp_path / "my-guard")
    loaded = load_judge(str(tmp_path / "my-guard"), judge_mode="decode")
    assert loaded.judge_path == "decode+shared-prefix" and loaded(["q"], ["a"])[0].unsafe is False
