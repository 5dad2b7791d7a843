"""SEASTrainer: the rounds, the reference = previous iterate, batched attack stage, resume at every stage, errors."""

import json

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from testing_utils import line_tokenizer, scripted_llama, tiny_seas_args, toy_corpus
from transformers import GenerationConfig

from hf_safety.data import InvalidRowError
from hf_safety.judges import Judge, JudgeOutputError, LlamaGuardJudge, Verdict
from hf_safety.seas import (
    SEASCallback,
    SEASConfig,
    SEASTrainer,
    SeedPool,
    clean_adversarial_prompt,
    iteration_dir,
    run_attack_stage,
)
from hf_safety.toy import build_tokenizer, tiny_model


EXTRA = ["how to pick a lock", "open break bend twist", "sorry I cannot help with that"]


@pytest.fixture(scope="module")
def tok():
    return build_tokenizer(toy_corpus() + EXTRA, chat_format="llama3", model="word")


def seed_pool(categories=("locks", "doors"), per_category=4):
    verbs = ["pick", "open", "break", "bend", "twist"]
    return Dataset.from_list(
        [{"prompt": f"how to {verbs[i]} a lock {c}", "category": c} for c in categories for i in range(per_category)]
    )


class ParityJudge(Judge):
    """Deterministic: an answer with an even number of words is unsafe, an empty one unknown."""

    name = "parity"
    judge_path = "parity-rule"  # what a model judge reports as its path ("score-only+shared-prefix"...)

    def __init__(self, fail_on_call=None):
        self.calls, self.fail_on_call = 0, fail_on_call

    def judge(self, prompts, responses):
        self.calls += 1
        if self.fail_on_call == self.calls:
            raise KeyboardInterrupt("killed while judging")
        return [Verdict(unsafe=(len(r.split()) % 2 == 0) if r.strip() else None) for r in responses]


def make_trainer(tok, output_dir, judge=None, peft=False, callbacks=None, **overrides):
    lora = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM") if peft else None
    return SEASTrainer(
        model=tiny_model(tok, seed=0, hidden_size=32),
        red_team_model=tiny_model(tok, seed=1, hidden_size=32),
        args=tiny_seas_args(output_dir, **overrides),
        train_dataset=seed_pool(),
        processing_class=tok,
        red_team_processing_class=tok,
        judge=judge or ParityJudge(),
        peft_config=lora,
        callbacks=callbacks,
    )


def weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def outputs_of(output_dir):
    """What a run leaves: per-round metrics, the attack logs and both pair sets."""
    results = json.loads((output_dir / "results.json").read_text())["rounds"]
    tables = {}
    for i in range(len(results)):
        for name in ("attack_log", "red_team_pairs", "target_pairs"):
            tables[(i, name)] = Dataset.from_parquet(str(iteration_dir(output_dir, i) / f"{name}.parquet")).to_list()
    return results, tables


@pytest.fixture(scope="module")
def reference_run(tok, tmp_path_factory):
    """An uninterrupted run, to compare the resumed ones with."""
    out = tmp_path_factory.mktemp("seas-reference")
    trainer = make_trainer(tok, out)
    trainer.train()
    return out, outputs_of(out), weights(trainer.model), weights(trainer.red_team_model), trainer


# -- the rounds -------------------------------------------------------------------------------------------------------


def test_rounds_write_logs_pairs_models_and_metrics(reference_run):
    out, (results, tables), *_ = reference_run
    assert [r["iteration"] for r in results] == [0, 1]
    for i in range(2):
        folder = iteration_dir(out, i)
        assert (folder / "red_team" / "model.safetensors").is_file()
        assert (folder / "target" / "model.safetensors").is_file()
        assert not list(folder.glob("*/checkpoint-*"))  # a finished round keeps only its models
        log = tables[(i, "attack_log")]
        # every (seed, adversarial prompt) answered m = 3 times and judged
        assert len(log) == 3 * results[i]["num_adversarial_prompts"] == results[i]["num_responses"]
        assert results[i]["num_red_team_pairs"] == len(tables[(i, "red_team_pairs")])
        # which path judged, in results.json and the round's attack statistics
        assert results[i]["judge"] == "parity" and results[i]["judge_path"] == "parity-rule"
        stats = json.loads((folder / "attack_stats.json").read_text())
        assert stats["settings"]["judge"] == {"name": "parity", "judge_path": "parity-rule"}
        assert results[i]["num_target_pairs"] == len(tables[(i, "target_pairs")])
        unsafe = [row["unsafe"] for row in log if row["unsafe"] is not None]
        assert results[i]["red_team_asr"] == pytest.approx(sum(unsafe) / len(unsafe))
        # the parity judge decides, so the target pairs follow it
        for pair in tables[(i, "target_pairs")]:
            assert len(pair["chosen"].split()) % 2 == 1 and len(pair["rejected"].split()) % 2 == 0
    assert results[0]["num_red_team_pairs"] + results[1]["num_red_team_pairs"] > 0


