"""Model and dataset cards: metadata that parses back, model-index from a SafetyReport, no local path and no token,
content warnings, the trainers' `create_model_card` (and `push_to_hub`), SEAS per-round cards, the DeRTa mix card."""

import json
from pathlib import Path

import pytest
from datasets import Dataset
from huggingface_hub import DatasetCard, ModelCard
from peft import LoraConfig
from testing_utils import EXPECTED_INDEX, FAKE_TOKEN, hand_report, index_values, tiny_seas_args, toy_rows
from transformers import TrainerCallback

from hf_safety import DeRTaConfig, DeRTaTrainer
from hf_safety.data import SourceReport, build_derta_mix
from hf_safety.eval.report import SafetyReport
from hf_safety.hub import add_eval_report, derta_mix_dataset_card, derta_model_card, seas_dataset_card, seas_model_card
from hf_safety.hub.metadata import hub_id, hyperparameters_from_args, public_name, scrub_text
from hf_safety.seas import SEASTrainer, iteration_dir
from hf_safety.toy import tiny_model


LOCAL_NAMES = ["./out/model", "~/models/model", "C:\\Users\\me\\model", "../model"]


def assert_no_local_path(text, *paths):
    for path in map(str, paths):
        assert path not in text, f"{path} leaked into the card"
        if Path(path).is_absolute():
            for parent in Path(path).parents:
                assert str(parent) == "/" or str(parent) not in text, f"{parent} leaked into the card"
    for marker in ("~/", "C:\\", "Users\\", "/tmp", FAKE_TOKEN):
        assert marker not in text, marker


def yaml_of(card):
    return card.content.split("---")[1]


# -- names, hyper-parameters -----------------------------------------------------------------------------------------


def test_public_names_and_scrubbing(tmp_path):
    assert hub_id("meta-llama/Meta-Llama-3-8B") == "meta-llama/Meta-Llama-3-8B" and hub_id("gpt2") == "gpt2"
    for name in [*LOCAL_NAMES, str(tmp_path / "model"), "toy://unsafe-llama", "data/mix.jsonl", "", None]:
        assert hub_id(name) is None, name
    assert public_name(str(tmp_path / "x" / "model")) == "a local model (`model`)"
    assert public_name("C:\\Users\\me\\model") == "a local model (`model`)"
    assert public_name("toy://unsafe-llama") == "`toy://unsafe-llama`"
    text = scrub_text(f"judge classifier:{tmp_path}/judge, token {FAKE_TOKEN}, see https://huggingface.co/a/b")
    assert text == "judge classifier:judge, token <redacted>, see https://huggingface.co/a/b"


def test_hyperparameters_are_an_allow_list(tmp_path):
    args = DeRTaConfig(
        output_dir=str(tmp_path / "out"),
        hub_token=FAKE_TOKEN,
        hub_model_id="me/model",
        resume_from_checkpoint=str(tmp_path / "out" / "checkpoint-2"),
        learning_rate=3e-5,
        rto_weight=0.5,
        refusal_text="Sorry",
        use_cpu=True,
        bf16=False,
        report_to="none",
    )
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    values = hyperparameters_from_args(args, ("rto_weight", "refusal_text", "hub_token", "output_dir"), lora)
    assert values["learning_rate"] == 3e-5 and values["rto_weight"] == 0.5 and values["refusal_text"] == "Sorry"
    assert (
        values["lora_r"] == 4 and values["lora_alpha"] == 8 and values["lora_target_modules"] == ["q_proj", "v_proj"]
    )
    # secrets and path-valued settings never get in, even when asked for by name
    assert not {"hub_token", "output_dir", "logging_dir", "hub_model_id", "resume_from_checkpoint"} & set(values)
    assert_no_local_path(json.dumps(values), tmp_path)


# -- model cards -----------------------------------------------------------------------------------------------------


