"""Download the public trained models into a bundle (``whales models pull``).

Sources:

- identifier: the Happywhale EfficientNet-B4 ArcFace checkpoint, its class
  list and species map from the Hugging Face repository
  ``0x0000dead/ecomarineai-cetacean-effb4``;
- gate: OpenCLIP ViT-B-32 ``laion2b_s34b_b79k`` weights from
  ``laion/CLIP-ViT-B-32-laion2B-s34B-b79K`` (safetensors, else the .bin);
- masker: rembg's ``u2net.onnx`` from its GitHub release.

Every file is checked: Hugging Face LFS files against the sha256 the hub
announces, rembg's file against the md5 rembg itself pins. The manifest then
records each file's sha256 and the bundle is verified as a whole before it
replaces anything at the target.

Offline, a pull fails in seconds: each host is probed once with a short
timeout before any download, ``HF_HUB_OFFLINE=1`` is honoured at once, and the
error names what could not be fetched and how to get an untrained bundle
instead. ``HF_ENDPOINT`` (the standard Hugging Face variable) and
``u2net_url`` redirect the sources, e.g. to a mirror.

Nothing here runs at import, and the service never calls it: workers only read
bundles from disk.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shared.inference.bundle import (
    SEED_GATE_THRESHOLD,
    SEED_MIN_CONFIDENCE,
    SEED_NEGATIVE_PROMPTS,
    SEED_POSITIVE_PROMPTS,
    BundleManifest,
    GateSpec,
    IdentifierSpec,
    MaskerSpec,
    verification_problems,
    with_file_hashes,
    write_manifest,
)

log = logging.getLogger(__name__)

IDENTIFIER_REPO = "0x0000dead/ecomarineai-cetacean-effb4"
IDENTIFIER_FILES = {
    "efficientnet_b4_512_fold0.ckpt": "identifier/efficientnet_b4_512_fold0.ckpt",
    "encoder_classes.npy": "identifier/encoder_classes.npy",
    "species_map.csv": "identifier/species_map.source.csv",
}
GATE_REPO = "laion/CLIP-ViT-B-32-laion2B-s34B-b79K"
GATE_FILES = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
U2NET_URL = "https://github.com/danielgatis/rembg/releases/download/v0.0.0/u2net.onnx"
U2NET_MD5 = "60024c5c889badc19c04ad937298a77b"  # the checksum rembg pins for this file
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
TRAINED_MODEL_VERSION = "effb4-arcface-v1"

SPECIES_MAP = "identifier/species_map.csv"
DEFAULT_TIMEOUT_S = 10.0

_HINT = (
    "To work without the trained models, write an untrained bundle of random weights "
    "with `whales models make-test-bundle {root}` (its answers mean nothing)."
)

Progress = Callable[[str], None]


class PullError(Exception):
    """A download failed; the message names the artifact and the reason."""


@dataclass(frozen=True)
class PullSources:
    hf_endpoint: str = DEFAULT_HF_ENDPOINT
    identifier_repo: str = IDENTIFIER_REPO
    gate_repo: str = GATE_REPO
    u2net_url: str = U2NET_URL
    timeout_s: float = DEFAULT_TIMEOUT_S

    @classmethod
    def from_environment(
        cls, *, u2net_url: str | None = None, timeout_s: float | None = None
    ) -> PullSources:
        # Read at call time: huggingface_hub reads HF_ENDPOINT once at import.
        endpoint = os.environ.get("HF_ENDPOINT", "").strip() or DEFAULT_HF_ENDPOINT
        return cls(
            hf_endpoint=endpoint.rstrip("/"),
            u2net_url=u2net_url or U2NET_URL,
            timeout_s=DEFAULT_TIMEOUT_S if timeout_s is None else timeout_s,
        )


def _hf_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _probe(url: str, timeout_s: float) -> str | None:
    """None when the host answers at all (any HTTP status), else the reason it did not."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https"):
        return f"unsupported URL scheme in {url}"
    request = urllib.request.Request(  # noqa: S310 (scheme checked above)
        f"{parts.scheme}://{parts.netloc}/", method="HEAD"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s):  # noqa: S310 (scheme checked)
            return None
    except urllib.error.HTTPError:
        return None  # the host is reachable; the file request will tell the rest
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"{parts.netloc} is unreachable ({reason})"


