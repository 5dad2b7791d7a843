"""What every bench records beside its figures (the machine, the versions) and how it writes them."""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path
from typing import Any

import torch
import transformers


def device_info(device: torch.device) -> dict[str, Any]:
    """The device the figures were measured on."""
    return {
        "type": device.type,
        "name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def versions() -> dict[str, str]:
    return {"torch": torch.__version__, "transformers": transformers.__version__}


def write_result(path: Path, result: dict[str, Any]) -> dict[str, Any]:
    """Writes `result` as JSON to `path` (folders created) and says where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")
    return result
