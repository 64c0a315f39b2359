"""class_weighted_cross_entropy (Triton, run by the interpreter on CPU) against F.cross_entropy in float64."""
import pytest
import torch
import torch.nn.functional as F
from mmengine.kernels import (
    balanced_class_weights,
    class_weighted_cross_entropy,
    class_weighted_cross_entropy_reference,
)
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

TOLERANCES = {torch.float32: (1e-5, 1e-5), torch.float16: (2e-3, 2e-3), torch.bfloat16: (1e-2, 1e-2)}


def make_inputs(N, C, dtype, *, seed=0, ignore_every=4, ignore_index=-1, classes=None):
    gen = torch.Generator().manual_seed(seed)
    logits = (3 * torch.randn(N, C, generator=gen)).to(dtype).requires_grad_()
    pool = torch.tensor(classes) if classes is not None else torch.arange(C)
    targets = pool[torch.randint(0, len(pool), (N,), generator=gen)]
    if ignore_every:
        targets[::ignore_every] = ignore_index
    return logits, targets


def check(logits, targets, weight, reduction, dtype, ignore_index=-1, seed=1):
    loss = class_weighted_cross_entropy(logits, targets, weight, ignore_index=ignore_index, reduction=reduction)
    grad_out = torch.randn(loss.shape, generator=torch.Generator().manual_seed(seed)).to(dtype)
    (grad,) = torch.autograd.grad(loss, logits, grad_out)

    x64 = logits.detach().double().requires_grad_()
    w = weight.double() if isinstance(weight, torch.Tensor) else weight
    ref = class_weighted_cross_entropy_reference(x64, targets, w, ignore_index=ignore_index, reduction=reduction)
    (ref_grad,) = torch.autograd.grad(ref, x64, grad_out.double())

    atol, rtol = TOLERANCES[dtype]
    assert loss.dtype == dtype and loss.shape == ref.shape
    torch.testing.assert_close(loss.double(), ref, atol=atol * max(1.0, ref.abs().max().item()), rtol=rtol)
    torch.testing.assert_close(grad.double(), ref_grad, atol=atol * max(1e-3, ref_grad.abs().max().item()), rtol=rtol)


