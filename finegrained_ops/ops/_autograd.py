"""The autograd convention of the losses whose gradient is computed in the forward.

Their custom op returns (loss, grad_1, ..., grad_k, norm): grad_i is the gradient of the summed
(un-normalised) loss w.r.t. one input, computed in the same native pass as the loss, and
loss = summed loss / norm. The backward is then a scale, grad_i · grad_loss / norm, in Python:
no second custom op (one exists only where a backward calls native code, as kernel pooling's).

The second derivative is not implemented. Under create_graph=True the scaled gradients are
tied to the differentiable inputs through _SecondDerivativeRefused, so differentiating them
raises, also when a layer in front (F.normalize, a linear head) would otherwise carry a
silently incomplete second derivative back to its own inputs. The price: the backward keeps
those inputs (the class-balanced loss's (N, C) logits, beside its (N, C) gradient).
"""
import torch


class _SecondDerivativeRefused(torch.autograd.Function):
    """The identity on a precomputed gradient; its own derivative raises."""

    @staticmethod
    def forward(name, grad, *inputs):
        return grad.view_as(grad)

    @staticmethod
    def setup_context(ctx, inputs, output):
        ctx.name = inputs[0]

    @staticmethod
    def backward(ctx, *_):
        raise RuntimeError(f"{ctx.name}: double backward is not supported (the gradient is "
                           "computed in the forward pass and has no derivative of its own)")


def register_precomputed_gradient(op, name, grad_inputs, per_sample=lambda inputs: False):
    """Autograd for `op`, whose last input is compute_grad and whose output is
    (loss, *grads, norm), grads[j] the gradient of the summed loss w.r.t.
    inputs[grad_inputs[j]] (empty when compute_grad was False).

    per_sample(inputs): True when the loss is per sample (N,), so grad_loss scales rows.
    compute_grad is decided in Python when the op is called; a graph traced or exported where
    it was False (no input required grad, or under no_grad) still trains: the backward then
    runs the op again with compute_grad=True.
    """
    def setup_context(ctx, inputs, output):
        grads, norm = output[1:-1], output[-1]
        ctx.mark_non_differentiable(*grads, norm)
        ctx.set_materialize_grads(False)  # no zeros for the non-differentiable outputs
        ctx.tensor_positions = [i for i, x in enumerate(inputs) if isinstance(x, torch.Tensor)]
        ctx.other_inputs = {i: x for i, x in enumerate(inputs) if not isinstance(x, torch.Tensor)}
        ctx.save_for_backward(*grads, norm, *(inputs[i] for i in ctx.tensor_positions))
        ctx.per_sample = per_sample(inputs)

    def backward(ctx, grad_loss, *_):
        inputs = dict(ctx.other_inputs)
        result = [None] * (len(ctx.tensor_positions) + len(inputs))
        if grad_loss is None:  # the loss itself was not used
            return tuple(result)
        k = len(grad_inputs)
        saved = ctx.saved_tensors
        grads, norm = saved[:k], saved[k]
        inputs.update(zip(ctx.tensor_positions, saved[k + 1:]))
        inputs = [inputs[i] for i in range(len(result))]
        if any(g.shape != inputs[i].shape for i, g in zip(grad_inputs, grads)):
            with torch.no_grad():
                output = op(*(x.detach() if isinstance(x, torch.Tensor) else x
                              for x in inputs[:-1]), True)
            grads, norm = output[1:-1], output[-1]
        scale = grad_loss / norm
        if ctx.per_sample:
            scale = scale.unsqueeze(1)
        for i, grad in zip(grad_inputs, grads):
            if ctx.needs_input_grad[i]:
                result[i] = grad * scale
                if torch.is_grad_enabled():  # create_graph=True
                    result[i] = _SecondDerivativeRefused.apply(
                        name, result[i], *(inputs[j] for j in grad_inputs))
        return tuple(result)

    op.register_autograd(backward, setup_context=setup_context)
