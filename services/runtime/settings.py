"""Typed settings, read once from the environment (prefix ``KETNOI_``).

Without ``KETNOI_DATABASE_URL`` Ketnoi runs on its embedded default: one SQLite file per
service under ``KETNOI_DATA_DIR``. With it, every service keeps its log in its own schema of
that PostgreSQL database.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

SERVICES: tuple[str, ...] = ("directory", "intake", "consent", "referral", "projections")
COMMAND_ATTEMPTS = 5
GROUP_COMMIT_WINDOW_MS = 0.0
GROUP_COMMIT_MAX_BATCH = 64
COMMAND_RETRY_PAUSE_MS = 20


class Environment(StrEnum):
    DEVELOPMENT = "development"
    PRODUCTION = "production"


class SettingsError(ValueError):
    """The configuration cannot work; the message names the variable to set."""


class PostgresTarget:
    """The parts of a ``postgresql://`` URL that the event store needs."""

    def __init__(self, url: str, password: str | None = None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in {"postgresql", "postgres"}:
            msg = f"KETNOI_DATABASE_URL must start with postgresql:// (got {parts.scheme}://)"
            raise SettingsError(msg)
        self.url = url
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 5432
        self.user = unquote(parts.username or "postgres")
        self.password = password if password is not None else unquote(parts.password or "")
        self.dbname = parts.path.lstrip("/") or "postgres"

    def conninfo(self) -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={self.dbname}" + (
            f" password={self.password}" if self.password else ""
        )


