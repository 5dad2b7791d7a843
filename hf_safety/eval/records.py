"""[`OutputDir`]: an evaluation's output folder, checked before any generation and filled as the work is done.

- The folder is created and a probe file written at once, so an unwritable `output_dir` fails before the model is
  even loaded, not after hours of generation.
- A folder that already holds an evaluation is refused unless the caller asks to `overwrite` it (our files are
  removed first, so old plots never sit beside new results) or to `resume` it.
- Every suite x attack block is appended to `records.jsonl` (its records, then an end-of-block line) as soon as it
  is judged, so a crash keeps the finished blocks; `resume` reads them back and runs only what is missing. A resumed
  run must be the same evaluation: `run.json` holds what identifies it (model, judge, suites, attacks, generation)
  and a mismatch is an error that names the differing keys.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

from .report import EvalRecord


RECORDS = "records.jsonl"
RUN = "run.json"
# Every file an evaluation writes (report.py's files included), removed by `overwrite`
OUTPUT_FILES = (
    RECORDS,
    RUN,
    "report.json",
    "summary.md",
    "asr_by_attack.png",
    "over_refusal.png",
    "refusal_vs_prefix.png",
)
_RECORD_FIELDS = {f.name for f in fields(EvalRecord)}


class OutputDirError(ValueError):
    """An output folder that cannot be used: not writable, or holding a previous evaluation."""


class OutputDir:
    """
    The output folder of one evaluation (see the module docstring).

    Args:
        path: the folder (created if needed).
        overwrite: remove a previous evaluation's files first.
        resume: continue a previous evaluation: its finished blocks are returned by [`start`].

    Raises:
        [`OutputDirError`]: the folder cannot be written, or holds an evaluation and neither flag is set.
    """

    def __init__(self, path: str | os.PathLike, overwrite: bool = False, resume: bool = False):
        if overwrite and resume:
            raise OutputDirError("overwrite and resume exclude each other")
        self.path = Path(path)
        self.resume = resume
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            probe = self.path / ".hf_safety_write_test"
            probe.write_text("")
            probe.unlink()
        except OSError as err:
            raise OutputDirError(f"output_dir {str(self.path)!r} cannot be written: {err}") from err
        previous = [name for name in OUTPUT_FILES if (self.path / name).exists()]
        if previous and overwrite:
            for name in previous:
                (self.path / name).unlink()
        elif previous and not resume:
            raise OutputDirError(
                f"output_dir {str(self.path)!r} already holds an evaluation ({', '.join(previous)}); pass "
                "overwrite=True (CLI --overwrite) to replace it, resume=True (--resume) to continue it, or choose "
                "another folder"
            )

    @property
    def records_file(self) -> Path:
        return self.path / RECORDS

    def start(self, fingerprint: dict[str, Any]) -> dict[tuple[str, str], tuple[list[EvalRecord], int]]:
        """
        Begins the run: writes `run.json`, or with `resume` checks it against `fingerprint`, and returns the finished
        blocks `{(suite, attack): (records, n_skipped)}` read back from `records.jsonl` (unfinished blocks are
        dropped from the file, so nothing is duplicated).
        """
        run_file = self.path / RUN
        fingerprint = json.loads(json.dumps(fingerprint, default=str))
        if self.resume and run_file.exists():
            previous = json.loads(run_file.read_text(encoding="utf-8"))
            differing = sorted(k for k in set(previous) | set(fingerprint) if previous.get(k) != fingerprint.get(k))
            if differing:
                raise OutputDirError(
                    f"cannot resume the evaluation in {str(self.path)!r}: it was run with different settings "
                    f"({', '.join(differing)}); use overwrite=True or another folder"
                )
        run_file.write_text(json.dumps(fingerprint, indent=2) + "\n", encoding="utf-8")
        done: dict[tuple[str, str], tuple[list[EvalRecord], int]] = {}
        if not (self.resume and self.records_file.exists()):
            self.records_file.write_text("", encoding="utf-8")
            return done
        pending: dict[tuple[str, str], list[dict[str, Any]]] = {}
        kept_lines: list[str] = []
        block_lines: dict[tuple[str, str], list[str]] = {}
        for line in self.records_file.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # a line cut by a crash: its block is unfinished
                continue
            key = (entry["suite"], entry["attack"])
            if entry.get("end_of_block"):
                records = [
                    EvalRecord(**{k: v for k, v in r.items() if k in _RECORD_FIELDS}) for r in pending.pop(key, [])
                ]
                done[key] = (records, int(entry["n_skipped"]))
                kept_lines += block_lines.pop(key, []) + [line]
            else:
                pending.setdefault(key, []).append(entry)
                block_lines.setdefault(key, []).append(line)
        self.records_file.write_text("".join(f"{line}\n" for line in kept_lines), encoding="utf-8")
        return done

    def append_block(self, suite: str, attack: str, records: list[EvalRecord], n_skipped: int) -> None:
        """Appends one judged suite x attack block to `records.jsonl` and flushes it to disk."""
        with self.records_file.open("a", encoding="utf-8") as f:
            for record in records:
                f.write(json.dumps({"suite": suite, "attack": attack, **asdict(record)}, ensure_ascii=False) + "\n")
            f.write(
                json.dumps({"suite": suite, "attack": attack, "end_of_block": True, "n_skipped": n_skipped}) + "\n"
            )
            f.flush()
            os.fsync(f.fileno())
