"""A small training loop: progress bar, AMP, gradient clipping, resumable checkpoints and
DistributedDataParallel when torch.distributed is initialised (docs/semantics.md §5)."""
from __future__ import annotations

import contextlib
import copy
import itertools
import os
import time
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import (BatchSampler, DataLoader, DistributedSampler, RandomSampler,
                              SequentialSampler)

from .._checks import check_int, check_number
from .._typing import DeviceLike

AMP_DTYPES = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, torch.bfloat16: torch.bfloat16,
              "fp16": torch.float16, "float16": torch.float16, torch.float16: torch.float16}


class _ModelWithLoss(nn.Module):
    """model and loss as one module, so DDP also synchronises a loss with parameters (an
    anchor-point classifier, class-balanced weights)."""

    def __init__(self, model, loss_fn):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, inputs, target):
        return self.loss_fn(self.model(inputs), target)


def fit(model: nn.Module, loss_fn: Callable[..., Tensor], train_loader: Iterable[Any],
        optimizer: torch.optim.Optimizer, epochs: int, *, scheduler: Optional[Any] = None,
        amp: Union[str, torch.dtype, None] = None,
        grad_clip: Union[float, tuple[str, float], None] = None, device: DeviceLike = None,
        eval_fn: Optional[Callable[[nn.Module], Mapping[str, Any]]] = None,
        checkpoint: Union[str, os.PathLike, None] = None, progress: bool = True,
        epoch_hooks: Sequence[Callable[[int], Any]] = ()) -> list[dict[str, float]]:
    """Train ``model`` for ``epochs`` epochs and return the per-epoch history.

    Each batch from ``train_loader`` is ``(inputs, target)``; ``inputs`` and ``target`` may be
    tensors or tuples/lists of tensors. Both go to ``device`` and the step minimises
    ``loss_fn(model(inputs), target)`` (a 0-dim tensor).

    Args:
        model: the nn.Module to train (in place).
        loss_fn: callable or nn.Module; its parameters, if any, must be in ``optimizer``.
        optimizer: a torch optimizer; scheduler: stepped once per epoch when given.
        amp: None (full precision), 'bf16' or 'fp16' (CUDA only; uses a GradScaler).
        grad_clip: None, a float c (clip every gradient element to [-c, c], as the
            kernel-pooling paper does with c = 1) or ('norm', max_norm).
        device: where to train; default: the device of the model's first parameter.
        eval_fn: called as ``eval_fn(model)`` after every epoch, with the model in eval mode
            (BatchNorm statistics and dropout frozen) under torch.no_grad(), train mode restored
            afterwards; returns a dict of numbers, stored in the history.
        checkpoint: a path. After every epoch the model, optimizer, scheduler, scaler and
            history are saved there (rank 0); when the file exists, training resumes after its
            last epoch (a checkpoint that already holds ``epochs`` epochs trains nothing and
            returns its history, saying so). Loaded with ``weights_only=True``.
        progress: on rank 0, a tqdm bar per epoch with the running loss and samples/s (with
            tqdm, the 'progress' extra), and a line per epoch with the history's entries;
            False: silent.
        epoch_hooks: callables called as ``hook(epoch)`` before each epoch (after the model
            and loss moved to ``device``), e.g. train.DeferredReweighting. They should depend
            on the epoch only: a resumed run calls them from its first new epoch.

    Distributed: when torch.distributed is initialised, the model and loss are wrapped in
    DistributedDataParallel, a loader with the default sequential/random sampler gets a
    DistributedSampler instead (same batch size per rank), and ``set_epoch`` is called on
    the sampler (ours split the sequence across ranks by themselves). Losses are averaged
    over ranks in the history.

    Returns:
        list of dicts, one per epoch: epoch, loss (mean over batches), samples_per_s, lr (of
        the first parameter group, as the epoch used it: before the scheduler's step), and
        eval_fn's entries.
    """
    _check_fit_args(epochs, grad_clip)
    if checkpoint is not None:
        if not isinstance(checkpoint, (str, os.PathLike)):
            raise TypeError(f"checkpoint must be a path (str or os.PathLike), got "
                            f"{type(checkpoint).__name__}")
        checkpoint = os.fspath(checkpoint)
    amp_dtype = _amp_dtype(amp)
    train_device = torch.device(device) if device is not None else _model_device(model)
    if amp_dtype == torch.float16 and train_device.type != "cuda":
        raise ValueError("amp='fp16' needs CUDA; use amp='bf16' on the CPU")
    model.to(train_device)
    if isinstance(loss_fn, nn.Module):
        loss_fn.to(train_device)
    distributed = dist.is_available() and dist.is_initialized()
    step_module = _ModelWithLoss(model, loss_fn)
    if distributed:
        step_module = nn.parallel.DistributedDataParallel(
            step_module,
            device_ids=[train_device.index] if train_device.type == "cuda" else None)
        train_loader = _rank_aware(train_loader)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    is_main = not distributed or dist.get_rank() == 0

    history, start = [], 0
    if checkpoint is not None and os.path.exists(checkpoint):
        stateful = {"model": model, "optimizer": optimizer, "scaler": scaler}
        if isinstance(loss_fn, nn.Module):
            stateful["loss_fn"] = loss_fn
        if scheduler is not None:
            stateful["scheduler"] = scheduler
        history = _resume(checkpoint, train_device, stateful)
        start = len(history)
        if start >= epochs and progress and is_main:
            print(f"fit: checkpoint {checkpoint!r} already holds {start} epochs (epochs="
                  f"{epochs}): nothing to train, returning its history", flush=True)

    for epoch in range(start, epochs):
        for hook in epoch_hooks:
            hook(epoch)
        for sampler in (getattr(train_loader, "sampler", None),
                        getattr(train_loader, "batch_sampler", None)):
            set_epoch = getattr(sampler, "set_epoch", None)
            if set_epoch is not None:
                set_epoch(epoch)
        model.train()
        total = torch.zeros((), dtype=torch.float64, device=train_device)
        batches, samples, began = 0, 0, time.perf_counter()
        progress_on = progress and is_main
        bar: Any = _progress(train_loader, epoch, epochs) if progress_on else train_loader
        for batch in bar:
            inputs, target = _inputs_and_target(batch)
            inputs, target = _to(inputs, train_device), _to(target, train_device)
            with torch.autocast(train_device.type, dtype=amp_dtype or torch.float32,
                                enabled=amp_dtype is not None):
                loss = step_module(inputs, target)
            if loss.dim() != 0:
                raise ValueError(f"loss_fn must return a 0-dim tensor, got shape {tuple(loss.shape)}")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if grad_clip is not None:
                scaler.unscale_(optimizer)
                _clip(optimizer, grad_clip)
            scaler.step(optimizer)
            scaler.update()
            total += loss.detach().double()
            batches += 1
            samples += _batch_size(inputs)
            if bar is not train_loader:
                bar.set_postfix(loss=f"{float(total) / batches:.4f}",
                                samples_s=f"{samples / (time.perf_counter() - began):.0f}")
        record = {"epoch": epoch, "loss": _mean_over_ranks(total, batches, distributed),
                  "samples_per_s": samples / (time.perf_counter() - began),
                  "lr": optimizer.param_groups[0]["lr"]}
        if scheduler is not None:
            scheduler.step()
        if eval_fn is not None:
            record.update(_evaluate(eval_fn, model))
        history.append(record)
        if progress_on:
            print(_epoch_line(record, epochs), flush=True)
        if checkpoint is not None and is_main:
            state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "scaler": scaler.state_dict(), "history": history}
            if isinstance(loss_fn, nn.Module):
                state["loss_fn"] = loss_fn.state_dict()
            if scheduler is not None:
                state["scheduler"] = scheduler.state_dict()
            torch.save(state, checkpoint + ".tmp")
            os.replace(checkpoint + ".tmp", checkpoint)
    return history