def test_derta_card_metadata_and_model_index():
    card = derta_model_card(
        base_model="meta-llama/Meta-Llama-3-8B-Instruct",
        model_name="llama3-derta",
        hub_model_id="me/llama3-derta",
        dataset_names=["PKU-Alignment/PKU-SafeRLHF", "toy://safety"],
        hyperparameters={"learning_rate": 2e-5, "rto_weight": 1.0},
        eval_report=hand_report(),
        license="llama3",
        tags=["mine"],
    )
    parsed = ModelCard(str(card))
    data = parsed.data
    assert data.license == "llama3" and data.base_model == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert {"hf-safety", "derta", "trl", "mine"} <= set(data.tags)
    assert data.datasets == ["PKU-Alignment/PKU-SafeRLHF"]  # Hub ids only: toy:// is in the prose only
    assert data.library_name == "transformers" and data.pipeline_tag == "text-generation"
    assert index_values(data) == EXPECTED_INDEX
    text = parsed.content
    assert "2407.09121" in text and "@inproceedings{yuan2025refuse" in text and "Decoupled Refusal Training" in text
    assert "`toy://safety`" in text and "toy://" not in yaml_of(parsed)
    assert 'model="me/llama3-derta"' in text
    assert "| mini | none | 6 | 75.0% (" in text and "| `rto_weight` | 1.0 |" in text
    assert "Content warning" in text


def test_add_eval_report_to_a_trainers_card():
    """A card written without an evaluation gets the report's table and model-index, the rest unchanged."""
    card = derta_model_card(
        base_model="meta-llama/Meta-Llama-3-8B-Instruct",
        model_name="llama3-derta",
        hyperparameters={"rto_weight": 1.0},
        license="llama3",
    )
    assert "No safety evaluation is attached" in card.content and card.data.eval_results is None
    report = hand_report()
    updated = ModelCard(str(add_eval_report(card, report)))
    assert index_values(updated.data) == EXPECTED_INDEX
    assert updated.data.license == "llama3" and updated.data.base_model == "meta-llama/Meta-Llama-3-8B-Instruct"
    assert "| mini | none | 6 | 75.0% (" in updated.content and "No safety evaluation" not in updated.content
    assert updated.text.split("## Evaluation")[0] == card.text.split("## Evaluation")[0]
    assert updated.text.split("## Intended use")[1] == card.text.split("## Intended use")[1]
    # the same section as a card rendered with the report
    with_report = derta_model_card(
        base_model="meta-llama/Meta-Llama-3-8B-Instruct",
        model_name="llama3-derta",
        hyperparameters={"rto_weight": 1.0},
        license="llama3",
        eval_report=report,
    )
    assert updated.text == with_report.text
    with pytest.raises(ValueError, match="no '## Evaluation' section"):
        add_eval_report(ModelCard("---\nlicense: mit\n---\n# TRL's card\n"), hand_report())


@pytest.mark.parametrize("local", ["tmp", *LOCAL_NAMES])
def test_no_local_path_and_no_token_in_model_cards(tmp_path, monkeypatch, local):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    base = str(tmp_path / "base" / "model") if local == "tmp" else local
    hyperparameters = {
        "learning_rate": 1e-5,
        "hub_token": FAKE_TOKEN,
        "output_dir": str(tmp_path / "out"),
        "logging_dir": str(tmp_path / "logs"),
        "resume_from_checkpoint": str(tmp_path / "out" / "checkpoint-2"),
        "judge": f"classifier:{tmp_path}/judge",
        "refusal_text": f"Sorry {FAKE_TOKEN}",
    }
    common = dict(
        base_model=base,
        model_name=str(tmp_path / "out" / "run"),
        dataset_names=[str(tmp_path / "data.jsonl"), "toy://safety"],
        hyperparameters=hyperparameters,
        eval_report=hand_report(model_name=str(tmp_path / "out"), source=str(tmp_path / "suite.jsonl")),
        adapter=True,
    )
    cards = [derta_model_card(**common)]
    cards += [
        seas_model_card(side=side, iteration=0, rounds=[{"iteration": 0}], **common) for side in ("target", "red_team")
    ]
    for card in cards:
        parsed = ModelCard(str(card))
        text = str(parsed)
        assert_no_local_path(text, tmp_path, base)
        assert parsed.data.base_model is None and parsed.data.datasets is None and parsed.data.library_name == "peft"
        assert "a local model (`model`)" in text and "a local dataset (`data.jsonl`)" in text
        assert "Model Card for run" in text and "| `judge` | classifier:judge |" in text
        for field in ("hub_token", "output_dir", "logging_dir", "resume_from_checkpoint"):
            assert field not in text
        assert index_values(parsed.data) == EXPECTED_INDEX