def preflight(sources: PullSources) -> None:
    """Fail fast, naming every artifact whose host cannot be reached."""
    failures: list[str] = []
    if _hf_offline():
        failures.append(
            f"identifier ({sources.identifier_repo}) and gate ({sources.gate_repo}): "
            "HF_HUB_OFFLINE is set, Hugging Face downloads are disabled"
        )
    else:
        reason = _probe(sources.hf_endpoint, sources.timeout_s)
        if reason:
            failures.append(
                f"identifier ({sources.identifier_repo}) and gate ({sources.gate_repo}) "
                f"from {sources.hf_endpoint}: {reason}"
            )
    reason = _probe(sources.u2net_url, sources.timeout_s)
    if reason:
        failures.append(f"masker (u2net.onnx from {sources.u2net_url}): {reason}")
    if failures:
        raise PullError("cannot download the models: " + "; ".join(failures))


def _hf_download(sources: PullSources, repo: str, filename: str, target: Path) -> None:
    """One file from a Hugging Face repository, checked against the hub's LFS sha256."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url

    try:
        url = hf_hub_url(repo, filename, endpoint=sources.hf_endpoint)
        metadata = get_hf_file_metadata(url, timeout=sources.timeout_s)
        with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
            downloaded = Path(
                hf_hub_download(
                    repo,
                    filename,
                    local_dir=scratch,
                    endpoint=sources.hf_endpoint,
                    etag_timeout=sources.timeout_s,
                )
            )
            # LFS files carry their sha256 as the ETag; small git files a git hash.
            expected = (metadata.etag or "").strip('"').lower()
            if len(expected) == 64:
                actual = _sha256(downloaded)
                if actual != expected:
                    raise PullError(
                        f"{repo}/{filename}: sha256 {actual}, the hub announced {expected}"
                    )
            shutil.move(str(downloaded), target)
    except PullError:
        raise
    except Exception as exc:
        raise PullError(f"{repo}/{filename} from {sources.hf_endpoint}: {exc}") from exc


def _url_download(url: str, target: Path, *, md5: str | None, timeout_s: float) -> None:
    if urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise PullError(f"{url}: only http and https downloads are supported")
    digest = hashlib.md5(usedforsecurity=False)
    partial = target.with_name(target.name + ".part")
    try:
        with (
            urllib.request.urlopen(url, timeout=timeout_s) as response,  # noqa: S310
            partial.open("wb") as handle,
        ):
            while block := response.read(1024 * 1024):
                digest.update(block)
                handle.write(block)
    except (urllib.error.URLError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise PullError(f"{url}: {getattr(exc, 'reason', exc)}") from exc
    if md5 is not None and digest.hexdigest() != md5:
        partial.unlink(missing_ok=True)
        raise PullError(f"{url}: md5 {digest.hexdigest()}, expected {md5}")
    partial.replace(target)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(4 * 1024 * 1024):
            digest.update(block)
    return digest.hexdigest()


def normalise_species_map(source: Path, target: Path) -> int:
    """Write ``individual_id,species`` from the repository's map; returns the row count.

    The identifier reads exactly these two columns; the published map is
    accepted with those names, or ``individual``/``id`` for the first, or
    failing that as its first two columns.
    """
    with source.open(newline="", encoding="utf-8-sig") as handle:
        rows = list(csv.reader(handle))
    if not rows or len(rows[0]) < 2:
        raise PullError(f"{source.name} has fewer than two columns")
    header = [name.strip().lower() for name in rows[0]]
    id_column = next(
        (header.index(n) for n in ("individual_id", "individual", "id") if n in header), 0
    )
    species_column = header.index("species") if "species" in header else 1
    with target.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["individual_id", "species"])
        count = 0
        for row in rows[1:]:
            if len(row) > max(id_column, species_column) and row[id_column].strip():
                writer.writerow([row[id_column].strip(), row[species_column].strip()])
                count += 1
    return count


def trained_manifest(gate_weights: str) -> BundleManifest:
    return BundleManifest(
        model_version=TRAINED_MODEL_VERSION,
        trained=True,
        description="Happywhale EfficientNet-B4 ArcFace identifier, OpenCLIP ViT-B-32 "
        "zero-shot gate, rembg U2Net masker.",
        generator="whales models pull",
        sources={
            "identifier": f"https://huggingface.co/{IDENTIFIER_REPO}",
            "gate": f"https://huggingface.co/{GATE_REPO}",
            "masker": U2NET_URL,
        },
        gate=GateSpec(
            architecture="ViT-B-32",
            pretrained_tag="laion2b_s34b_b79k",
            weights=gate_weights,
            threshold=SEED_GATE_THRESHOLD,
            positive_prompts=list(SEED_POSITIVE_PROMPTS),
            negative_prompts=list(SEED_NEGATIVE_PROMPTS),
        ),
        identifier=IdentifierSpec(
            checkpoint=IDENTIFIER_FILES["efficientnet_b4_512_fold0.ckpt"],
            classes=IDENTIFIER_FILES["encoder_classes.npy"],
            species_map=SPECIES_MAP,
            min_confidence=SEED_MIN_CONFIDENCE,
        ),
        masker=MaskerSpec(model="masker/u2net.onnx"),
    )


def pull_bundle(
    root: Path, sources: PullSources, *, progress: Progress | None = None
) -> BundleManifest:
    """Download everything into a staging directory, verify, then move it to ``root``.

    ``root`` must be empty or absent. Raises :class:`PullError` naming what failed.
    """
    say = progress or (lambda _message: None)
    root = root.expanduser().resolve()
    if root.exists() and any(root.iterdir()):
        raise PullError(f"{root} is not empty; pull into a new directory")
    try:
        preflight(sources)
    except PullError as exc:
        raise PullError(f"{exc}. " + _HINT.format(root=root)) from exc
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".pull-", dir=root.parent))
    try:
        for sub in ("gate", "identifier", "masker"):
            (staging / sub).mkdir()
        for filename, relative in IDENTIFIER_FILES.items():
            say(f"identifier: {sources.identifier_repo}/{filename}")
            _hf_download(sources, sources.identifier_repo, filename, staging / relative)
        rows = normalise_species_map(
            staging / IDENTIFIER_FILES["species_map.csv"], staging / SPECIES_MAP
        )
        say(f"species map: {rows} individuals")
        gate_weights = _pull_gate(sources, staging, say)
        say(f"masker: {sources.u2net_url}")
        _url_download(
            sources.u2net_url,
            staging / "masker" / "u2net.onnx",
            md5=U2NET_MD5 if sources.u2net_url == U2NET_URL else None,
            timeout_s=sources.timeout_s,
        )
        manifest = with_file_hashes(staging, trained_manifest(gate_weights))
        problems = verification_problems(staging, manifest)
        if problems:
            raise PullError("downloaded bundle failed verification: " + "; ".join(problems))
        write_manifest(staging, manifest)
        staging.chmod(0o755)
        if root.exists():
            root.rmdir()
        staging.rename(root)
    except PullError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise PullError(f"{exc}. " + _HINT.format(root=root)) from exc
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return manifest


def _pull_gate(sources: PullSources, staging: Path, say: Progress) -> str:
    errors: list[str] = []
    for filename in GATE_FILES:
        relative = f"gate/{filename}"
        say(f"gate: {sources.gate_repo}/{filename}")
        try:
            _hf_download(sources, sources.gate_repo, filename, staging / relative)
            return relative
        except PullError as exc:
            errors.append(str(exc))
    raise PullError("gate weights: " + "; ".join(errors))
