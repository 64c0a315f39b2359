"""mmengine.kernels as a package: import paths, running without Triton, and the CPU error."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

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


class HostSyncDetector(TorchDispatchMode):
    """Records the ATen ops that read a device tensor back to the host (a sync on CUDA).

    On CPU nothing actually synchronises, but these are the ops that would: reading a scalar
    (``.item()``, ``bool()``, ``int()`` all dispatch to ``_local_scalar_dense``), and the ops whose
    output size depends on the data.
    """

    SYNCING = ("_local_scalar_dense", "nonzero", "masked_select", "unique", "bincount", "repeat_interleave")

    def __init__(self):
        super().__init__()
        self.syncs = []

    def __enter__(self):
        # .tolist() copies to the host without dispatching an op on a CPU tensor: catch it here.
        self._tolist = torch.Tensor.tolist
        torch.Tensor.tolist = lambda t: self.syncs.append("tolist") or self._tolist(t)
        return super().__enter__()

    def __exit__(self, *exc):
        torch.Tensor.tolist = self._tolist
        return super().__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.__name__
        if any(s in name for s in self.SYNCING):
            self.syncs.append(name)
        if "index" in name and any(isinstance(a, torch.Tensor) and a.dtype == torch.bool
                                   for a in tree_flatten(args)[0]):
            self.syncs.append(name + " with a boolean mask")
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("weight", [None, "tensor", "balanced"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_never_reads_back_to_the_host(monkeypatch, weight, reduction):
    from mmengine.kernels import class_weighted_cross_entropy
    from mmengine.kernels import cross_entropy as ce_module

    # The out-of-range check reads the targets only on CPU (on CUDA it is a device-side
    # assertion); everything else runs the same code path as on a GPU.
    monkeypatch.setattr(ce_module, "_check_target_range", lambda *args: None)
    logits = torch.randn(21, 7, requires_grad=True)
    targets = torch.randint(0, 7, (21,), generator=torch.Generator().manual_seed(0))
    targets[::4] = -1
    w = torch.rand(7) + 0.1 if weight == "tensor" else weight
    with HostSyncDetector() as detector:
        loss = class_weighted_cross_entropy(logits, targets, w, reduction=reduction)
        torch.autograd.grad(loss, logits, torch.ones_like(loss))
    assert detector.syncs == []


@pytest.mark.parametrize("lengths", [None, [5, 1]])
def test_attention_never_reads_back_to_the_host(lengths):
    from mmengine.kernels import rope_attention

    q, k, v = (torch.randn(2, 1, 9, 16, requires_grad=True) for _ in range(3))
    lens = torch.tensor(lengths) if lengths is not None else None
    with HostSyncDetector() as detector:
        o = rope_attention(q, k, v, torch.ones(9, 16), torch.zeros(9, 16), causal=True, lengths=lens)
        torch.autograd.grad(o, (q, k, v), torch.ones_like(o))
    assert detector.syncs == []


@pytest.mark.slow
def test_imports_from_the_installed_layout(tmp_path):
    # An installed wheel holds the kernels at mmengine/kernels/ (tests/test_packaging.py checks the
    # wheel's contents); lay the package out that way, away from the checkout, and import it.
    site = tmp_path / "site"
    ignore = shutil.ignore_patterns("__pycache__", "*.so")
    shutil.copytree(REPO / "mmengine", site / "mmengine", ignore=ignore)
    shutil.copytree(REPO / "kernels", site / "mmengine" / "kernels", ignore=ignore)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(site)
    code = (
        "import json, sys, mmengine.kernels as K;"
        "R = sys.modules['mmengine.kernels.rope_attention'];"
        "print(json.dumps({'file': K.__file__, 'sub': R.__file__, 'bare': 'kernels' in sys.modules,"
        " 'hook': any(type(f).__name__ == '_SourceKernelsFinder' for f in sys.meta_path)}))"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(out["file"]).resolve() == (site / "mmengine" / "kernels" / "__init__.py").resolve()
    assert Path(out["sub"]).resolve() == (site / "mmengine" / "kernels" / "rope_attention.py").resolve()
    assert out["bare"] is False and out["hook"] is False
