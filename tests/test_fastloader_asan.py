"""The loader's crash tests under AddressSanitizer (opt-in: MMENGINE_ASAN=1, ~1 minute).

Builds an ASan copy of the extension with CMake (-DFASTLOADER_ASAN=ON), makes it stand in for
``mmengine._fastloader`` through a ``sitecustomize`` on PYTHONPATH, preloads libasan, and runs
the fuzz and property tests of test_fastloader.py in a subprocess. Any out-of-bounds read or
write aborts that subprocess with an ASan report.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_cmake_build import cmake_build

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.environ.get("MMENGINE_ASAN") != "1", reason="set MMENGINE_ASAN=1 to run the ASan build"),
]

SITECUSTOMIZE = """
import importlib.util, sys
spec = importlib.util.spec_from_file_location("_fastloader", {path!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sys.modules["mmengine._fastloader"] = module
"""


def test_fuzz_and_property_tests_under_asan(tmp_path):
    cxx = shutil.which("g++") or shutil.which("c++")
    if cxx is None:
        pytest.skip("no C++ compiler to locate libasan")
    # libstdc++ is preloaded too: python itself does not link it, and ASan must see it at
    # start-up to intercept C++ throws (else "CHECK failed ... real___cxa_throw").
    libs = [
        subprocess.run([cxx, f"-print-file-name={name}"], capture_output=True, text=True).stdout.strip()
        for name in ("libasan.so", "libstdc++.so")
    ]
    if not all(os.path.isabs(lib) for lib in libs):
        pytest.skip("libasan.so / libstdc++.so not found")
    so = cmake_build(tmp_path / "build-asan", "-DFASTLOADER_ASAN=ON", "-DCMAKE_BUILD_TYPE=RelWithDebInfo")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE.format(path=str(so)))
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
        LD_PRELOAD=" ".join(libs),
        # allocator_may_return_null: a huge request (the fuzz asks for some) fails as in a normal
        # build (NULL -> MemoryError) instead of ASan aborting on it
        ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:allocator_may_return_null=1",
    )
    check = "import mmengine._fastloader as m; assert m.__file__ == %r" % str(so)
    proc = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tests = Path(__file__).with_name("test_fastloader.py")
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(tests)],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "AddressSanitizer" not in proc.stderr
