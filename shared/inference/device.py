"""Which device runs the models, and the defaults that depend on it.

Workers ask for batch and chunk sizes before they load any model (and often
before they fork), so the functions that only need to know "is there a GPU"
use NVML, which does not initialise CUDA in the calling process; only
:func:`resolve_device` / :func:`torch_device` may touch CUDA, and workers call
them after fork.

bf16 policy (``WHALES_BF16``): ``auto`` enables autocast on CUDA when the GPU
supports bf16, and on CPU only where the CPU has AMX tiles. Measured on this
project's 2-core AVX-512 CPU (no AMX), bf16 autocast did not speed up the
EfficientNet-B4 at batch 1-4 and made ViT-B-32 slower (57 -> 90 ms per image
at batch 1, much worse at batch 4), so it stays off there. Where it is on, the
embeddings stayed within cosine 0.99 of fp32 on the sample photos (see
``bench/pipeline.py``, which measures and prints this).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.settings import Settings

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

CPU_INFERENCE_BATCH = 4
GPU_INFERENCE_BATCH = 32
CPU_CHUNK = 8
GPU_CHUNK = 64


def gpu_count_fork_safe() -> int:
    """Visible CUDA devices, counted without initialising CUDA here (NVML)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in ("", "-1"):
        return 0
    try:
        import torch
    except ImportError:
        return 0
    if not torch.backends.cuda.is_built():
        return 0
    count_nvml = getattr(torch.cuda, "_device_count_nvml", None)
    if count_nvml is None:
        return 0
    try:
        count = int(count_nvml())
    except Exception:
        return 0
    return max(count, 0)


def _wants_gpu(settings: Settings) -> bool:
    choice = settings.device.strip().lower()
    if choice == "cpu":
        return False
    if choice.startswith("cuda"):
        return True
    return gpu_count_fork_safe() > 0


def default_inference_batch_size(*, gpu: bool) -> int:
    return GPU_INFERENCE_BATCH if gpu else CPU_INFERENCE_BATCH


def default_chunk_size(*, gpu: bool) -> int:
    return GPU_CHUNK if gpu else CPU_CHUNK


def inference_batch_size(settings: Settings) -> int:
    """Images per forward pass: the setting, else 4 on CPU / 32 on GPU. Fork-safe."""
    if settings.inference_batch_size is not None:
        return settings.inference_batch_size
    return default_inference_batch_size(gpu=_wants_gpu(settings))


def chunk_size(settings: Settings) -> int:
    """Images per batch task: the setting, else 8 on CPU / 64 on GPU. Fork-safe."""
    if settings.chunk_size is not None:
        return settings.chunk_size
    return default_chunk_size(gpu=_wants_gpu(settings))


def resolve_device(settings: Settings) -> str:
    """'cpu' or 'cuda:N' (initialises CUDA when it picks it: call after fork)."""
    import torch

    choice = settings.device.strip().lower()
    if choice == "cpu":
        return "cpu"
    if choice.startswith("cuda"):
        if not torch.cuda.is_available():
            raise RuntimeError(f"WHALES_DEVICE={settings.device} but CUDA is not available")
        return choice if ":" in choice else "cuda:0"
    if choice != "auto":
        raise ValueError(f"WHALES_DEVICE must be auto, cpu, cuda or cuda:N, not {choice!r}")
    return "cuda:0" if torch.cuda.is_available() else "cpu"


def cpu_has_amx() -> bool:
    import torch

    probe = getattr(torch._C._cpu, "_is_amx_tile_supported", None)
    try:
        return bool(probe()) if probe is not None else False
    except Exception:
        return False


def bf16_enabled(settings: Settings, device: str) -> bool:
    """Whether to run the networks under bf16 autocast (see the module docstring)."""
    if settings.bf16 == "off":
        return False
    if settings.bf16 == "on":
        return True
    import torch

    if device.startswith("cuda"):
        return bool(torch.cuda.is_bf16_supported())
    return cpu_has_amx()


def torch_threads(settings: Settings) -> int:
    return settings.torch_threads or os.cpu_count() or 1


@dataclass(frozen=True)
class DevicePlan:
    """Everything the model wrappers need to know about where and how they run."""

    device: str
    bf16: bool
    batch_size: int
    threads: int = 1  # intra-op threads for torch and the onnxruntime sessions

    @property
    def is_cuda(self) -> bool:
        return self.device.startswith("cuda")

    def torch_device(self) -> torch.device:
        import torch

        return torch.device(self.device)


def plan_device(settings: Settings, *, apply_threads: bool = True) -> DevicePlan:
    """Resolve device, bf16 and batch size; set torch's intra-op threads (process-wide).

    Called by the pipeline when it loads models, never at import.
    """
    import torch

    device = resolve_device(settings)
    threads = torch_threads(settings)
    if apply_threads and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    batch = settings.inference_batch_size or default_inference_batch_size(
        gpu=device.startswith("cuda")
    )
    plan = DevicePlan(
        device=device, bf16=bf16_enabled(settings, device), batch_size=batch, threads=threads
    )
    log.info(
        "inference on %s (bf16=%s, batch=%d, threads=%d)",
        plan.device,
        plan.bf16,
        plan.batch_size,
        plan.threads,
    )
    return plan