def test_seas_model_card_round_and_side():
    rounds = [
        {"iteration": 0, "red_team_asr": 0.5, "num_red_team_pairs": 3, "num_target_pairs": 5, "target_asr": 0.25},
        {
            "iteration": 1,
            "red_team_asr": 0.125,
            "num_red_team_pairs": 2,
            "num_target_pairs": 4,
            "judge": "llama-guard",
        },
        {"iteration": 2, "red_team_asr": 0.0},
    ]
    red = ModelCard(
        str(
            seas_model_card(
                side="red_team",
                iteration=1,
                base_model="me/r0",
                model_name="seas-red",
                hyperparameters={"beta": 0.1},
                rounds=rounds,
                license="mit",
            )
        )
    )
    assert {"seas", "red-teaming", "hf-safety", "trl"} <= set(red.data.tags) and red.data.base_model == "me/r0"
    assert red.data.license == "mit" and red.data.eval_results is None
    text = red.content
    assert "**red team** of a **SEAS** run" in text and "after round 1" in text and "2408.02632" in text
    assert "@inproceedings{diao2025seas" in text and "of round 0, which was also its DPO reference" in text
    assert "attack success\nrate 12.5%" in text and "judge `llama-guard`" in text
    assert "\n| 1 | 12.5% |" in text and "\n| 2 |" not in text  # rounds after this one are not shown
    assert "Content warning" in text
    target = ModelCard(
        str(
            seas_model_card(
                side="target",
                iteration=None,
                base_model="me/t0",
                model_name="seas-target",
                hyperparameters={},
                rounds=rounds,
            )
        )
    )
    assert "red-teaming" not in target.data.tags and "after its last round (round 2)" in target.content
    assert "| 0 | 50.0% |" in target.content and "| 25.0% |" in target.content
    with pytest.raises(ValueError, match="side"):
        seas_model_card(side="blue", iteration=0, base_model=None, model_name="x", hyperparameters={})


# -- dataset cards ---------------------------------------------------------------------------------------------------


def fake_seas_run(root, verdicts_per_round=((True, True, False, None), (False, False, True))):
    """The files of a SEAS run's rounds, written by hand."""
    for i, verdicts in enumerate(verdicts_per_round):
        folder = iteration_dir(root, i)
        folder.mkdir(parents=True)
        log = [
            {"iteration": i, "seed_prompt": "s", "adversarial_prompt": f"a{j}", "response": "r", "unsafe": v}
            for j, v in enumerate(verdicts)
        ]
        Dataset.from_list(log).to_parquet(folder / "attack_log.parquet")
        Dataset.from_list([{"prompt": "s", "chosen": "a0", "rejected": "a1"}] * (i + 1)).to_parquet(
            folder / "red_team_pairs.parquet"
        )
        Dataset.from_list([{"prompt": "a0", "chosen": "x", "rejected": "y"}] * (i + 2)).to_parquet(
            folder / "target_pairs.parquet"
        )
        unsafe, safe = sum(v is True for v in verdicts), sum(v is False for v in verdicts)
        stats = {"num_seeds": 1, "num_adversarial_prompts": len(verdicts), "num_unsafe": unsafe, "num_safe": safe}
        (folder / "attack_stats.json").write_text(json.dumps({**stats, "asr": unsafe / (unsafe + safe)}))