def extract_features(model: nn.Module, loader: Iterable[Any], *, device: DeviceLike = None,
                     amp: Union[str, torch.dtype, None] = None,
                     output: Union[int, str, Callable[[Any], Tensor], None] = None,
                     ) -> tuple[Tensor, Optional[Tensor]]:
    """Run ``model`` in eval mode over ``loader`` and concatenate its outputs.

    Batches are ``inputs`` or ``(inputs, labels, ...)``. ``output`` picks the features from
    what the model returns: None (a tensor), an index into a tuple/list output (e.g. 1 for a
    model returning ``(logits, embedding)``), a key of a dict output, or a callable of the
    output. Returns ``(features, labels)``: features (N, ...) float32 on the CPU, labels (N,)
    or None when the batches carry none. The model's train/eval mode is restored afterwards.
    """
    amp_dtype = _amp_dtype(amp)
    feature_device = torch.device(device) if device is not None else _model_device(model)
    features, labels = [], []
    with eval_mode(model):
        for batch in loader:
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            with torch.autocast(feature_device.type, dtype=amp_dtype or torch.float32,
                                enabled=amp_dtype is not None):
                features.append(_pick(model(_to(inputs, feature_device)), output).float().cpu())
            if isinstance(batch, (tuple, list)) and len(batch) > 1:
                labels.append(torch.as_tensor(batch[1]).cpu())
    if not features:
        raise ValueError("loader yielded no batches")
    return torch.cat(features), (torch.cat(labels) if labels else None)


def _pick(out, output):
    """The features `output` names in a model's output (extract_features)."""
    if callable(output):
        out = output(out)
    elif output is not None:
        try:
            out = out[output]
        except (TypeError, IndexError, KeyError):
            raise ValueError(f"output={output!r} does not name a part of the model's output "
                             f"({type(out).__name__})") from None
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the model returned a {type(out).__name__}, not a tensor: pass "
                        "output= (an index, a key or a callable) to pick the features")
    return out


