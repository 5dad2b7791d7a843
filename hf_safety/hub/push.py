"""Publishing models and datasets to the Hub: stage locally, then upload with `huggingface_hub.HfApi`.

Every push goes through a local *staging folder* that holds exactly the files that will be uploaded (the card as
`README.md` included) and a `hub_upload.json` manifest (repo, visibility, gating, commit message, files and sizes;
never a token). [`stage_model`] / [`stage_dataset`] write it, [`push_staged`] uploads it, and [`push_model`] /
[`push_dataset`] do both. Offline (`HF_HUB_OFFLINE=1`) or with `dry_run=True` nothing is sent: the staging folder is
the result, and `push_staged(folder)` uploads it later.

- Visibility: datasets that contain harmful text (`contains_harmful=True`, the default) are private unless
  `public=True` is passed; `private=False` alone is an error. Models follow `TrainingArguments.hub_private_repo`:
  `private=None` leaves the repo to the account's default visibility. `gated` ("auto" or "manual") gates access.
- Models: the weights (a LoRA adapter, or the base merged with it, or both: merged at the root, adapter in
  `adapter/`), `config.json`, `generation_config.json` and the tokenizer files. Checkpoints, optimizer, scheduler and
  RNG states, `runs/` and any other file are left out unless named in `extra_files`, `training_args.bin` included:
  it is a pickle of the training arguments (loading it runs arbitrary code, it can carry `hub_token` and local
  paths) and the card already lists the hyperparameters.
- Failures: a failed step (create repo, set visibility and gating, upload) raises [`HubPushError`] naming the step and
  the repo. Nothing local is deleted: the staged files and the source folder stay where they are.
- Call these on one process (the main one) after training, not on every rank.
- Tokens come from the usual `huggingface_hub` login or environment, or `token=`; they are passed to `HfApi` only,
  never logged or written, and a staged file that contains one is refused.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fnmatch
import json
import logging
import math
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from huggingface_hub import DatasetCard, HfApi, ModelCard, constants

from .metadata import known_tokens, redact


logger = logging.getLogger(__name__)

MANIFEST = "hub_upload.json"
GatedT = Literal["auto", "manual", False] | None

# Model files taken from the top level of a model folder (fnmatch patterns); anything else needs `extra_files`
WEIGHT_FILES = (
    "config.json",
    "generation_config.json",
    "model*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "adapter_model.bin")
TOKENIZER_FILES = (
    "tokenizer*.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "vocab.txt",
    "merges.txt",
    "*.tiktoken",
    "chat_template.jinja",
    "chat_template.json",
    "additional_chat_templates/*",
)
_SCAN_LIMIT = 64 * 2**20  # staged files up to this size are checked for tokens (weights are larger and binary)


class HubPushError(RuntimeError):
    """A Hub push step failed. `step` is `"create repo"`, `"set visibility and gating"` or `"upload"`; the staged
    files are still in `staging_dir` and can be pushed again with [`push_staged`]."""

    def __init__(self, message: str, *, step: str, repo_id: str, repo_type: str, staging_dir: Path):
        super().__init__(message)
        self.step = step
        self.repo_id = repo_id
        self.repo_type = repo_type
        self.staging_dir = staging_dir


@dataclasses.dataclass(frozen=True)
class StagedUpload:
    """What a staging folder will upload, as recorded in its `hub_upload.json` manifest."""

    staging_dir: Path
    repo_id: str
    repo_type: str
    files: dict[str, int]  # path in the repo -> size in bytes
    private: bool | None
    gated: GatedT
    commit_message: str
    contains_harmful: bool = False
    public: bool = False

    @classmethod
    def from_dir(cls, staging_dir: str | os.PathLike) -> StagedUpload:
        """Reads the manifest of a staging folder written by [`stage_model`] or [`stage_dataset`]."""
        staging_dir = Path(staging_dir)
        manifest = staging_dir / MANIFEST
        if not manifest.is_file():
            raise FileNotFoundError(f"{manifest} not found: stage the files with stage_model or stage_dataset first")
        values = json.loads(manifest.read_text())
        if "files" not in values:
            raise ValueError(f"the staging in {staging_dir} did not complete: stage the files again")
        fields = {f.name for f in dataclasses.fields(cls)} - {"staging_dir", "files"}
        files = {entry["path"]: entry["size"] for entry in values["files"]}
        return cls(staging_dir=staging_dir, files=files, **{k: values[k] for k in fields if k in values})

    def verify(self) -> None:
        """Raises if a staged file is missing or changed size since staging, or if the visibility breaks the rules."""
        _check_visibility(self.private, self.public, self.contains_harmful)
        for path, size in self.files.items():
            file = self.staging_dir / path
            if not file.is_file() or file.stat().st_size != size:
                raise ValueError(f"{file} is missing or changed since it was staged: stage the files again")


@dataclasses.dataclass(frozen=True)
class HubPushResult:
    """The outcome of a push: the staged upload, and the repo and commit when it was sent (`pushed`), or why not."""

    upload: StagedUpload
    pushed: bool
    reason: str | None = None  # "offline" or "dry run" when nothing was sent
    repo_url: str | None = None
    commit_url: str | None = None
    commit_oid: str | None = None

    @property
    def repo_id(self) -> str:
        return self.upload.repo_id

    @property
    def staging_dir(self) -> Path:
        return self.upload.staging_dir

    @property
    def files(self) -> list[str]:
        return list(self.upload.files)

    @property
    def private(self) -> bool | None:
        return self.upload.private

    @property
    def gated(self) -> GatedT:
        return self.upload.gated

    def __str__(self) -> str:
        if self.pushed:
            return f"pushed {len(self.files)} files to {self.repo_url} (commit {self.commit_oid})"
        return (
            f"staged {len(self.files)} files for {self.upload.repo_type} repo {self.repo_id} in {self.staging_dir}, "
            f"not pushed ({self.reason}); push them later with push_staged({str(self.staging_dir)!r})"
        )


# -- visibility --------------------------------------------------------------------------------------------------


def _check_visibility(private: bool | None, public: bool, contains_harmful: bool) -> None:
    if public and private:
        raise ValueError("public=True and private=True contradict each other")
    if contains_harmful and private is not True and not public:
        raise ValueError(
            "this dataset contains harmful text, so it is pushed private by default; to make it public pass the "
            "explicit flag public=True (consider gated='manual' too)"
        )


def resolve_visibility(
    private: bool | None = None, public: bool = False, contains_harmful: bool = False
) -> bool | None:
    """
    The `private` value to create a repo with. Harmful data is private unless `public=True`; `private=False`
    without that flag is a `ValueError`. Otherwise `private` is returned as is (`None`: the account's default).
    """
    if public:
        private = False if private is None else private
    elif contains_harmful and private is None:
        private = True
    _check_visibility(private, public, contains_harmful)
    return private


def _check_gated(gated: Any) -> GatedT:
    if gated is True:  # a card's `gated: true`: access requests are reviewed by hand
        return "manual"
    if gated not in ("auto", "manual", False, None):
        raise ValueError(f"gated must be 'auto', 'manual', False or None, got {gated!r}")
    return gated


# -- staging helpers ---------------------------------------------------------------------------------------------


def default_staging_dir(path: str | os.PathLike, suffix: str = "-hub") -> Path:
    """Where a push stages the upload of `path` when not told: `<path><suffix>` beside it."""
    path = Path(path).expanduser()
    return path.parent / f"{path.name}{suffix}"


def _fresh_staging_dir(staging_dir: str | os.PathLike, protect: Sequence[Path] = ()) -> Path:
    """An empty staging folder. A previous staging folder (it has a manifest) is replaced; any other non-empty folder
    is refused, and so is a folder that is, or contains, a source folder."""
    staging = Path(staging_dir).expanduser().resolve()
    for source in protect:
        source = source.resolve()
        if staging == source or staging in source.parents:
            raise ValueError(f"staging_dir {staging} must not be the source folder {source} nor contain it")
    if staging.exists():
        if not staging.is_dir():
            raise NotADirectoryError(f"staging_dir {staging} is not a folder")
        if any(staging.iterdir()):
            if not (staging / MANIFEST).is_file():
                raise ValueError(
                    f"staging_dir {staging} is not empty and is not a previous staging folder (no {MANIFEST}): "
                    "choose a new or empty folder"
                )
            shutil.rmtree(staging)  # our own previous staging, replaced
    staging.mkdir(parents=True, exist_ok=True)
    # marks the folder as ours until the full manifest replaces this, so a failed staging can be redone in place
    (staging / MANIFEST).write_text(json.dumps({"created_by": "hf_safety", "complete": False}) + "\n")
    return staging


def _place(src: Path, dst: Path) -> None:
    """Hard-links `src` at `dst` (no copy of large weights), or copies it across filesystems."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _write_card(card: ModelCard | DatasetCard | str, path: Path) -> None:
    path.write_text(str(card), encoding="utf-8")


def _finish_staging(staging: Path, secrets: Sequence[str], manifest: dict[str, Any]) -> StagedUpload:
    """Checks the staged files for tokens, then writes the manifest."""
    files = sorted(p for p in staging.rglob("*") if p.is_file() and p != staging / MANIFEST)
    for file in files:
        if file.stat().st_size > _SCAN_LIMIT:
            continue
        data = file.read_bytes()
        if any(secret.encode() in data for secret in secrets):
            file.unlink()  # our staged copy (the source is untouched): a token must not stay in a folder to upload
            raise ValueError(
                f"{file.relative_to(staging).as_posix()} contains a Hugging Face token: refusing to stage it for "
                f"upload (the staged copy in {staging} was removed; the source file is untouched)"
            )
    manifest["files"] = [{"path": f.relative_to(staging).as_posix(), "size": f.stat().st_size} for f in files]
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    upload = StagedUpload.from_dir(staging)
    total = sum(upload.files.values())
    logger.info(
        f"Staged {len(files)} files ({total:,} bytes) for {upload.repo_type} repo {upload.repo_id} in {staging}"
    )
    return upload


def _manifest(repo_id: str, repo_type: str, private, gated, commit_message: str, **extra: Any) -> dict[str, Any]:
    return dict(
        repo_id=repo_id,
        repo_type=repo_type,
        private=private,
        gated=gated,
        commit_message=commit_message,
        created_by="hf_safety",
        **extra,
    )


# -- models ------------------------------------------------------------------------------------------------------


def _model_folder(source: Any) -> Path:
    """A model folder from a path or a trainer (its `args.output_dir`)."""
    if hasattr(source, "args") and hasattr(source.args, "output_dir"):
        source = source.args.output_dir
    folder = Path(source).expanduser()
    if not folder.is_dir():
        raise FileNotFoundError(f"model folder not found: {folder}")
    return folder


def _select(folder: Path, patterns: Sequence[str]) -> list[Path]:
    """Files of `folder` whose relative path matches one of `patterns` (checkpoints are never taken)."""
    found = []
    for file in sorted(folder.rglob("*")):
        rel = file.relative_to(folder).as_posix()
        if not file.is_file() or rel.startswith("checkpoint-"):
            continue
        # a pattern without "/" names a top-level file only (fnmatch's `*` would cross folders)
        if any(fnmatch.fnmatch(rel, p) and ("/" in p or "/" not in rel) for p in patterns):
            found.append(file)
    return found


def _quantized_4bit(quantization_config: Any) -> bool:
    qc = quantization_config.to_dict() if hasattr(quantization_config, "to_dict") else quantization_config or {}
    return bool(qc.get("load_in_4bit") or qc.get("_load_in_4bit") or qc.get("bits") == 4)


def _adapts_split_experts(adapter_dir: Path) -> bool:
    """Whether the adapter's weights sit on per-expert layers (`...experts.3.gate_up.lora_A...`): it was trained on
    an MoE whose experts `hf_safety.quant.quantize_moe_experts` split and quantized."""
    weights = adapter_dir / "adapter_model.safetensors"
    if not weights.is_file():
        return False
    from safetensors import safe_open

    with safe_open(str(weights), framework="pt") as f:
        return any(".experts." in key and (".gate_up." in key or ".down." in key) for key in f.keys())


def _refuse_4bit(base: str) -> None:
    raise ValueError(
        f"the base model {base!r} is 4-bit quantized: merging a LoRA adapter into 4-bit weights loses the adapter's "
        "precision. Merge into the base loaded in bf16 instead (the unquantized checkpoint, dtype=torch.bfloat16, "
        "no load_in_4bit), e.g. base_model='<the bf16 checkpoint>', merge_dtype='bfloat16'"
    )


def merge_adapter(
    adapter_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    base_model: str | os.PathLike | None = None,
    dtype: Any = "auto",
    save_tokenizer: bool = True,
) -> Path:
    """
    Loads the base model of a PEFT adapter folder with [`~hf_safety.models.load_model_and_tokenizer`], merges the
    adapter into it (`merge_and_unload`) and saves the full model (and the tokenizer) to `output_dir`.

    Args:
        adapter_dir: a folder with `adapter_config.json` and the adapter weights.
        output_dir: where to save the merged model.
        base_model: the base to merge into (default: `base_model_name_or_path` of `adapter_config.json`).
        dtype: the dtype to load the base in (default: the checkpoint's); use `torch.bfloat16` for large models.
        save_tokenizer: save the tokenizer too (the adapter folder's if it has one, else the base's).

    Raises:
        `ValueError`: the base is 4-bit quantized (merge into the bf16 base instead).
    """
    from peft import PeftModel
    from transformers import PretrainedConfig

    from ..models import check_model_path, load_model_and_tokenizer, resolve_model_name
    from ..quant import fuse_moe_experts, split_moe_experts

    adapter_dir = Path(adapter_dir)
    adapter_config = json.loads((adapter_dir / "adapter_config.json").read_text())
    base = str(base_model or adapter_config.get("base_model_name_or_path") or "")
    if not base:
        raise ValueError(f"{adapter_dir}/adapter_config.json names no base model: pass base_model=")
    config_dict, _ = PretrainedConfig.get_config_dict(check_model_path(resolve_model_name(base)))
    if _quantized_4bit(config_dict.get("quantization_config")):
        _refuse_4bit(base)
    has_tokenizer = (adapter_dir / "tokenizer_config.json").is_file()
    model, tokenizer = load_model_and_tokenizer(base, dtype=dtype, tokenizer=adapter_dir if has_tokenizer else None)
    loaded_config = getattr(model.config, "quantization_config", None)
    if getattr(model, "is_loaded_in_4bit", False) or _quantized_4bit(loaded_config):
        _refuse_4bit(base)
    split = _adapts_split_experts(adapter_dir) and split_moe_experts(model)  # trained on 4-bit MoE experts
    merged = PeftModel.from_pretrained(model, adapter_dir).merge_and_unload()
    if split:
        fuse_moe_experts(merged)  # back to the checkpoint layout
    merged.save_pretrained(output_dir)
    if save_tokenizer:
        tokenizer.save_pretrained(output_dir)
    logger.info(f"Merged the adapter {adapter_dir} into {base} and saved the full model to {output_dir}")
    return Path(output_dir)


def stage_model(
    source: str | os.PathLike | Any,
    staging_dir: str | os.PathLike,
    *,
    repo_id: str,
    card: ModelCard | str | None = None,
    merged: bool = False,
    adapter: bool | None = None,
    base_model: str | os.PathLike | None = None,
    merge_dtype: Any = "auto",
    extra_files: Sequence[str] = (),
    private: bool | None = None,
    gated: GatedT | bool = None,
    commit_message: str | None = None,
    token: str | bool | None = None,
) -> StagedUpload:
    """
    Writes into `staging_dir` exactly what [`push_staged`] will upload for a model, and the manifest.

    Args:
        source: a saved model or adapter folder (`trainer.save_model()`'s output), or a trainer (its `output_dir`).
        staging_dir: a new or empty folder (a previous staging folder is replaced).
        repo_id: the model repo, `"org/name"`.
        card: the model card, written as `README.md` (default: the folder's own `README.md`, if any).
        merged: for an adapter folder, upload the base merged with the adapter (full weights) instead of the adapter.
        adapter: upload the adapter files (default: `not merged`); with `merged=True` they go to `adapter/`.
        base_model: the base to merge into (default: the one named in `adapter_config.json`).
        merge_dtype: the dtype to load the base in for merging (default: the checkpoint's).
        extra_files: more files of the folder to upload (glob patterns relative to it, e.g. `"eval_results.json"`).
        private: repo visibility (`None`: the account's default, like `TrainingArguments.hub_private_repo`).
        gated: `"auto"` or `"manual"` to gate access (`True` means `"manual"`), `False` to ungate, `None` to leave.
        commit_message: the commit message (default: says what is uploaded).
        token: only used to check that no staged file contains it.
    """
    folder = _model_folder(source)
    gated = _check_gated(gated)
    is_adapter = (folder / "adapter_config.json").is_file()
    adapter = (not merged) if adapter is None else adapter
    if is_adapter and not (merged or adapter):
        raise ValueError("nothing to upload: set merged=True, adapter=True, or both")
    if card is not None and not isinstance(card, (ModelCard, str)):
        raise TypeError(f"card must be a huggingface_hub.ModelCard or a str, got {type(card).__name__}")
    staging = _fresh_staging_dir(staging_dir, protect=[folder])
    tokenizer_files = _select(folder, TOKENIZER_FILES)
    taken = []  # source files placed in the staging folder

    if is_adapter and merged:
        merge_adapter(folder, staging, base_model=base_model, dtype=merge_dtype, save_tokenizer=not tokenizer_files)
        for file in _select(folder, ADAPTER_FILES) if adapter else []:
            _place(file, staging / "adapter" / file.name)
            taken.append(file)
        what = "merged model" + (" and LoRA adapter" if adapter else "")
    else:
        if merged:
            logger.info(f"{folder} holds full weights (no adapter_config.json): uploading them as they are")
        weights = _select(folder, ADAPTER_FILES if is_adapter else WEIGHT_FILES)
        if not any(f.suffix in (".safetensors", ".bin") for f in weights):
            raise FileNotFoundError(f"no model or adapter weights in {folder}: save the model first")
        for file in weights:
            _place(file, staging / file.relative_to(folder))
            taken.append(file)
        what = "LoRA adapter" if is_adapter else "model"
    for file in [*tokenizer_files, *_select(folder, extra_files)]:
        _place(file, staging / file.relative_to(folder))
        taken.append(file)

    if card is not None:
        _write_card(card, staging / "README.md")
    elif (folder / "README.md").is_file():
        shutil.copy2(folder / "README.md", staging / "README.md")
        taken.append(folder / "README.md")
    else:
        logger.warning(f"No model card for {repo_id}: pass card= to upload one as README.md")

    top_level = {file.relative_to(folder).parts[0] for file in taken}
    excluded = sorted(p.name for p in folder.iterdir() if p.name not in top_level)
    if excluded:
        logger.info(f"Not uploaded from {folder}: {', '.join(excluded)}")
    manifest = _manifest(
        repo_id,
        "model",
        private,
        gated,
        commit_message or f"Upload {what} with hf_safety",
        source=str(folder),
        merged=bool(is_adapter and merged),
        adapter=bool(is_adapter and adapter),
        base_model=str(base_model) if base_model else None,
        excluded=excluded,
    )
    return _finish_staging(staging, known_tokens(token), manifest)


# -- datasets ----------------------------------------------------------------------------------------------------


def _tables(data: Any, split: str) -> dict[str, dict[str, Any]]:
    """`{config: {split: Dataset}}` from a `Dataset`, a `DatasetDict` / `{split: Dataset}`, or `{config: splits}`."""
    from datasets import Dataset

    if isinstance(data, Dataset):
        return {"default": {split: data}}
    if isinstance(data, Mapping) and data:
        if all(isinstance(v, Dataset) for v in data.values()):
            return {"default": dict(data)}
        if all(isinstance(v, Mapping) and all(isinstance(d, Dataset) for d in v.values()) for v in data.values()):
            return {config: dict(splits) for config, splits in data.items()}
    raise TypeError(
        "data must be a Dataset, a DatasetDict (or {split: Dataset}), {config: {split: Dataset}}, or a folder whose "
        f"files the card's `configs` metadata names; got {type(data).__name__}"
    )


def _card_data_files(card: DatasetCard) -> dict[tuple[str, str], list[str]] | None:
    """`{(config, split): [path patterns]}` from the card's `configs` metadata, or None when it has none."""
    configs = card.data.to_dict().get("configs")
    if not configs:
        return None
    layout = {}
    for config in configs:
        files = config.get("data_files") or []
        # `data_files` is a path, a list of paths (the train split), or a list of {split, path}
        if isinstance(files, str) or (files and not isinstance(files[0], dict)):
            files = [{"split": "train", "path": files}]
        for entry in files:
            paths = entry["path"] if isinstance(entry["path"], list) else [entry["path"]]
            for path in paths:
                if path.startswith("/") or ".." in Path(path).parts or "://" in path:
                    raise ValueError(f"the card's configs metadata names {path!r}: paths must be inside the repo")
            layout[(config.get("config_name", "default"), entry.get("split", "train"))] = paths
    return layout


def _is_glob(pattern: str) -> bool:
    return any(char in pattern for char in "*?[")


def _shard_paths(config: str, split: str, num_shards: int, patterns: list[str] | None) -> list[str]:
    """Repo paths of a split's parquet shards: `data/<split>-00000-of-00001.parquet` (`<config>/...` for a named
    config), or where the card's pattern for the split says."""
    if patterns is None:
        prefix = "data" if config == "default" else config
        return [f"{prefix}/{split}-{i:05d}-of-{num_shards:05d}.parquet" for i in range(num_shards)]
    if len(patterns) != 1:
        raise ValueError(f"the card names {len(patterns)} paths for {config}/{split}: give one path or pattern")
    pattern = patterns[0]
    if not _is_glob(pattern):
        if num_shards > 1 or not pattern.endswith(".parquet"):
            raise ValueError(
                f"the card's path {pattern!r} for {config}/{split} must be one .parquet file, or a glob such as "
                f"'data/{split}-*' for {num_shards} shards"
            )
        return [pattern]
    folder = os.path.dirname(pattern)
    paths = [f"{folder}/{split}-{i:05d}-of-{num_shards:05d}.parquet".lstrip("/") for i in range(num_shards)]
    if not all(fnmatch.fnmatch(p, pattern) for p in paths):
        raise ValueError(f"the card's pattern {pattern!r} for {config}/{split} must match {paths[0]!r}")
    return paths


def _stage_tables(tables: dict[str, dict[str, Any]], card: DatasetCard, staging: Path, max_shard_size) -> None:
    from datasets.utils.py_utils import convert_file_size_to_int

    layout = _card_data_files(card)
    wanted = {(config, split) for config, splits in tables.items() for split in splits}
    if layout is not None and set(layout) != wanted:
        raise ValueError(
            f"the card's configs metadata lists {sorted(layout)} but the data has {sorted(wanted)}: they must match"
        )
    limit = convert_file_size_to_int(max_shard_size)
    configs = []
    for config, splits in tables.items():
        data_files = []
        for split, dataset in splits.items():
            nbytes = dataset.data.nbytes * len(dataset) / max(len(dataset.data), 1)
            num_shards = max(1, min(math.ceil(nbytes / limit), len(dataset)))
            paths = _shard_paths(config, split, num_shards, None if layout is None else layout[(config, split)])
            for index, path in enumerate(paths):
                (staging / path).parent.mkdir(parents=True, exist_ok=True)
                dataset.shard(num_shards, index, contiguous=True).to_parquet(staging / path)
            prefix = "data" if config == "default" else config
            data_files.append({"split": split, "path": f"{prefix}/{split}-*"})
        configs.append({"config_name": config, "data_files": data_files})
    if layout is None:
        card.data.configs = configs


def _stage_folder_files(folder: Path, card: DatasetCard, staging: Path) -> None:
    layout = _card_data_files(card)
    if layout is None:
        raise ValueError(f"to push the files of {folder}, the card's `configs` metadata must name them")
    for (config, split), patterns in layout.items():
        files = [f for pattern in patterns for f in sorted(folder.glob(pattern)) if f.is_file()]
        if not files:
            raise FileNotFoundError(f"no file in {folder} matches {patterns} ({config}/{split} in the card)")
        for file in files:
            _place(file, staging / file.relative_to(folder))


def stage_dataset(
    data: Any,
    staging_dir: str | os.PathLike,
    *,
    repo_id: str,
    card: DatasetCard | str,
    contains_harmful: bool = True,
    private: bool | None = None,
    public: bool = False,
    gated: GatedT | bool = None,
    split: str = "train",
    max_shard_size: int | str = "500MB",
    commit_message: str | None = None,
    token: str | bool | None = None,
) -> StagedUpload:
    """
    Writes into `staging_dir` exactly what [`push_staged`] will upload for a dataset, and the manifest.

    Args:
        data: a `Dataset` (uploaded as `split`), a `DatasetDict` or `{split: Dataset}`, `{config: {split: Dataset}}`,
            or a folder (e.g. a SEAS `output_dir`) whose files the card's `configs` metadata names (only those are
            uploaded, at the same paths).
        staging_dir: a new or empty folder (a previous staging folder is replaced).
        repo_id: the dataset repo, `"org/name"`.
        card: the dataset card, written as `README.md`. Datasets are written as parquet shards at
            `data/<split>-00000-of-00001.parquet` (`<config>/...` for named configs) and the card's `configs`
            metadata is filled in; if the card already has `configs`, they must list the same configs and splits
            and the files are written at its paths.
        contains_harmful: the data has harmful text (the default): the repo is private unless `public=True`.
        private: repo visibility; `None` is private for harmful data, the account's default otherwise.
        public: the explicit flag to publish harmful data publicly.
        gated: `"auto"` or `"manual"` to gate access (`True` means `"manual"`), `False` to ungate, `None` to leave.
        split: the split name of a single `Dataset`.
        max_shard_size: the largest parquet shard (e.g. `"500MB"`).
        commit_message: the commit message.
        token: only used to check that no staged file contains it.

    Raises:
        `ValueError`: harmful data with `private=False` but without `public=True`.
    """
    private = resolve_visibility(private, public, contains_harmful)
    gated = _check_gated(gated)
    if isinstance(card, ModelCard) or not isinstance(card, (DatasetCard, str)):
        raise TypeError(f"card must be a huggingface_hub.DatasetCard or a str, got {type(card).__name__}")
    card = DatasetCard(str(card))  # a copy: the caller's card is left as it was
    if isinstance(data, (str, os.PathLike)):
        folder = Path(data).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"dataset folder not found: {folder}")
        staging = _fresh_staging_dir(staging_dir, protect=[folder])
        _stage_folder_files(folder, card, staging)
    else:
        tables = _tables(data, split)
        staging = _fresh_staging_dir(staging_dir)
        _stage_tables(tables, card, staging, max_shard_size)
    _write_card(card, staging / "README.md")
    if contains_harmful and public and not gated:
        logger.warning(f"{repo_id} holds harmful text and will be public and not gated: consider gated='manual'")
    manifest = _manifest(
        repo_id,
        "dataset",
        private,
        gated,
        commit_message or "Upload dataset with hf_safety",
        contains_harmful=contains_harmful,
        public=public,
    )
    return _finish_staging(staging, known_tokens(token), manifest)


