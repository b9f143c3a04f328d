"""The CPU kernels' own real FFT (csrc/common/real_fft.h) against torch.fft: every length
(radices 4, 2, 3, direct primes up to 31, Bluestein above), both directions, both dtypes, and
a row's bits independent of the rows beside it (what makes kernel pooling thread-invariant)."""
import pytest
import torch

from finegrained_ops._native import _C

LENGTHS = [*range(1, 41), 62, 64, 74, 97, 101, 128, 202, 1000, 1369, 4096, 4099, 8192, 16000]
TOLERANCE = {torch.float32: 1e-6, torch.float64: 1e-14}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n", LENGTHS)
def test_rfft_and_irfft_equal_torch(n, dtype):
    g = torch.Generator().manual_seed(n)
    x = torch.randn(11, n, generator=g, dtype=torch.float64)
    expected = torch.fft.rfft(x, dim=1)
    spectrum = _C._real_fft(x.to(dtype), False, n)
    assert spectrum.dtype == (torch.complex64 if dtype == torch.float32 else torch.complex128)
    scale = expected.abs().max()
    assert float((spectrum.to(torch.complex128) - expected).abs().max() / scale) < \
        4 * TOLERANCE[dtype] * max(1, n).bit_length()
    bins = expected.to(spectrum.dtype)
    bins[:, 0] += 3j  # torch's irfft ignores the imaginary parts of DC and Nyquist; so do we
    if n % 2 == 0:
        bins[:, -1] -= 2j
    back = _C._real_fft(bins, True, n)
    assert back.dtype == dtype and back.shape == (11, n)
    assert float((back.double() - x).abs().max()) < \
        4 * TOLERANCE[dtype] * max(1, n).bit_length() * float(x.abs().max())


@pytest.mark.parametrize("n", [16, 64, 74, 4096])
def test_a_rows_bits_do_not_depend_on_its_neighbours(n):
    """Rows are transformed W to a group of SIMD lanes, padded with zeros: any batch gives
    every row the same bits."""
    x = torch.randn(19, n, generator=torch.Generator().manual_seed(1))
    whole = _C._real_fft(x, False, n)
    for rows in ([3], [0, 5], list(range(2, 13)), [18, 0, 7]):
        assert torch.equal(_C._real_fft(x[rows], False, n), whole[rows])
        assert torch.equal(_C._real_fft(whole[rows], True, n), _C._real_fft(whole, True, n)[rows])


def test_bad_arguments_are_refused():
    with pytest.raises(RuntimeError, match="columns"):
        _C._real_fft(torch.zeros(2, 5), False, 6)
    with pytest.raises(RuntimeError, match="complex"):
        _C._real_fft(torch.zeros(2, 4), True, 6)
