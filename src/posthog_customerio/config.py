"""Configuration from environment variables, CLI flags and the original plugin's JSON.

:class:`Settings` is the single source: each field is one setting with its type, default,
help (``description``) and command-line flag (:class:`Cli`); the CLI generates its options
from them and :func:`settings_reference` lists them for the documentation.

Precedence: CLI flags, then ``--plugin-config`` file (:class:`PluginConfigSource`), then
environment variables, then defaults. Secrets are ``SecretStr`` and never printed. A bad
value becomes a :class:`ConfigError` whose one-line message names the variable.
"""

from __future__ import annotations

import json
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from annotated_types import Ge, Gt, Le, Lt
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .mapping import DEFAULT_EVENTS_TO_SKIP, AnonymousMode, MappingConfig

__all__ = [
    "ENV_NAMES",
    "GROUPS",
    "Cli",
    "ConfigError",
    "PluginConfigSource",
    "SettingDoc",
    "Settings",
    "cli_of",
    "default_text",
    "flag_of",
    "load_settings",
    "plugin_config_values",
    "require_extra",
    "settings_reference",
    "value_type",
]


class ConfigError(ValueError):
    """Invalid or missing configuration (the CLI exits with code 2)."""


_ANONYMOUS_LABELS: dict[str, AnonymousMode] = {
    "all": "all",
    "send all events": "all",
    "identified": "identified",
    "only send events from users that have been identified": "identified",
    "with_email": "with_email",
    "with-email": "with_email",
    "only send events from users with emails": "with_email",
}
_REGION_ALIASES = {
    "us": "us",
    "eu": "eu",
    "auto": "auto",
    "track.customer.io": "us",
    "track-eu.customer.io": "eu",
    "cdp.customer.io": "us",
    "cdp-eu.customer.io": "eu",
}


#: option groups: a command takes the settings of the groups it names (:func:`settings_reference` orders by them)
CUSTOMERIO = "Customer.io"
MAPPING = "Mapping"
IDENTITY = "People"
PACING = "Pacing"
DELIVERY = "Delivery"
STORE = "Storage"
SERVICE = "Service"
HTTP = "HTTP service"
KAFKA = "Kafka"
POSTHOG_API = "PostHog API"
COHORTS = "PostHog cohorts"
GROUPS = (CUSTOMERIO, IDENTITY, MAPPING, PACING, DELIVERY, STORE, SERVICE, HTTP, KAFKA, POSTHOG_API, COHORTS)


@dataclass(frozen=True)
class Cli:
    """How a setting appears on the command line (in ``Annotated`` of its field).

    ``flag``: the option's name (default ``--`` and the environment variable in kebab case);
    a boolean also gets its ``--no-`` form. ``default``: the default as the help shows it
    (default: the field's own default; "" shows none).
    """

    group: str
    flag: str | None = None
    default: str | None = None