def test_seas_dataset_card(tmp_path):
    root = tmp_path / "seas-run"
    fake_seas_run(root)
    card = DatasetCard(
        str(seas_dataset_card(root, pretty_name="My SEAS data", model_name=str(root), license="cc-by-4.0", gated=True))
    )
    data = card.data
    assert data.license == "cc-by-4.0" and data.pretty_name == "My SEAS data" and "not-for-all-audiences" in data.tags
    assert {c["config_name"]: c["data_files"] for c in data.configs} == {
        table: [{"split": f"iteration_{i}", "path": f"iteration_{i}/{table}.parquet"} for i in range(2)]
        for table in ("attack_log", "red_team_pairs", "target_pairs")
    }
    assert data.extra_gated_prompt
    text = card.content
    assert "Content warning" in text and "2408.02632" in text
    assert "every answer and its verdict (7 rows)" in text  # 4 + 3 answers
    assert "red team (3 rows)" in text and "the target (5 rows)" in text
    assert "| 0 | 1 | 4 (0) | 4 | 2 | 1 | 1 | 66.7% | 1 | 2 |" in text
    assert "| 1 | 1 | 3 (0) | 3 | 1 | 2 | 0 | 33.3% | 2 | 3 |" in text
    assert_no_local_path(str(card), root)
    with pytest.raises(FileNotFoundError):
        seas_dataset_card(tmp_path / "empty")


def test_derta_mix_card_counts_harmful_rows(tmp_path):
    rows = toy_rows()
    harmful_rows = [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows if r["rejected"]]
    # two both-safe rows in the harmful source: drawn on the harmful side of the ratio, but not harmful rows
    harmful_rows[:2] = [{**r, "rejected": None} for r in harmful_rows[:2]]
    helpful = Dataset.from_list(
        [{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in rows if not r["rejected"]]
    )
    mix = build_derta_mix(Dataset.from_list(harmful_rows), helpful, harmful_ratio=0.75, num_rows=36, seed=3)
    num_harmful = sum(bool(r) for r in mix["rejected"])  # counted from the data, not from `is_harmful`
    assert 0 < num_harmful < 36
    report = SourceReport("PKU-Alignment/PKU-SafeRLHF (train)", num_rows=40, num_harmful=28, num_benign=2)
    report.count("both_unsafe_dropped", 10)
    card = derta_mix_dataset_card(
        mix,
        sources=[
            {"name": "PKU-Alignment/PKU-SafeRLHF", "builder": "from_pku_saferlhf", "split": "train", "report": report},
            {"name": str(tmp_path / "helpful.jsonl"), "builder": "from_messages", "num_rows": 40, "num_benign": 40},
        ],
        harmful_ratio=0.75,
        num_rows=36,
        seed=3,
        license="cc-by-nc-4.0",
    )
    parsed = DatasetCard(str(card))
    assert parsed.data.source_datasets == ["PKU-Alignment/PKU-SafeRLHF"] and parsed.data.license == "cc-by-nc-4.0"
    assert "derta" in parsed.data.tags and parsed.data.size_categories == ["n<1K"]
    text = parsed.content
    assert f"**36 rows**: **{num_harmful} harmful**" in text and f"**{36 - num_harmful} benign**" in text
    assert "`harmful_ratio` = 0.75, size = 36, `seed` = 3" in text and "Content warning" in text
    assert "| 40 | 28 | 2 | 0 | both_unsafe_dropped: 10 |" in text and "a local dataset (`helpful.jsonl`)" in text
    assert "| `is_harmful` |" in text and "2407.09121" in text
    assert_no_local_path(str(parsed), tmp_path)


# -- the trainers ----------------------------------------------------------------------------------------------------


def derta_dataset():
    rows = toy_rows()
    picked = [r for r in rows if r["rejected"]][:4] + [r for r in rows if not r["rejected"]][:4]
    return Dataset.from_list([{k: r[k] for k in ("prompt", "chosen", "rejected")} for r in picked])


@pytest.mark.parametrize("peft", [False, True])
def test_derta_trainer_writes_our_card(llama3_tokenizer, tmp_path, cpu_args, monkeypatch, peft):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    base = tmp_path / "models" / "base"
    tiny_model(llama3_tokenizer).save_pretrained(base)
    llama3_tokenizer.save_pretrained(base)
    out = tmp_path / "derta-out"
    trainer = DeRTaTrainer(
        model=str(base),
        args=DeRTaConfig(output_dir=str(out), hub_token=FAKE_TOKEN, rto_weight=0.5, **cpu_args),
        train_dataset=derta_dataset(),
        processing_class=llama3_tokenizer,
        peft_config=LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="CAUSAL_LM")
        if peft
        else None,
    )
    trainer.create_model_card(dataset_name="toy://safety", tags="extra", eval_report=hand_report(), license="mit")
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model is None and card.data.license == "mit"  # a local base model: not in the metadata
    assert {"derta", "hf-safety", "trl", "sft", "extra"} <= set(card.data.tags)
    assert card.data.library_name == ("peft" if peft else "transformers")
    assert index_values(card.data) == EXPECTED_INDEX
    text = str(card)
    assert "Model Card for derta-out" in text and "**DeRTa**" in text and "@inproceedings{yuan2025refuse" in text
    assert "a local model (`base`)" in text and "| `rto_weight` | 0.5 |" in text
    assert ("| `lora_r` | 4 |" in text) == peft
    assert_no_local_path(text, base, out)


