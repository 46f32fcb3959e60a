"""Offline use of the models: ``whales predict``, ``whales batch``, ``whales verify``.

No database, broker or API: the bundle at WHALES_MODEL_DIR (or ``--model-dir``)
is loaded in this process. ``batch`` writes one CSV row per file under the
directory, whatever the file is, and never stops on a bad one.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import click

from shared.settings import Settings, get_settings

if TYPE_CHECKING:
    from shared.inference.pipeline import ImageResult, Pipeline, RawImage

CSV_COLUMNS = (
    "file",
    "status",
    "rejection_reason",
    "image_error",
    "individual_id",
    "species",
    "probability",
    "is_cetacean",
    "cetacean_score",
    "width",
    "height",
    "captured_at",
    "gps_lat",
    "gps_lon",
    "sha256",
    "bytes",
    "model_version",
    "top5",
    "message",
)

_MODEL_DIR = click.option(
    "--model-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Model bundle (default: WHALES_MODEL_DIR, else <data dir>/models).",
)


def _load_pipeline(settings: Settings, model_dir: Path | None, *, with_mask: bool) -> Pipeline:
    from shared.inference.bundle import BundleError
    from shared.inference.pipeline import Pipeline

    root = model_dir or settings.models_path
    try:
        return Pipeline.from_bundle(root, settings, load_masker=with_mask)
    except BundleError as exc:
        raise click.ClickException(str(exc)) from exc


def _read(path: Path, settings: Settings) -> bytes:
    size = path.stat().st_size
    if size > settings.max_image_bytes:
        raise click.ClickException(
            f"{path} is {size:,d} bytes, over the {settings.max_image_bytes:,d}-byte limit"
        )
    return path.read_bytes()


def _status(result: ImageResult) -> str:
    detection = result.detection
    if detection.error is not None:
        return "error"
    return "rejected" if detection.rejected else "identified"


def _describe(result: ImageResult, *, threshold_note: str = "") -> str:
    d = result.detection
    lines = [f"{d.image_ind}: {_status(result)}"]
    if result.image_error:
        lines.append(f"  image error:    {result.image_error} ({result.image_error_message})")
    if d.rejection_reason:
        lines.append(f"  reason:         {d.rejection_reason}")
    if d.error:
        lines.append(f"  error:          {d.error}")
    if result.width:
        lines.append(f"  size:           {result.width}x{result.height}")
    lines.append(f"  cetacean score: {d.cetacean_score:.4f}{threshold_note}")
    if not d.rejected:
        lines.append(f"  individual:     {d.class_animal} ({d.id_animal}), p={d.probability:.4f}")
    for rank, candidate in enumerate(d.candidates, start=1):
        lines.append(
            f"  top{rank}:           {candidate.class_animal} {candidate.id_animal} "
            f"{candidate.probability:.4f}"
        )
    if d.mask:
        lines.append(f"  mask:           base64 PNG, {len(d.mask):,d} characters")
    if result.captured_at:
        lines.append(f"  captured at:    {result.captured_at.isoformat()}")
    if result.gps_lat is not None:
        lines.append(f"  gps:            {result.gps_lat}, {result.gps_lon}")
    lines.append(f"  model version:  {d.model_version}")
    return "\n".join(lines)


@click.command()
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the Detection as JSON.")
@click.option("--no-mask", is_flag=True, help="Skip background removal.")
@_MODEL_DIR
def predict(image: Path, as_json: bool, no_mask: bool, model_dir: Path | None) -> None:
    """Identify the individual in IMAGE (gate, identifier and, unless --no-mask, mask)."""
    from shared.inference.pipeline import RawImage

    settings = get_settings()
    data = _read(image, settings)
    with _load_pipeline(settings, model_dir, with_mask=not no_mask) as pipeline:
        result = pipeline.run([RawImage(image.name, data)], with_mask=not no_mask)[0]
    detection = result.detection.model_copy(update={"image_sha256": result.sha256})
    if as_json:
        click.echo(detection.model_dump_json(indent=2))
    else:
        click.echo(_describe(result))
    if result.image_error is not None:
        raise click.ClickException(f"{image}: {result.image_error_message}")


@click.command("verify")
@click.argument("image", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
@_MODEL_DIR
def verify(image: Path, as_json: bool, model_dir: Path | None) -> None:
    """Run only the cetacean gate on IMAGE: is it a whale or dolphin photo?"""
    from shared.imaging import ImageError, decode_image
    from shared.inference.bundle import BundleError, load_bundle
    from shared.inference.device import plan_device
    from shared.inference.gate import CetaceanGate

    settings = get_settings()
    data = _read(image, settings)
    try:
        bundle = load_bundle(model_dir or settings.models_path)
        gate = CetaceanGate.load(bundle, plan_device(settings))
    except BundleError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        decoded = decode_image(
            data, min_side=gate.spec.image_size, max_pixels=settings.max_image_pixels
        )
    except ImageError as exc:
        raise click.ClickException(f"{image}: {exc.code}: {exc}") from exc
    decision = gate.decide([decoded.image])[0]
    payload = {
        "image": image.name,
        "is_cetacean": decision.is_cetacean,
        "cetacean_score": round(decision.score, 4),
        "threshold": gate.threshold,
        "model_version": bundle.model_version,
    }
    if as_json:
        click.echo(json.dumps(payload, indent=2))
        return
    verdict = "a whale or dolphin" if decision.is_cetacean else "NOT a whale or dolphin"
    click.echo(
        f"{image.name}: {verdict} (score {decision.score:.4f}, threshold {gate.threshold}, "
        f"{bundle.model_version})"
    )


def list_files(directory: Path) -> list[Path]:
    """Every regular file under ``directory``, recursively, hidden ones left out, sorted."""
    found = []
    for path in directory.rglob("*"):
        relative = path.relative_to(directory)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if path.is_file():
            found.append(path)
    return sorted(found)


def _row(relative: str, result: ImageResult) -> dict[str, object]:
    d = result.detection
    return {
        "file": relative,
        "status": _status(result),
        "rejection_reason": d.rejection_reason or "",
        "image_error": result.image_error or "",
        "individual_id": "" if d.rejected else d.class_animal,
        "species": "" if d.rejected else d.id_animal,
        "probability": f"{d.probability:.4f}",
        "is_cetacean": str(d.is_cetacean).lower(),
        "cetacean_score": f"{d.cetacean_score:.4f}",
        "width": result.width or "",
        "height": result.height or "",
        "captured_at": result.captured_at.isoformat() if result.captured_at else "",
        "gps_lat": "" if result.gps_lat is None else result.gps_lat,
        "gps_lon": "" if result.gps_lon is None else result.gps_lon,
        "sha256": result.sha256,
        "bytes": result.byte_size,
        "model_version": d.model_version,
        "top5": ";".join(
            f"{c.class_animal}:{c.id_animal}:{c.probability:.4f}" for c in d.candidates
        ),
        "message": d.error or result.image_error_message or "",
    }


def _failure_row(relative: str, status: str, message: str, size: int | None) -> dict[str, object]:
    row: dict[str, object] = dict.fromkeys(CSV_COLUMNS, "")
    row.update(file=relative, status="error", image_error=status, message=message)
    row["bytes"] = "" if size is None else size
    return row


@contextmanager
def _output(csv_path: Path | None) -> Iterator[TextIO]:
    if csv_path is None:
        yield sys.stdout
        return
    csv_path.parent.mkdir(parents=True, exist_ok=True)
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        yield handle


def _chunks(items: Sequence[Path], size: int) -> Iterator[Sequence[Path]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


@click.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--csv",
    "csv_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Write the results here (default: standard output).",
)
@_MODEL_DIR
def batch(directory: Path, csv_path: Path | None, model_dir: Path | None) -> None:
    """Identify every file under DIRECTORY; one CSV row per file, a summary at the end."""
    from shared.inference.device import chunk_size
    from shared.inference.pipeline import RawImage

    settings = get_settings()
    files = list_files(directory)
    if not files:
        raise click.ClickException(f"no files under {directory}")
    pipeline = _load_pipeline(settings, model_dir, with_mask=False)
    counts: Counter[str] = Counter()
    started = time.perf_counter()
    with pipeline, _output(csv_path) as handle:
        writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
        writer.writeheader()
        with click.progressbar(
            length=len(files), label="identifying", file=sys.stderr, show_pos=True
        ) as bar:
            for part in _chunks(files, chunk_size(settings)):
                rows = _process(pipeline, directory, part, settings, RawImage)
                for row in rows:
                    writer.writerow(row)
                    counts[_summary_key(row)] += 1
                handle.flush()
                bar.update(len(part))
    elapsed = time.perf_counter() - started
    _print_summary(counts, len(files), elapsed, csv_path)


def _process(
    pipeline: Pipeline,
    directory: Path,
    paths: Sequence[Path],
    settings: Settings,
    raw_image: type[RawImage],
) -> list[dict[str, object]]:
    rows: list[dict[str, object] | None] = []
    raws: list[tuple[int, str, RawImage]] = []
    for path in paths:
        relative = path.relative_to(directory).as_posix()
        try:
            size = path.stat().st_size
            if size > settings.max_image_bytes:
                rows.append(
                    _failure_row(
                        relative,
                        "file_too_large",
                        f"{size:,d} bytes, over the {settings.max_image_bytes:,d}-byte limit",
                        size,
                    )
                )
                continue
            data = path.read_bytes()
        except OSError as exc:
            rows.append(_failure_row(relative, "unreadable", str(exc), None))
            continue
        raws.append((len(rows), relative, raw_image(relative, data)))
        rows.append(None)
    if raws:
        try:
            results = pipeline.run([raw for _, _, raw in raws], with_mask=False)
            for (index, relative, _), result in zip(raws, results, strict=True):
                rows[index] = _row(relative, result)
        except Exception as exc:  # a crash of the whole chunk must not end the run
            for index, relative, raw in raws:
                rows[index] = _failure_row(relative, "processing_failed", repr(exc), len(raw.data))
    return [row for row in rows if row is not None]


def _summary_key(row: dict[str, object]) -> str:
    if row["status"] == "identified":
        return "identified"
    if row["image_error"]:
        return str(row["image_error"])
    if row["status"] == "error":
        return "error"
    return str(row["rejection_reason"] or "rejected")


def _print_summary(counts: Counter[str], total: int, elapsed: float, csv_path: Path | None) -> None:
    lines = [f"{total} files in {elapsed:.1f} s ({total / max(elapsed, 1e-9):.2f} files/s)"]
    labels = {
        "identified": "identified",
        "not_a_marine_mammal": "rejected: not a marine mammal",
        "low_confidence": "rejected: low confidence",
        "not_an_image": "not an image",
        "corrupted_image": "broken image",
        "image_too_large": "image too large (pixels)",
        "file_too_large": "file too large (bytes)",
        "unreadable": "unreadable file",
        "processing_failed": "processing failed",
        "error": "model error",
    }
    for key, count in sorted(counts.items(), key=lambda item: (-item[1], item[0])):
        lines.append(f"  {labels.get(key, key)}: {count}")
    if csv_path is not None:
        lines.append(f"results: {csv_path}")
    click.echo("\n".join(lines), err=True)
