"""bench/gpu_checks.sh, the prepared run for a lent GPU, in its CPU smoke mode: every step's command runs and writes
its results (the GPU sizes themselves can only run on a GPU)."""

import json
import os
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).parent.parent


def test_gpu_checks_smoke(tmp_path):
    env = {**os.environ, "GPU_CHECKS_SMOKE": "1", "GPU_CHECKS_RESULTS": str(tmp_path), "OUT": str(tmp_path / "out")}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"  # `python` is this interpreter
    (tmp_path / "out").mkdir()
    done = subprocess.run(["bash", "bench/gpu_checks.sh"], cwd=ROOT, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    names = {"judge_throughput_lg3_8b_shape.json": "judge_throughput", "derta_fused_cuda.json": "derta_fused"}
    for name, benchmark in names.items():
        assert json.loads((tmp_path / "out" / name).read_text())["benchmark"] == benchmark
    assert json.loads((tmp_path / "out" / "qlora_gpu_checks.json").read_text())
    assert {p.name for p in (tmp_path / "out").glob("gpu_checks_*.log")} == {
        f"gpu_checks_{step}.log" for step in ("judge", "derta", "qlora")
    }
