"""The one batched generator: n samples mapped back to their prompts, stop strings, effective settings recorded,
train/eval mode restored, token mass (the judges' scores), rows ended early by `row_done`."""

import random

import pytest
import torch
from testing_utils import scripted_llama, token_id
from transformers import GenerationConfig

from hf_safety.generation import default_generation_config, encode_prompt, generate, resolve_generation_config
from hf_safety.toy import build_tokenizer, tiny_model


# Each prompt's last line decides the whole continuation: "safe" -> "S1,S10" -> "Yes" -> eos, "No" -> "Maybe" -> eos,
# "S99" -> eos at once
TABLE = {"safe": "S1,S10", "S1,S10": "Yes", "No": "Maybe", "unsafe": "No"}


def ids(tokenizer, *lines):
    return [token_id(tokenizer, line) for line in lines]


def test_num_return_sequences_are_mapped_back_to_their_prompts(lt):
    model = scripted_llama(lt, TABLE)
    # Different lengths, so the length-sorted batches mix the input order; batch_size=2 splits them
    inputs = [ids(lt, "safe"), ids(lt, "S99", "S99", "S99", "unsafe"), ids(lt, "S99", "S99", "S99", "S99", "S99")]
    inputs.append(ids(lt, "S99", "No"))
    config = GenerationConfig(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=4)
    out = generate(model, lt, inputs, config, batch_size=2, num_return_sequences=3, seed=0)
    expected = ["S1,S10Yes", "NoMaybe", "", "Maybe"]
    assert [[s.text for s in samples] for samples in out.samples] == [[e] * 3 for e in expected]
    for i, samples in enumerate(out.samples):
        assert [(s.prompt_index, s.sample_index) for s in samples] == [(i, 0), (i, 1), (i, 2)]
        assert all(s.finish_reason == "stop" for s in samples)
    assert out.settings["num_return_sequences"] == 3 and out.settings["do_sample"] is True
    assert out.settings["seed"] == 0

    # Sampling really samples: with a flat next-token distribution the 3 samples of a prompt differ
    flat = scripted_llama(lt, {"safe": {"S1,S10": 1.0, "No": 1.0, "Yes": 1.0, "Maybe": 1.0}})
    texts = generate(
        flat,
        lt,
        [ids(lt, "safe")],
        GenerationConfig(do_sample=True, max_new_tokens=1, top_k=0),
        num_return_sequences=8,
        seed=1,
    ).texts()[0]
    assert len(set(texts)) > 1


def test_token_mass_per_sample_and_batching_match_one_by_one(lt):
    model = scripted_llama(lt, {"safe": {"unsafe\n": 30.0, "safe": 28.0}, "unsafe": {"No": 30.0}})
    inputs = [ids(lt, "safe"), ids(lt, "S99", "unsafe"), ids(lt, "safe", "safe", "safe")]
    unsafe_id = token_id(lt, "unsafe\n")
    batched = generate(model, lt, inputs, batch_size=3, token_mass_ids=[unsafe_id], token_mass_steps=1).first()
    single = [
        generate(model, lt, [x], batch_size=1, token_mass_ids=[unsafe_id], token_mass_steps=1).first()[0]
        for x in inputs
    ]
    assert [s.token_ids for s in batched] == [s.token_ids for s in single]
    assert [s.token_mass[0] for s in batched] == pytest.approx([s.token_mass[0] for s in single], rel=1e-5)
    p_unsafe = torch.softmax(torch.tensor([30.0, 28.0] + [0.0] * (len(lt) - 2)), 0)[0].item()
    assert batched[0].token_mass == pytest.approx([p_unsafe], rel=1e-4)
    assert batched[1].token_mass[0] < 1e-6  # after "unsafe" the model says "No"


def test_stop_strings_cut_the_text(lt):
    model = scripted_llama(lt, {"safe": "S1,S10", "S1,S10": "Yes", "Yes": "No"})
    sample = generate(model, lt, [ids(lt, "safe")], stop_strings=["Yes"], batch_size=1).first()[0]
    assert sample.text == "S1,S10" and sample.finish_reason == "stop_string"
    assert sample.token_ids == ids(lt, "S1,S10")
    length = generate(model, lt, [ids(lt, "safe")], default_generation_config(max_new_tokens=2)).first()[0]
    assert length.text == "S1,S10Yes" and length.finish_reason == "length"