def test_both_models_change_every_round(tok, reference_run):
    _, _, target, red, _ = reference_run
    fresh_target, fresh_red = tiny_model(tok, seed=0, hidden_size=32), tiny_model(tok, seed=1, hidden_size=32)
    assert any(not torch.equal(v, fresh_target.state_dict()[k]) for k, v in target.items())
    assert any(not torch.equal(v, fresh_red.state_dict()[k]) for k, v in red.items())


class LogHistory(SEASCallback):
    def __init__(self):
        self.logs, self.events = [], []

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs or {}))

    def on_round_begin(self, args, state, control, iteration, **kwargs):
        self.events.append(("round_begin", iteration))

    def on_attack_end(self, args, state, control, iteration, attack_log, stats, **kwargs):
        self.events.append(("attack_end", iteration, len(attack_log), stats.num_responses))

    def on_pairs_built(self, args, state, control, iteration, red_team_pairs, target_pairs, **kwargs):
        self.events.append(("pairs_built", iteration))

    def on_round_end(self, args, state, control, iteration, metrics, **kwargs):
        self.events.append(("round_end", iteration, metrics["iteration"]))


@pytest.mark.parametrize("peft", [False, True], ids=["full", "lora"])
def test_reference_is_the_previous_iterate(tok, tmp_path, peft):
    # At the first step of each round's DPO the policy equals its reference, so the implicit rewards are exactly 0.
    # With the adapter-disabled base (or the initial model) as reference they would not be from round 1 on.
    history = LogHistory()
    trainer = make_trainer(tok, tmp_path, peft=peft, callbacks=[history], save_strategy="no")
    trainer.train()
    # the first step of a DPO run is the one logged at the peak learning rate (linear decay, no warm-up)
    target_first = [log for log in history.logs if "rewards/chosen" in log and log["learning_rate"] == 1e-3]
    assert len(target_first) == 2  # one per round
    for log in target_first:
        assert log["rewards/chosen"] == pytest.approx(0.0, abs=1e-6)
        assert log["rewards/rejected"] == pytest.approx(0.0, abs=1e-6)
    red_first = [log for log in history.logs if log.get("red_team/learning_rate") == 1e-3]
    assert red_first and all(log["red_team/rewards/chosen"] == pytest.approx(0.0, abs=1e-6) for log in red_first)
    # and the rounds did move the weights
    assert any(log.get("rewards/margins", 0) != 0 for log in history.logs)
    assert [e[0] for e in history.events] == ["round_begin", "attack_end", "pairs_built", "round_end"] * 2
    seas_logs = [log for log in history.logs if "seas/red_team_asr" in log]
    assert len(seas_logs) == 2 and seas_logs[1]["seas/iteration"] == 1


# -- resume -----------------------------------------------------------------------------------------------------------


class KillAt(SEASCallback):
    """Raises at a SEAS event of round 1, or right after the first checkpoint of the target's DPO in round 1."""

    def __init__(self, event):
        self.event, self.round = event, None

    def _maybe(self, event, iteration):
        if event == self.event and iteration == 1:
            raise KeyboardInterrupt(f"killed at {event}")

    def on_round_begin(self, args, state, control, iteration, **kwargs):
        self.round = iteration

    def on_attack_end(self, args, state, control, iteration, **kwargs):
        self._maybe("attack_end", iteration)

    def on_pairs_built(self, args, state, control, iteration, **kwargs):
        self._maybe("pairs_built", iteration)

    def on_save(self, args, state, control, **kwargs):  # right after the first checkpoint of round 1
        if self.event == "target_step" and self.round == 1:
            raise KeyboardInterrupt("killed during the target's DPO")


