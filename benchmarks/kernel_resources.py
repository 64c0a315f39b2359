"""Print the ahead-of-time resource table of every Triton kernel configuration (no GPU needed).

    python benchmarks/kernel_resources.py [--arch 80 --arch 90] [--json]

Each configuration the launchers can pick is compiled for sm_80 and sm_90 with
``triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))`` and measured with the
``cuobjdump --dump-resource-usage`` shipped in the triton wheel: registers per thread, shared
memory per block (static + Triton's dynamic), and spilled bytes (stack frame + local memory).
The logic lives in ``mmengine.kernels.aot`` (also used by tests/test_kernel_aot.py). Exits 1
if any configuration spills or exceeds the target's shared memory.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

if __name__ == "__main__":
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}  # compilation cannot be interpreted
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    sys.exit(subprocess.call([sys.executable, "-m", "mmengine.kernels.aot", *sys.argv[1:]], env=env))
