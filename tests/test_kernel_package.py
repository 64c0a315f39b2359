"""mmengine.kernels as a package: import paths, running without Triton, and the CPU error."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_python(code, *, cwd, interpret=None):
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    if interpret is not None:
        env["TRITON_INTERPRET"] = interpret
    proc = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_public_names_are_functions():
    import mmengine.kernels as K

    for name in ("rope_attention", "rope_attention_reference", "class_weighted_cross_entropy",
                 "class_weighted_cross_entropy_reference", "triton_available"):
        assert callable(getattr(K, name)) and not isinstance(getattr(K, name), type(K)), name
    assert issubclass(K.KernelUnavailableError, RuntimeError)
    assert K.triton_available()


@pytest.mark.slow
def test_imports_from_another_directory_without_a_bare_kernels_module(tmp_path):
    out = run_python(
        "import json, sys, mmengine.kernels as K, mmengine.kernels.aot;"
        "print(json.dumps({'file': K.__file__, 'bare': 'kernels' in sys.modules,"
        " 'sub': sys.modules['mmengine.kernels.rope_attention'].__name__}))",
        cwd=tmp_path,
    )
    assert Path(out["file"]).resolve() == (REPO / "kernels" / "__init__.py").resolve()
    assert out["bare"] is False
    assert out["sub"] == "mmengine.kernels.rope_attention"


@pytest.mark.slow
def test_imports_and_explains_without_triton(tmp_path):
    # Simulate a machine without Triton: a None entry in sys.modules makes `import triton` fail.
    code = """
import json, sys
sys.modules['triton'] = None
import torch
import mmengine.kernels as K
q = torch.randn(1, 1, 4, 16)
cos, sin = torch.ones(4, 16), torch.zeros(4, 16)
errors = []
for call in (lambda: K.rope_attention(q, q, q, cos, sin),
             lambda: K.class_weighted_cross_entropy(torch.randn(3, 2), torch.tensor([0, 1, 1]))):
    try:
        call()
    except K.KernelUnavailableError as e:
        errors.append(str(e))
ref = K.rope_attention_reference(q, q, q, cos, sin)
print(json.dumps({'available': K.triton_available(), 'errors': errors, 'ref_shape': list(ref.shape)}))
"""
    out = run_python(code, cwd=tmp_path)
    assert out["available"] is False
    assert out["ref_shape"] == [1, 1, 4, 16]
    assert len(out["errors"]) == 2
    assert all("Triton" in e and "not installed" in e for e in out["errors"])


@pytest.mark.slow
def test_cpu_tensors_without_interpreter_raise_one_clear_sentence(tmp_path):
    code = """
import json, torch
import mmengine.kernels as K
q = torch.randn(1, 1, 4, 16)
errors = []
for call in (lambda: K.rope_attention(q, q, q, torch.ones(4, 16), torch.zeros(4, 16)),
             lambda: K.class_weighted_cross_entropy(torch.randn(3, 2), torch.tensor([0, 1, 1]))):
    try:
        call()
        errors.append(None)
    except K.KernelUnavailableError as e:
        errors.append(str(e))
print(json.dumps(errors))
"""
    errors = run_python(code, cwd=tmp_path, interpret=None)
    assert len(errors) == 2 and all(errors)
    for e in errors:
        assert "active drivers" not in e
        assert "CUDA" in e and "TRITON_INTERPRET=1" in e
        assert e.count(". ") == 0 and e.endswith(".")  # one sentence