def test_effective_settings_from_the_checkpoint_are_recorded_and_run(lt):
    """transformers 5 fills fields the caller left unset from the checkpoint's generation config: a repetition
    penalty set there really runs, and the report says so."""
    # "safe" prefers to repeat itself (30) over "No" (29): a repetition penalty of 1.3 turns 30 into 23
    model = scripted_llama(lt, {"safe": {"safe": 30.0, "No": 29.0}})
    prompt = [ids(lt, "safe")]
    plain = generate(model, lt, prompt, default_generation_config(max_new_tokens=1))
    assert plain.first()[0].text == "safe" and "repetition_penalty" not in plain.settings.get("from_checkpoint", [])

    model.generation_config.repetition_penalty = 1.3
    model.generation_config.temperature = 0.6  # irrelevant while greedy: not recorded
    out = generate(model, lt, prompt, default_generation_config(max_new_tokens=1))
    assert out.first()[0].text == "No"  # the checkpoint's penalty ran
    assert out.settings["repetition_penalty"] == 1.3 and out.settings["from_checkpoint"] == ["repetition_penalty"]
    assert "temperature" not in out.settings and out.settings["do_sample"] is False
    # The same as what transformers runs when called directly with the same config
    direct = model.generate(torch.tensor(prompt), generation_config=default_generation_config(max_new_tokens=1))
    assert direct[0, -1].item() == token_id(lt, "No")
    # An explicit value wins over the checkpoint's, and is not marked as coming from it
    explicit = GenerationConfig(do_sample=False, max_new_tokens=1, repetition_penalty=1.0)
    out = generate(model, lt, prompt, explicit)
    assert out.first()[0].text == "safe" and "from_checkpoint" not in out.settings

    # A checkpoint that turns sampling on (Llama-3-Instruct ships do_sample=True, T=0.6): recorded as such
    model.generation_config.do_sample = True
    config, from_model = resolve_generation_config(model, lt, GenerationConfig(max_new_tokens=1))
    assert config.do_sample is True and config.temperature == 0.6
    assert {"do_sample", "temperature", "repetition_penalty"} <= set(from_model)


def test_model_mode_restored_and_prefill_encoding(llama3_tokenizer):
    model = tiny_model(llama3_tokenizer)
    model.train()
    encoded = encode_prompt(llama3_tokenizer, "how do i cook rice", prefill="sure , first rinse", prefill_tokens=2)
    plain = encode_prompt(llama3_tokenizer, [{"role": "user", "content": "how do i cook rice"}])
    assert encoded.input_ids == plain.input_ids + encoded.forced_ids
    assert llama3_tokenizer.decode(encoded.forced_ids) == "sure ,"
    generate(model, llama3_tokenizer, [encoded.input_ids], default_generation_config(max_new_tokens=2))
    assert model.training
    model.eval()
    generate(model, llama3_tokenizer, [encoded.input_ids], default_generation_config(max_new_tokens=2))
    assert not model.training
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        generate(model, llama3_tokenizer, [encoded.input_ids], batch_size=0)


