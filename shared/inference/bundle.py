"""Model bundles: a directory of weight files described by ``manifest.json``.

A bundle is what a worker loads: the gate (OpenCLIP weights and its prompts),
the identifier (the Happywhale EfficientNet-B4 ArcFace checkpoint, the class
list and the species map) and the masker (rembg's ``u2net.onnx``). The
manifest carries everything the code must not hard-code: input sizes,
normalisation, thresholds, prompts, the ArcFace scale and ``model_version``,
plus the sha256 of every file so a half-copied bundle fails at load instead
of producing quietly wrong answers.

Layout::

    <bundle>/manifest.json
    <bundle>/gate/open_clip_model.safetensors     (or open_clip_pytorch_model.bin)
    <bundle>/identifier/efficientnet_b4_512_fold0.ckpt
    <bundle>/identifier/encoder_classes.npy
    <bundle>/identifier/species_map.csv
    <bundle>/masker/u2net.onnx

This module is pure pydantic and hashlib: the CLI's ``models info`` and
``models verify`` use it without importing torch.
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 1

# ImageNet statistics (identifier, masker) and OpenAI CLIP's (gate).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

# The seed's zero-shot prompts (10 positive, 14 negative) and the threshold it
# calibrated for them. They are data of a bundle, written into its manifest;
# the gate itself only ever reads them from there.
SEED_POSITIVE_PROMPTS: tuple[str, ...] = (
    "a photo of a whale in the ocean",
    "an aerial photo of a whale",
    "a photo of a humpback whale",
    "a photo of a blue whale",
    "a photo of a killer whale",
    "a photo of a dolphin swimming",
    "a photo of a beluga whale",
    "a photo of a marine mammal in the sea",
    "a photo of a whale fluke or dorsal fin",
    "a photograph of a cetacean",
)
SEED_NEGATIVE_PROMPTS: tuple[str, ...] = (
    "a photo of text on a blank page",
    "a screenshot of a document",
    "a photo of a person",
    "a photo of a building",
    "a photo of a car",
    "a photo of a cat",
    "a photo of a dog",
    "a photo of food",
    "a photo of a landscape without animals",
    "a blank white image",
    "a photo of a fish",
    "a photo of a boat on water",
    "a photo of a shark",
    "an abstract pattern",
)
SEED_GATE_THRESHOLD = 0.52
SEED_MIN_CONFIDENCE = 0.05

_HINT = (
    "Run `whales models pull` to download the trained models, or "
    "`whales models make-test-bundle {root}` to write an untrained test bundle there, "
    "or point WHALES_MODEL_DIR at an existing bundle."
)


class BundleError(Exception):
    """Base class of bundle problems."""


class BundleNotFound(BundleError):
    """There is no bundle at the path (no manifest)."""


class BundleInvalid(BundleError):
    """A manifest exists but the bundle is unusable (bad manifest, missing or changed file)."""


Triple = tuple[float, float, float]


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, protected_namespaces=())


class FileEntry(_Spec):
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)


class GateSpec(_Spec):
    """OpenCLIP zero-shot gate: score = summed softmax over the positive prompts."""

    architecture: str = Field(default="ViT-B-32", description="OpenCLIP model name.")
    pretrained_tag: str | None = Field(
        default="laion2b_s34b_b79k", description="Where the weights came from (informational)."
    )
    model_cfg: dict[str, Any] | None = Field(
        default=None,
        description="An OpenCLIP model config used instead of the built-in one (test bundles).",
    )
    weights: str = Field(description="OpenCLIP state dict, relative to the bundle.")
    image_size: int = Field(default=224, ge=8)
    mean: Triple = CLIP_MEAN
    std: Triple = CLIP_STD
    logit_scale: float = Field(
        default=100.0, gt=0, description="Multiplies cosines before the softmax over prompts."
    )
    threshold: float = Field(
        default=SEED_GATE_THRESHOLD,
        ge=0.0,
        description="Accept when the score reaches it; above 1 rejects every image.",
    )
    positive_prompts: list[str] = Field(min_length=1)
    negative_prompts: list[str] = Field(min_length=1)


class IdentifierSpec(_Spec):
    """EfficientNet backbone -> Linear embedding -> cosine against ArcFace centres."""

    backbone: str = Field(default="efficientnet_b4", description="timm model name.")
    checkpoint: str = Field(description="state_dict with model.*, embedding.*, arc.weight.")
    classes: str = Field(description="encoder_classes.npy: individual id of each active row.")
    species_map: str = Field(description="CSV with columns individual_id, species.")
    input_size: int = Field(default=512, ge=8)
    feature_dim: int = Field(default=1792, ge=1)
    embedding_size: int = Field(default=512, ge=1)
    num_classes: int = Field(default=15587, ge=1, description="Rows of arc.weight.")
    arcface_scale: float = Field(
        default=30.0, gt=0, description="ArcFace s: softmax(s * cosine) gives probabilities."
    )
    arcface_margin: float = Field(default=0.5, ge=0, description="Training margin m (unused).")
    mean: Triple = IMAGENET_MEAN
    std: Triple = IMAGENET_STD
    min_confidence: float = Field(default=SEED_MIN_CONFIDENCE, ge=0.0, le=1.0)
    top_k: int = Field(default=5, ge=1)


class MaskerSpec(_Spec):
    """rembg's U2Net session, loaded from the bundle's own ``u2net.onnx``."""

    model: str = Field(description="ONNX file; its directory becomes rembg's model home.")
    session: str = Field(default="u2net", description="rembg session name.")
    input_size: int = Field(default=320, ge=8)
    mean: Triple = IMAGENET_MEAN
    std: Triple = IMAGENET_STD


class BundleManifest(_Spec):
    format_version: int = FORMAT_VERSION
    model_version: str = Field(min_length=1, description="Written into every Detection.")
    trained: bool = Field(description="False for bundles of random weights.")
    description: str = ""
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    generator: str = Field(description="What wrote the bundle, with its version.")
    sources: dict[str, str] = Field(default_factory=dict, description="Origin of each artifact.")
    gate: GateSpec
    identifier: IdentifierSpec
    masker: MaskerSpec
    files: dict[str, FileEntry] = Field(default_factory=dict)

    @field_validator("format_version")
    @classmethod
    def _known_format(cls, value: int) -> int:
        if value != FORMAT_VERSION:
            raise ValueError(f"bundle format {value} is not supported (expected {FORMAT_VERSION})")
        return value

    def referenced_files(self) -> list[str]:
        """Every file the loaders open, relative to the bundle."""
        return [
            self.gate.weights,
            self.identifier.checkpoint,
            self.identifier.classes,
            self.identifier.species_map,
            self.masker.model,
        ]


@dataclass(frozen=True)
class Bundle:
    """A loaded manifest and the directory it describes."""

    root: Path
    manifest: BundleManifest
    verified: bool = False  # every file's sha256 matched the manifest at load

    @property
    def model_version(self) -> str:
        return self.manifest.model_version

    def path(self, relative: str) -> Path:
        return _resolve_inside(self.root, relative)


def _resolve_inside(root: Path, relative: str) -> Path:
    # A manifest is data: it must not point loaders outside its own directory.
    pure = PurePosixPath(relative)
    if pure.is_absolute() or ".." in pure.parts or not pure.parts:
        raise BundleInvalid(f"manifest path {relative!r} must be relative and inside the bundle")
    return root.joinpath(*pure.parts)


_hash_cache: dict[tuple[str, int, int, int], str] = {}
_hash_lock = threading.Lock()


def sha256_file(path: Path, *, chunk_bytes: int = 4 * 1024 * 1024) -> str:
    """sha256 of a file, remembered per (path, size, mtime, inode) within the process."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino)
    with _hash_lock:
        cached = _hash_cache.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    value = digest.hexdigest()
    with _hash_lock:
        _hash_cache[key] = value
    return value


