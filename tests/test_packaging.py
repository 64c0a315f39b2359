"""The wheel holds the extension, the bundled corpus and mmengine.kernels (never a bare kernels/)."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_contents(tmp_path):
    # --no-build-isolation builds with what is installed here, so the build requirements must be
    pytest.importorskip("pybind11", reason="pybind11 (a build requirement) is not installed; pip install pybind11")
    pytest.importorskip("setuptools", reason="setuptools is not installed")
    # build from a copy so that the test neither sees nor leaves build artefacts in the checkout
    src = tmp_path / "src"
    shutil.copytree(
        ROOT,
        src,
        ignore=shutil.ignore_patterns(
            ".git", "build", "dist", "*.egg-info", "__pycache__", "*.so", ".pytest_cache",
            ".benchmarks", ".hypothesis", "out", "out-*", "data-cache", ".venv",
        ),
    )
    wheels = tmp_path / "wheels"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (wheel,) = wheels.glob("mmengine-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert any(n.startswith("mmengine/_fastloader") and n.endswith((".so", ".pyd")) for n in names), names
    assert "mmengine/assets/tinyshakespeare.txt" in names
    assert "mmengine/kernels/__init__.py" in names
    assert "mmengine/data/fastloader.py" in names
    top_level = {n.split("/", 1)[0] for n in names}
    assert "kernels" not in top_level, sorted(top_level)
    assert not any(n.startswith(("csrc/", "tests/", "benchmarks/")) for n in names)