class Settings(BaseSettings):
    """Everything the runtime reads from the environment."""

    model_config = SettingsConfigDict(env_prefix="KETNOI_", extra="ignore")

    environment: Environment = Environment.DEVELOPMENT
    data_dir: Path = Path(".ketnoi")
    database_url: str | None = None
    # The database password from a file (a container secret) rather than in the URL.
    database_password_file: Path | None = None
    # Prefix for the service schemas, so several installations (or test runs) share a database.
    schema_prefix: str = Field(default="", pattern=r"^[a-z0-9_]*$")
    pg_pool_size: int = Field(default=10, ge=1)
    pg_max_overflow: int = Field(default=10, ge=0)
    # How long a command waits for a connection of its pool (the event store tries up to ten
    # times): while the database is away a request is answered 503 after about ten times this.
    pg_connect_timeout: int = Field(default=5, ge=1, le=60)

    log_format: Literal["console", "json"] | None = None
    log_level: str = "info"

    auth_issuer: str = "ketnoi"
    auth_audience: str = "ketnoi"
    auth_algorithm: Literal["EdDSA", "RS256", "ES256"] = "EdDSA"
    # Production: the identity provider's public key (PEM). Development: generated beside
    # the signing key under the data directory when not given.
    auth_public_key_file: Path | None = None
    auth_signing_key_file: Path | None = None
    # Or: the identity provider's issuer URL; its keys come from OpenID Connect discovery
    # and its JWKS, fetched again for a key id not seen yet (at most once every
    # auth_jwks_min_refresh_seconds) and once auth_jwks_max_age_seconds old.
    auth_oidc_issuer_url: str | None = Field(default=None, pattern=r"^https?://")
    auth_jwks_min_refresh_seconds: float = Field(default=30.0, ge=0)
    auth_jwks_max_age_seconds: float = Field(default=3600.0, gt=0)
    # Where tokens keep roles: "ketnoi" (a flat "roles" claim) or "keycloak" (also the roles
    # of client auth_roles_client, by default the audience, and the realm's; others ignored).
    auth_claims: Literal["ketnoi", "keycloak"] = "ketnoi"
    auth_roles_client: str | None = None
    token_ttl_minutes: int = Field(default=12 * 60, ge=1)
    # How many verified tokens each process remembers (until each expires), so that a
    # token's signature is checked once rather than on every request; 0 checks every time.
    auth_token_cache_size: int = Field(default=10_000, ge=0)
    # Sign-in to the web app through an OpenID Connect provider (authorisation code with
    # PKCE). Its access tokens are verified like any bearer token (the key, issuer and
    # audience above) and carry the claims sub, agency, province and roles.
    oidc_issuer: str | None = None
    oidc_client_id: str | None = None
    oidc_client_secret: str | None = None
    oidc_scope: str = "openid"
    # How long a read of a person's data may wait for this process to read the consent log
    # up to its head (so that a withdrawal committed before the read is in force for it).
    consent_read_timeout: float = Field(default=2.0, gt=0, le=30)
    # How long a request naming positions in logs (Ketnoi-Position) may wait for this process
    # to read them that far before it decides (then 503).
    position_wait_timeout: float = Field(default=5.0, gt=0, le=60)

    # The read audit's writer: after the first pending read it waits this long for more, then
    # saves up to max_batch reads in one transaction. A caller gives up after timeout seconds.
    read_audit_window_ms: float = Field(default=2.0, ge=0, le=1000)
    read_audit_max_batch: int = Field(default=256, ge=1, le=10_000)
    read_audit_timeout_seconds: float = Field(default=10.0, gt=0)

    # A request body larger than this is refused with 413 before it is parsed.
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024)
    # A command that loses an optimistic-concurrency race (usually to the service's own
    # follower) is run again on fresh state, at most this many times in all, with a short
    # jittered pause between attempts.
    # Each application reads these from its environment (CommandRetry.from_env); declared
    # here too so that a bad value stops the process at start.
    command_attempts: int = Field(default=COMMAND_ATTEMPTS, ge=1, le=20)
    command_retry_pause_ms: int = Field(default=COMMAND_RETRY_PAUSE_MS, ge=0, le=1000)
    # Group commit: concurrent saves to one log go into one transaction. The writer that
    # takes the lead waits this long for others (0: a batch is what queued while the last
    # one was written), and writes at most max_batch saves at once. Read by each
    # application from its environment (GroupCommitSettings.from_env), like the above.
    group_commit_window_ms: float = Field(default=GROUP_COMMIT_WINDOW_MS, ge=0, le=100)
    group_commit_max_batch: int = Field(default=GROUP_COMMIT_MAX_BATCH, ge=1, le=10_000)

    # ``ketnoi rebuild`` holds in memory the documents touched by at most this many events,
    # writing them to the new tables before it reads on, so its memory is bounded by this
    # and not by the size of the logs; 0 holds every document until the end (fastest on a
    # small log, memory grows with it).
    rebuild_batch_events: int = Field(default=500_000, ge=0)
    # ``ketnoi rebuild`` rebuilds in this many processes on PostgreSQL, each a share of the
    # cases in its own windows of ``rebuild_batch_events`` (``services.cli.parallel_rebuild``).
    rebuild_jobs: int = Field(default=1, ge=1)
    # The seal: checkpoints of every log signed with this Ed25519 key (PEM). Production
    # requires it; development creates one under the data directory.
    seal_signing_key_file: Path | None = None
    # The origin of every log's checkpoints is "<seal_origin>/<log>"; also the key's name.
    seal_origin: str = Field(default="ketnoi.localhost", pattern=r"^[^\s+]+$")
    # A log is checkpointed at least every this many events, and every this many seconds
    # when it has grown.
    seal_checkpoint_every: int = Field(default=1000, ge=1)
    seal_checkpoint_seconds: float = Field(default=60.0, gt=0)

    # Per-person encryption: the master key (64 hex digits) that wraps every person's data
    # key. Production requires it; development creates one under the data directory.
    master_key_file: Path | None = None
    # How long an unwrapped person's key stays in a process's memory (an erasure waits this
    # long before the read models drop the person, so no process still holds the key).
    key_cache_seconds: float = Field(default=2.0, ge=0, le=60)
    # A closed case is proposed for erasure to its agency this many days after its closure.
    retention_days_after_closure: int = Field(default=5 * 365, ge=1)

    # How old this process's copy of the agency directory may grow before a lookup reads the
    # directory log again (an unknown agency is always looked up at once).
    directory_refresh_seconds: float = Field(default=1.0, gt=0)

    # HTTP: an idle keep-alive connection is closed after this many seconds; a request head
    # not received whole within http_header_timeout_seconds (of connecting, or of its first
    # byte) is answered 408 and its connection closed; a request body that does not arrive
    # whole within http_body_timeout_seconds is refused (408); past http_max_connections at
    # once, new ones get 503.
    http_keep_alive_seconds: int = Field(default=5, ge=1, le=300)
    http_header_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    http_body_timeout_seconds: float = Field(default=30.0, gt=0, le=600)
    http_max_connections: int = Field(default=2048, ge=1)

    # Rate limits (token buckets): requests a second, sustained, with bursts up to the burst
    # size; 0 turns a limit off. Per principal (a token's user and agency) and per client
    # address. Past the limit: 429 with Retry-After.
    rate_limit_per_principal: float = Field(default=50.0, ge=0)
    rate_limit_principal_burst: int = Field(default=200, ge=1)
    rate_limit_per_address: float = Field(default=200.0, ge=0)
    rate_limit_address_burst: int = Field(default=400, ge=1)
    # After this many refused tokens from one address within the window, that address is
    # refused (429) for the lockout's length; 0 turns the lockout off.
    auth_failure_limit: int = Field(default=20, ge=0)
    auth_failure_window_seconds: float = Field(default=300.0, gt=0)
    auth_lockout_seconds: float = Field(default=300.0, gt=0)

    # /readyz answers 503 while a follower of this process lags more than this many seconds
    # behind an upstream log (or stalls on an error).
    ready_max_lag_seconds: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _key_files_exist(self) -> Settings:
        for variable, path in (
            ("KETNOI_DATABASE_PASSWORD_FILE", self.database_password_file),
            ("KETNOI_AUTH_PUBLIC_KEY_FILE", self.auth_public_key_file),
            ("KETNOI_AUTH_SIGNING_KEY_FILE", self.auth_signing_key_file),
            ("KETNOI_MASTER_KEY_FILE", self.master_key_file),
        ):
            if path is None or path.is_file():
                continue
            # A development signing key is created where it is named; a public key never is.
            if variable == "KETNOI_AUTH_SIGNING_KEY_FILE" and not path.exists():
                continue
            what = "is not a file" if path.exists() else "does not exist"
            msg = f"{variable} names {path}, which {what}; point it at the file"
            raise SettingsError(msg)
        return self

    @model_validator(mode="after")
    def _refuse_unsafe_production(self) -> Settings:
        if self.environment is Environment.PRODUCTION:
            if not self.database_url:
                msg = (
                    "KETNOI_DATABASE_URL is required in production "
                    "(the embedded default is for trying Ketnoi out)"
                )
                raise SettingsError(msg)
            if self.auth_public_key_file is None and self.auth_oidc_issuer_url is None:
                msg = (
                    "KETNOI_AUTH_OIDC_ISSUER_URL or KETNOI_AUTH_PUBLIC_KEY_FILE is required in "
                    "production (the identity provider's issuer, or its public key)"
                )
                raise SettingsError(msg)
            if self.seal_signing_key_file is None:
                msg = (
                    "KETNOI_SEAL_SIGNING_KEY_FILE is required in production "
                    "(the Ed25519 key, PEM, that signs the logs' checkpoints)"
                )
                raise SettingsError(msg)
            if self.master_key_file is None:
                msg = (
                    "KETNOI_MASTER_KEY_FILE is required in production "
                    "(the master key that wraps each person's data key)"
                )
                raise SettingsError(msg)
            if self.auth_signing_key_file is not None:
                msg = (
                    "KETNOI_AUTH_SIGNING_KEY_FILE is for development only; "
                    "production verifies tokens from an identity provider"
                )
                raise SettingsError(msg)
        return self

    @model_validator(mode="after")
    def _oidc_complete(self) -> Settings:
        if self.oidc_issuer and not self.oidc_client_id:
            msg = "KETNOI_OIDC_CLIENT_ID is required with KETNOI_OIDC_ISSUER"
            raise SettingsError(msg)
        return self

    @property
    def embedded(self) -> bool:
        return self.database_url is None

    @property
    def postgres(self) -> PostgresTarget | None:
        if not self.database_url:
            return None
        password = None
        if self.database_password_file is not None:
            password = self.database_password_file.read_text().strip()
        return PostgresTarget(self.database_url, password)

    @property
    def effective_log_format(self) -> Literal["console", "json"]:
        if self.log_format is not None:
            return self.log_format
        return "console" if self.environment is Environment.DEVELOPMENT else "json"

    def schema_for(self, service: str) -> str:
        return f"{self.schema_prefix}{service}"

    def signing_key_path(self) -> Path:
        return self.auth_signing_key_file or self.data_dir / "auth-signing-key.pem"

    def seal_key_path(self) -> Path:
        return self.seal_signing_key_file or self.data_dir / "seal-signing-key.pem"

    def master_key_path(self) -> Path:
        return self.master_key_file or self.data_dir / "master-key"

    def public_key_path(self) -> Path:
        return self.auth_public_key_file or self.data_dir / "auth-public-key.pem"


