"""Which runtime executes the gate's image tower and the identifier's embedding network.

On CPU, onnxruntime runs both networks markedly faster than PyTorch eager on
this project's 2-core AVX-512 CPU: EfficientNet-B4 at 512 px went from ~104 to
~65 ms per image and ViT-B-32 at 224 px from ~49 to ~23 ms (batch 4, fp32,
identical outputs to 1e-5). ORT fuses convolution + bias + SiLU and runs the
depthwise convolutions and attention with its own kernels, which PyTorch's
eager mode does op by op. So on CPU (when bf16 autocast is off) each network
is traced once at load, with the weights already in memory, into an in-memory
ONNX graph and handed to onnxruntime; nothing is written to disk and nothing
is downloaded. On CUDA, or with bf16 autocast, PyTorch runs the modules
directly (``torch.inference_mode``, channels_last).

Whatever the engine, a runner takes a float32 NCHW batch tensor and returns a
float32 tensor on the plan's device.
"""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Callable
from typing import Any, Literal

import torch

from shared.inference.device import DevicePlan
from shared.inference.onnx_options import session_options

log = logging.getLogger(__name__)

Engine = Literal["auto", "torch", "onnx"]
ENGINES: tuple[str, ...] = ("auto", "torch", "onnx")
Runner = Callable[[torch.Tensor], torch.Tensor]

_INPUT = "pixels"
_OUTPUT = "embedding"


def choose_engine(requested: str, plan: DevicePlan) -> Literal["torch", "onnx"]:
    """``auto``: onnxruntime on CPU without bf16, PyTorch otherwise."""
    if requested not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {requested!r}")
    if requested == "torch" or (requested == "auto" and (plan.is_cuda or plan.bf16)):
        return "torch"
    return "onnx"


class TorchRunner:
    """A module run eagerly under inference mode (and bf16 autocast when the plan says)."""

    engine = "torch"

    def __init__(self, module: torch.nn.Module, plan: DevicePlan) -> None:
        self.module = module
        self.plan = plan

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        device = self.plan.torch_device()
        with (
            torch.inference_mode(),
            torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.plan.bf16),
        ):
            return self.module(batch).float()


class OnnxRunner:
    """A module traced once into ONNX and executed by an onnxruntime CPU session."""

    engine = "onnx"

    def __init__(self, session: Any) -> None:
        self.session = session

    @classmethod
    def export(cls, module: torch.nn.Module, example: torch.Tensor, *, threads: int) -> OnnxRunner:
        import onnxruntime as ort

        module = module.eval()
        buffer = io.BytesIO()
        with warnings.catch_warnings(), torch.enable_grad():
            # The TorchScript-based exporter is deprecated in favour of dynamo,
            # but it traces these graphs in one to two seconds; dynamo takes far
            # longer at every worker start. Grad mode stays on while tracing:
            # without it nn.MultiheadAttention takes its fused inference path,
            # an operator ONNX cannot express.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example.contiguous(),),
                buffer,  # type: ignore[arg-type]  # the TorchScript exporter takes a stream
                input_names=[_INPUT],
                output_names=[_OUTPUT],
                dynamic_axes={_INPUT: {0: "batch"}, _OUTPUT: {0: "batch"}},
                opset_version=17,
                do_constant_folding=True,
                dynamo=False,
                external_data=False,
            )
        session = ort.InferenceSession(
            buffer.getvalue(), session_options(threads), providers=["CPUExecutionProvider"]
        )
        return cls(session)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        pixels = batch.detach().float().contiguous().cpu().numpy()
        (output,) = self.session.run([_OUTPUT], {_INPUT: pixels})
        return torch.from_numpy(output)


def make_runner(
    module: torch.nn.Module,
    example: torch.Tensor,
    plan: DevicePlan,
    *,
    engine: str,
    threads: int,
) -> TorchRunner | OnnxRunner:
    """The runner ``engine`` asks for; ``auto`` falls back to PyTorch if export fails."""
    chosen = choose_engine(engine, plan)
    if chosen == "onnx":
        try:
            return OnnxRunner.export(module, example, threads=threads)
        except Exception as exc:
            if engine == "onnx":
                raise
            log.warning(
                "ONNX export failed (%s); running %s in PyTorch", exc, type(module).__name__
            )
    return TorchRunner(module, plan)
