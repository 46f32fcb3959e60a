"""Typed settings read from ``WHALES_*`` environment variables, in one place.

Every component (API, workers, CLI, tests) reads configuration through
:func:`get_settings`; nothing else looks at ``os.environ`` for ``WHALES_*``
names. Defaults are chosen so that a fresh clone runs on one machine.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIB = 1024 * 1024


class Settings(BaseSettings):
    """Configuration of the whole service; each field is ``WHALES_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="WHALES_", extra="ignore", frozen=True)

    # --- where things live -------------------------------------------------
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of PostgreSQL; unset means an embedded server in the data dir.",
    )
    broker_url: str | None = Field(
        default=None,
        description="Redis URL for Celery, rate limits and counters; unset means embedded Redis.",
    )
    result_backend_url: str | None = Field(
        default=None, description="Celery result backend; defaults to the broker URL."
    )
    data_dir: Path = Field(
        default=Path("var"), description="Uploads, embedded databases and logs live here."
    )
    model_dir: Path | None = Field(
        default=None, description="Model bundle directory; defaults to <data_dir>/models."
    )

    # --- inference ------------------------------------------------------------
    device: str = Field(default="auto", description="'auto', 'cpu', 'cuda' or 'cuda:N'.")
    inference_batch_size: int | None = Field(
        default=None, ge=1, description="Images per forward pass; default 4 on CPU, 32 on GPU."
    )
    chunk_size: int | None = Field(
        default=None, ge=1, description="Images per batch task; default 8 on CPU, 64 on GPU."
    )
    bf16: Literal["auto", "on", "off"] = Field(
        default="auto", description="bf16 autocast: auto keeps it where it was measured to help."
    )
    torch_threads: int | None = Field(
        default=None, ge=1, description="torch intra-op threads; default: all cores."
    )
    onnx_threads: int = Field(default=2, ge=1, description="onnxruntime threads for the masker.")
    decode_threads: int = Field(default=4, ge=1, description="Threads that decode images.")
    mask_max_side: int = Field(
        default=1024, ge=64, description="Longest side of returned masks, in pixels."
    )

    # --- input limits ---------------------------------------------------------
    max_image_bytes: int = Field(default=25 * MIB, description="Largest single-image upload.")
    max_archive_bytes: int = Field(default=2048 * MIB, description="Largest ZIP upload.")
    max_image_pixels: int = Field(
        default=120_000_000, description="Decompression-bomb cap: width x height of any image."
    )
    max_zip_entries: int = Field(default=20_000, description="Most entries a ZIP may list.")
    max_entry_bytes: int = Field(
        default=64 * MIB, description="Largest uncompressed size of one ZIP entry."
    )
    max_uncompressed_bytes: int = Field(
        default=8192 * MIB, description="Largest uncompressed size of a whole ZIP."
    )
    # Larger images go as a reference into the shared blob store: the upload
    # is already a file there (a rename), which is cheaper than base64 in JSON
    # through Redis (measured: about 3 ms less per request for a 140 kB photo).
    inline_image_bytes: int = Field(
        default=64 * 1024,
        description="Single images up to this size travel inside the task message; "
        "larger ones by reference into the shared blob store.",
    )

    # --- queue ------------------------------------------------------------------
    interactive_timeout_s: float = Field(
        default=30.0, description="How long the API waits for a single-image task."
    )
    batch_wait_s: float = Field(
        default=120.0, description="How long v1/predict-batch waits before answering 202."
    )
    task_soft_time_limit_s: int = Field(default=600, description="Soft limit of a chunk task.")
    task_time_limit_s: int = Field(default=900, description="Hard limit of a chunk task.")
    visibility_timeout_s: int = Field(
        default=3600,
        description="Seconds before Redis redelivers a task whose worker vanished.",
    )
    max_deliveries: int = Field(
        default=3, ge=1, description="Attempts an image gets before it is recorded as failed."
    )
    task_max_retries: int = Field(
        default=8, description="Retries of a task after transient database or broker errors."
    )
    stale_chunk_s: int = Field(
        default=120,
        description="A dispatched chunk with no progress for this long is sent again.",
    )
    janitor_interval_s: float = Field(
        default=15.0, description="How often a worker looks for stalled jobs."
    )
    worker_queues: str = Field(default="interactive,batch", description="Queues a worker consumes.")
    worker_concurrency: int = Field(default=1, ge=1, description="Worker processes per worker.")
    batch_yields: bool = Field(
        default=True,
        description="Batch work pauses between model steps while an interactive request "
        "runs on the same device.",
    )
    priority_scope: str | None = Field(
        default=None,
        description="Workers sharing a device share this name (default: the hostname).",
    )
    fault_crash_sha256: str | None = Field(
        default=None,
        description=(
            "Fault injection for tests of the delivery cap: a worker that meets an image "
            "with this sha256 kills itself. Never set it in production."
        ),
    )

    # --- HTTP -----------------------------------------------------------------
    api_host: str = Field(default="127.0.0.1", description="Address the API listens on.")
    api_port: int = Field(default=8000, description="Port of the API.")
    api_workers: int = Field(default=2, ge=1, description="gunicorn worker processes.")
    rate_limit_predict: str = Field(
        default="60 per 60 seconds", description="Per-client limit on the predict routes."
    )
    rate_limit_jobs: str = Field(
        default="600 per 60 seconds", description="Per-client limit on job polling and results."
    )
    rate_limit_enabled: bool = Field(default=True, description="Turn rate limiting off.")
    trusted_proxies: int = Field(
        default=0, ge=0, description="Reverse proxies whose X-Forwarded-For is trusted."
    )
    results_page_size: int = Field(default=100, ge=1, le=1000, description="Default page size.")

    # --- drift ----------------------------------------------------------------
    drift_window: int = Field(default=1000, ge=1, description="Detections in the drift window.")
    drift_threshold: float = Field(
        default=0.15, gt=0, description="Distance of the window mean from baseline that alarms."
    )

    # --- Flower ---------------------------------------------------------------
    flower_port: int = Field(default=5555, description="Port of Flower.")
    flower_user: str | None = Field(default=None, description="Flower basic-auth user.")
    flower_password: str | None = Field(default=None, description="Flower basic-auth password.")
    flower_local: bool = Field(
        default=False, description="Allow Flower without auth (loopback only)."
    )

    # --- reporting ----------------------------------------------------------------
    reporting_role: str = Field(
        default="whales_reporting", description="Read-only role that may read the views."
    )

    log_level: str = Field(default="INFO", description="Logging level of every component.")

    @field_validator("data_dir", "model_dir", mode="after")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        # Workers, API and the CLI may start in different directories.
        return value.expanduser().resolve() if value is not None else None

    @property
    def models_path(self) -> Path:
        return self.model_dir if self.model_dir is not None else self.data_dir / "models"

    @property
    def blobs_path(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def results_backend(self) -> str | None:
        return self.result_backend_url or self.broker_url

    def queues(self) -> list[str]:
        return [q.strip() for q in self.worker_queues.split(",") if q.strip()]


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once from the environment."""
    return Settings()


def reset_settings_cache() -> None:
    """Forget cached settings (tests and ``whales up`` change the environment)."""
    get_settings.cache_clear()
