"""Fold inference-mode batch norms into the convolutions that feed them.

In eval mode a batch norm is an affine map per channel, so it can be merged
into the preceding convolution's weights and bias exactly. On CPU this matters:
profiling EfficientNet-B4 at 512 px in channels_last showed batch norm taking
~30% of the forward pass (it is a separate memory-bound pass per layer), and
folding brought batch 1 from ~210 ms to ~165 ms on this project's 2-core CPU.

Which convolution feeds which norm is found by running one small forward pass
with hooks (a norm whose input tensor *is* a convolution's output), so the
code does not depend on the layer naming of a particular timm architecture.
Norms that carry an activation (timm's ``BatchNormAct2d``) keep it.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv_norm_pairs(model: nn.Module, example: torch.Tensor) -> list[tuple[str, str]]:
    producers: dict[int, str] = {}
    pairs: list[tuple[str, str]] = []
    handles = []
    consumers: dict[str, int] = {}

    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):

            def record_output(_m: nn.Module, _i: object, output: torch.Tensor, n: str = name):
                producers[id(output)] = n

            handles.append(module.register_forward_hook(record_output))
        elif isinstance(module, nn.BatchNorm2d) and not module.training:

            def match_input(_m: nn.Module, inputs: tuple[torch.Tensor, ...], n: str = name):
                source = producers.get(id(inputs[0]))
                if source is not None:
                    pairs.append((source, n))
                    consumers[source] = consumers.get(source, 0) + 1

            handles.append(module.register_forward_pre_hook(match_input))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    # A convolution whose output fed more than one norm cannot absorb either.
    return [(conv, norm) for conv, norm in pairs if consumers[conv] == 1]


def _replacement(norm: nn.BatchNorm2d) -> nn.Module:
    # timm's BatchNormAct2d applies (drop, act) after the norm; keep those.
    act = getattr(norm, "act", None)
    drop = getattr(norm, "drop", None)
    parts = [m for m in (drop, act) if isinstance(m, nn.Module) and not isinstance(m, nn.Identity)]
    if not parts:
        return nn.Identity()
    return parts[0] if len(parts) == 1 else nn.Sequential(*parts)


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, attribute = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, attribute, module)


class FoldingError(RuntimeError):
    """Folding changed the model's output (a convolution output had another consumer)."""


def _output_tensor(output: object) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError("fold_batch_norms needs a model that returns a tensor")


@torch.no_grad()
def fold_batch_norms(model: nn.Module, example: torch.Tensor) -> int:
    """Fold every eval-mode BatchNorm2d that directly follows a Conv2d; returns the count.

    ``model`` must be in eval mode. The output on ``example`` is compared before
    and after; if folding changed it (a convolution's output also fed something
    other than its norm), :class:`FoldingError` is raised and the caller should
    rebuild the model unfolded.
    """
    if model.training:
        raise ValueError("fold batch norms only on a model in eval mode")
    reference = _output_tensor(model(example)).float()
    pairs = _conv_norm_pairs(model, example)
    for conv_name, norm_name in pairs:
        conv = model.get_submodule(conv_name)
        norm = model.get_submodule(norm_name)
        assert isinstance(conv, nn.Conv2d) and isinstance(norm, nn.BatchNorm2d)
        if norm.running_mean is None or norm.running_var is None:
            continue
        gamma = norm.weight if norm.weight is not None else torch.ones_like(norm.running_var)
        beta = norm.bias if norm.bias is not None else torch.zeros_like(norm.running_mean)
        scale = gamma / torch.sqrt(norm.running_var + norm.eps)
        conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
        bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
        conv.bias = nn.Parameter((bias - norm.running_mean) * scale + beta, requires_grad=False)
        _set_submodule(model, norm_name, _replacement(norm))
    folded = _output_tensor(model(example)).float()
    tolerance = 1e-3 * (1.0 + float(reference.abs().max()))
    if not torch.allclose(folded, reference, rtol=1e-3, atol=tolerance):
        raise FoldingError(
            f"folding changed the output by {float((folded - reference).abs().max()):.3g}"
        )
    return len(pairs)
