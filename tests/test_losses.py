"""The eager losses against their straightforward definitions."""
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from mmengine import losses


def reference_weights(targets, num_classes, ignore_index=-1):
    """The formula as written: unique classes and a Python loop (what the old code did)."""
    valid = targets[targets != ignore_index]
    weights = torch.zeros(num_classes)
    n_valid = valid.numel()
    for c in torch.unique(valid).tolist():
        n_c = (valid == c).sum().item()
        weights[c] = n_valid / (num_classes * n_c)
    return weights


def random_batch(gen, B=3, T=7, C=4, ignore_p=0.3, absent=None):
    targets = torch.randint(0, C, (B, T), generator=gen)
    if absent is not None:
        targets[targets == absent] = (absent + 1) % C
    ignored = torch.rand(B, T, generator=gen) < ignore_p
    targets[ignored] = -1
    logits = torch.randn(B, T, C, generator=gen, dtype=torch.float64).requires_grad_()
    return logits, targets


@pytest.mark.parametrize("seed", range(6))
def test_class_balanced_weights_match_unique_loop(seed):
    gen = torch.Generator().manual_seed(seed)
    _, targets = random_batch(gen, absent=seed % 4 if seed % 2 else None)
    got = losses.class_balanced_weights(targets, 4)
    torch.testing.assert_close(got, reference_weights(targets, 4))
    assert got.dtype == torch.float32 and not got.requires_grad


def test_absent_class_weighs_zero():
    targets = torch.tensor([[0, 0, 0, 2, -1]])
    w = losses.class_balanced_weights(targets, 3)
    # N_valid = 4: w0 = 4 / (3 * 3), w1 = 0 (absent), w2 = 4 / (3 * 1)
    torch.testing.assert_close(w, torch.tensor([4 / 9, 0.0, 4 / 3]))


@pytest.mark.parametrize("seed", range(6))
def test_class_balanced_cross_entropy_equals_weighted_F_cross_entropy(seed):
    gen = torch.Generator().manual_seed(100 + seed)
    logits, targets = random_batch(gen, absent=seed % 4 if seed >= 3 else None)
    got = losses.class_balanced_cross_entropy(logits, targets)
    weight = reference_weights(targets, 4).double()
    want = F.cross_entropy(logits.view(-1, 4), targets.view(-1), weight=weight, ignore_index=-1)
    torch.testing.assert_close(got, want.float(), rtol=1e-6, atol=1e-6)
    g_got, = torch.autograd.grad(got, logits)
    g_want, = torch.autograd.grad(want, logits)
    torch.testing.assert_close(g_got, g_want, rtol=1e-5, atol=1e-6)


def test_all_ignored_gives_zero_loss_and_zero_grad():
    logits = torch.randn(2, 5, 3, requires_grad=True)
    targets = torch.full((2, 5), -1)
    assert torch.isnan(F.cross_entropy(logits.view(-1, 3), targets.view(-1), ignore_index=-1))  # what we avoid
    for loss in (losses.class_balanced_cross_entropy(logits, targets), losses.cross_entropy(logits, targets)):
        assert loss.item() == 0.0
        grad, = torch.autograd.grad(loss, logits)
        assert torch.count_nonzero(grad) == 0
    torch.testing.assert_close(losses.class_balanced_weights(targets, 3), torch.zeros(3))


def test_plain_cross_entropy_matches_torch():
    gen = torch.Generator().manual_seed(7)
    logits, targets = random_batch(gen, C=11)
    want = F.cross_entropy(logits.view(-1, 11), targets.view(-1), ignore_index=-1)
    torch.testing.assert_close(losses.cross_entropy(logits, targets), want.float())


class _OpCounter(TorchDispatchMode):
    """Counts the aten ops a computation dispatches."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(func)
        return func(*args, **(kwargs or {}))


def test_class_balanced_loss_runs_on_meta_tensors_with_no_loop_over_classes():
    """Meta tensors have no values: .item(), .cpu() values, torch.unique, bincount and boolean
    indexing all raise on them, so running there proves no host sync. The same op sequence for
    2 and 50 classes proves there is no Python loop over the classes."""
    counts = []
    for C in (2, 50):
        logits = torch.randn(3, 7, C, device="meta", requires_grad=True)
        targets = torch.randint(-1, C, (3, 7), device="meta")
        with _OpCounter() as counter:
            losses.class_balanced_cross_entropy(logits, targets).backward()
        counts.append([str(op) for op in counter.ops])
    assert counts[0] == counts[1]
    for forbidden in ("unique", "bincount", "nonzero", "item", "_local_scalar_dense"):
        assert not any(forbidden in op for op in counts[0]), forbidden


def test_any_integer_target_dtype_is_accepted():
    gen = torch.Generator().manual_seed(8)
    logits, targets = random_batch(gen)
    want = losses.class_balanced_cross_entropy(logits, targets)
    for dtype in (torch.int32, torch.int16, torch.int8):
        torch.testing.assert_close(losses.class_balanced_cross_entropy(logits, targets.to(dtype)), want)
        torch.testing.assert_close(losses.cross_entropy(logits, targets.to(dtype)),
                                   losses.cross_entropy(logits, targets))


def test_losses_need_no_host_sync(monkeypatch):
    """No .item()/.tolist()/unique on the way: these would stall a GPU step."""
    def forbidden(*args, **kwargs):
        raise AssertionError("host sync in a loss")

    gen = torch.Generator().manual_seed(3)
    logits, targets = random_batch(gen)
    monkeypatch.setattr(torch.Tensor, "item", forbidden)
    monkeypatch.setattr(torch.Tensor, "tolist", forbidden)
    monkeypatch.setattr(torch, "unique", forbidden)
    monkeypatch.setattr(torch.Tensor, "__bool__", forbidden)
    monkeypatch.setattr(torch.Tensor, "cpu", forbidden)
    monkeypatch.setattr(torch.Tensor, "numpy", forbidden)
    monkeypatch.setattr(torch, "bincount", forbidden)
    losses.class_balanced_cross_entropy(logits, targets).backward()
    losses.soft_cross_entropy(logits, torch.softmax(logits.detach(), -1)).backward()


def test_soft_cross_entropy_matches_definition_and_ignores_empty_rows():
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 4, 6, generator=gen)
    soft = torch.softmax(torch.randn(2, 4, 6, generator=gen), -1)
    soft[1, 2] = 0.0  # an ignored position
    got = losses.soft_cross_entropy(logits, soft)
    per_position = -(soft * torch.log_softmax(logits, -1)).sum(-1)
    keep = torch.ones(2, 4, dtype=torch.bool)
    keep[1, 2] = False
    torch.testing.assert_close(got, per_position[keep].mean())
    # one-hot soft targets are the hard-target loss
    hard = torch.randint(0, 6, (2, 4), generator=gen)
    torch.testing.assert_close(
        losses.soft_cross_entropy(logits, F.one_hot(hard, 6).float()), losses.cross_entropy(logits, hard)
    )
    assert losses.soft_cross_entropy(logits, torch.zeros_like(logits)).item() == 0.0
    with pytest.raises(ValueError, match="shape"):
        losses.soft_cross_entropy(logits, soft[..., :3])


def test_mse():
    pred, target = torch.tensor([0.2, 0.9]), torch.tensor([0.0, 1.0])
    torch.testing.assert_close(losses.mse(pred, target), torch.tensor((0.04 + 0.01) / 2))
    with pytest.raises(ValueError, match="shape"):
        losses.mse(pred, target[:1])
