"""Parley's settings: one object, read from the environment (prefix PARLEY_) and an optional .env.

Every setting has an embedded default that needs no server, so `parley serve` on a fresh
checkout runs on a SQLite file under ./var/. Bad values fail at start-up with the variable named;
an empty value (`PARLEY_ADMIN_TOKEN=`) means the variable is not set.
"""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

ENV_PREFIX = "PARLEY_"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
        # `KEY=` (as in a copy of .env.example) means "not set": the default applies.
        env_ignore_empty=True,
    )

    database_url: str = Field(
        default="sqlite:///var/parley.db",
        description="SQLAlchemy URL: sqlite:///path (embedded) or postgresql://user@host/db.",
    )
    database_pool_size: int = Field(default=10, ge=1, le=200, description="PostgreSQL pool size per process.")
    host: str = Field(default="127.0.0.1", description="Address `parley serve` listens on.")
    port: int = Field(default=8080, ge=1, le=65535, description="Port `parley serve` listens on.")
    admin_token: SecretStr | None = Field(
        default=None,
        description="Bearer token of the host product: provisions users and mints their tokens. "
        "Unset means no admin access over HTTP (the CLI still works).",
    )
    max_message_chars: int = Field(default=10_000, ge=1, le=1_000_000, description="Longest message, in characters.")
    max_request_bytes: int = Field(default=1_048_576, ge=1024, description="Largest accepted HTTP request body.")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO")

    broker_url: str = Field(
        default="sqla+sqlite:///var/broker.db",
        description="Celery broker: redis://host:6379/0 in the full stack. The embedded default, "
        "sqla+sqlite:///path, is a SQLite file that the API, worker and beat of one machine share "
        "(kombu's SQLAlchemy transport, tuned in workers/embedded_broker.py).",
    )
    broker_visibility_timeout: int = Field(
        default=3600, ge=10, le=86_400,
        description="Redis broker: seconds after which a task that a worker took but never acknowledged "
        "(the worker died) goes to another worker. Retry countdowns are capped below it; keep it above "
        "the longest task time limit, or a task still running is handed out twice.",
    )
    outbox_sweep_seconds: float = Field(
        default=5.0, gt=0, le=3600,
        description="How often beat sweeps the outbox for events no nudge dispatched (a crash between "
        "commit and nudge, a broker outage).",
    )
    outbox_redispatch_seconds: float = Field(
        default=60.0, gt=0, le=86_400,
        description="An event whose consumer has no receipt this long after dispatch is dispatched again "
        "to that consumer (its task was lost with a killed worker or a broker restart); receipts keep "
        "the effect exactly once. Each further re-dispatch of the same event waits twice as long.",
    )
    extra_consumers: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated modules whose CONSUMERS list is registered beside the built-in "
        "consumers, e.g. workers.log_consumer (the benchmark's no-op) or a test module.",
    )
    redis_url: str | None = Field(
        default=None,
        description="Redis for the realtime bus (pub/sub) and presence, shared by every API process: "
        "redis://host:6379/0. Unset when embedded: one API process with an in-process bus.",
    )

    ws_max_frame_bytes: int = Field(
        default=65_536, ge=256, le=16_777_216,
        description="Largest WebSocket frame a client may send; a larger one closes the connection (1009).",
    )
    ws_heartbeat_seconds: float = Field(
        default=30.0, gt=0, le=3600,
        description="The server pings every connection this often; one that misses the pong is closed.",
    )
    ws_send_queue_frames: int = Field(
        default=1000, ge=1, le=1_000_000,
        description="Frames waiting for one slow connection before it is disconnected (close code 4008).",
    )
    ws_send_timeout_seconds: float = Field(
        default=10.0, gt=0, le=600,
        description="A connection that takes longer than this to accept one frame is disconnected (4008).",
    )
    token_cache_seconds: float = Field(
        default=10.0, ge=0, le=300,
        description="How long an API process remembers whom a bearer token belongs to (0: look it up on "
        "every request). Revocation reaches every process at once over the realtime bus; should the bus "
        "be down, another process may still accept a revoked token this long.",
    )
    ws_ticket_seconds: int = Field(
        default=60, ge=1, le=3600,
        description="Lifetime of a one-time WebSocket ticket (POST /api/v1/ws/tickets).",
    )
    realtime_replay_hours: float = Field(
        default=24.0, gt=0, le=24 * 90,
        description="How far back a reconnecting client may replay with ?since=; older gets resync_required.",
    )
    realtime_replay_max_events: int = Field(
        default=10_000, ge=1, le=1_000_000,
        description="Most events one reconnect replays; a client that missed more gets resync_required.",
    )
    realtime_poll_seconds: float = Field(
        default=0.5, gt=0, le=60,
        description="Each API process looks for events committed elsewhere (workers, a lost wake-up) this "
        "often; events committed through the API are announced at once.",
    )
    presence_grace_seconds: float = Field(
        default=3.0, ge=0, le=300,
        description="A user whose last connection closed is reported offline only after this long, "
        "so a page reload does not flap.",
    )
    presence_ttl_seconds: float = Field(
        default=15.0, ge=1, le=3600,
        description="With Redis: a connection not refreshed by its API process for this long (the process "
        "died) no longer counts; its user goes offline within about this time plus the grace.",
    )
    typing_ttl_seconds: float = Field(
        default=5.0, gt=0, le=60,
        description="A typing indicator expires this long after its last refresh.",
    )
    typing_min_interval_seconds: float = Field(
        default=1.0, ge=0, le=60,
        description="A connection's typing frames for one conversation are relayed at most this often; "
        "the rest are dropped.",
    )

    # --- attachments ---
    max_upload_bytes: int = Field(
        default=25 * 1024 * 1024, ge=1, description="Largest accepted upload (POST /attachments), in bytes: 413 beyond."
    )
    storage_backend: Literal["local", "s3"] = Field(
        default="local", description="Where uploads live: local (under storage_path) or s3 (any S3-compatible store)."
    )
    storage_path: str = Field(
        default="var/storage",
        description="Local storage: the folder uploads, thumbnails and upload staging files live in.",
    )
    s3_bucket: str | None = Field(default=None, validate_default=True, description="S3 storage: the bucket (it must exist).")
    s3_endpoint_url: str | None = Field(
        default=None, description="S3 storage: endpoint of an S3-compatible store (MinIO...); unset for AWS."
    )
    s3_public_endpoint_url: str | None = Field(
        default=None,
        description="S3 storage: the endpoint browsers reach, when not s3_endpoint_url (MinIO inside docker "
        "compose: http://localhost:9000). Presigned URLs are signed for it.",
    )
    s3_region: str = Field(default="us-east-1", description="S3 storage: the bucket's region.")
    s3_access_key_id: str | None = Field(default=None, description="S3 storage: access key; unset uses boto3's chain.")
    s3_secret_access_key: SecretStr | None = Field(default=None, description="S3 storage: secret key.")
    presigned_url_seconds: int = Field(
        default=300, ge=1, le=604_800,
        description="S3 storage: lifetime of the presigned URLs that content and thumbnail requests redirect to.",
    )
    unattached_upload_max_age: float = Field(
        default=86_400.0, gt=0,
        description="Seconds after which an upload never attached to a message is deleted by beat's purge.",
    )
    max_image_pixels: int = Field(
        default=50_000_000, ge=1,
        description="Images with more pixels than this (width x height x frames) fail as decompression bombs.",
    )

    secret_key: SecretStr | None = Field(
        default=None,
        description="Key that encrypts secrets Parley must keep recoverable (webhook signing secrets), "
        "at least 32 characters. Unset: a random key is generated once and kept in ./var/secret.key, "
        "which suits the embedded setup only; set it (the same value) on every API and worker "
        "process of a deployment.",
    )
    webhook_allowed_cidrs: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Comma-separated CIDRs that webhook URLs may reach although they are private, "
        "loopback or otherwise refused (tests, on-premises receivers), e.g. 10.1.0.0/16,127.0.0.1/32.",
    )
    webhook_https_only: bool = Field(default=False, description="Refuse http:// webhook URLs.")
    webhook_timeout_seconds: float = Field(
        default=15.0, gt=0, le=120,
        description="A webhook delivery that has not answered 2xx within this long has failed.",
    )
    webhook_retry_schedule: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0],
        description="Comma-separated delays in seconds before each delivery attempt (the first is "
        "the initial try); after the last attempt fails the delivery is failed. Jitter of up to "
        "10% is added to each delay.",
    )
    webhook_disable_after_failing_days: float = Field(
        default=5.0, gt=0,
        description="An endpoint whose deliveries have all failed for this many days is disabled.",
    )
    webhook_max_in_flight_per_endpoint: int = Field(
        default=16, ge=1, le=100,
        description="Deliveries to one endpoint in flight at once, counted over all workers (two "
        "claiming at the same instant may briefly exceed it), so a slow or hanging endpoint holds at "
        "most this many connections and the rest go to other endpoints.",
    )
    webhook_max_in_flight: int = Field(
        default=200, ge=1, le=5000,
        description="Webhook deliveries in flight at once in one worker process.",
    )
    webhook_response_excerpt_bytes: int = Field(
        default=1024, ge=0, le=65536,
        description="How much of each response body the delivery log keeps.",
    )

    # --- email ---
    smtp_url: str | None = Field(
        default=None,
        description="Where Parley sends email: smtp://host:25, smtp+starttls://user:password@host:587 or "
        "smtps://user:password@host:465. Unset (embedded): each email is written as an .eml file under "
        "email_folder instead.",
    )
    email_folder: str = Field(default="var/mail", description="Where emails go as .eml files when smtp_url is unset.")
    email_from: str = Field(
        default="Parley <notifications@parley.localhost>", description="The From of every email Parley sends."
    )
    email_batch_seconds: float = Field(
        default=120.0, ge=0, le=86_400,
        description="A notification email waits this long after the first unread message of a conversation, "
        "then lists every message still unread (none if they were read or the user is connected).",
    )
    public_url: str = Field(
        default="http://127.0.0.1:8080",
        description="Where users reach this API (https in production): unsubscribe links in emails point here.",
    )
    email_reply_domain: str | None = Field(
        default=None,
        description="With it, a notification's Reply-To is reply+<token>@<domain>, and replies (through "
        "`parley mail-in` or POST /api/v1/inbound/email) land in the conversation.",
    )
    inbound_email_secret: SecretStr | None = Field(
        default=None,
        description="Bearer token of POST /api/v1/inbound/email (at least 16 characters); unset, that route answers 404.",
    )
    email_max_inbound_bytes: int = Field(
        default=30 * 1024 * 1024, ge=1024, description="Largest inbound email accepted (552 over SMTP, 413 over HTTP)."
    )
    email_reply_rate_per_hour: int = Field(
        default=30, ge=1, le=100_000,
        description="Replies by email posted per conversation within an hour; more are dropped (rate_limited).",
    )
    email_send_max_attempts: int = Field(
        default=8, ge=1, le=50,
        description="Attempts to hand one email to the SMTP server (connection errors, 4xx) before it is failed.",
    )

    # --- who may talk to whom (issue 16) ---
    conversation_policy: Literal["open", "relationships", "webhook"] = Field(
        default="open",
        description="Who may start a conversation and send: open (anyone), relationships (pairs that share "
        "an active, unexpired relationship: PUT /api/v1/relationships/{reference}), or webhook (the host "
        "product answers at PARLEY_POLICY_URL).",
    )
    policy_url: str | None = Field(
        default=None,
        description="Webhook policy: the host product's URL Parley asks {action, from, to, conversation_id}; "
        "it answers {allow, reason}. SSRF-guarded like webhooks (PARLEY_WEBHOOK_ALLOWED_CIDRS).",
    )
    policy_secret: SecretStr | None = Field(
        default=None,
        description="Webhook policy: the Standard Webhooks secret (whsec_<base64>) the questions are signed with.",
    )
    policy_cache_seconds: float = Field(
        default=60.0, ge=0, le=86_400,
        description="Webhook policy: how long an answer is reused before the host product is asked again.",
    )
    policy_timeout_seconds: float = Field(
        default=5.0, gt=0, le=60, description="Webhook policy: an answer not received within this long is an error."
    )
    policy_fail_open: bool = Field(
        default=False,
        description="Webhook policy: allow when the host product cannot be asked (timeout, error); default deny.",
    )
    policy_read_after_end: bool = Field(
        default=True,
        description="Relationships policy: history stays readable by both members after their last "
        "relationship ended (sends are refused either way).",
    )
    contact_info: Literal["allow", "mask", "block"] = Field(
        default="allow",
        description="Contact details in messages (emails, phone numbers, outside links, messenger handles): "
        "allow, mask (replaced by [contact info hidden]; the original kept for moderators) or block (422).",
    )
    contact_info_region: str = Field(
        default="US", min_length=2, max_length=2,
        description="Contact details: the region phone numbers without a country code are read in (ISO 3166 code).",
    )
    contact_info_allowed_domains: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Contact details: comma-separated domains (and their subdomains) links may point to, "
        "e.g. the platform's own.",
    )

    retain_deleted_days: float = Field(
        default=0.0, ge=0, le=3650,
        description="0: deleting a message removes its content for good. Above 0: the content stays, hidden "
        "from the members, in moderators' exports, until beat purges it this many days after the deletion.",
    )

    # --- digests ---
    conversation_url_template: str | None = Field(
        default=None,
        description="A link to a conversation in your app, with {conversation_id} in it (e.g. "
        "https://app.example.com/inbox/{conversation_id}); unset, digests carry no links to conversations.",
    )
    digest_sweep_seconds: float = Field(
        default=180.0, ge=1, le=3600,
        description="How often beat looks for users whose digest is due (their local digest_hour has come).",
    )

    @field_validator("conversation_url_template")
    @classmethod
    def _conversation_link(cls, value: str | None) -> str | None:
        if not value:
            return None
        if "{conversation_id}" not in value:
            raise ValueError("must contain {conversation_id}, e.g. https://app.example.com/inbox/{conversation_id}")
        return value

    @field_validator("webhook_allowed_cidrs", "webhook_retry_schedule", "contact_info_allowed_domains", mode="before")
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("webhook_allowed_cidrs")
    @classmethod
    def _valid_cidrs(cls, value: list[str]) -> list[str]:
        for cidr in value:
            ipaddress.ip_network(cidr, strict=False)  # ValueError names the bad one
        return value

    @field_validator("webhook_retry_schedule")
    @classmethod
    def _valid_schedule(cls, value: list[float]) -> list[float]:
        if not value or any(delay < 0 for delay in value):
            raise ValueError("must list at least one delay, none negative")
        return value

    @field_validator("secret_key")
    @classmethod
    def _strong_secret_key(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 32:
            raise ValueError("must be at least 32 characters")
        return value

    @field_validator("contact_info_allowed_domains")
    @classmethod
    def _lower_domains(cls, value: list[str]) -> list[str]:
        return [domain.lower().strip(".") for domain in value]

    @field_validator("policy_secret")
    @classmethod
    def _standard_webhooks_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        import base64
        import binascii

        try:
            key = base64.b64decode(value.get_secret_value().removeprefix("whsec_"), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("must be whsec_ followed by base64") from None
        if len(key) < 16:
            raise ValueError("must hold at least 16 bytes of key")
        return value

    @model_validator(mode="after")
    def _webhook_policy_needs_its_url(self) -> "Settings":
        if self.conversation_policy == "webhook" and (not self.policy_url or self.policy_secret is None):
            raise ValueError("PARLEY_CONVERSATION_POLICY=webhook needs PARLEY_POLICY_URL and PARLEY_POLICY_SECRET")
        return self

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql", "postgres://")):
            raise ValueError("must be a sqlite:/// or postgresql:// URL")
        return value

    @field_validator("admin_token")
    @classmethod
    def _strong_admin_token(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @field_validator("extra_consumers", mode="before")
    @classmethod
    def _split_modules(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("s3_bucket")
    @classmethod
    def _s3_needs_a_bucket(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.data.get("storage_backend") == "s3" and not value:
            raise ValueError("must be set when PARLEY_STORAGE_BACKEND is s3")
        return value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")


class SettingsError(RuntimeError):
    """Raised at start-up when the environment holds a bad setting; names the variable."""


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            (f"{ENV_PREFIX}{str(err['loc'][0]).upper()}: {err['msg']}" if err["loc"] else err["msg"])
            for err in exc.errors()
        )
        raise SettingsError(f"invalid settings: {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, for entry points only (CLI, Celery app). Code below them takes
    a Settings argument instead, so tests can build their own."""
    return load_settings()