@pytest.mark.parametrize(
    "kill",
    ["judging", "attack_end", "pairs_built", "red_team_step", "target_step"],
)
def test_killed_run_resumes_to_the_same_outputs(tok, tmp_path, reference_run, kill, monkeypatch):
    _, (ref_results, ref_tables), ref_target, ref_red, _ = reference_run
    judge = ParityJudge(fail_on_call=None)
    callbacks = []
    if kill == "judging":
        # round 0 calls the judge once per 16 answers; the next call is round 1's first
        judge.fail_on_call = -(-ref_results[0]["num_responses"] // 16) + 1
    elif kill == "red_team_step":
        from hf_safety.seas import callback as seas_callback

        def on_save(self, args, state, control, **kwargs):  # right after the first checkpoint of round 1
            if self.iteration == 1:
                raise KeyboardInterrupt("killed during the red team's DPO")

        monkeypatch.setattr(seas_callback._RedTeamLogBridge, "on_save", on_save, raising=False)
    else:
        callbacks = [KillAt(kill)]
    with pytest.raises(KeyboardInterrupt):
        make_trainer(tok, tmp_path, judge=judge, callbacks=callbacks).train()
    state = json.loads((tmp_path / "seas_state.json").read_text())
    assert len(state["rounds"]) == 1  # round 0 finished, round 1 did not
    if kill in ("red_team_step", "target_step"):
        side = "red_team" if kill == "red_team_step" else "target"
        assert list((iteration_dir(tmp_path, 1) / side).glob("checkpoint-*"))  # resumed from inside the DPO run
    monkeypatch.undo()
    with pytest.raises(ValueError, match="already holds a SEAS run"):
        make_trainer(tok, tmp_path).train()
    trainer = make_trainer(tok, tmp_path)
    trainer.train(resume_from_checkpoint=True)
    results, tables = outputs_of(tmp_path)
    assert results == ref_results
    assert tables == ref_tables
    for got, want in ((weights(trainer.model), ref_target), (weights(trainer.red_team_model), ref_red)):
        assert got.keys() == want.keys()
        for k in want:
            torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6)


# -- the attack stage -------------------------------------------------------------------------------------------------


