"""The autograd convention of the losses whose gradient is computed in the forward.

Their custom op returns (loss, grad_1, ..., grad_k, norm): grad_i is the gradient of the summed
(un-normalised) loss w.r.t. one input, computed in the same native pass as the loss, and
loss = summed loss / norm. The backward is then a scale, grad_i · grad_loss / norm, in Python:
no second custom op (one exists only where a backward calls native code, as kernel pooling's).

The second derivative is not implemented. Under create_graph=True the scaled gradients are
tied to the differentiable inputs through _SecondDerivativeRefused, so differentiating them
raises, also when a layer in front (F.normalize, a linear head) would otherwise carry a
silently incomplete second derivative back to its own inputs.
"""
import torch


class _SecondDerivativeRefused(torch.autograd.Function):
    """The identity on a precomputed gradient; its own derivative raises."""

    @staticmethod
    def forward(ctx, name, grad, *inputs):
        ctx.name = name
        return grad.view_as(grad)

    @staticmethod
    def backward(ctx, *_):
        raise RuntimeError(f"{ctx.name}: double backward is not supported (the gradient is "
                           "computed in the forward pass and has no derivative of its own)")


def register_precomputed_gradient(op, name, grad_inputs, per_sample=lambda inputs: False):
    """Autograd for `op`, whose output is (loss, *grads, norm) with grads[j] the gradient of the
    summed loss w.r.t. inputs[grad_inputs[j]].

    per_sample(inputs): True when the loss is per sample (N,), so grad_loss scales rows.
    """
    def setup_context(ctx, inputs, output):
        grads, norm = output[1:-1], output[-1]
        ctx.mark_non_differentiable(*grads, norm)
        ctx.set_materialize_grads(False)  # no zeros for the non-differentiable outputs
        ctx.save_for_backward(*grads, norm, *(inputs[i] for i in grad_inputs))
        ctx.per_sample = per_sample(inputs)
        ctx.num_inputs = len(inputs)

    def backward(ctx, grad_loss, *_):
        result = [None] * ctx.num_inputs
        if grad_loss is None:  # the loss itself was not used
            return tuple(result)
        k = len(grad_inputs)
        saved = ctx.saved_tensors
        grads, norm, inputs = saved[:k], saved[k], saved[k + 1:]
        scale = grad_loss / norm
        if ctx.per_sample:
            scale = scale.unsqueeze(1)
        for i, grad in zip(grad_inputs, grads):
            if ctx.needs_input_grad[i]:
                result[i] = grad * scale
                if torch.is_grad_enabled():  # create_graph=True
                    result[i] = _SecondDerivativeRefused.apply(name, result[i], *inputs)
        return tuple(result)

    op.register_autograd(backward, setup_context=setup_context)
