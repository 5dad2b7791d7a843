"""`load_judge` with local-looking paths that do not exist: a clear "path not found" error naming the path."""

import pytest

from hf_safety.judges.factory import JudgePathNotFoundError, load_judge, looks_like_local_path


@pytest.mark.parametrize(
    "spec, path",
    [
        ("./judges/nope", "./judges/nope"),
        ("../judges/nope", "../judges/nope"),
        ("/tmp/no/such/judge", "/tmp/no/such/judge"),
        ("~/no-such-judge-dir", "~/no-such-judge-dir"),
        ("models\\no-such-guard", "models\\no-such-guard"),
        ("org/name/extra", "org/name/extra"),
        ("llama-guard-3:/no/such/dir", "/no/such/dir"),
        ("harmbench:./no/such/cls", "./no/such/cls"),
        ("classifier:~/no/such/cls", "~/no/such/cls"),
    ],
)
def test_missing_local_path_says_not_found(spec, path):
    with pytest.raises(JudgePathNotFoundError, match="not found") as info:
        load_judge(spec)
    message = str(info.value)
    assert repr(path) in message and "unknown judge" not in message
    assert isinstance(info.value, FileNotFoundError) and isinstance(info.value, ValueError)


def test_local_path_detection():
    assert all(map(looks_like_local_path, ["/a", "./a", "../a", "~/a", "a\\b", "a/b/c"]))
    assert not any(map(looks_like_local_path, ["meta-llama/Llama-Guard-3-8B", "wildguard", "gpt-judge"]))


def test_other_specs_unchanged():
    with pytest.raises(ValueError, match="unknown judge"):
        load_judge("gpt-judge")
    with pytest.raises(ValueError, match="unknown refusal list"):
        load_judge("refusal:gcg-30")
    assert load_judge("refusal-strings").list_name == "hf-safety"
