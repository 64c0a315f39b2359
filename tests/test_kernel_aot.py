"""Every kernel and launch configuration compiles for sm_80 and sm_90 without spills (no GPU needed).

Compilation cannot run under TRITON_INTERPRET (set by conftest.py), so it runs in a subprocess
(`python -m mmengine.kernels.aot`). Attention kernels are compiled causal and not: register
allocation differs between the two, and only one of them spilled in a configuration this table
once had. Triton caches the compiled kernels, so only the first run pays the compile time
(~50 s of CPU for the 120 compiles; about 30 s on two idle cores, twice that on a busy machine).
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from mmengine.kernels import aot

REPO = Path(__file__).resolve().parents[1]


def test_parse_cuobjdump():
    text = """
Resource usage:
 Common:
  GLOBAL:0
 Function _attn_fwd:
  REG:168 STACK:0 SHARED:0 LOCAL:0 CONSTANT[0]:512 TEXTURE:0 SURFACE:0 SAMPLER:0
"""
    assert aot._parse_cuobjdump(text, "_attn_fwd") == {"REG": 168, "STACK": 0, "SHARED": 0, "LOCAL": 0}
    # With several kernels in one cubin each one's own line is read, not the first one printed.
    two = text + """ Function _attn_bwd_dq:
  REG:200 STACK:16 SHARED:1024 LOCAL:8 CONSTANT[0]:512
"""
    assert aot._parse_cuobjdump(two, "_attn_bwd_dq") == {"REG": 200, "STACK": 16, "SHARED": 1024, "LOCAL": 8}
    with pytest.raises(RuntimeError, match="_attn_bwd_dkdv"):
        aot._parse_cuobjdump(two, "_attn_bwd_dkdv")


def test_cuobjdump_ships_with_triton():
    assert aot.cuobjdump_path().is_file()


@pytest.mark.slow
def test_every_config_compiles_for_sm80_and_sm90_without_spills():
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(
        [sys.executable, "-m", "mmengine.kernels.aot", "--json"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900,
    )
    assert proc.stdout.strip(), proc.stderr
    rows = json.loads(proc.stdout.strip().splitlines()[-1])
    n_specs = len(aot.kernel_specs())
    assert len(rows) == 2 * n_specs
    assert {r["target"] for r in rows} == {"sm_80", "sm_90"}
    kernels = {r["kernel"] for r in rows}
    assert kernels == {"_attn_fwd", "_attn_bwd_preprocess", "_attn_bwd_dkdv", "_attn_bwd_dq", "_weighted_ce_kernel"}
    bad = [r for r in rows if r["local_bytes"] or r["stack_bytes"] or r["shared_bytes"] > r["shared_limit"]]
    assert not bad, "spills or too much shared memory:\n" + "\n".join(map(str, bad))
    assert all(0 < r["registers"] <= 255 for r in rows)
    assert proc.returncode == 0