def test_derta_push_to_hub_publishes_our_card(hub, llama3_tokenizer, tmp_path, cpu_args, caplog):
    """`push_to_hub` against a fake Hub: our card and the model files, nothing else, with the repo's visibility; no
    file sent, log line or file left on disk holds the token."""
    model = tiny_model(llama3_tokenizer)
    model.config._name_or_path = "org/tiny-base"  # a model object whose config names a Hub id
    args = DeRTaConfig(
        output_dir=str(tmp_path / "derta-tiny"),
        push_to_hub=True,
        hub_model_id="me/derta-tiny",
        hub_token=FAKE_TOKEN,
        hub_private_repo=True,
        hub_strategy="end",
        max_steps=1,
        **cpu_args,
    )
    trainer = DeRTaTrainer(model=model, args=args, train_dataset=derta_dataset(), processing_class=llama3_tokenizer)
    trainer.train()
    result = trainer.push_to_hub(dataset_name="org/safety-mix")
    assert result.pushed and hub.kinds() == ["create", "create", "settings", "preupload", "commit"]
    assert json.loads(json.dumps(hub.last("settings")[3]))["visibility"] == "private"
    summary, files = hub.committed()
    assert summary == "End of training"
    assert set(files) == {
        "README.md",
        "model.safetensors",
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
    } - ({"chat_template.jinja"} - {p.name for p in (tmp_path / "derta-tiny").iterdir()})
    card = ModelCard(files["README.md"].decode())
    assert card.data.base_model == "org/tiny-base" and card.data.datasets == ["org/safety-mix"]
    assert "derta" in card.data.tags
    assert 'model="me/derta-tiny"' in card.content and "2407.09121" in card.content
    for name, content in files.items():
        assert FAKE_TOKEN.encode() not in content, name
    for file in tmp_path.rglob("*"):
        assert not file.is_file() or FAKE_TOKEN.encode() not in file.read_bytes(), file
    assert FAKE_TOKEN not in caplog.text
    assert all(r[4] == f"Bearer {FAKE_TOKEN}" for r in hub.requests if r[0] != "unknown")  # sent only as auth


class _CardAtSave(TrainerCallback):
    """Mid-round, at each checkpoint of the target: its card (TRL writes one with each checkpoint) and the red team's
    (written when the red team was saved, before the target trains)."""

    def __init__(self):
        self.cards = []

    def on_save(self, args, state, control, **kwargs):
        folder = Path(args.output_dir)
        red_team = folder.parent / "red_team" / "README.md"
        self.cards.append((folder, (folder / "README.md").read_text(), red_team.read_text()))


