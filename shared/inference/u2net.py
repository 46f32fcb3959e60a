"""U²-Net (Qin et al., 2020), the salient-object network behind rembg's ``u2net.onnx``.

Used only to *write* ONNX files with the exact interface of rembg's public
model (test bundles of random weights); inference always goes through rembg's
onnxruntime session. The full configuration has the public model's 44 M
parameters; :func:`u2net_small` is the paper's 1.1 M-parameter U²-Net† widths
for fast tests. Both take ``[1, 3, 320, 320]`` and return seven
``[1, 1, 320, 320]`` sigmoid maps, the first being the fused prediction that
rembg reads.

The interface names are those of the public file (exported by PyTorch 1.x:
input ``input.1``, outputs named by graph node numbers).

Imports torch at module level: only test-bundle generation imports it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

ONNX_INPUT_NAME = "input.1"
ONNX_OUTPUT_NAMES = ("1959", "1960", "1961", "1962", "1963", "1964", "1965")
INPUT_SIZE = 320


class ConvBnRelu(nn.Module):
    """3x3 convolution (optionally dilated) + batch norm + ReLU: U²-Net's basic unit."""

    def __init__(self, in_channels: int, out_channels: int, dilation: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            in_channels, out_channels, kernel_size=3, padding=dilation, dilation=dilation
        )
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def _upsample_like(source: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return F.interpolate(source, size=target.shape[2:], mode="bilinear", align_corners=False)


class ResidualUBlock(nn.Module):
    """RSU-L: a small U-Net of ``height`` levels inside a residual connection.

    Encoder levels halve the resolution with max-pooling; the bottom level uses
    a dilated convolution instead of another pooling; the decoder upsamples and
    concatenates the matching encoder output.
    """

    def __init__(self, height: int, in_channels: int, mid_channels: int, out_channels: int):
        super().__init__()
        if height < 3:
            raise ValueError("an RSU block needs at least 3 levels")
        self.height = height
        self.conv_in = ConvBnRelu(in_channels, out_channels)
        self.encoders = nn.ModuleList(
            [ConvBnRelu(out_channels, mid_channels)]
            + [ConvBnRelu(mid_channels, mid_channels) for _ in range(height - 2)]
        )
        self.bottom = ConvBnRelu(mid_channels, mid_channels, dilation=2)
        self.decoders = nn.ModuleList(
            [ConvBnRelu(2 * mid_channels, mid_channels) for _ in range(height - 2)]
            + [ConvBnRelu(2 * mid_channels, out_channels)]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.conv_in(x)
        skips: list[torch.Tensor] = []
        hidden = residual
        for level, encoder in enumerate(self.encoders):
            if level > 0:
                hidden = F.max_pool2d(hidden, kernel_size=2, stride=2, ceil_mode=True)
            hidden = encoder(hidden)
            skips.append(hidden)
        hidden = self.bottom(hidden)
        for level, decoder in enumerate(self.decoders):
            skip = skips[-1 - level]
            if level > 0:
                hidden = _upsample_like(hidden, skip)
            hidden = decoder(torch.cat((hidden, skip), dim=1))
        return hidden + residual


class DilatedResidualUBlock(nn.Module):
    """RSU-4F: the RSU variant for the coarsest stages, dilations instead of pooling."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv_in = ConvBnRelu(in_channels, out_channels)
        self.encoders = nn.ModuleList(
            [
                ConvBnRelu(out_channels, mid_channels, dilation=1),
                ConvBnRelu(mid_channels, mid_channels, dilation=2),
                ConvBnRelu(mid_channels, mid_channels, dilation=4),
            ]
        )
        self.bottom = ConvBnRelu(mid_channels, mid_channels, dilation=8)
        self.decoders = nn.ModuleList(
            [
                ConvBnRelu(2 * mid_channels, mid_channels, dilation=4),
                ConvBnRelu(2 * mid_channels, mid_channels, dilation=2),
                ConvBnRelu(2 * mid_channels, out_channels, dilation=1),
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.conv_in(x)
        skips: list[torch.Tensor] = []
        hidden = residual
        for encoder in self.encoders:
            hidden = encoder(hidden)
            skips.append(hidden)
        hidden = self.bottom(hidden)
        for level, decoder in enumerate(self.decoders):
            hidden = decoder(torch.cat((hidden, skips[-1 - level]), dim=1))
        return hidden + residual


@dataclass(frozen=True)
class StageWidths:
    """(mid, out) channels of the six encoder and five decoder stages."""

    encoder: tuple[tuple[int, int], ...]
    decoder: tuple[tuple[int, int], ...]


FULL_WIDTHS = StageWidths(
    encoder=((32, 64), (32, 128), (64, 256), (128, 512), (256, 512), (256, 512)),
    decoder=((256, 512), (128, 256), (64, 128), (32, 64), (16, 64)),
)
SMALL_WIDTHS = StageWidths(
    encoder=((16, 64),) * 6,
    decoder=((16, 64),) * 5,
)
_RSU_HEIGHTS = (7, 6, 5, 4)  # stages 1-4 (and decoders 4-1); stages 5-6 are RSU-4F


class U2Net(nn.Module):
    """Six-stage encoder, five-stage decoder, six side outputs fused by a 1x1 conv."""

    def __init__(self, widths: StageWidths = FULL_WIDTHS, in_channels: int = 3) -> None:
        super().__init__()
        encoder: list[nn.Module] = []
        channels = in_channels
        for stage, (mid, out) in enumerate(widths.encoder):
            if stage < 4:
                encoder.append(ResidualUBlock(_RSU_HEIGHTS[stage], channels, mid, out))
            else:
                encoder.append(DilatedResidualUBlock(channels, mid, out))
            channels = out
        self.encoder = nn.ModuleList(encoder)

        encoder_out = [out for _, out in widths.encoder]
        decoder: list[nn.Module] = []
        below = encoder_out[-1]
        for index, (mid, out) in enumerate(widths.decoder):
            stage = 4 - index  # decoder stages 5, 4, 3, 2, 1 (0-based 4..0)
            skip = encoder_out[stage]
            if stage == 4:
                decoder.append(DilatedResidualUBlock(below + skip, mid, out))
            else:
                decoder.append(ResidualUBlock(_RSU_HEIGHTS[stage], below + skip, mid, out))
            below = out
        self.decoder = nn.ModuleList(decoder)

        # Side outputs, finest first: decoder stages 1..5, then encoder stage 6.
        side_channels = [out for _, out in reversed(widths.decoder)] + [encoder_out[-1]]
        self.sides = nn.ModuleList(nn.Conv2d(c, 1, kernel_size=3, padding=1) for c in side_channels)
        self.fuse = nn.Conv2d(len(side_channels), 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        skips: list[torch.Tensor] = []
        hidden = x
        for stage, block in enumerate(self.encoder):
            if stage > 0:
                hidden = F.max_pool2d(hidden, kernel_size=2, stride=2, ceil_mode=True)
            hidden = block(hidden)
            skips.append(hidden)

        decoded: list[torch.Tensor] = []
        hidden = skips[-1]
        for index, block in enumerate(self.decoder):
            skip = skips[-2 - index]
            hidden = block(torch.cat((_upsample_like(hidden, skip), skip), dim=1))
            decoded.append(hidden)

        finest_first = [*reversed(decoded), skips[-1]]
        side_maps = [side(feature) for side, feature in zip(self.sides, finest_first, strict=True)]
        side_maps = [side_maps[0]] + [_upsample_like(m, side_maps[0]) for m in side_maps[1:]]
        fused = self.fuse(torch.cat(side_maps, dim=1))
        return tuple(torch.sigmoid(m) for m in (fused, *side_maps))


def u2net_full() -> U2Net:
    return U2Net(FULL_WIDTHS)


def u2net_small() -> U2Net:
    return U2Net(SMALL_WIDTHS)


def export_onnx(model: U2Net, path: Path, *, opset: int = 17) -> Path:
    """Write ``model`` as a single-file ONNX with the public u2net.onnx interface."""
    import warnings

    import onnx

    model = model.eval()
    example = torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE)
    path.parent.mkdir(parents=True, exist_ok=True)
    # TorchScript refuses purely numeric value names, so export with readable
    # names and rename the graph's outputs afterwards.
    placeholder_names = [f"side_{index}" for index in range(len(ONNX_OUTPUT_NAMES))]
    with warnings.catch_warnings():
        # The TorchScript-based exporter is deprecated in favour of dynamo; it is
        # kept here because it writes this convolution-only graph in seconds.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[ONNX_INPUT_NAME],
            output_names=placeholder_names,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
            external_data=False,
        )
    proto = onnx.load(str(path))
    renames = dict(zip(placeholder_names, ONNX_OUTPUT_NAMES, strict=True))
    for node in proto.graph.node:
        node.output[:] = [renames.get(name, name) for name in node.output]
        node.input[:] = [renames.get(name, name) for name in node.input]
    for output in proto.graph.output:
        output.name = renames.get(output.name, output.name)
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return path