@pytest.mark.parametrize("batch_size", [1, 3])
def test_row_done_ends_rows_and_the_others_decode_on(batch_size):
    tokenizer = build_tokenizer(["a b c d e f g h"], chat_format="llama3", model="word")
    model = tiny_model(tokenizer, "llama", seed=3, hidden_size=32)
    rng = random.Random(0)
    inputs = [[rng.randrange(5, len(tokenizer)) for _ in range(n)] for n in (5, 2, 7, 3, 4, 6)]
    config = default_generation_config(max_new_tokens=6)
    plain = generate(model, tokenizer, inputs, config, batch_size=batch_size).first()
    first = {s.token_ids[0] for s in plain if s.token_ids}
    chosen = sorted(first)[: max(1, len(first) // 2)]  # rows whose first token is one of these end at once

    asked = []

    def row_done(ids):
        asked.append(list(ids))
        return len(ids) == 1 and ids[0] in chosen

    ended = generate(model, tokenizer, inputs, config, batch_size=batch_size, row_done=row_done).first()
    assert any(s.finish_reason == "done" for s in ended) and any(s.finish_reason != "done" for s in ended)
    for e, p in zip(ended, plain):
        if p.token_ids and p.token_ids[0] in chosen:
            assert (e.token_ids, e.finish_reason) == (p.token_ids[:1], "done")
        else:  # decoded on from the same cache: the plain continuation
            assert (e.token_ids, e.text, e.finish_reason) == (p.token_ids, p.text, p.finish_reason)
    assert min(map(len, asked)) == 1 and max(map(len, asked)) > 1  # asked after every step of the rows going on


@pytest.mark.parametrize("batch_size", [1, 4])
@pytest.mark.parametrize("max_new_tokens", [1, 2, 6])
def test_row_done_first_step_without_generate_equals_generate(monkeypatch, batch_size, max_new_tokens):
    """Under plain greedy decoding, `row_done`'s first step is one forward pass and only the rows it leaves open go
    through transformers' `generate`: the same ids, finish reasons, row_done lengths and token masses as sending every
    row through `generate`, with and without a shared prefix; a row ended later is cut where `row_done` ended it."""
    from hf_safety import generation
    from hf_safety.prefix_cache import SharedPrefix

    tokenizer = build_tokenizer([" ".join(f"w{i}" for i in range(40))], chat_format="llama3", model="word")
    model = tiny_model(tokenizer, "llama", seed=4, hidden_size=32)
    rng = random.Random(2)
    head = [rng.randrange(5, len(tokenizer)) for _ in range(6)]
    inputs = [head + [rng.randrange(5, len(tokenizer)) for _ in range(n)] for n in (5, 2, 7, 3, 4, 6, 1)]
    config = default_generation_config(max_new_tokens=max_new_tokens)
    plain = generate(model, tokenizer, inputs, config).first()
    firsts = sorted({s.token_ids[0] for s in plain if s.token_ids})
    settles = set(firsts[::2])  # about half the rows end at their first token; the others at their third

    def row_done(ids):
        return (len(ids) == 1 and ids[0] in settles) or len(ids) == 3

    mass_ids = list(range(5, 15))
    order = sorted(range(len(inputs)), key=lambda i: -len(inputs[i]))  # the generator's batches: longest first
    batches = [order[k : k + batch_size] for k in range(0, len(order), batch_size)]
    stops = set(generation.stop_token_ids(model, tokenizer))

    def opens(i):  # a row that goes on past its first token
        first = plain[i].token_ids[0] if plain[i].token_ids else next(iter(stops))
        return max_new_tokens > 1 and first not in stops and first not in settles

    assert any(map(opens, range(len(inputs)))) == (max_new_tokens > 1)  # open rows, and rows settled at once
    assert any(p.token_ids and p.token_ids[0] in settles for p in plain)
    original, calls = generation._generate_rows, []

    def recording(model, ids, *args, **kwargs):
        calls.append(ids.shape[0])
        return original(model, ids, *args, **kwargs)

    monkeypatch.setattr(generation, "_generate_rows", recording)
    runs = {}
    for route in ("first step", "generate"):
        if route == "generate":
            monkeypatch.setattr(generation, "_plain_greedy", lambda config: False)
        for prefix in (None, SharedPrefix.build(model, head)):
            calls.clear()
            out = generate(
                model, tokenizer, inputs, config, batch_size=batch_size, row_done=row_done, shared_prefix=prefix,
                token_mass_ids=mass_ids, token_mass_steps=4,
            ).first()  # fmt: skip
            runs[route, prefix is None] = out, list(calls)
    for no_prefix in (True, False):
        fast, fast_calls = runs["first step", no_prefix]
        slow, slow_calls = runs["generate", no_prefix]
        for f, s, p in zip(fast, slow, plain):
            assert (f.token_ids, f.text, f.finish_reason) == (s.token_ids, s.text, s.finish_reason)
            assert f.token_mass == pytest.approx(s.token_mass, abs=1e-6)
            expected = 1 if p.token_ids and p.token_ids[0] in settles else 3
            if max_new_tokens >= expected and len(p.token_ids) >= expected:
                assert (f.token_ids, f.finish_reason) == (p.token_ids[:expected], "done")
        # transformers' generate runs only for a batch's open rows, and not at all for a batch with none
        assert fast_calls == [n for n in (sum(map(opens, b)) for b in batches) if n]
        assert slow_calls == [len(b) for b in batches]