class CommandRetry(BaseModel):
    """How often a command that lost a race to another writer is run again, and the pause."""

    attempts: int = Field(default=COMMAND_ATTEMPTS, ge=1, le=20)
    pause_ms: int = Field(default=COMMAND_RETRY_PAUSE_MS, ge=0, le=1000)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> CommandRetry:
        """Read ``KETNOI_COMMAND_ATTEMPTS`` and ``KETNOI_COMMAND_RETRY_PAUSE_MS`` from an
        application's environment (which includes the process's); raises SettingsError."""
        names = {"attempts": "KETNOI_COMMAND_ATTEMPTS", "pause_ms": "KETNOI_COMMAND_RETRY_PAUSE_MS"}
        values = {key: env.get(var) for key, var in names.items()}
        try:
            return cls.model_validate({k: v for k, v in values.items() if v})
        except ValidationError:
            msg = (
                "KETNOI_COMMAND_ATTEMPTS must be 1 to 20 and "
                "KETNOI_COMMAND_RETRY_PAUSE_MS 0 to 1000"
            )
            raise SettingsError(msg) from None


class GroupCommitSettings(BaseModel):
    """How a log's writer batches concurrent saves (see ``services/runtime/group_commit.py``)."""

    window_ms: float = Field(default=GROUP_COMMIT_WINDOW_MS, ge=0, le=100)
    max_batch: int = Field(default=GROUP_COMMIT_MAX_BATCH, ge=1, le=10_000)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> GroupCommitSettings:
        """Read ``KETNOI_GROUP_COMMIT_WINDOW_MS`` and ``KETNOI_GROUP_COMMIT_MAX_BATCH`` from an
        application's environment (which includes the process's); raises SettingsError."""
        names = {
            "window_ms": "KETNOI_GROUP_COMMIT_WINDOW_MS",
            "max_batch": "KETNOI_GROUP_COMMIT_MAX_BATCH",
        }
        values = {key: env.get(var) for key, var in names.items()}
        try:
            return cls.model_validate({k: v for k, v in values.items() if v})
        except ValidationError:
            msg = (
                "KETNOI_GROUP_COMMIT_WINDOW_MS must be 0 to 100 and "
                "KETNOI_GROUP_COMMIT_MAX_BATCH 1 to 10000"
            )
            raise SettingsError(msg) from None