def _inputs_and_target(batch):
    if isinstance(batch, (tuple, list)) and len(batch) == 2:
        return batch
    what = (f"a dict with keys {sorted(batch)}" if isinstance(batch, dict)
            else f"a {type(batch).__name__}" + (f" of {len(batch)}" if isinstance(
                batch, (tuple, list)) else ""))
    raise TypeError(f"fit needs (inputs, target) batches, got {what}: give the loader a "
                    "collate_fn (or a dataset) that returns the pair")


@contextlib.contextmanager
def eval_mode(model):
    """`model` in eval mode under no_grad for the block, its train/eval mode restored after
    (also when the block raises)."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            yield model
    finally:
        model.train(was_training)


def _evaluate(eval_fn, model):
    """eval_fn(model)'s numbers, run in eval mode under no_grad."""
    with eval_mode(model):
        return {k: float(v) for k, v in eval_fn(model).items()}


def _epoch_line(record, epochs):
    numbers = ", ".join(f"{k} {v:.4g}" for k, v in record.items() if k != "epoch")
    return f"epoch {record['epoch'] + 1}/{epochs}: {numbers}"


def _resume(checkpoint, device, stateful):
    """Loads every state of `checkpoint` into `stateful` ({name: object with load_state_dict})
    and returns the saved history; all or nothing: on any mismatch every object gets its own
    state back and the error names the checkpoint and the part that did not fit."""
    state = torch.load(checkpoint, map_location=device, weights_only=True)
    missing = [name for name in [*stateful, "history"] if name not in state]
    if missing:
        raise ValueError(f"checkpoint {checkpoint!r} lacks {missing}: it was not written by fit "
                         "for this model, loss, optimizer and scheduler")
    backup = {name: copy.deepcopy(obj.state_dict()) for name, obj in stateful.items()}
    name = None
    try:
        for name, obj in stateful.items():
            obj.load_state_dict(state[name])
    except (RuntimeError, ValueError, KeyError) as error:
        for restored, obj in stateful.items():
            obj.load_state_dict(backup[restored])
        raise ValueError(f"checkpoint {checkpoint!r} does not fit this {name}: {error}. Nothing "
                         "was loaded; use another checkpoint path to start afresh") from error
    return state["history"]


def _check_fit_args(epochs, grad_clip):
    check_int("epochs", epochs, 0)
    if grad_clip is None:
        return
    if isinstance(grad_clip, tuple) and len(grad_clip) == 2 and grad_clip[0] == "norm":
        check_number("grad_clip's max_norm", grad_clip[1], low=0, low_open=True)
    elif isinstance(grad_clip, tuple):
        raise ValueError(f"grad_clip must be None, a positive float or ('norm', max_norm), "
                         f"got {grad_clip!r}")
    else:
        check_number("grad_clip", grad_clip, low=0, low_open=True)


def _amp_dtype(amp):
    if amp is None or amp is False:
        return None
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be None, 'bf16' or 'fp16', got {amp!r}")
    return AMP_DTYPES[amp]


def _model_device(model):
    """The device of the module's first parameter, else of its first buffer (a loss holding
    only per-class tensors), else the CPU."""
    tensor = next(itertools.chain(model.parameters(), model.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


def _to(x, device):
    if isinstance(x, torch.Tensor):
        return x.to(device, non_blocking=True)
    if isinstance(x, (tuple, list)):
        return type(x)(_to(t, device) for t in x)
    return x


def _batch_size(inputs):
    """Rows in a batch whose inputs are a tensor or a tuple/list of them (multi-input models)."""
    first = inputs[0] if isinstance(inputs, (tuple, list)) else inputs
    return len(first)


def _clip(optimizer, grad_clip):
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if isinstance(grad_clip, tuple):
        nn.utils.clip_grad_norm_(params, grad_clip[1])
    else:
        nn.utils.clip_grad_value_(params, grad_clip)


def _rank_aware(loader):
    """A loader with the default sampler gets a DistributedSampler; others are kept."""
    if (type(loader.batch_sampler) is not BatchSampler
            or not isinstance(loader.sampler, (SequentialSampler, RandomSampler))):
        return loader
    sampler = DistributedSampler(loader.dataset, shuffle=isinstance(loader.sampler, RandomSampler))
    return DataLoader(loader.dataset, batch_size=loader.batch_size, sampler=sampler,
                      num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                      pin_memory=loader.pin_memory, drop_last=loader.drop_last)


def _mean_over_ranks(total, batches, distributed):
    stats = torch.stack([total, torch.tensor(float(batches), dtype=torch.float64,
                                             device=total.device)])
    if distributed:
        dist.all_reduce(stats)
    return float(stats[0] / stats[1]) if stats[1] > 0 else float("nan")


def _progress(loader, epoch, epochs):
    """A tqdm bar over the loader, or the loader itself without tqdm (the per-epoch line
    still prints: the bar is the only thing the 'progress' extra adds)."""
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return loader

    # tqdm is given the started iterator: handing it the loader itself would draw from the
    # loader's generator first and change the shuffle order with the bar on
    return tqdm(iter(loader), total=len(loader), desc=f"epoch {epoch + 1}/{epochs}",
                leave=False, dynamic_ncols=True)
