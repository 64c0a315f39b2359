"""The standalone CMake + Ninja build of the loader produces a working module."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def cmake_build(build_dir: Path, *extra: str) -> Path:
    """Configures and builds CMakeLists.txt into build_dir; returns the built extension."""
    for tool in ("cmake", "ninja"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is not installed (pip install cmake ninja)")
    pytest.importorskip("pybind11", reason="pybind11 is not installed here (CMake finds it via python -m pybind11)")
    configure = [
        "cmake", "-S", str(ROOT), "-B", str(build_dir), "-G", "Ninja",
        f"-DPython_EXECUTABLE={sys.executable}", *extra,
    ]
    for cmd in (configure, ["cmake", "--build", str(build_dir)]):
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    built = sorted(build_dir.glob("_fastloader*.so")) + sorted(build_dir.glob("_fastloader*.pyd"))
    assert built, f"no _fastloader module in {build_dir}"
    return built[0]


def test_cmake_ninja_build_imports_and_runs(tmp_path):
    so = cmake_build(tmp_path / "build")
    code = (
        "import sys, numpy as np\n"
        f"sys.path.insert(0, {str(so.parent)!r})\n"
        "import _fastloader\n"
        f"assert _fastloader.__file__ == {str(so)!r}, _fastloader.__file__\n"
        "t = np.array([1, 0, 0, 2, 3, 0, 0, 4, 5], dtype=np.uint16)\n"
        "assert _fastloader.paragraph_starts(t, np.array([0, 0]), 2).tolist() == [0, 3, 7]\n"
        "x, y = _fastloader.gather_windows(t, np.array([3]), 2, shift=True)\n"
        "assert x.tolist() == [[2, 3]] and y.tolist() == [[3, 0]]\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