# -- pushing -----------------------------------------------------------------------------------------------------


def is_offline() -> bool:
    """Whether the Hub is off limits: `huggingface_hub`'s offline mode, or `HF_HUB_OFFLINE` set now."""
    env = os.environ.get("HF_HUB_OFFLINE", "")
    return constants.is_offline_mode() or env.upper() in {"1", "ON", "YES", "TRUE"}


@contextlib.contextmanager
def _step(step: str, upload: StagedUpload, repo_id: str, secrets: Sequence[str]) -> Iterator[None]:
    """Turns any failure of `step` into a [`HubPushError`] that names it and says where the files are."""
    try:
        yield
    except Exception as err:
        detail = redact(f"{type(err).__name__}: {err}", secrets)
        message = (
            f"Hub push failed at step '{step}' for {upload.repo_type} repo {repo_id!r}: {detail}\n"
            f"Nothing local was deleted: the staged files are in {upload.staging_dir}; once fixed, push them with "
            f"hf_safety.hub.push_staged({str(upload.staging_dir)!r})."
        )
        error = HubPushError(
            message, step=step, repo_id=repo_id, repo_type=upload.repo_type, staging_dir=upload.staging_dir
        )
        leaked = any(secret in str(err) for secret in secrets)
        raise error from (None if leaked else err)


