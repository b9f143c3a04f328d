"""scale_gradient, the backward pass of the losses whose gradient the forward computes
(csrc/precomputed_gradient): grad * grad_loss / norm, 0-dim or per-row grad_loss, any dtype."""
import pytest
import torch

from finegrained_ops.ops.class_loss import _scale_gradient


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_scale_gradient_is_grad_times_grad_loss_over_norm(dtype):
    g = torch.Generator().manual_seed(0)
    grad = torch.randn(5, 7, generator=g).to(dtype)
    norm = torch.tensor(3.0, dtype=dtype)
    for grad_loss in (torch.tensor(0.5, dtype=dtype), torch.randn(5, generator=g).to(dtype)):
        expected = grad.double() * (grad_loss.double() / norm.double()).reshape(-1, 1)
        out = _scale_gradient(grad, grad_loss, norm)
        assert out.dtype == dtype and out.shape == grad.shape
        torch.testing.assert_close(out.double(), expected, rtol=1e-2 if dtype in (
            torch.float16, torch.bfloat16) else 1e-6, atol=0)
    torch.library.opcheck(_scale_gradient, (grad, torch.tensor(2.0, dtype=dtype), norm))


def test_scale_gradient_refuses_bad_shapes():
    with pytest.raises(ValueError, match="one value per row"):
        _scale_gradient(torch.zeros(3, 2), torch.zeros(2), torch.tensor(1.0))
    with pytest.raises(ValueError, match="norm must be 0-dim"):
        _scale_gradient(torch.zeros(3, 2), torch.tensor(1.0), torch.ones(1))
    with pytest.raises(TypeError, match="floating"):
        _scale_gradient(torch.zeros(3, 2, dtype=torch.int64), torch.tensor(1.0), torch.tensor(1.))
