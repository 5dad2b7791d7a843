"""Offline test setup: no Hub, CPU only, tiny models and local tokenizers built from config."""

import os


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
from testing_utils import toy_corpus  # noqa: E402

from hf_safety.toy import build_tokenizer  # noqa: E402


# Words of the hand-written test rows, on top of the toy world's vocabulary
EXTRA_WORDS = "hi hello there sure here is how what a b c d e f g h i j k l m n o p q r s t u v w x y z"


@pytest.fixture(scope="session")
def corpus():
    return [*toy_corpus(), EXTRA_WORDS]


@pytest.fixture(scope="session", params=["llama3", "mistral"])
def chat_format(request):
    return request.param


@pytest.fixture(scope="session")
def llama3_tokenizer(corpus):
    return build_tokenizer(corpus, chat_format="llama3", model="word")


@pytest.fixture(scope="session")
def mistral_tokenizer(corpus):
    return build_tokenizer(corpus, chat_format="mistral", model="word")


@pytest.fixture
def cpu_args():
    """Keyword arguments every test config needs on a CPU-only machine (TRL configs default to bf16)."""
    return dict(use_cpu=True, bf16=False, report_to="none", save_strategy="no", disable_tqdm=True)