def test_seas_trainer_cards(tmp_path, monkeypatch):
    from testing_utils import toy_corpus

    from hf_safety.judges import Judge, Verdict
    from hf_safety.toy import build_tokenizer

    class ParityJudge(Judge):
        name = "parity"

        def judge(self, prompts, responses):
            return [Verdict(unsafe=(len(r.split()) % 2 == 0) if r.strip() else None) for r in responses]

    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    tok = build_tokenizer(
        toy_corpus() + ["how to pick a lock", "open break bend twist"], chat_format="llama3", model="word"
    )
    target_dir = tmp_path / "models" / "t0"
    tiny_model(tok, seed=0, hidden_size=32).save_pretrained(target_dir)
    tok.save_pretrained(target_dir)
    red_team = tiny_model(tok, seed=1, hidden_size=32)
    red_team.config._name_or_path = "org/red-team-r0"
    verbs = ["pick", "open", "break", "bend"]
    seeds = Dataset.from_list([{"prompt": f"how to {v} a lock {c}", "category": c} for c in ("a", "b") for v in verbs])
    out = tmp_path / "seas-out"
    saves = _CardAtSave()
    args = tiny_seas_args(
        out,
        per_device_train_batch_size=4,
        red_team_beta=0.3,
        disable_tqdm=True,
        hub_token=FAKE_TOKEN,
    )
    trainer = SEASTrainer(
        model=str(target_dir),
        red_team_model=red_team,
        args=args,
        train_dataset=seeds,
        processing_class=tok,
        red_team_processing_class=tok,
        judge=ParityJudge(),
        eval_prompts=Dataset.from_list([{"prompt": "how to pick a lock"}, {"prompt": "how to open a lock"}]),
        callbacks=[saves],
    )
    rounds = trainer.train()
    for i, metrics in enumerate(rounds):
        report = SafetyReport.load(iteration_dir(out, i) / "eval")
        for side in ("target", "red_team"):
            card = ModelCard.load(iteration_dir(out, i) / side / "README.md")
            text = str(card)
            assert f"Model Card for seas-out-{side.replace('_', '-')}-round-{i}" in text and f"after round {i}" in text
            assert "seas" in card.data.tags and ("red-teaming" in card.data.tags) == (side == "red_team")
            assert f"| {i} | {100 * metrics['red_team_asr']:.1f}% |" in text and "| `judge` | parity |" in text
            reference = "the run started with" if i == 0 else f"of round {i - 1}, which was also its DPO reference"
            assert reference in text
            if side == "red_team":
                assert card.data.base_model == "org/red-team-r0" and "| `beta` | 0.3 |" in text
                assert card.data.eval_results is None
            else:
                assert card.data.base_model is None and "a local model (`t0`)" in text and "| `beta` | 0.1 |" in text
                # the round's evaluation of `eval_prompts`: the model-index is the report's
                assert index_values(card.data) == {
                    (r.dataset_name, r.metric_config, r.metric_type): r.metric_value for r in report.eval_results()
                }
            assert_no_local_path(text, target_dir, out)
    # While a round was in progress: the target's card of that round, and the red team's, saved before the target
    assert saves.cards
    for folder, target_card, red_team_card in saves.cards:
        i = int(folder.parent.name.split("_")[1])
        assert f"Model Card for seas-out-target-round-{i}" in target_card and f"after round {i}" in target_card
        assert f"Model Card for seas-out-red-team-round-{i}" in red_team_card

    trainer.create_model_card(dataset_name="org/seas-seeds")
    card = ModelCard.load(out / "README.md")
    assert {"seas", "hf-safety", "dpo"} <= set(card.data.tags) and card.data.datasets == ["org/seas-seeds"]
    assert "after its last round (round 1)" in card.content and "@inproceedings{diao2025seas" in card.content
    assert index_values(card.data) == index_values(ModelCard.load(iteration_dir(out, 1) / "target" / "README.md").data)
    assert_no_local_path(str(card), target_dir, out)

    data_card = seas_dataset_card(out)
    log_rows = sum(len(Dataset.from_parquet(str(iteration_dir(out, i) / "attack_log.parquet"))) for i in range(2))
    assert f"every answer and its verdict ({log_rows} rows)" in data_card.content
    assert [c["config_name"] for c in data_card.data.configs] == ["attack_log", "red_team_pairs", "target_pairs"]