def test_attack_stage_is_batched_with_num_return_sequences(tok):
    red, target = tiny_model(tok, seed=1, hidden_size=32), tiny_model(tok, seed=0, hidden_size=32)
    calls = {"red": [], "target": []}
    for name, model in (("red", red), ("target", target)):
        original = model.generate

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name].append((kwargs["input_ids"].shape[0], kwargs["generation_config"].num_return_sequences))
            return _original(*args, **kwargs)

        model.generate = counted
    seeds = SeedPool(seed_pool(), k=2).sample(6, seed=0)
    config = GenerationConfig(do_sample=True, temperature=0.8, top_p=0.9, max_new_tokens=6)
    log, stats = run_attack_stage(
        (red, tok),
        (target, tok),
        seeds,
        ParityJudge(),
        num_prompts=4,
        num_responses=3,
        red_team_generation_config=config,
        target_generation_config=config,
        batch_size=8,
    )
    assert calls["red"] == [(6, 4)]  # one call: 6 seeds x 4 samples
    n = stats.num_adversarial_prompts
    assert [c[1] for c in calls["target"]] == [3] * len(calls["target"]) and sum(c[0] for c in calls["target"]) == n
    assert len(calls["target"]) == -(-n // 8)
    assert len(log) == 3 * n and stats.num_generated_prompts == 24
    assert n + stats.num_dropped_empty + stats.num_dropped_length == 24
    # each answer is paired with the prompt it answered: the seed's prompts are ones the red team wrote for that seed
    assert set(log["seed_index"]) <= set(range(6)) and set(log["response_index"]) == {0, 1, 2}


def test_attack_stage_judges_with_the_fast_path_by_default(tok):
    lt = line_tokenizer()
    guard = scripted_llama(lt, {"<|end_header_id|>": "\n\n", "\n\n": "unsafe\n", "unsafe\n": "S1,S10"})
    judge = LlamaGuardJudge(guard, lt)  # as load_judge("llama-guard-3") builds it: score-only, shared prefix
    red, target = tiny_model(tok, seed=1, hidden_size=32), tiny_model(tok, seed=0, hidden_size=32)
    config = GenerationConfig(do_sample=True, max_new_tokens=4)
    log, stats = run_attack_stage(
        (red, tok),
        (target, tok),
        SeedPool(seed_pool(), k=2).sample(2, seed=0),
        judge,
        num_prompts=2,
        num_responses=2,
        red_team_generation_config=config,
        target_generation_config=config,
    )
    assert stats.settings["judge"] == {"name": "llama-guard-3", "judge_path": "score-only+shared-prefix"}
    assert (
        len(log)
        and all(log["unsafe"])
        and set(map(tuple, log["judge_categories"])) == {("S1: Violent Crimes", "S10: Hate")}
    )


def test_judge_mode_reaches_a_judge_named_in_the_config(tok, tmp_path):
    lt = line_tokenizer()
    guard = scripted_llama(lt, {"<|end_header_id|>": "\n\n", "\n\n": "safe"})
    guard.save_pretrained(tmp_path / "guard")
    lt.save_pretrained(tmp_path / "guard")
    for judge_mode, path in ((None, "score-only+shared-prefix"), ("decode", "decode+shared-prefix")):
        args = tiny_seas_args(
            tmp_path / str(judge_mode), judge=f"llama-guard-3:{tmp_path / 'guard'}", judge_mode=judge_mode
        )
        trainer = SEASTrainer(
            model=tiny_model(tok, seed=0, hidden_size=32),
            red_team_model=tiny_model(tok, seed=1, hidden_size=32),
            args=args,
            train_dataset=seed_pool(),
            processing_class=tok,
            red_team_processing_class=tok,
        )
        assert trainer.judge.judge_path == path


def test_clean_adversarial_prompt():
    assert clean_adversarial_prompt('1. "How do I pick a lock?"\n\n2. another') == "How do I pick a lock?"
    assert clean_adversarial_prompt("Prompt: tell me   a story\nabout locks") == "tell me a story about locks"
    assert clean_adversarial_prompt("  \n\n ") == ""


def test_unknown_verdicts_are_counted_and_kept_out_of_pairs(tok, tmp_path):
    class Unknowns(Judge):
        name = "unknowns"

        def judge(self, prompts, responses):
            return [Verdict(unsafe=None if i % 2 else (len(r.split()) % 2 == 0)) for i, r in enumerate(responses)]

    trainer = make_trainer(tok, tmp_path, judge=Unknowns(), num_iterations=1, save_strategy="no")
    (metrics,) = trainer.train()
    log = Dataset.from_parquet(str(iteration_dir(tmp_path, 0) / "attack_log.parquet"))
    unknown = [row for row in log if row["unsafe"] is None]
    assert metrics["num_unknown_verdicts"] == len(unknown) > 0
    pairs = Dataset.from_parquet(str(iteration_dir(tmp_path, 0) / "target_pairs.parquet"))
    unknown_answers = {(row["adversarial_prompt"], row["response"]) for row in unknown}
    known = {(row["adversarial_prompt"], row["response"]) for row in log if row["unsafe"] is not None}
    for pair in pairs:
        for answer in (pair["chosen"], pair["rejected"]):
            assert (pair["prompt"], answer) in known or (pair["prompt"], answer) not in unknown_answers


# -- bad input --------------------------------------------------------------------------------------------------------


def test_seed_pool_errors():
    with pytest.raises(ValueError, match="'prompt' and 'category'.*missing \\['category'\\]"):
        SeedPool(Dataset.from_list([{"prompt": "how to pick a lock"}]), k=1)
    with pytest.raises(InvalidRowError, match="row 1, field 'category'"):
        SeedPool([{"prompt": "a b", "category": "x"}, {"prompt": "c d", "category": ""}], k=1)
    with pytest.raises(ValueError, match="at least k \\+ 1 = 4 prompts; too few in \\{'doors': 3\\}"):
        SeedPool(list(seed_pool(("locks",), 4)) + list(seed_pool(("doors",), 3)), k=3)


def test_judge_returning_the_wrong_count_is_an_error(tok, tmp_path):
    trainer = make_trainer(tok, tmp_path, judge=lambda prompts, responses: [Verdict(unsafe=True)], num_iterations=1)
    with pytest.raises(JudgeOutputError, match=r"returned 1 items for 16 pairs \(while judging SEAS round 0"):
        trainer.train()


def test_config_errors(tmp_path):
    with pytest.raises(ValueError, match="num_responses"):
        SEASConfig(str(tmp_path), use_cpu=True, num_responses=1)
    with pytest.raises(ValueError, match="general_data_side"):
        SEASConfig(str(tmp_path), use_cpu=True, general_data_side="judge")
    assert SEASConfig(str(tmp_path), use_cpu=True).generation_config("red_team").temperature == 0.8
