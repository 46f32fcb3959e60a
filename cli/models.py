"""``whales models``: download, check, describe and fake model bundles.

``verify`` and ``info`` read the manifest and hash files only (no torch);
``make-test-bundle`` imports the model code to write random weights.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from shared.settings import get_settings

_DIR = click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))


_UNTRAINED = "NO (random weights, answers mean nothing)"


def _bundle_dir(directory: Path | None) -> Path:
    return (directory or get_settings().models_path).expanduser().resolve()


@click.group()
def models() -> None:
    """Model bundles: pull, verify, info, make-test-bundle (DIR defaults to WHALES_MODEL_DIR)."""


@models.command()
@_DIR
@click.option(
    "--u2net-url",
    default=None,
    metavar="URL",
    help="Where to fetch u2net.onnx (default: rembg's GitHub release). "
    "Hugging Face downloads follow HF_ENDPOINT.",
)
@click.option(
    "--timeout",
    "timeout_s",
    type=click.FloatRange(min=0.1),
    default=None,
    help="Seconds to wait for each connection (default 10).",
)
def pull(directory: Path | None, u2net_url: str | None, timeout_s: float | None) -> None:
    """Download the trained models into DIR and verify their checksums."""
    from shared.inference.pull import PullError, PullSources, pull_bundle

    root = _bundle_dir(directory)
    sources = PullSources.from_environment(u2net_url=u2net_url, timeout_s=timeout_s)
    try:
        manifest = pull_bundle(root, sources, progress=lambda m: click.echo(f"  {m}", err=True))
    except PullError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"pulled {manifest.model_version} into {root}")


@models.command()
@_DIR
def verify(directory: Path | None) -> None:
    """Check every file of the bundle against the manifest's sha256."""
    from shared.inference.bundle import BundleError, read_manifest, verification_problems

    root = _bundle_dir(directory)
    try:
        manifest = read_manifest(root)
    except BundleError as exc:
        raise click.ClickException(str(exc)) from exc
    problems = verification_problems(root, manifest)
    if problems:
        for problem in problems:
            click.echo(f"FAILED {problem}", err=True)
        raise click.ClickException(
            f"{len(problems)} problem(s) in the bundle at {root}; pull or rebuild it"
        )
    click.echo(f"OK {root}: {len(manifest.files)} files match ({manifest.model_version})")


@models.command()
@_DIR
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def info(directory: Path | None, as_json: bool) -> None:
    """Describe the bundle: model version, models, thresholds, files."""
    from shared.inference.bundle import BundleError, read_manifest

    root = _bundle_dir(directory)
    try:
        manifest = read_manifest(root)
    except BundleError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(manifest.model_dump(mode="json"), indent=2, ensure_ascii=False))
        return
    gate, ident, masker = manifest.gate, manifest.identifier, manifest.masker
    lines = [
        f"bundle:        {root}",
        f"model_version: {manifest.model_version}",
        f"trained:       {'yes' if manifest.trained else _UNTRAINED}",
        f"created:       {manifest.created_at.isoformat()} by {manifest.generator}",
        f"gate:          {gate.architecture} @ {gate.image_size}px, threshold {gate.threshold}, "
        f"{len(gate.positive_prompts)} positive / {len(gate.negative_prompts)} negative prompts",
        f"identifier:    {ident.backbone} @ {ident.input_size}px -> {ident.embedding_size}-d, "
        f"{ident.num_classes} ArcFace rows, min confidence {ident.min_confidence}, "
        f"top {ident.top_k}",
        f"masker:        rembg {masker.session} @ {masker.input_size}px ({masker.model})",
        "files:",
    ]
    lines += [
        f"  {name}  {entry.bytes:>12,d} B  sha256 {entry.sha256[:16]}..."
        for name, entry in sorted(manifest.files.items())
    ]
    if manifest.description:
        lines.append(f"description:   {manifest.description}")
    click.echo("\n".join(lines))


@models.command("make-test-bundle")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path))
@click.option("--tiny", is_flag=True, help="Small networks in the same formats (fast tests).")
@click.option("--seed", type=int, default=0, show_default=True, help="Random seed of the weights.")
@click.option(
    "--gate-threshold",
    type=click.FloatRange(min=0.0),
    default=None,
    help="Gate threshold written into the manifest (default: the seed's 0.52).",
)
@click.option(
    "--min-confidence",
    type=click.FloatRange(0.0, 1.0),
    default=None,
    help="Confidence floor written into the manifest (default: the seed's 0.05).",
)
def make_test_bundle_command(
    directory: Path,
    tiny: bool,
    seed: int,
    gate_threshold: float | None,
    min_confidence: float | None,
) -> None:
    """Write an UNTRAINED bundle of random weights in the real formats into DIR."""
    from shared.inference.testbundle import make_test_bundle

    root = directory.expanduser().resolve()
    try:
        manifest = make_test_bundle(
            root,
            tiny=tiny,
            seed=seed,
            gate_threshold=gate_threshold,
            min_confidence=min_confidence,
        )
    except FileExistsError as exc:
        raise click.ClickException(f"{exc}; choose an empty or new directory") from exc
    click.echo(f"wrote {manifest.model_version} (untrained, random weights) into {root}")
