"""From the pipeline's results to stored rows."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.jobs import DetectionRecord

if TYPE_CHECKING:
    from shared.inference.pipeline import ImageResult


def to_record(result: ImageResult, *, position: int, worker: str) -> DetectionRecord:
    detection = result.detection
    timings = result.timings_ms
    return DetectionRecord(
        position=position,
        image_ind=detection.image_ind,
        bbox=list(detection.bbox),
        class_animal=detection.class_animal,
        id_animal=detection.id_animal,
        probability=detection.probability,
        is_cetacean=detection.is_cetacean,
        cetacean_score=detection.cetacean_score,
        rejected=detection.rejected,
        rejection_reason=detection.rejection_reason,
        model_version=detection.model_version,
        mask=detection.mask,
        candidates=[candidate.model_dump() for candidate in detection.candidates],
        image_sha256=result.sha256,
        byte_size=result.byte_size,
        width=result.width,
        height=result.height,
        captured_at=result.captured_at,
        gps_lat=result.gps_lat,
        gps_lon=result.gps_lon,
        decode_ms=timings.get("decode"),
        gate_ms=timings.get("gate"),
        identify_ms=timings.get("identify"),
        mask_ms=timings.get("mask"),
        worker=worker,
    )


def corrupted_record(position: int, name: str, model_version: str, worker: str) -> DetectionRecord:
    """An archive entry whose bytes could not even be read: the same answer the
    pipeline gives for an image it cannot decode."""
    return DetectionRecord(
        position=position,
        image_ind=name,
        bbox=[0, 0, 0, 0],
        class_animal="",
        id_animal="unknown",
        probability=0.0,
        is_cetacean=False,
        cetacean_score=0.0,
        rejected=True,
        rejection_reason="corrupted_image",
        model_version=model_version,
        worker=worker,
    )
