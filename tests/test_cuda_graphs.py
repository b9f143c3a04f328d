"""On a GPU: no op syncs the host on its hot path, so a training step that uses them can be
captured in a CUDA graph and replayed (docs/semantics.md §1, host syncs). Mining, whose output
size depends on the data, is the one documented exception. Skipped without a CUDA build and
device; `make gpu-check` runs these."""
import pytest
import torch

import finegrained_ops as fo

from .conftest import CUDA_OK

pytestmark = pytest.mark.skipif(not CUDA_OK, reason="CUDA kernels not built or no CUDA device")


def training_step_parts(seed=0):
    """A small model ending in every loss of the library, and a fixed batch on the GPU.

    The gradients are taken at the library's inputs (the backbone's output, the pooled
    features, the logits): the weight gradient of cuDNN's convolution may use atomics, so it is
    not bitwise repeatable, and it is torch's, not ours."""
    g = torch.Generator().manual_seed(seed)
    backbone = torch.nn.Conv2d(3, 16, 3, padding=1).cuda()
    pooling = fo.nn.CompactBilinearPooling(16, 64, seed=0).cuda()
    classifier = torch.nn.Linear(64, 10).cuda()
    cb_loss = fo.nn.ClassBalancedLoss(torch.arange(1, 11) * 10, loss_type="focal").cuda()
    images = torch.randn(24, 3, 8, 8, generator=g).cuda()
    labels = torch.randint(10, (24,), generator=g).cuda()

    def step():
        maps = backbone(images)
        features = pooling(maps)
        logits = classifier(features)
        loss = cb_loss(logits, labels) + fo.triplet_margin_loss(features, labels)
        grads = torch.autograd.grad(loss, [maps, features, logits])
        return loss, grads

    return step


def test_cuda_losses_and_pooling_do_not_sync_the_host():
    step = training_step_parts()
    step()  # warm-up: cuFFT plans, the caching allocator
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss, grads = step()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.isfinite(loss) and all(torch.isfinite(g).all() for g in grads)


def test_cuda_training_step_captures_in_a_graph_and_replays_to_the_same_values():
    step = training_step_parts()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            eager_loss, eager_grads = step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        graph_loss, graph_grads = step()
    graph.replay()
    torch.cuda.synchronize()
    assert torch.equal(graph_loss, eager_loss)
    for a, b in zip(graph_grads, eager_grads):
        assert torch.equal(a, b)
