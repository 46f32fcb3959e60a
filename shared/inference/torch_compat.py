"""Make torchvision importable next to a CPU-only torch.

Some registries publish torchvision only as a CUDA build. With a CPU torch its
native library (``_C.so``) fails to load, and torchvision's own fake-kernel
registration then raises ``operator torchvision::nms does not exist``, which
breaks ``import timm`` and ``import open_clip`` too. Declaring those two
operator schemas before torchvision is first imported, and only when its
native library cannot load, lets the pure-Python parts (transforms, models)
import. The service needs none of torchvision's native ops. On images with a
matching official build this does nothing.
"""

from __future__ import annotations

import ctypes
import importlib.util
import logging
import sys
from pathlib import Path

log = logging.getLogger(__name__)

_OPERATOR_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor qdets, Tensor qscores, float iou_threshold) -> Tensor",
}
_library_handle: object | None = None  # keeps the torch.library registration alive


def _native_library_loads() -> bool:
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return True  # not installed: nothing to patch, the import error will be clear
    candidates = list(Path(spec.origin).parent.glob("_C*.so"))
    if not candidates:
        return True
    import torch  # noqa: F401  (torch's own libraries must be loaded first)

    try:
        ctypes.CDLL(str(candidates[0]))
    except OSError as exc:
        log.info("torchvision native library unavailable (%s); declaring its op schemas", exc)
        return False
    return True


def ensure_torchvision_importable() -> None:
    """Idempotent; call before the first import of torchvision, timm or open_clip."""
    global _library_handle
    if "torchvision" in sys.modules or _library_handle is not None:
        return
    if _native_library_loads():
        return
    import torch

    library = torch.library.Library("torchvision", "DEF")
    for schema in _OPERATOR_SCHEMAS.values():
        library.define(schema)
    _library_handle = library
