"""Offline test setup: no Hub, CPU only, tiny models and local tokenizers built from config."""

import os


os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import threading  # noqa: E402

import huggingface_hub  # noqa: E402
import pytest  # noqa: E402
from testing_utils import FakeHub, line_tokenizer, toy_corpus  # noqa: E402

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


@pytest.fixture(scope="module")
def lt():
    """A tokenizer with one token per line of text, Llama 3 specials (see `testing_utils.line_tokenizer`); one per
    module, as judges may give it a pad token."""
    return line_tokenizer()


@pytest.fixture(scope="module")
def lt_mistral():
    """The same with Mistral's `<s>` / `</s>`."""
    return line_tokenizer(eos="</s>", bos="<s>")


@pytest.fixture
def cpu_args():
    """Keyword arguments every test config needs on a CPU-only machine (TRL configs default to bf16)."""
    return dict(use_cpu=True, bf16=False, report_to="none", save_strategy="no", disable_tqdm=True)


@pytest.fixture
def hub(monkeypatch):
    """A fake Hub on 127.0.0.1 (the default endpoint while the test runs), with the session's offline mode lifted."""
    fake = FakeHub()
    thread = threading.Thread(target=fake.server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", fake.url)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_TOKEN", raising=False)
    huggingface_hub.utils.disable_progress_bars()
    yield fake
    fake.server.shutdown()
    fake.server.server_close()
