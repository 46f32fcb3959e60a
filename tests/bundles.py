"""Random-weight model bundles in the real file formats, built once per test run.

``tiny_bundle`` (small backbones, seconds to build) serves the queue and API
tests; ``full_bundle`` (real EfficientNet-B4, ViT-B-32 and U2Net shapes) is
built once per run, lazily, for the tests that must load the full formats.
Both accept every image (gate threshold and confidence floor at 0) so tests
reach identification and masking; the gate's own threshold is tested apart.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shared.inference.testbundle import make_test_bundle

    root = tmp_path_factory.mktemp("bundles") / "tiny"
    make_test_bundle(root, tiny=True, gate_threshold=0.0, min_confidence=0.0)
    return root


@pytest.fixture(scope="session")
def full_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from shared.inference.testbundle import make_test_bundle

    root = tmp_path_factory.mktemp("bundles") / "full"
    make_test_bundle(root, tiny=False, gate_threshold=0.0, min_confidence=0.0)
    return root
