"""Settings: the only place Loraboard reads the environment.

Every value has an embedded default so that `make run` works on a bare machine:
a SQLite database and a SQLite-backed Celery broker under the data directory,
no server needed. The same code scales out by pointing the URLs at PostgreSQL
and Redis.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, computed_field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LORABOARD_", env_file=".env", extra="ignore")

    data_dir: Path = Field(
        default=Path("./var"),
        description="Database, broker, uploaded files, artifacts and the demo model live here.",
    )
    host: str = Field(default="127.0.0.1", description="Address the web server binds.")
    port: int = Field(default=8000, ge=1, le=65535, description="Port the web server binds.")
    server_workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Web server processes (uvicorn workers) sharing the port. One answers a few users; "
        "for hundreds of open run pages and API pollers at once, one per free core (each takes "
        "about 0.5 GB: it loads transformers to validate run configs). Live-update caps and "
        "shared stream polls are per process.",
    )
    database_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL; default: a SQLite file in the data directory. "
        "PostgreSQL: postgresql+psycopg://user@host/db",
    )
    broker_url: str | None = Field(
        default=None,
        description="Celery broker; default: kombu's SQLAlchemy transport on a SQLite file "
        "in the data directory. redis://host:6379/0 works too.",
    )
    result_backend_url: str | None = Field(
        default=None,
        description="Celery result backend (used for chat completions served by workers); "
        "default: Redis when the broker is Redis, else a SQLite file in the data directory.",
    )
    redis_url: str | None = Field(
        default=None, description="Optional; when set, live metrics are also published on Redis pub/sub."
    )
    completion_timeout_s: float = Field(
        default=300.0, gt=0, description="How long the API waits for a worker to answer a chat completion."
    )
    heartbeat_interval_s: float = Field(
        default=10.0, gt=0, description="How often a training worker marks its run as alive."
    )
    stale_run_after_s: float = Field(
        default=120.0,
        gt=0,
        description="A running run whose heartbeat is older than this is taken as orphaned and re-queued.",
    )
    hf_token: SecretStr | None = Field(
        default=None,
        description="Hugging Face token for gated or private models and datasets; unset = huggingface_hub's "
        "own (HF_TOKEN or a saved login).",
    )
    max_upload_mb: int = Field(default=1024, ge=1, description="Largest dataset file accepted.")
    max_dataset_mb: int = Field(
        default=256,
        ge=1,
        description="Largest decoded dataset (text, or Parquet once decompressed). Uploads of JSONL "
        "and CSV are checked one record at a time; a .json array or a Parquet file is read whole, "
        "which takes several times this in server memory.",
    )
    max_dataset_rows: int = Field(default=1_000_000, ge=1, description="Most samples in one dataset file.")
    max_dataset_columns: int = Field(default=64, ge=1, description="Most fields in one sample.")
    max_json_depth: int = Field(default=32, ge=2, description="Deepest nesting of a JSON value in a dataset.")
    local_roots: list[Path] = Field(
        default_factory=list,
        description="Directories whose files may be named as a run's dataset or model by path, "
        "besides <data dir>/local; anything else on the server's disk is refused. "
        "From the environment as JSON: LORABOARD_LOCAL_ROOTS='[\"/srv/datasets\"]'.",
    )
    max_run_attempts: int = Field(
        default=3,
        ge=1,
        description="A run whose worker was lost is re-queued until it has started this many times; "
        "then it fails.",
    )
    sse_max_connection_s: float = Field(
        default=600.0,
        gt=0,
        description="Lifetime cap of one live-update connection (the browser reconnects).",
    )
    webhook_url: str | None = Field(
        default=None,
        description="Where every job's fine_tuning.job.succeeded/.failed/.cancelled events are "
        "POSTed; a job's metadata.webhook_url overrides it.",
    )
    webhook_secret: str | None = Field(
        default=None,
        description="The signing secret ('whsec_' + base64, as OpenAI's and Standard Webhooks'): "
        "each delivery carries webhook-id, webhook-timestamp and webhook-signature headers.",
    )
    webhook_retry_base_s: float = Field(
        default=5.0, gt=0, description="A failed delivery is retried after 1, 2, 4, ... times this."
    )
    webhook_max_attempts: int = Field(default=8, ge=1, description="Deliveries tried per event.")
    wandb_api_key: str | None = Field(
        default=None, description="Weights & Biases key: jobs may then ask for integrations: wandb."
    )
    wandb_mode: Literal["online", "offline"] = Field(
        default="online", description="offline: W&B runs are written under the data directory, not sent."
    )

    api_key: SecretStr | None = Field(
        default=None,
        description="An admin API key for scripts and deployments. Without it the first start makes "
        "one and prints it once, with a login link.",
    )
    allowed_hosts: list[str] = Field(
        default_factory=lambda: ["127.0.0.1", "localhost", "[::1]"],
        description="Host names the server answers to (a check against DNS rebinding); add the name "
        'the server is reached by, as JSON: LORABOARD_ALLOWED_HOSTS=\'["gpu-box.lan"]\'. "*" allows any.',
    )
    session_secret: SecretStr | None = Field(
        default=None,
        description="Signs dashboard session cookies; default: a random secret kept in the data directory.",
    )
    sse_max_streams_per_client: int = Field(
        default=256,
        ge=1,
        description="Live-update connections one client address may hold open at once, per server process.",
    )

    @field_validator("api_key", "session_secret", "hf_token", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # compose passes ${LORABOARD_API_KEY:-} as "": an empty key must never open the server
        # (and an empty hub token is no token).
        return None if isinstance(value, str) and not value.strip() else value

    @computed_field  # type: ignore[prop-decorator]
    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir.resolve() / 'loraboard.db'}"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or f"sqla+sqlite:///{self.data_dir.resolve() / 'broker.db'}"

    @computed_field  # type: ignore[prop-decorator]
    @property
    def resolved_result_backend_url(self) -> str:
        if self.result_backend_url:
            return self.result_backend_url
        if self.resolved_broker_url.startswith(("redis://", "rediss://")):
            return self.resolved_broker_url
        return f"db+sqlite:///{self.data_dir.resolve() / 'results.db'}"

    @property
    def files_dir(self) -> Path:
        return self.data_dir.resolve() / "files"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir.resolve() / "artifacts"

    @property
    def models_dir(self) -> Path:
        return self.data_dir.resolve() / "models"

    @property
    def compile_cache_dir(self) -> Path:
        """torch.compile's caches (Inductor's graphs and generated code, AOTAutograd's, Triton's
        kernels): on the data volume, so every worker that shares it compiles a model shape once."""
        return self.data_dir.resolve() / "cache" / "compile"

    @property
    def local_dir(self) -> Path:
        """Where an operator drops datasets and models to name by path (the data dir's own files,
        uploads and artifacts included, stay out of reach: they belong to their owners)."""
        return self.data_dir.resolve() / "local"

    @property
    def allowed_local_roots(self) -> list[Path]:
        return [self.local_dir, *(root.expanduser().resolve() for root in self.local_roots)]

    def hub_token(self) -> str | None:
        return self.hf_token.get_secret_value() if self.hf_token else None

    def ensure_dirs(self) -> None:
        for path in (
            self.data_dir.resolve(),
            self.files_dir,
            self.artifacts_dir,
            self.models_dir,
            self.local_dir,
        ):
            path.mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    settings = Settings()
    settings.ensure_dirs()
    return settings
