"""The whole inference path for a batch of images: decode -> gate -> identify -> mask.

Workers and the offline CLI build one :class:`Pipeline` per process (models
stay warm) and call :meth:`Pipeline.run` with whole chunks: images are decoded
in a thread pool, the gate runs on all of them, the identifier on the accepted
ones in batched forward passes, and masks (optional) on the identified ones.
``run`` never raises for a bad image: undecodable bytes become a
``corrupted_image`` rejection, and a model failure on one image becomes a
detection with ``error`` set, without failing the others.

Importing this module is cheap (no torch); models load in :meth:`from_bundle`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

from shared.imaging import DecodedImage, ImageError, ImageTooLarge, decode_image
from shared.schemas import Candidate, Detection
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.inference.bundle import Bundle
    from shared.inference.device import DevicePlan
    from shared.inference.gate import CetaceanGate, GateDecision
    from shared.inference.identifier import Identifier, Match
    from shared.inference.masker import Masker

log = logging.getLogger(__name__)

STAGES = ("decode", "gate", "identify", "mask")
_T = TypeVar("_T")
_R = TypeVar("_R")


@dataclass(frozen=True)
class RawImage:
    """An image as received: its name (file or ZIP entry) and its bytes."""

    name: str
    data: bytes


@dataclass
class ImageResult:
    """One processed image: the seed-shaped detection plus what the history stores."""

    detection: Detection
    sha256: str
    byte_size: int
    width: int | None
    height: int | None
    captured_at: datetime | None
    gps_lat: float | None
    gps_lon: float | None
    timings_ms: dict[str, float] = field(default_factory=dict)
    # ImageError code when the bytes could not be decoded ("not_an_image",
    # "corrupted_image", "image_too_large"); None otherwise.
    image_error: str | None = None
    image_error_message: str | None = None


@dataclass(frozen=True)
class GateResult:
    """What ``whales verify`` prints: the gate's decision only."""

    name: str
    is_cetacean: bool
    cetacean_score: float
    width: int | None
    height: int | None
    image_error: str | None = None


@dataclass
class _Item:
    """Per-image state while a batch moves through the stages."""

    raw: RawImage
    sha256: str = ""
    decoded: DecodedImage | None = None
    error: ImageError | None = None
    gate: GateDecision | None = None
    matches: list[Match] | None = None
    failure: str | None = None
    mask: str | None = None
    timings: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))


def _each_or_alone(
    function: Callable[[list[_T]], list[_R]], items: list[_T]
) -> list[_R | Exception]:
    """Run ``function`` on the whole list; if that fails, on each item alone.

    A batch-level failure (one poisonous image, an out-of-memory on a big
    batch) then costs only the images that fail on their own.
    """
    try:
        return list(function(items))
    except Exception:
        log.exception("batch of %d failed; retrying one by one", len(items))
    results: list[_R | Exception] = []
    for item in items:
        try:
            results.append(function([item])[0])
        except Exception as exc:
            log.warning("image failed on its own: %r", exc)
            results.append(exc)
    return results


def _round(value: float) -> float:
    return round(min(max(value, 0.0), 1.0), 4)


