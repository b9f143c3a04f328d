"""Reference kernel pooling: Algorithm 1 of thesis ch. 3 applied at every location, then the
mean over locations, written the way one would vectorise it in PyTorch (docs/semantics.md §2).

It forms every per-location sketch, spectrum and inverse transform, (N, L, d) each, which
is what the native op avoids; it is the spec in code and the benchmark's baseline.
"""
import torch


def count_sketch(x, hash_index, hash_sign, dim):
    """Count Sketch CS(x)[j] = sum_{k: h(k) = j} s(k) x_k of the last axis (eq. 3.8).

    x (..., C); hash_index (C,) int64 in [0, dim); hash_sign (C,) of +-1. Returns (..., dim).
    """
    out = x.new_zeros(*x.shape[:-1], dim)
    return out.index_add(-1, hash_index, x * hash_sign)


def tensor_sketch_features(x, hash_index, hash_sign, dim):
    """Per-location tensor sketches of orders 2..p: IFFT(prod_{t<=i} FFT(CS_t(x))) (eq. 3.9).

    x (..., C); hash_index, hash_sign (p, C). Returns a list of p - 1 tensors (..., dim).
    """
    features, product = [], None
    for t in range(hash_index.shape[0]):
        spectrum = torch.fft.rfft(count_sketch(x, hash_index[t], hash_sign[t], dim), dim=-1)
        product = spectrum if product is None else product * spectrum
        if t >= 1:
            features.append(torch.fft.irfft(product, n=dim, dim=-1))
    return features


def kernel_pooling(x, hash_index, hash_sign, alpha, dim):
    """Same contract as :func:`finegrained_ops.kernel_pooling`, computed per location.

    x (N, L, C); hash_index, hash_sign (p, C); alpha (p + 1,). Returns (N, 1 + C + (p-1)·dim):
    [alpha_0, alpha_1 · mean_l x_l, alpha_i · mean_l φ_i(x_l) for i = 2..p].
    """
    n = x.shape[0]
    hash_sign = hash_sign.to(x.dtype)
    alpha = alpha.to(x.dtype)
    blocks = [alpha[0] * x.new_ones(n, 1), alpha[1] * x.mean(dim=1)]
    for i, phi in enumerate(tensor_sketch_features(x, hash_index, hash_sign, dim), start=2):
        blocks.append(alpha[i] * phi.mean(dim=1))
    return torch.cat(blocks, dim=1)


def compact_bilinear_pooling(x, y, hash_x, hash_y, dim):
    """Two-input compact bilinear pooling from its definition, without FFTs: the count sketch
    of the pooled outer product mean_l x_l y_lᵀ under the hash (h_x(a) + h_y(b)) mod d with
    sign s_x(a)·s_y(b) (the tensor sketch of Pham and Pagh, which FFT(CS_x)·FFT(CS_y) computes
    as a circular convolution). Memory O(N·C·C_y): a spec, not an implementation.

    x (N, L, C); y (N, L, C_y); hash_x = (index (C,) int64 in [0, dim), sign (C,) of +-1),
    hash_y likewise for y. Returns (N, dim).
    """
    (index_x, sign_x), (index_y, sign_y) = hash_x, hash_y
    outer = torch.einsum("nla,nlb->nab", x, y) / x.shape[1]
    bucket = (index_x[:, None] + index_y[None, :]) % dim
    signed = outer * (sign_x[:, None] * sign_y[None, :]).to(x.dtype)
    return x.new_zeros(x.shape[0], dim).index_add(1, bucket.flatten(), signed.flatten(1))
