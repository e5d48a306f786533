"""Uncentered norms, encoding, pooling and logit layer."""

import pytest
import torch

from alignnet.layers import (
    AddInverse,
    BatchNormUncentered2d,
    GlobalAvgPool2d,
    GlobalSumPool2d,
    LayerNormUncentered,
    LayerNormUncentered2d,
    LogitLayer,
    explanation_mode,
)


def test_batchnorm_uncentered_train_and_eval():
    torch.manual_seed(0)
    bn = BatchNormUncentered2d(4)
    assert bn.bias is None and bn.weight.shape == (4,)
    bn.weight.data = torch.tensor([1.0, 2.0, 0.5, 3.0])
    x = torch.randn(8, 4, 5, 5) + 3.0  # a mean that must NOT be subtracted
    y = bn(x)
    var = x.var(dim=(0, 2, 3), unbiased=False)
    torch.testing.assert_close(y, x / (var + 1e-5).sqrt()[None, :, None, None] * bn.weight[None, :, None, None])
    torch.testing.assert_close(bn.running_var, 0.9 * torch.ones(4) + 0.1 * var)
    bn.eval()
    torch.testing.assert_close(
        bn(x), x / (bn.running_var + 1e-5).sqrt()[None, :, None, None] * bn.weight[None, :, None, None]
    )
    assert int(bn.num_batches_tracked) == 1


def test_batchnorm_uncentered_eval_ignores_the_running_mean_buffer_and_keeps_dtypes():
    """Evaluation is ``x * weight / sqrt(running_var + eps)`` whatever a state dict put into running_mean."""
    torch.manual_seed(1)
    bn = BatchNormUncentered2d(4).double().eval()
    bn.running_var.uniform_(0.5, 2.0)
    bn.running_mean.fill_(3.0)
    with torch.no_grad():
        bn.weight.uniform_(-1.0, 1.0)
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64, requires_grad=True)
    scale = (bn.weight / (bn.running_var + bn.eps).sqrt())[None, :, None, None]
    y = bn(x)
    torch.testing.assert_close(y, x * scale, rtol=1e-14, atol=0)
    (g,) = torch.autograd.grad(y.sum(), x)
    torch.testing.assert_close(g, scale.expand_as(x), rtol=1e-14, atol=0)
    with torch.no_grad():  # inference: torch's batch_norm kernel with a zero mean
        torch.testing.assert_close(bn(x), x * scale, rtol=1e-14, atol=0)
    saved = []  # under autograd with a frozen layer (explain) only the per-channel scale is kept, not the input
    bn.requires_grad_(False)
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        bn(x)
    assert saved and max(t.numel() for t in saved) == 4
    bn.float()
    for dtype in (torch.bfloat16, torch.float16):
        assert bn(x.detach().to(dtype)).dtype == dtype


def test_batchnorm_detaches_batch_statistics_in_explanation_mode():
    bn = BatchNormUncentered2d(2)
    x = torch.randn(4, 2, 3, 3, requires_grad=True)
    with explanation_mode(bn):
        y = bn(x)
    (g,) = torch.autograd.grad(y[0, 0, 0, 0], x)
    # with the std detached, y is x times a constant: only x[0,0,0,0] gets gradient
    assert torch.count_nonzero(g) == 1


def test_layernorms():
    x = torch.randn(3, 5, 7) + 2
    ln = LayerNormUncentered(7)
    torch.testing.assert_close(ln(x), x / (x.var(-1, unbiased=False, keepdim=True) + 1e-5).sqrt())
    x2 = torch.randn(2, 4, 3, 3) + 1
    ln2 = LayerNormUncentered2d(4)
    torch.testing.assert_close(ln2(x2), x2 / (x2.var((1, 2, 3), unbiased=False, keepdim=True) + 1e-5).sqrt())
    with pytest.raises(ValueError, match=r"\(\.\.\., 7\)"):
        ln(torch.rand(2, 6))


def test_encoding_pooling_logits():
    x = torch.rand(2, 3, 4, 5)
    enc = AddInverse()(x)
    assert enc.shape == (2, 6, 4, 5)
    torch.testing.assert_close(enc[:, :3] + enc[:, 3:], torch.ones(2, 3, 4, 5))
    torch.testing.assert_close(GlobalAvgPool2d()(x), x.mean((2, 3)))
    torch.testing.assert_close(GlobalSumPool2d()(x), x.sum((2, 3)))
    logit = LogitLayer(temperature=4.0, bias=-1.0)
    torch.testing.assert_close(logit(torch.tensor([[8.0, 4.0]])), torch.tensor([[1.0, 0.0]]))
    per_class = LogitLayer(bias=torch.tensor([1.0, 2.0]), learn_bias=True)
    assert isinstance(per_class.bias, torch.nn.Parameter)
    torch.testing.assert_close(per_class(torch.zeros(1, 2)), torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="temperature"):
        LogitLayer(temperature=0)
