"""The one model loader, and the architecture rules it enables: the toy world is a leaf, one loader, one generator,
one evaluation loop."""

import ast
from pathlib import Path

import pytest
import torch
import transformers

import hf_safety.models as models
from hf_safety.models import default_device_map, load_model_and_tokenizer, looks_like_local_path, resolve_model_name
from hf_safety.toy import TOY_MODEL, resolve_model, tiny_model


PACKAGE = Path(models.__file__).parent


@pytest.mark.parametrize("name", ["./no/such/model", "/no/such/model", "~/no-such-model-here", "a/b/c", "..\\m"])
def test_local_looking_path_that_does_not_exist_says_path_not_found(name):
    assert looks_like_local_path(name)
    with pytest.raises(FileNotFoundError, match=r"path not found: "):
        load_model_and_tokenizer(name)


def test_ambiguous_name_says_both_local_and_hub():
    assert not looks_like_local_path("some-org/some-model") and not looks_like_local_path("gpt2")
    with pytest.raises(OSError, match=r"no local folder of that name \(path not found\).*Hub repo id"):
        load_model_and_tokenizer("some-org/no-such-model-xyz")  # conftest: HF_HUB_OFFLINE=1


def test_saved_model_loads_by_path_with_remote_code_off(llama3_tokenizer, tmp_path, monkeypatch):
    path = tmp_path / "m"
    tiny_model(llama3_tokenizer).save_pretrained(path)
    llama3_tokenizer.save_pretrained(path)
    seen = {}
    original = transformers.AutoModelForCausalLM.from_pretrained.__func__

    def spy(cls, name, **kwargs):
        seen.update(kwargs)
        return original(cls, name, **kwargs)

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", classmethod(spy))
    model, tokenizer = load_model_and_tokenizer(str(path))
    assert seen["trust_remote_code"] is False and "quantization_config" not in seen
    assert tokenizer.chat_template == llama3_tokenizer.chat_template and model.config.vocab_size == len(tokenizer)
    load_model_and_tokenizer(str(path), trust_remote_code=True)
    assert seen["trust_remote_code"] is True
    with pytest.raises(ValueError, match="task must be one of"):
        load_model_and_tokenizer(str(path), task="seq2seq")


def test_registered_resolvers(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_SAFETY_CACHE", str(tmp_path))
    # hf_safety.toy registers toy:// when imported (the test imports it above)
    assert resolve_model_name(TOY_MODEL) == resolve_model(TOY_MODEL) == str(tmp_path / "toy-tiny-llama")
    model, _ = load_model_and_tokenizer(TOY_MODEL)
    assert model.config.model_type == "llama"
    with pytest.raises(ValueError, match="unknown toy model 'toy://nope'"):
        resolve_model_name("toy://nope")
    with pytest.raises(ValueError, match=r"no resolver for model name 'zoo://x'"):
        resolve_model_name("zoo://x")
    assert resolve_model_name("org/name") == "org/name"


# -- architecture ---------------------------------------------------------------------------------------------------


def _imports(path: Path) -> set[str]:
    """Absolute module names imported by a module of the package (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


PRODUCT = [p for p in PACKAGE.rglob("*.py") if p.relative_to(PACKAGE).parts[0] not in ("toy", "scripts", "cli.py")]


def test_no_product_module_imports_the_toy_world():
    offenders = [
        str(p.relative_to(PACKAGE)) for p in PRODUCT if any(m.startswith("hf_safety.toy") for m in _imports(p))
    ]
    assert PRODUCT and offenders == []


def _calls(path: Path, attribute: str) -> bool:
    """Whether the module calls `x.<attribute>(...)` on anything but `self` (a judge's own `self.generate` wraps the
    shared generator)."""
    tree = ast.parse(path.read_text())
    return any(
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == attribute
        and not (isinstance(node.func.value, ast.Name) and node.func.value.id == "self")
        for node in ast.walk(tree)
    )


def test_one_loader_one_generator_one_evaluation_loop():
    modules = list(PACKAGE.rglob("*.py"))
    loaders = sorted(str(p.relative_to(PACKAGE)) for p in modules if "AutoModelForCausalLM" in p.read_text())
    # toy builds its tiny models from config (and demo reloads a saved start); the product loads in one place
    assert [p for p in loaders if not p.startswith(("toy/", "scripts/"))] == ["models.py"]
    generators = sorted(str(p.relative_to(PACKAGE)) for p in modules if _calls(p, "generate"))
    assert generators == ["generation.py"], generators  # every `model.generate(...)` call
    loops = sorted(str(p.relative_to(PACKAGE)) for p in modules if _calls(p, "apply") and "attack" in p.read_text())
    assert loops == ["eval/evaluator.py"], loops  # the only place attacks are applied to suite rows


@pytest.mark.parametrize(
    "cuda, env, expected",
    [
        (False, {"LOCAL_RANK": "1", "WORLD_SIZE": "2"}, None),
        (True, {}, "auto"),
        (True, {"LOCAL_RANK": "0", "WORLD_SIZE": "1"}, "auto"),
        (True, {"LOCAL_RANK": "1", "WORLD_SIZE": "2"}, {"": 1}),  # one whole copy per process, on its own GPU
    ],
)
def test_default_device_map(cuda, env, expected, monkeypatch, llama3_tokenizer):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    for key in ("LOCAL_RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert default_device_map() == expected
    seen = {}
    monkeypatch.setattr(models, "_from_pretrained", lambda loader, name, what, **kwargs: seen.update(kwargs))
    load_model_and_tokenizer("some/judge", tokenizer=llama3_tokenizer)
    assert seen.get("device_map") == expected
    load_model_and_tokenizer("some/judge", tokenizer=llama3_tokenizer, device_map="cpu")
    assert seen["device_map"] == "cpu"  # a map the caller names is kept
    monkeypatch.setattr(models, "is_deepspeed_zero3_enabled", lambda: True)
    assert default_device_map() is None  # ZeRO-3 places the weights itself