def push_staged(
    staged: StagedUpload | str | os.PathLike,
    *,
    token: str | bool | None = None,
    api: HfApi | None = None,
    endpoint: str | None = None,
    dry_run: bool = False,
    revision: str | None = None,
) -> HubPushResult:
    """
    Uploads a staging folder as its manifest says: creates the repo with its visibility, sets visibility and gating,
    then uploads exactly the staged files (one `upload_folder` call, with the manifest's commit message).

    Offline (`HF_HUB_OFFLINE=1`) or with `dry_run=True` nothing is sent and the result says so.

    Args:
        staged: a [`StagedUpload`] or a staging folder.
        token: a Hub token (default: the `huggingface_hub` login or `HF_TOKEN`); passed to `HfApi` only.
        api: the `HfApi` to use (default: one for `endpoint`).
        endpoint: the Hub endpoint (default: `HF_ENDPOINT` or huggingface.co).
        dry_run: stage only, send nothing.
        revision: the branch to commit to (default: main).

    Raises:
        [`HubPushError`]: a step failed (`error.step`); the local files are kept.
    """
    upload = staged if isinstance(staged, StagedUpload) else StagedUpload.from_dir(staged)
    upload.verify()
    if dry_run or is_offline():
        result = HubPushResult(upload, pushed=False, reason="dry run" if dry_run else "offline")
        logger.info(str(result))
        return result
    if api is None:
        from .. import __version__

        api = HfApi(endpoint=endpoint, library_name="hf_safety", library_version=__version__)
    secrets = known_tokens(token)
    repo_id, repo_type = upload.repo_id, upload.repo_type

    logger.info(f"Creating {repo_type} repo {repo_id} (private={upload.private})")
    with _step("create repo", upload, repo_id, secrets):
        repo_url = api.create_repo(repo_id, repo_type=repo_type, private=upload.private, exist_ok=True, token=token)
        repo_id = repo_url.repo_id or repo_id  # the full id when only a name was given
    if upload.private is not None or upload.gated is not None:
        # Also applied when the repo already existed (create_repo does not change an existing repo)
        logger.info(f"Setting {repo_id}: private={upload.private}, gated={upload.gated}")
        with _step("set visibility and gating", upload, repo_id, secrets):
            api.update_repo_settings(
                repo_id, repo_type=repo_type, private=upload.private, gated=upload.gated, token=token
            )
    logger.info(f"Uploading {len(upload.files)} files from {upload.staging_dir} to {repo_id}")
    with _step("upload", upload, repo_id, secrets):
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=upload.staging_dir,
            repo_type=repo_type,
            commit_message=upload.commit_message,
            allow_patterns=list(upload.files),
            ignore_patterns=[MANIFEST],
            token=token,
            revision=revision,
        )
    result = HubPushResult(
        upload, pushed=True, repo_url=str(repo_url), commit_url=commit.commit_url, commit_oid=commit.oid
    )
    logger.info(str(result))
    return result