class Pipeline:
    """Warm models and the thread pool that feeds them."""

    def __init__(
        self,
        bundle: Bundle,
        settings: Settings,
        plan: DevicePlan,
        gate: CetaceanGate,
        identifier: Identifier,
        masker: Masker | None = None,
    ) -> None:
        self.bundle = bundle
        self.settings = settings
        self.plan = plan
        self.gate = gate
        self.identifier = identifier
        self._masker = masker
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self.min_side = max(identifier.spec.input_size, gate.spec.image_size)

    @classmethod
    def from_bundle(
        cls,
        bundle_dir: Path,
        settings: Settings,
        *,
        load_masker: bool = True,
        verify: bool = True,
        engine: str = "auto",
    ) -> Pipeline:
        """Load every model of the bundle on the device the settings choose.

        ``load_masker=False`` defers rembg's session to the first masked image
        (the CLI's batch mode never needs it). ``engine`` picks what runs the
        gate and the identifier (see :mod:`shared.inference.engine`); ``auto``
        is right everywhere, the others exist for benchmarks and tests.
        """
        from shared.inference.bundle import load_bundle
        from shared.inference.device import plan_device
        from shared.inference.gate import CetaceanGate
        from shared.inference.identifier import Identifier

        bundle = load_bundle(bundle_dir, verify=verify)
        plan = plan_device(settings)
        gate = CetaceanGate.load(bundle, plan, engine=engine)
        identifier = Identifier.load(bundle, plan, engine=engine)
        pipeline = cls(bundle, settings, plan, gate, identifier)
        if load_masker:
            pipeline.masker()
        return pipeline

    @property
    def model_version(self) -> str:
        return self.bundle.model_version

    @property
    def device(self) -> str:
        return self.plan.device

    def masker(self) -> Masker:
        """rembg's session, created on first use when it was not preloaded."""
        with self._lock:
            if self._masker is None:
                from shared.inference.masker import Masker

                self._masker = Masker.load(
                    self.bundle,
                    threads=self.settings.onnx_threads,
                    device=self.plan.device,
                    max_side=self.settings.mask_max_side,
                )
            return self._masker

    def close(self) -> None:
        with self._lock:
            if self._executor is not None:
                self._executor.shutdown(wait=True)
                self._executor = None

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # --- stages -------------------------------------------------------------

    def _pool(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self.settings.decode_threads, thread_name_prefix="whales-decode"
                )
            return self._executor

    def _decode_one(self, item: _Item, min_long_side: int | None) -> None:
        started = time.perf_counter()
        item.sha256 = hashlib.sha256(item.raw.data).hexdigest()
        try:
            item.decoded = decode_image(
                item.raw.data,
                min_side=self.min_side,
                min_long_side=min_long_side,
                max_pixels=self.settings.max_image_pixels,
            )
        except ImageError as exc:
            item.error = exc
        item.timings["decode"] = (time.perf_counter() - started) * 1000.0

    def _decode(self, items: list[_Item], *, with_mask: bool) -> None:
        min_long_side = self.settings.mask_max_side if with_mask else None
        if len(items) == 1:
            self._decode_one(items[0], min_long_side)
            return
        futures = [self._pool().submit(self._decode_one, item, min_long_side) for item in items]
        for future in futures:
            future.result()

    def _run_gate(self, items: list[_Item]) -> None:
        if not items:
            return
        started = time.perf_counter()
        decisions = _each_or_alone(
            lambda batch: self.gate.decide([i.decoded.image for i in batch if i.decoded]), items
        )
        share = (time.perf_counter() - started) * 1000.0 / len(items)
        for item, decision in zip(items, decisions, strict=True):
            item.timings["gate"] = share
            if isinstance(decision, Exception):
                item.failure = f"gate failed: {decision}"
            else:
                item.gate = decision

    def _run_identifier(self, items: list[_Item]) -> None:
        if not items:
            return
        started = time.perf_counter()
        ranked = _each_or_alone(
            lambda batch: self.identifier.identify([i.decoded.image for i in batch if i.decoded]),
            items,
        )
        share = (time.perf_counter() - started) * 1000.0 / len(items)
        for item, matches in zip(items, ranked, strict=True):
            item.timings["identify"] = share
            if isinstance(matches, Exception):
                item.failure = f"identification failed: {matches}"
            else:
                item.matches = matches

    def _run_masks(self, items: list[_Item]) -> None:
        for item in items:
            if item.decoded is None:
                continue
            started = time.perf_counter()
            try:
                item.mask = self.masker().cutout_base64(item.decoded.image)
            except Exception:
                # The seed answered without a mask when rembg failed; so do we.
                log.exception("mask failed for %s", item.raw.name)
            item.timings["mask"] = (time.perf_counter() - started) * 1000.0

    # --- public ---------------------------------------------------------------

    def run(
        self,
        images: Sequence[RawImage],
        *,
        with_mask: bool,
        between_steps: Callable[[], None] | None = None,
    ) -> list[ImageResult]:
        """Process a batch; one result per input, in input order. Never raises per image.

        ``between_steps`` is called before every forward pass and mask; batch
        workers use it to let a waiting single-image request run first.
        """
        pause = between_steps or (lambda: None)
        items = [_Item(raw=image) for image in images]
        self._decode(items, with_mask=with_mask)
        decoded = [item for item in items if item.decoded is not None]
        # Each model stage goes one forward pass (plan.batch_size images) at a
        # time, with a pause between passes: the same passes the models would
        # make anyway, but a waiting interactive request gets the device after
        # one pass instead of after a whole chunk.
        for part in self._passes(decoded):
            pause()
            self._run_gate(part)
        accepted = [i for i in decoded if i.gate is not None and i.gate.is_cetacean]
        for part in self._passes(accepted):
            pause()
            self._run_identifier(part)
        if with_mask:
            for item in [i for i in accepted if self._is_confident(i)]:
                pause()
                self._run_masks([item])
        return [self._result(item) for item in items]

    def _passes(self, items: list[_Item]) -> list[list[_Item]]:
        size = max(1, self.plan.batch_size)
        return [items[start : start + size] for start in range(0, len(items), size)]

    def screen(self, images: Sequence[RawImage]) -> list[GateResult]:
        """The gate alone (``whales verify``)."""
        items = [_Item(raw=image) for image in images]
        self._decode(items, with_mask=False)
        self._run_gate([item for item in items if item.decoded is not None])
        results = []
        for item in items:
            size = self._size(item)
            results.append(
                GateResult(
                    name=item.raw.name,
                    is_cetacean=bool(item.gate and item.gate.is_cetacean),
                    cetacean_score=_round(item.gate.score) if item.gate else 0.0,
                    width=size[0] if size else None,
                    height=size[1] if size else None,
                    image_error=item.error.code if item.error else None,
                )
            )
        return results

    # --- results ------------------------------------------------------------------

    def _is_confident(self, item: _Item) -> bool:
        return bool(item.matches) and (
            item.matches[0].probability >= self.identifier.spec.min_confidence  # type: ignore[index]
        )

    @staticmethod
    def _size(item: _Item) -> tuple[int, int] | None:
        if item.decoded is not None:
            return item.decoded.width, item.decoded.height
        if isinstance(item.error, ImageTooLarge) and item.error.width:
            return item.error.width, item.error.height
        return None

    def _detection(self, item: _Item) -> Detection:
        size = self._size(item)
        bbox = [0, 0, size[0], size[1]] if size else [0, 0, 0, 0]
        rejected = {
            "class_animal": "",
            "id_animal": "unknown",
            "probability": 0.0,
            "rejected": True,
        }
        common = {"image_ind": item.raw.name, "bbox": bbox, "model_version": self.model_version}
        if item.decoded is None:
            return Detection(
                **common,
                **rejected,
                is_cetacean=False,
                cetacean_score=0.0,
                rejection_reason="corrupted_image",
            )
        score = _round(item.gate.score) if item.gate else 0.0
        if item.failure is not None:
            return Detection(
                **common,
                **rejected,
                is_cetacean=bool(item.gate and item.gate.is_cetacean),
                cetacean_score=score,
                error=item.failure,
            )
        assert item.gate is not None
        if not item.gate.is_cetacean:
            return Detection(
                **common,
                **rejected,
                is_cetacean=False,
                cetacean_score=score,
                rejection_reason="not_a_marine_mammal",
            )
        matches = item.matches or []
        candidates = [
            Candidate(
                class_animal=m.individual_id, id_animal=m.species, probability=_round(m.probability)
            )
            for m in matches
        ]
        if not self._is_confident(item):
            # Rejected like the seed's bodies; the candidates stay for reviewers.
            return Detection(
                **common,
                **rejected,
                is_cetacean=True,
                cetacean_score=score,
                rejection_reason="low_confidence",
                candidates=candidates,
            )
        best = matches[0]
        return Detection(
            **common,
            class_animal=best.individual_id,
            id_animal=best.species,
            probability=_round(best.probability),
            mask=item.mask,
            is_cetacean=True,
            cetacean_score=score,
            candidates=candidates,
        )

    def _result(self, item: _Item) -> ImageResult:
        size = self._size(item)
        decoded = item.decoded
        return ImageResult(
            detection=self._detection(item),
            sha256=item.sha256,
            byte_size=len(item.raw.data),
            width=size[0] if size else None,
            height=size[1] if size else None,
            captured_at=decoded.captured_at if decoded else None,
            gps_lat=decoded.gps_lat if decoded else None,
            gps_lon=decoded.gps_lon if decoded else None,
            timings_ms={stage: round(item.timings[stage], 3) for stage in STAGES},
            image_error=item.error.code if item.error else None,
            image_error_message=str(item.error) if item.error else None,
        )