class Settings(BaseSettings):
    """All settings; field ``x`` is read from the environment variable ``X``.

    Each field: its type, default and ``description`` (the help), and :class:`Cli` (its flag and group).
    """

    model_config = SettingsConfigDict(extra="forbid", validate_default=True)

    # -- Customer.io --
    customerio_site_id: Annotated[SecretStr | None, Cli(CUSTOMERIO, "--site-id")] = Field(
        None, description="Track API site ID"
    )
    customerio_api_key: Annotated[SecretStr | None, Cli(CUSTOMERIO, "--api-key")] = Field(
        None, description="Track API key"
    )
    customerio_region: Annotated[Literal["us", "eu", "auto"], Cli(CUSTOMERIO, "--region")] = Field(
        "auto", description="us, eu or auto (auto: found from the credentials)"
    )
    customerio_track_url: Annotated[str | None, Cli(CUSTOMERIO, "--track-url")] = Field(
        None, description="Track API base URL override"
    )
    customerio_api: Annotated[Literal["v1", "v2", "pipelines"], Cli(CUSTOMERIO, "--api")] = Field(
        "v2", description="v1, v2 or pipelines"
    )
    customerio_pipelines_api_key: Annotated[SecretStr | None, Cli(CUSTOMERIO)] = Field(
        None, description="Pipelines API key (with --api pipelines; no Track credentials needed)"
    )
    customerio_pipelines_url: Annotated[str | None, Cli(CUSTOMERIO, default="by region (auto = us)")] = Field(
        None, description="Pipelines API base URL override"
    )
    customerio_timeout_s: Annotated[float, Cli(CUSTOMERIO)] = Field(
        30.0,
        gt=0,
        description="Total deadline of each request to Customer.io, answer included"
        " (PostgreSQL: at most LEASE_S minus max(1, LEASE_S/4))",
    )
    retry_after_max_s: Annotated[float, Cli(CUSTOMERIO)] = Field(
        60.0, ge=0, le=3600, allow_inf_nan=False, description="The longest pause a Retry-After can impose (0-3600)"
    )
    # -- people and mapping --
    identify_by_email: Annotated[bool, Cli(IDENTITY)] = Field(False, description="Address people by email once known")
    send_events_from_anonymous_users: Annotated[AnonymousMode, Cli(MAPPING)] = Field(
        "all", description="all, identified or with_email"
    )
    events_to_send: Annotated[str, Cli(MAPPING)] = Field("", description="Comma-separated allowlist; empty = all")
    events_to_skip: Annotated[str, Cli(MAPPING, default="PostHog's internal events")] = Field(
        ",".join(DEFAULT_EVENTS_TO_SKIP),
        description="Comma-separated event names or globs not sent (after --events-to-send); empty = none",
    )
    convert_dates: Annotated[bool, Cli(MAPPING)] = Field(
        True, description="ISO 8601 date-time attributes become Unix seconds"
    )
    merge_people: Annotated[bool, Cli(MAPPING)] = Field(
        True, description="Merge the anonymous / aliased person into the identified one"
    )
    anonymous_events: Annotated[Literal["anonymous", "person"], Cli(MAPPING)] = Field(
        "anonymous", description="anonymous (Customer.io anonymous events) or person"
    )
    group_type_map: Annotated[str, Cli(MAPPING)] = Field(
        "", description="PostHog group type=Customer.io object type id, e.g. company=1"
    )
    suppress_on_delete: Annotated[bool, Cli(MAPPING)] = Field(
        False, description="On a person deletion, suppress instead of delete"
    )
    limits: Annotated[Literal["truncate", "dead-letter"], Cli(MAPPING)] = Field(
        "truncate", description="truncate or dead-letter"
    )
    properties_to_exclude: Annotated[str, Cli(MAPPING)] = Field(
        "", description="Glob list of properties left out, e.g. $geoip_*,$ip"
    )
    properties_to_include: Annotated[str, Cli(MAPPING)] = Field(
        "", description="Glob list: only matching properties are sent"
    )
    event_name_map: Annotated[str, Cli(MAPPING)] = Field("", description="Rename events, e.g. signed_up=Signed Up")
    # -- pacing and delivery --
    customerio_max_rps: Annotated[float, Cli(PACING, "--max-rps")] = Field(
        100.0, gt=0, description="Client-side request limit to Customer.io"
    )
    delivery_concurrency: Annotated[int, Cli(PACING, "--concurrency")] = Field(
        4, ge=1, le=64, description="Delivery workers"
    )
    anonymous_hold_s: Annotated[float, Cli(PACING)] = Field(
        5.0,
        ge=0,
        le=3600,
        allow_inf_nan=False,
        description="Hold a visitor's anonymous events this long for an identify to adopt them"
        " (batched person events); 0 = off",
    )
    anonymous_max_age_s: Annotated[float, Cli(PACING)] = Field(
        2_592_000.0,
        gt=0,
        allow_inf_nan=False,
        description="Drop anonymous events still queued after this long (Customer.io keeps unmerged"
        " anonymous activity 30 days)",
    )
    anonymous_backlog_max: Annotated[int, Cli(PACING)] = Field(
        100_000,
        ge=0,
        description="Keep at most this many anonymous events queued: the oldest beyond it are dropped",
    )
    outbox_max_queued: Annotated[int, Cli(PACING)] = Field(
        50_000,
        ge=1,
        description="Queued operations of person work at which serve answers 503; at half of it send, consume,"
        " sync-persons and sync-cohorts wait for delivery",
    )
    delivery_linger_s: Annotated[float | None, Cli(DELIVERY, default="0.1 (Pipelines: 1)")] = Field(
        None, ge=0, le=10, description="Wait this long for a fuller batch"
    )
    # -- storage --
    posthog_customerio_data_dir: Annotated[Path, Cli(STORE, "--data-dir", "./.posthog-customerio")] = Field(
        Path(".posthog-customerio"), description="Where state and outbox live"
    )
    outbox_url: Annotated[str | None, Cli(STORE, default="the data dir's SQLite file")] = Field(
        None, description="sqlite:///path or postgresql://user@host/db"
    )
    lease_s: Annotated[float, Cli(STORE)] = Field(
        10.0, ge=2, description="PostgreSQL: a claim's lease; renewed every third of it while the replica lives"
    )
    sqlite_synchronous: Annotated[Literal["FULL", "NORMAL"], Cli(STORE)] = Field("FULL", description="FULL or NORMAL")
    # -- long-running commands (serve, consume) --
    shutdown_grace_s: Annotated[float, Cli(SERVICE)] = Field(
        10.0, ge=0, description="On stop, keep delivering this long (the rest stays queued)"
    )
    auth_retry_s: Annotated[float, Cli(SERVICE)] = Field(
        60.0, gt=0, description="While Customer.io rejects the credentials, re-check this often"
    )
    log_format: Annotated[Literal["auto", "json", "text"], Cli(SERVICE)] = Field(
        "auto", description="json, text or auto"
    )
    log_level: Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR"], Cli(SERVICE)] = Field(
        "INFO", description="DEBUG, INFO, WARNING or ERROR"
    )
    # -- the HTTP service (serve) --
    webhook_token: Annotated[SecretStr | None, Cli(HTTP)] = Field(
        None, description="Require Authorization: Bearer <token>"
    )
    webhook_signing_secret: Annotated[SecretStr | None, Cli(HTTP)] = Field(
        None, description="Verify Standard Webhooks signatures"
    )
    ops_token: Annotated[SecretStr | None, Cli(HTTP, default="WEBHOOK_TOKEN")] = Field(
        None, description="Guard /status and /api/* (Bearer, or Basic password)"
    )
    allow_unauthenticated: Annotated[bool, Cli(HTTP)] = Field(
        False, description="Serve a non-loopback host with no token"
    )
    max_body_bytes: Annotated[int, Cli(HTTP)] = Field(
        5_000_000, ge=1_000, description="Answer 413 above this request body size, in bytes"
    )
    max_queue: Annotated[int, Cli(HTTP)] = Field(1_000_000, ge=1, description="Answer 503 above this outbox depth")
    max_events_per_request: Annotated[int, Cli(HTTP)] = Field(
        10_000, ge=1, description="Answer 413 above this many events in one request"
    )
    http_keep_alive_s: Annotated[float, Cli(HTTP, "--timeout-keep-alive")] = Field(
        5.0, gt=0, le=3600, description="Close idle keep-alive connections after this many seconds"
    )
    http_read_timeout_s: Annotated[float, Cli(HTTP)] = Field(
        30.0, gt=0, le=3600, description="Close a connection whose request (headers and body) takes longer"
    )
    posthog_host: Annotated[str | None, Cli(HTTP)] = Field(
        None, description="Forward PostHog paths to this PostHog, e.g. https://us.i.posthog.com"
    )
    posthog_timeout_s: Annotated[float, Cli(HTTP)] = Field(
        30.0, gt=0, description="With --posthog-host: timeout of each forwarded request"
    )
    customerio_webhook_signing_key: Annotated[SecretStr | None, Cli(HTTP)] = Field(
        None,
        description="Verify Customer.io's reporting webhooks (POST /webhooks/customerio) with this signing key;"
        " unset: that endpoint refuses them",
    )
    customerio_webhook_tolerance_s: Annotated[float, Cli(HTTP)] = Field(
        300.0,
        gt=0,
        le=86_400,
        allow_inf_nan=False,
        description="Refuse a reporting webhook whose X-CIO-Timestamp is further than this from our clock",
    )
    posthog_project_api_key: Annotated[SecretStr | None, Cli(HTTP)] = Field(
        None,
        description="Capture Customer.io's message activity into this PostHog project (its project API key), to"
        " POSTHOG_HOST's /batch/",
    )
    cors_origins: Annotated[str, Cli(HTTP)] = Field(
        "*", description="Origins allowed on the browser-facing paths, comma list or *"
    )
    # -- Kafka (consume) --
    kafka_bootstrap_servers: Annotated[str | None, Cli(KAFKA, "--kafka-bootstrap")] = Field(
        None, description="HOST:PORT[,HOST:PORT...] of the Kafka / Redpanda brokers (required by consume)"
    )
    kafka_topic: Annotated[str | None, Cli(KAFKA, "--topic")] = Field(
        None, description="Topic of PostHog events, e.g. clickhouse_events_json (required by consume)"
    )
    kafka_group_id: Annotated[str, Cli(KAFKA, "--group")] = Field(
        "posthog-customerio", description="Consumer group; offsets are committed for it"
    )
    kafka_config_file: Annotated[Path | None, Cli(KAFKA)] = Field(
        None, description="File of key=value librdkafka settings, keeps sasl.password off the command line"
    )
    reorder_window_s: Annotated[float, Cli(KAFKA)] = Field(
        5.0,
        ge=0,
        le=3600,
        allow_inf_nan=False,
        description="Event-time order: hold a consumed event until every partition was read this far past it"
        " (absorbs events out of order within a partition; replicas delivering read it too)",
    )
    reorder_stale_s: Annotated[float, Cli(KAFKA)] = Field(
        30.0,
        gt=0,
        le=86_400,
        allow_inf_nan=False,
        description="A partition nobody has read from for this long (its consumer died) stops holding delivery back",
    )
    # -- PostHog's private API (sync-persons) --
    posthog_api_host: Annotated[str | None, Cli(POSTHOG_API)] = Field(
        None, description="PostHog's private API, e.g. https://us.posthog.com, https://eu.posthog.com"
    )
    posthog_project_id: Annotated[str | None, Cli(POSTHOG_API)] = Field(
        None, description="The PostHog project (its id, in the project's settings and URLs)"
    )
    posthog_personal_api_key: Annotated[SecretStr | None, Cli(POSTHOG_API)] = Field(
        None, description="A PostHog personal API key with the person:read scope"
    )
    posthog_api_max_per_minute: Annotated[int, Cli(POSTHOG_API)] = Field(
        200, ge=1, description="Requests a minute to PostHog's API (PostHog allows 240 per project)"
    )
    # -- PostHog cohorts (sync-cohorts, serve) --
    cohort_segments: Annotated[str, Cli(COHORTS)] = Field(
        "", description="Mirror cohorts into manual segments: cohort=segment pairs, e.g. 7=12,9=14 (Track API)"
    )
    cohort_attributes: Annotated[str, Cli(COHORTS)] = Field(
        "", description="Cohorts kept as a true/removed person attribute, e.g. 7,9 (every API)"
    )
    cohort_attribute_prefix: Annotated[str, Cli(COHORTS)] = Field(
        "posthog_cohort_", description="The attribute of COHORT_ATTRIBUTES: this prefix + the cohort name as a slug"
    )
    # serve only (the HTTP service's group): sync-cohorts is one pass
    cohort_sync_interval_s: Annotated[float, Cli(HTTP)] = Field(
        3600.0,
        gt=0,
        allow_inf_nan=False,
        description="serve: sync the cohorts this often, in seconds, from the end of one pass",
    )
    # serve only (the HTTP service's group): consume deployments run sync-persons on their own schedule
    person_sync_interval_s: Annotated[float | None, Cli(HTTP)] = Field(
        None,
        gt=0,
        allow_inf_nan=False,
        description="serve: sync PostHog's persons this often, in seconds, from the end of one pass (unset: never)",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Flags (init arguments), then the plugin's JSON (``_plugin_config=PATH``), then the environment."""
        path = getattr(init_settings, "init_kwargs", {}).pop(PLUGIN_CONFIG, None)
        plugin = PluginConfigSource(settings_cls, Path(path) if path is not None else None)
        return init_settings, plugin, env_settings, dotenv_settings, file_secret_settings

    @field_validator("customerio_region", mode="before")
    @classmethod
    def _region(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _REGION_ALIASES.get(value.strip().lower().removeprefix("https://").rstrip("/"), value)
        return value

    @field_validator("send_events_from_anonymous_users", mode="before")
    @classmethod
    def _anonymous(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _ANONYMOUS_LABELS.get(value.strip().lower(), value)
        return value

    @field_validator("customerio_track_url", "customerio_pipelines_url")
    @classmethod
    def _track_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return _base_url(value).rstrip("/")

    @field_validator("posthog_host")
    @classmethod
    def _posthog_host(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not value.startswith(("http://", "https://")) or "?" in value or "#" in value:
            raise ValueError("must be a base URL starting with http:// or https://, e.g. https://us.i.posthog.com")
        return value

    @field_validator("cors_origins")
    @classmethod
    def _cors_origins(cls, value: str) -> str:
        origins = [o.strip().rstrip("/") for o in value.split(",") if o.strip()]
        if not origins:
            raise ValueError("must be * or a comma-separated list of origins such as https://www.example.com")
        for origin in origins:
            if origin != "*" and (not origin.startswith(("http://", "https://")) or origin.count("/") != 2):
                raise ValueError("each entry must be an origin (scheme://host[:port], no path) or *")
        return ",".join(origins)

    @property
    def cors_origin_list(self) -> list[str]:
        """``CORS_ORIGINS`` as a list (``["*"]`` for any origin)."""
        origins = self.cors_origins.split(",")
        return ["*"] if "*" in origins else origins

    @field_validator("sqlite_synchronous", "log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("outbox_url")
    @classmethod
    def _outbox_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip()
        if not value.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must be sqlite:///path or postgresql://user@host/db")
        if not value.startswith("sqlite:///"):
            require_extra("postgres", "a postgresql:// URL")
        return value

    @field_validator("webhook_signing_secret")
    @classmethod
    def _signing_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value().strip():
            return None
        from standardwebhooks.webhooks import Webhook

        try:
            Webhook(value.get_secret_value().strip())
        except Exception:  # binascii.Error, EmptyWebhookSecretError...: the message must not quote it
            raise ValueError("must be a Standard Webhooks secret: whsec_ followed by base64") from None
        return SecretStr(value.get_secret_value().strip())

    @field_validator("group_type_map", "event_name_map")
    @classmethod
    def _pairs(cls, value: str) -> str:
        parse_pairs(value)
        return value

    @field_validator("cohort_segments")
    @classmethod
    def _cohort_segments(cls, value: str) -> str:
        parse_cohort_segments(value)
        return value

    @field_validator("cohort_attributes")
    @classmethod
    def _cohort_attributes(cls, value: str) -> str:
        parse_cohort_ids(value)
        return value

    @field_validator("cohort_attribute_prefix")
    @classmethod
    def _cohort_attribute_prefix(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty (the attribute would be the cohort name alone)")
        return value.strip()

    @property
    def cohort_segment_map(self) -> dict[str, str]:
        """``COHORT_SEGMENTS`` as cohort id -> manual segment id."""
        return parse_cohort_segments(self.cohort_segments)

    @property
    def cohort_attribute_ids(self) -> list[str]:
        """``COHORT_ATTRIBUTES`` as cohort ids."""
        return parse_cohort_ids(self.cohort_attributes)

    @property
    def allowlist(self) -> frozenset[str]:
        """``EVENTS_TO_SEND`` split on commas, trimmed, empties dropped."""
        return frozenset(name.strip() for name in self.events_to_send.split(",") if name.strip())

    def mapping_config(self) -> MappingConfig:
        """The options the pure mapping needs."""
        return MappingConfig(
            identify_by_email=self.identify_by_email,
            anonymous_mode=self.send_events_from_anonymous_users,
            events_to_send=self.allowlist,
            merge_people=self.merge_people,
            anonymous_events=self.anonymous_events,
            group_type_map=parse_pairs(self.group_type_map),
            suppress_on_delete=self.suppress_on_delete,
            truncate=self.limits == "truncate",
            properties_to_include=_globs(self.properties_to_include),
            properties_to_exclude=_globs(self.properties_to_exclude),
            event_name_map=parse_pairs(self.event_name_map),
            events_to_skip=_globs(self.events_to_skip),
            convert_dates=self.convert_dates,
        )

    def credentials(self) -> tuple[str, str]:
        """Site ID and API key, or :class:`ConfigError` naming the missing one."""
        for name in ("customerio_site_id", "customerio_api_key"):
            secret = getattr(self, name)
            if secret is None or not secret.get_secret_value().strip():
                raise ConfigError(f"{name.upper()} is required (or run with --sandbox)")
        return (
            self.customerio_site_id.get_secret_value().strip(),  # type: ignore[union-attr]
            self.customerio_api_key.get_secret_value().strip(),  # type: ignore[union-attr]
        )

    @property
    def pipelines(self) -> bool:
        """Whether delivery goes through the Pipelines API (``CUSTOMERIO_API=pipelines``)."""
        return self.customerio_api == "pipelines"

    def pipelines_key(self) -> str:
        """The Pipelines API key, or :class:`ConfigError` when it is missing."""
        secret = self.customerio_pipelines_api_key
        if secret is None or not secret.get_secret_value().strip():
            raise ConfigError(
                "CUSTOMERIO_PIPELINES_API_KEY is required with CUSTOMERIO_API=pipelines (or run with --sandbox)"
            )
        return secret.get_secret_value().strip()

    def require_credentials(self) -> None:
        """The credentials the chosen API needs (Pipelines key, or Track site ID and API key) are set."""
        if self.pipelines:
            self.pipelines_key()
        else:
            self.credentials()

    def secret_values(self) -> list[str]:
        """Every configured secret value (for log redaction)."""
        secrets = (
            self.customerio_site_id,
            self.customerio_api_key,
            self.webhook_token,
            self.webhook_signing_secret,
            self.ops_token,
            self.customerio_pipelines_api_key,
            self.posthog_personal_api_key,
            self.customerio_webhook_signing_key,
            self.posthog_project_api_key,
        )
        values = [s.get_secret_value() for s in secrets if s is not None and len(s.get_secret_value()) >= 4]
        if self.outbox_url:  # a PostgreSQL password inside OUTBOX_URL
            from urllib.parse import urlsplit

            try:
                password = urlsplit(self.outbox_url).password
            except ValueError:
                password = None
            if password and len(password) >= 4:
                values.append(password)
        return values

    @property
    def ops_secret(self) -> str:
        """The token guarding the operations endpoints: ``OPS_TOKEN``, else ``WEBHOOK_TOKEN``; "" for none."""
        for secret in (self.ops_token, self.webhook_token):
            if secret is not None and secret.get_secret_value().strip():
                return secret.get_secret_value().strip()
        return ""

    @property
    def database_path(self) -> Path:
        """The SQLite file holding state and outbox."""
        return self.posthog_customerio_data_dir / "posthog-customerio.sqlite"


#: the optional dependencies (``pip install posthog-customerio[extra]``) and the modules each brings
EXTRAS = {"postgres": ("psycopg", "psycopg_pool"), "kafka": ("confluent_kafka",)}


def require_extra(extra: str, what: str) -> None:
    """Stop (ValueError, one line) when the modules of the optional dependency ``extra`` are not installed."""
    import importlib.util

    missing = [module for module in EXTRAS[extra] if importlib.util.find_spec(module) is None]
    if missing:
        raise ValueError(f"{what} needs {', '.join(missing)}: install posthog-customerio[{extra}]")


def _base_url(value: str) -> str:
    """``value`` when it is a usable http(s) base URL: a host, a valid port, no spaces (ValueError if not)."""
    from urllib.parse import urlsplit

    example = "e.g. https://track.customer.io"
    if any(char.isspace() or ord(char) < 32 for char in value):
        raise ValueError(f"must be a URL without spaces, {example}")
    try:
        parts = urlsplit(value)
        port = parts.port  # ValueError when not a number in 0-65535
        host = parts.hostname
    except ValueError as exc:
        raise ValueError(f"is not a valid URL ({exc}), {example}") from None
    if not host:
        raise ValueError(f"has no host name, {example}")
    if port == 0:
        raise ValueError(f"port must be 1-65535, {example}")
    return value


def parse_pairs(text: str) -> dict[str, str]:
    """``"a=1, b=2"`` -> ``{"a": "1", "b": "2"}``; raises ValueError naming a bad pair."""
    pairs: dict[str, str] = {}
    for number, part in enumerate(filter(None, (p.strip() for p in text.split(","))), 1):
        key, sep, value = part.partition("=")
        if not sep or not key.strip() or not value.strip():  # the value is never quoted: it may be a secret
            raise ValueError(f"expected name=value pairs separated by commas (item {number} is not one)")
        pairs[key.strip()] = value.strip()
    return pairs


def _numeric_id(text: str, what: str, number: int) -> str:
    if not text.isdigit() or int(text) == 0:
        raise ValueError(f"item {number}: a {what} is a positive whole number, not {text!r}")
    return str(int(text))


def parse_cohort_segments(text: str) -> dict[str, str]:
    """``"7=12, 9=14"`` -> ``{"7": "12", "9": "14"}`` (PostHog cohort id -> Customer.io manual segment id);
    raises ValueError for a malformed pair, a cohort given twice, or two cohorts sharing a segment (a member
    leaving one would be removed while still in the other)."""
    pairs: dict[str, str] = {}
    for number, part in enumerate(filter(None, (p.strip() for p in text.split(","))), 1):
        cohort, sep, segment = (piece.strip() for piece in part.partition("="))
        if not sep:
            raise ValueError(f"expected cohort=segment pairs separated by commas, e.g. 7=12,9=14 (item {number})")
        cohort, segment = _numeric_id(cohort, "cohort id", number), _numeric_id(segment, "segment id", number)
        if cohort in pairs:
            raise ValueError(f"cohort {cohort} is given twice")
        if segment in pairs.values():
            raise ValueError(f"segment {segment} is given to two cohorts: give each cohort its own manual segment")
        pairs[cohort] = segment
    return pairs


def parse_cohort_ids(text: str) -> list[str]:
    """``"7, 9"`` -> ``["7", "9"]`` (PostHog cohort ids, each once); raises ValueError for anything else."""
    ids: list[str] = []
    for number, part in enumerate(filter(None, (p.strip() for p in text.split(","))), 1):
        cohort = _numeric_id(part, "cohort id", number)
        if cohort in ids:
            raise ValueError(f"cohort {cohort} is given twice")
        ids.append(cohort)
    return ids


def _globs(text: str) -> tuple[str, ...]:
    return tuple(g.strip() for g in text.split(",") if g.strip())


ENV_NAMES = {name: name.upper() for name in Settings.model_fields}

_PLUGIN_KEYS = {
    "customerioSiteId": "customerio_site_id",
    "customerioToken": "customerio_api_key",
    "host": "customerio_region",
    "identifyByEmail": "identify_by_email",
    "sendEventsFromAnonymousUsers": "send_events_from_anonymous_users",
    "eventsToSend": "events_to_send",
}


def plugin_config_values(path: Path) -> dict[str, Any]:
    """Settings from the original PostHog plugin's config JSON (its ``plugin.json`` keys).

    Accepts the keys at the top level or under ``"config"``; unknown keys are ignored.
    """
    try:
        data = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ConfigError(f"--plugin-config: cannot read {path}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"--plugin-config: {path} is not valid JSON ({exc.msg}, line {exc.lineno})") from exc
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]
    if not isinstance(data, dict):
        raise ConfigError(f"--plugin-config: {path} must hold a JSON object")
    values = {field: data[key] for key, field in _PLUGIN_KEYS.items() if data.get(key) not in (None, "")}
    if isinstance(values.get("identify_by_email"), str):
        values["identify_by_email"] = values["identify_by_email"].strip().lower() in ("yes", "true", "1")
    return values


#: the keyword argument of :class:`Settings` naming the plugin's config JSON (read by :class:`PluginConfigSource`)
PLUGIN_CONFIG = "_plugin_config"


class PluginConfigSource(PydanticBaseSettingsSource):
    """The original plugin's config JSON (``--plugin-config``) as a settings source."""

    def __init__(self, settings_cls: type[BaseSettings], path: Path | None) -> None:
        super().__init__(settings_cls)
        self.path = path

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads the whole file at once

    def __call__(self) -> dict[str, Any]:
        return plugin_config_values(self.path) if self.path is not None else {}


def load_settings(flags: dict[str, Any] | None = None, plugin_config: Path | None = None) -> Settings:
    """Build :class:`Settings` from flags (non-None values), plugin JSON and the environment."""
    values: dict[str, Any] = {key: value for key, value in (flags or {}).items() if value is not None}
    if plugin_config is not None:
        values[PLUGIN_CONFIG] = plugin_config
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _describe(exc: ValidationError) -> str:
    """One line naming each bad variable and what it allows, never the value given.

    A secret pasted into the wrong variable must not reach a terminal or a log.
    """
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        field = str(error["loc"][0]) if error["loc"] else "?"
        name = ENV_NAMES.get(field, field)
        message = error["msg"].removeprefix("Value error, ")
        problems.append(f"{name}: {message}")
    return "; ".join(problems)


# -- the settings as documentation and command-line options --------------------------------
def cli_of(name: str) -> Cli:
    """The :class:`Cli` metadata of the setting ``name`` (a field of :class:`Settings`)."""
    return next(item for item in Settings.model_fields[name].metadata if isinstance(item, Cli))


def flag_of(name: str) -> str:
    """The option name of the setting ``name``: its own, or ``--`` + the variable in kebab case."""
    return cli_of(name).flag or "--" + name.replace("_", "-")


def value_type(name: str) -> type:
    """The plain type a flag of the setting ``name`` takes (bool, int, float, Path or str)."""
    annotation = Settings.model_fields[name].annotation
    kinds = [kind for kind in _members(annotation) if kind is not type(None)]
    kind = kinds[0] if len(kinds) == 1 else str
    return kind if kind in (bool, int, float, Path) else str


def _members(annotation: Any) -> tuple[Any, ...]:
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return typing.get_args(annotation)
    return (annotation,)


def default_text(name: str) -> str:
    """The default of the setting ``name`` as the help and the documentation show it ("" for none)."""
    shown = cli_of(name).default
    if shown is not None:
        return shown
    default = Settings.model_fields[name].default
    if default is None or default == "":
        return ""
    if isinstance(default, bool):
        return str(default).lower()
    if isinstance(default, float):
        return f"{default:g}"
    return str(default)


def _type_text(field: FieldInfo) -> str:
    kinds = [kind for kind in _members(field.annotation) if kind is not type(None)]
    parts = []
    for kind in kinds:
        if typing.get_origin(kind) is Literal:
            parts.append(" | ".join(str(choice) for choice in typing.get_args(kind)))
        else:
            names = {bool: "boolean", int: "integer", float: "number", Path: "path", SecretStr: "secret"}
            parts.append(names.get(kind, "text"))
    text = " | ".join(parts)
    bounds = []
    for item in field.metadata:
        if isinstance(item, Ge):
            bounds.append(f"≥ {item.ge}")
        elif isinstance(item, Gt):
            bounds.append(f"> {item.gt}")
        elif isinstance(item, Le):
            bounds.append(f"≤ {item.le}")
        elif isinstance(item, Lt):
            bounds.append(f"< {item.lt}")
    return f"{text} ({', '.join(bounds)})" if bounds else text


@dataclass(frozen=True)
class SettingDoc:
    """One setting, for the configuration reference."""

    name: str
    env: str
    flags: tuple[str, ...]
    group: str
    type: str
    default: str
    description: str
    secret: bool


def settings_reference() -> list[SettingDoc]:
    """Every setting, grouped as :data:`GROUPS` orders them: variable, flags, type, default, help, secrecy."""
    docs = []
    for name, field in Settings.model_fields.items():
        flag = flag_of(name)
        flags = (flag, "--no-" + flag[2:]) if value_type(name) is bool else (flag,)
        docs.append(
            SettingDoc(
                name=name,
                env=ENV_NAMES[name],
                flags=flags,
                group=cli_of(name).group,
                type=_type_text(field),
                default=default_text(name),
                description=field.description or "",
                secret=SecretStr in _members(field.annotation),
            )
        )
    return sorted(docs, key=lambda doc: GROUPS.index(doc.group))