def file_entry(path: Path) -> FileEntry:
    return FileEntry(sha256=sha256_file(path), bytes=path.stat().st_size)


def read_manifest(root: Path) -> BundleManifest:
    """Parse ``<root>/manifest.json``; raises BundleNotFound or BundleInvalid."""
    manifest_path = root / MANIFEST_NAME
    if not manifest_path.is_file():
        raise BundleNotFound(
            f"No model bundle at {root} (no {MANIFEST_NAME}). " + _HINT.format(root=root)
        )
    try:
        return BundleManifest.model_validate_json(manifest_path.read_bytes())
    except ValidationError as exc:
        raise BundleInvalid(
            f"{manifest_path} is not a valid bundle manifest: {exc}. " + _HINT.format(root=root)
        ) from exc


def check_bundle_present(root: Path) -> BundleManifest:
    """Cheap start-up check (manifest only, no checksums): raises with the how-to hint."""
    return read_manifest(root.expanduser().resolve())


def write_manifest(root: Path, manifest: BundleManifest) -> Path:
    """Write the manifest atomically (a reader never sees half a file)."""
    target = root / MANIFEST_NAME
    temporary = root / f".{MANIFEST_NAME}.tmp"
    payload = manifest.model_dump(mode="json")
    temporary.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n")
    temporary.replace(target)
    return target


def with_file_hashes(root: Path, manifest: BundleManifest) -> BundleManifest:
    """The manifest with ``files`` recomputed from what is on disk."""
    files = {rel: file_entry(_resolve_inside(root, rel)) for rel in manifest.referenced_files()}
    return manifest.model_copy(update={"files": files})


def verification_problems(root: Path, manifest: BundleManifest) -> list[str]:
    """Every mismatch between the manifest and the files; empty when the bundle is intact."""
    problems: list[str] = []
    for relative in manifest.referenced_files():
        if relative not in manifest.files:
            problems.append(f"{relative}: referenced but has no checksum in the manifest")
    for relative, expected in sorted(manifest.files.items()):
        try:
            path = _resolve_inside(root, relative)
        except BundleInvalid as exc:
            problems.append(str(exc))
            continue
        if not path.is_file():
            problems.append(f"{relative}: missing")
            continue
        size = path.stat().st_size
        if size != expected.bytes:
            problems.append(f"{relative}: {size} bytes, manifest says {expected.bytes}")
            continue
        actual = sha256_file(path)
        if actual != expected.sha256:
            problems.append(f"{relative}: sha256 {actual}, manifest says {expected.sha256}")
    return problems


def load_bundle(root: Path, *, verify: bool = True) -> Bundle:
    """Read and (by default) checksum a bundle; raises BundleNotFound / BundleInvalid."""
    root = root.expanduser().resolve()
    manifest = read_manifest(root)
    if verify:
        problems = verification_problems(root, manifest)
        if problems:
            raise BundleInvalid(
                f"Model bundle at {root} failed verification: "
                + "; ".join(problems)
                + ". "
                + _HINT.format(root=root)
            )
    return Bundle(root=root, manifest=manifest, verified=verify)
