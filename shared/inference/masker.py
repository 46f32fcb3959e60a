"""Background removal with rembg's U2Net, loaded from the bundle, never downloaded.

rembg finds ``u2net.onnx`` under ``$U2NET_HOME`` (and would fetch it from
GitHub if it were missing, which fails offline). The masker points
``U2NET_HOME`` at the bundle's model directory only while rembg builds its
session, under a lock, and restores the environment afterwards; before that it
checks that rembg will resolve exactly the bundle's file, so a missing file is
a clear error rather than a download attempt.

Inference uses the onnxruntime session rembg created, with our own resizing:
rembg's ``remove()`` resizes the full-resolution photo with Lanczos twice and
composites at full resolution (~0.5 s of a 12-MP photo's time). Here the
image arrives already reduced by JPEG draft decoding, is resized to the
model's 320 px input, and the mask is applied at ``mask_max_side`` (the size
the API returns), not at 12 MP. The normalisation is rembg's own (divide by
the image maximum, then ImageNet mean/std), and the prediction is min-max
scaled as rembg does.
"""

from __future__ import annotations

import base64
import io
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from shared.inference.bundle import Bundle, BundleInvalid, MaskerSpec
from shared.inference.onnx_options import session_options

log = logging.getLogger(__name__)

# PNG level 1: the cutout is for display; level 6 tripled encoding time for
# ~10% smaller files.
PNG_COMPRESS_LEVEL = 1

_environment_lock = threading.Lock()


@contextmanager
def scoped_environment(**values: str) -> Iterator[None]:
    """Set environment variables for the duration of the block, then restore them."""
    with _environment_lock:
        saved = {name: os.environ.get(name) for name in values}
        os.environ.update(values)
        try:
            yield
        finally:
            for name, previous in saved.items():
                if previous is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = previous


def _providers(device: str) -> list[str]:
    import onnxruntime as ort

    if device.startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def new_rembg_session(model_file: Path, spec: MaskerSpec, *, threads: int, device: str) -> Any:
    """rembg's session for ``spec.session`` reading ``model_file`` (no download possible)."""
    from rembg import new_session
    from rembg.sessions import sessions as rembg_sessions

    session_class = rembg_sessions.get(spec.session)
    if session_class is None:
        raise BundleInvalid(f"rembg has no session named {spec.session!r}")
    expected_name = f"{spec.session}.onnx"
    if model_file.name != expected_name:
        raise BundleInvalid(
            f"rembg's {spec.session} session reads {expected_name}, not {model_file.name}"
        )
    if not model_file.is_file():
        raise BundleInvalid(f"masker model {model_file} is missing")
    with scoped_environment(U2NET_HOME=str(model_file.parent)):
        resolved = session_class.resolve_existing(expected_name)
        if resolved is None or Path(resolved).resolve() != model_file.resolve():
            raise BundleInvalid(f"rembg would not read {model_file} (found {resolved})")
        return new_session(
            spec.session, sess_opts=session_options(threads), providers=_providers(device)
        )


class Masker:
    """U2Net saliency mask -> RGBA cutout PNG at a bounded size."""

    def __init__(self, spec: MaskerSpec, session: Any, *, max_side: int) -> None:
        self.spec = spec
        self.session = session
        self.max_side = max_side
        inner = session.inner_session
        self._input_name = inner.get_inputs()[0].name
        self._run = inner.run

    @classmethod
    def load(cls, bundle: Bundle, *, threads: int, device: str, max_side: int) -> Masker:
        spec = bundle.manifest.masker
        session = new_rembg_session(bundle.path(spec.model), spec, threads=threads, device=device)
        log.info("masker loaded: rembg %s session, %d threads", spec.session, threads)
        return cls(spec, session, max_side=max_side)

    def _model_input(self, image: Image.Image) -> np.ndarray:
        size = self.spec.input_size
        small = image.resize((size, size), Image.Resampling.BILINEAR)
        pixels = np.asarray(small, dtype=np.float32)
        pixels /= max(float(pixels.max()), 1e-6)
        pixels -= np.asarray(self.spec.mean, dtype=np.float32)
        pixels /= np.asarray(self.spec.std, dtype=np.float32)
        return np.ascontiguousarray(pixels.transpose(2, 0, 1)[np.newaxis])

    def saliency(self, image: Image.Image) -> Image.Image:
        """The model's mask at its input size, scaled to 0-255 as rembg does."""
        prediction = self._run(None, {self._input_name: self._model_input(image)})[0]
        mask = np.asarray(prediction, dtype=np.float32)[0, 0]
        low, high = float(mask.min()), float(mask.max())
        if not np.isfinite(low) or not np.isfinite(high) or high - low < 1e-12:
            # A flat prediction carries no information; keep the whole image.
            return Image.new("L", (mask.shape[1], mask.shape[0]), 255)
        scaled = (mask - low) / (high - low)
        return Image.fromarray((scaled.clip(0.0, 1.0) * 255.0).astype(np.uint8), mode="L")

    def output_size(self, size: tuple[int, int]) -> tuple[int, int]:
        width, height = size
        scale = min(1.0, self.max_side / max(width, height))
        return max(1, round(width * scale)), max(1, round(height * scale))

    def cutout(self, image: Image.Image) -> Image.Image:
        """RGBA image, long side at most ``max_side``, background transparent."""
        target = self.output_size(image.size)
        mask = self.saliency(image).resize(target, Image.Resampling.BILINEAR)
        picture = image if image.size == target else image.resize(target, Image.Resampling.BILINEAR)
        cutout = picture.convert("RGBA")
        cutout.putalpha(mask)
        return cutout

    def cutout_png(self, image: Image.Image) -> bytes:
        buffer = io.BytesIO()
        self.cutout(image).save(buffer, format="PNG", compress_level=PNG_COMPRESS_LEVEL)
        return buffer.getvalue()

    def cutout_base64(self, image: Image.Image) -> str:
        return base64.b64encode(self.cutout_png(image)).decode("ascii")