def push_model(
    source: str | os.PathLike | Any,
    repo_id: str,
    *,
    staging_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    api: HfApi | None = None,
    endpoint: str | None = None,
    dry_run: bool = False,
    revision: str | None = None,
    **stage_kwargs: Any,
) -> HubPushResult:
    """
    [`stage_model`] then [`push_staged`]: pushes a model or LoRA adapter folder (or the merged model) with its card.

    `staging_dir` defaults to `<source>-hub` next to the source folder; `stage_kwargs` are [`stage_model`]'s
    (`card`, `merged`, `adapter`, `base_model`, `merge_dtype`, `extra_files`, `private`, `gated`, `commit_message`).

    ```python
    >>> push_model("out/derta", "me/llama3-derta-lora", card=derta_model_card(...), private=True)
    >>> push_model("out/derta", "me/llama3-derta", merged=True, merge_dtype="bfloat16", card=...)
    ```
    """
    folder = _model_folder(source)
    staging_dir = staging_dir or default_staging_dir(folder)
    upload = stage_model(folder, staging_dir, repo_id=repo_id, token=token, **stage_kwargs)
    return push_staged(upload, token=token, api=api, endpoint=endpoint, dry_run=dry_run, revision=revision)


def push_dataset(
    data: Any,
    repo_id: str,
    *,
    card: DatasetCard | str,
    staging_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    api: HfApi | None = None,
    endpoint: str | None = None,
    dry_run: bool = False,
    revision: str | None = None,
    **stage_kwargs: Any,
) -> HubPushResult:
    """
    [`stage_dataset`] then [`push_staged`]: pushes a dataset as parquet with its card. Harmful data (the default)
    goes to a private repo unless `public=True`.

    `staging_dir` defaults to `<folder>-hub` for a folder and is required otherwise; `stage_kwargs` are
    [`stage_dataset`]'s (`contains_harmful`, `private`, `public`, `gated`, `split`, `max_shard_size`,
    `commit_message`).

    ```python
    >>> push_dataset("out/seas", "me/seas-attack-logs", card=seas_dataset_card("out/seas"), gated="manual")
    ```
    """
    if staging_dir is None:
        if not isinstance(data, (str, os.PathLike)):
            raise ValueError("pass staging_dir= (where to write the files to upload)")
        staging_dir = default_staging_dir(data)
    upload = stage_dataset(data, staging_dir, repo_id=repo_id, card=card, token=token, **stage_kwargs)
    return push_staged(upload, token=token, api=api, endpoint=endpoint, dry_run=dry_run, revision=revision)