@pytest.mark.parametrize("C", [2, 5, 65, 3000])
@pytest.mark.parametrize("weight", [None, "tensor", "balanced"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_f_cross_entropy(C, weight, reduction):
    N = 37 if C < 1000 else 9
    logits, targets = make_inputs(N, C, torch.float32, seed=C)
    w = torch.rand(C, generator=torch.Generator().manual_seed(7)) + 0.1 if weight == "tensor" else weight
    check(logits, targets, w, reduction, torch.float32)


@pytest.mark.parametrize(
    "C,weight,reduction,dtype",
    [
        (5, "balanced", "mean", torch.float16),
        (65, None, "sum", torch.float16),
        (3000, None, "mean", torch.float16),
        (65, "balanced", "mean", torch.bfloat16),  # no tl.dot here, so the interpreter can run bf16
        (3000, None, "none", torch.bfloat16),
    ],
)
def test_half_precision_logits(C, weight, reduction, dtype):
    logits, targets = make_inputs(24 if C < 1000 else 6, C, dtype, seed=3)
    check(logits, targets, weight, reduction, dtype)


def test_balanced_with_absent_classes():
    # Classes 1 and 3 never appear: they get weight 0; the mean is the average over present classes
    # of each class's mean NLL.
    logits, targets = make_inputs(40, 5, torch.float32, classes=[0, 2, 4], ignore_every=5)
    w = balanced_class_weights(targets, 5)
    assert w[1] == 0 and w[3] == 0 and torch.all(w[[0, 2, 4]] > 0)
    check(logits, targets, "balanced", "mean", torch.float32)
    loss = class_weighted_cross_entropy(logits.detach(), targets, "balanced")
    nll = F.cross_entropy(logits.detach(), targets, ignore_index=-1, reduction="none")
    per_class = [nll[targets == c].mean() for c in (0, 2, 4)]
    torch.testing.assert_close(loss, torch.stack(per_class).mean())


def test_balanced_weights_formula():
    targets = torch.tensor([0, 0, 0, 1, -1, 2, 2, -1])
    # N_valid = 6, C = 4: w_c = 6 / (4 * n_c), absent class 3 -> 0
    torch.testing.assert_close(balanced_class_weights(targets, 4), torch.tensor([0.5, 1.5, 0.75, 0.0]))


# The interpreter runs the masked-out 0 / 0 lanes in numpy, which warns; a GPU does not.
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("weight", [None, "balanced"])
def test_all_ignored(weight):
    # Documented behaviour, the same as F.cross_entropy: mean -> NaN (0 / 0) with zero gradient,
    # sum -> 0, none -> zeros.
    logits = torch.randn(6, 5, requires_grad=True)
    targets = torch.full((6,), -1)
    loss = class_weighted_cross_entropy(logits, targets, weight)
    assert torch.isnan(loss)
    assert torch.isnan(class_weighted_cross_entropy_reference(logits, targets, weight))
    (grad,) = torch.autograd.grad(loss, logits)
    assert torch.all(grad == 0)
    assert class_weighted_cross_entropy(logits.detach(), targets, weight, reduction="sum") == 0
    assert torch.all(class_weighted_cross_entropy(logits.detach(), targets, weight, reduction="none") == 0)


def test_other_ignore_index():
    logits, targets = make_inputs(30, 7, torch.float32, ignore_index=-100)
    check(logits, targets, "balanced", "mean", torch.float32, ignore_index=-100)


def test_language_model_use():
    # (B, T, V) logits flattened, unweighted, masked positions ignored.
    B, T, V = 2, 5, 1100
    logits = torch.randn(B, T, V, requires_grad=True)
    targets = torch.randint(0, V, (B, T))
    targets[:, ::2] = -1
    loss = class_weighted_cross_entropy(logits.view(-1, V), targets.view(-1))
    ref = F.cross_entropy(logits.view(-1, V), targets.view(-1), ignore_index=-1)
    torch.testing.assert_close(loss, ref)
    (g,) = torch.autograd.grad(loss, logits)
    (rg,) = torch.autograd.grad(ref, logits)
    torch.testing.assert_close(g, rg)


def test_no_grad_needed_and_non_contiguous_rows():
    logits = torch.randn(10, 13)[:, :11]  # row stride 13, unit column stride
    targets = torch.randint(0, 11, (10,))
    torch.testing.assert_close(
        class_weighted_cross_entropy(logits, targets), F.cross_entropy(logits, targets), atol=1e-6, rtol=1e-6
    )


def test_second_backward_is_refused():
    logits, targets = make_inputs(8, 3, torch.float32)
    loss = class_weighted_cross_entropy(logits, targets)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="twice"):
        loss.backward()


def test_bad_inputs():
    logits = torch.randn(4, 3)
    with pytest.raises(IndexError, match="out of range"):
        class_weighted_cross_entropy(logits, torch.tensor([0, 1, 3, -1]))
    with pytest.raises(ValueError, match="reduction"):
        class_weighted_cross_entropy(logits, torch.tensor([0, 1, 2, -1]), reduction="avg")
    with pytest.raises(ValueError, match="balanced"):
        class_weighted_cross_entropy(logits, torch.tensor([0, 1, 2, -1]), "uniform")
    with pytest.raises(ValueError, match=r"shape \(3,\)"):
        class_weighted_cross_entropy(logits, torch.tensor([0, 1, 2, -1]), torch.ones(4))
    with pytest.raises(ValueError, match="targets"):
        class_weighted_cross_entropy(logits, torch.tensor([0.0, 1.0, 2.0, 1.0]))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_empty_batch(reduction):
    logits = torch.zeros(0, 4, requires_grad=True)
    targets = torch.zeros(0, dtype=torch.long)
    loss = class_weighted_cross_entropy(logits, targets, reduction=reduction)
    ref = F.cross_entropy(logits, targets, reduction=reduction)
    torch.testing.assert_close(loss, ref, equal_nan=True)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_loss_used_twice_accumulates_grad_output(reduction):
    # Autograd sums the upstream gradients of both uses (2 + 3 = 5, per row for "none") before
    # calling backward once; the stored gradient must be scaled by that sum.
    logits, targets = make_inputs(19, 6, torch.float32, seed=11)
    loss = class_weighted_cross_entropy(logits, targets, "balanced", reduction=reduction)
    (grad,) = torch.autograd.grad((2 * loss + 3 * loss).sum(), logits)
    x64 = logits.detach().double().requires_grad_()
    ref = class_weighted_cross_entropy_reference(x64, targets, "balanced", reduction=reduction)
    (ref_grad,) = torch.autograd.grad(5 * ref.sum(), x64)
    torch.testing.assert_close(grad.double(), ref_grad, atol=1e-5, rtol=1e-5)


@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
def test_user_weights_summing_to_zero_match_pytorch():
    # Every valid row has weight 0: "mean" is 0 / 0, NaN, and so is the valid rows' gradient.
    logits, targets = make_inputs(12, 3, torch.float32, classes=[0, 1], ignore_every=3)
    weight = torch.tensor([0.0, 0.0, 1.0])
    loss = class_weighted_cross_entropy(logits, targets, weight)
    (grad,) = torch.autograd.grad(loss, logits)
    ref = F.cross_entropy(logits, targets, weight=weight, ignore_index=-1)
    (ref_grad,) = torch.autograd.grad(ref, logits)
    assert torch.isnan(loss) and torch.isnan(ref)
    torch.testing.assert_close(grad, ref_grad, equal_nan=True)


@pytest.mark.parametrize("C,dtype", [(4097, torch.float32), (50304, torch.float32), (50304, torch.bfloat16)])
def test_vocabularies_wider_than_one_block(C, dtype):
    # Every C up to 4096 fits one column block; only wider rows exercise the online
    # log-sum-exp across blocks (C = 4097: a second block with a single column).
    logits, targets = make_inputs(3, C, dtype, seed=C, ignore_every=0)
    targets[0] = C - 1  # the target in the last, partial block
    logits.data[1, C - 1] += 20.0  # the row maximum there too, found only in the last block
    check(logits, targets, None, "mean", dtype)


def logits_sized_allocations(monkeypatch, fn, N, C):
    """Storages of at least N x C fp32 that fn allocates outside the kernel launch.

    The launch itself is not watched: there the interpreter stages its own copies of the
    arguments, which a GPU does not.
    """
    from mmengine.kernels import cross_entropy as ce_module

    big = set()
    recording = [True]

    class Allocations(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if recording[0]:
                for t in tree_flatten(out)[0]:
                    if isinstance(t, torch.Tensor) and t.untyped_storage().nbytes() >= N * C * 4:
                        big.add(t.untyped_storage().data_ptr())
            return out

    launch = ce_module._weighted_ce_kernel

    class Paused:
        def __getitem__(self, grid):
            def run(*args, **kwargs):
                recording[0] = False
                try:
                    return launch[grid](*args, **kwargs)
                finally:
                    recording[0] = True
            return run

    monkeypatch.setattr(ce_module, "_weighted_ce_kernel", Paused())
    with Allocations():
        result = fn()
    return big, result


def test_no_softmax_sized_buffer(monkeypatch):
    # Forward and backward allocate exactly one logits-sized tensor: the gradient, scaled in place.
    N, C = 16, 300
    logits, targets = make_inputs(N, C, torch.float32)

    def step():
        loss = class_weighted_cross_entropy(logits, targets, "balanced")
        return torch.autograd.grad(loss, logits, torch.tensor(0.5))[0]

    big, grad = logits_sized_allocations(monkeypatch, step, N, C)
    assert big - {logits.untyped_storage().data_ptr()} == {grad.untyped_storage().data_ptr()}


def test_no_gradient_buffer_without_grad_mode(monkeypatch):
    # Evaluation under no_grad: logits that require grad must not get a gradient buffer.
    N, C = 16, 300
    logits, targets = make_inputs(N, C, torch.float32)
    with torch.no_grad():
        big, loss = logits_sized_allocations(monkeypatch, lambda: class_weighted_cross_entropy(logits, targets), N, C)
    assert big - {logits.untyped_storage().data_ptr()} == set()
    assert loss.grad_fn is None
    torch.testing.assert_close(loss, F.cross_entropy(logits.detach(), targets, ignore_index=-1))
