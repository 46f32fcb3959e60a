"""Image -> tensor conversions shared by the gate and the identifier.

Resizing happens in Pillow on images that JPEG draft decoding already made
small, so it costs a few milliseconds; the batch is assembled as NHWC uint8
and viewed as NCHW, which *is* PyTorch's channels_last layout, so no copy is
needed to feed channels_last networks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from PIL import Image


def resize_square(image: Image.Image, size: int) -> Image.Image:
    """Squash to ``size`` x ``size`` (the identifier was trained on squashed crops)."""
    if image.size == (size, size):
        return image
    return image.resize((size, size), Image.Resampling.BILINEAR)


def resize_center_crop(image: Image.Image, size: int) -> Image.Image:
    """Shorter side to ``size`` (bicubic), then the central square: CLIP's eval transform."""
    width, height = image.size
    scale = size / min(width, height)
    new_size = (max(size, round(width * scale)), max(size, round(height * scale)))
    if new_size != image.size:
        image = image.resize(new_size, Image.Resampling.BICUBIC)
    left = (new_size[0] - size) // 2
    top = (new_size[1] - size) // 2
    return image.crop((left, top, left + size, top + size))


def to_batch(
    images: Sequence[Image.Image],
    mean: Sequence[float],
    std: Sequence[float],
    *,
    device: torch.device,
) -> torch.Tensor:
    """Equal-sized RGB images -> normalised float32 NCHW tensor in channels_last layout."""
    if not images:
        raise ValueError("empty batch")
    width, height = images[0].size
    raw = bytearray()
    for image in images:
        if image.size != (width, height) or image.mode != "RGB":
            raise ValueError("batch images must be RGB and of equal size")
        raw += image.tobytes()
    pixels = torch.frombuffer(raw, dtype=torch.uint8).view(len(images), height, width, 3)
    pixels = pixels.to(device, non_blocking=True).permute(0, 3, 1, 2)  # NCHW view of NHWC
    # (x / 255 - mean) / std == x * (1 / (255 std)) - mean / std, in one pass each.
    inverse_scale = torch.tensor([1.0 / (255.0 * s) for s in std], device=device)
    offset = torch.tensor([m / s for m, s in zip(mean, std, strict=True)], device=device)
    return pixels.float().mul_(inverse_scale.view(1, 3, 1, 1)).sub_(offset.view(1, 3, 1, 1))


def chunks(count: int, size: int) -> list[range]:
    """Index ranges of at most ``size`` covering ``range(count)``."""
    return [range(start, min(start + size, count)) for start in range(0, count, max(1, size))]
