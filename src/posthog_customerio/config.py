"""Configuration from environment variables, CLI flags and the original plugin's JSON.

Precedence: CLI flags, then ``--plugin-config`` file, then environment variables,
then defaults. Secrets are ``SecretStr`` and never printed. A bad value becomes a
:class:`ConfigError` whose one-line message names the variable.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from .mapping import DEFAULT_EVENTS_TO_SKIP, AnonymousMode, MappingConfig

__all__ = ["ENV_NAMES", "ConfigError", "Settings", "load_settings", "plugin_config_values"]


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


class Settings(BaseSettings):
    """All settings; field ``x`` is read from the environment variable ``X``."""

    model_config = SettingsConfigDict(extra="forbid", validate_default=True)

    customerio_site_id: SecretStr | None = None
    customerio_api_key: SecretStr | None = None
    customerio_region: Literal["us", "eu", "auto"] = "auto"
    customerio_track_url: str | None = None
    customerio_api: Literal["v1", "v2", "pipelines"] = "v2"
    customerio_pipelines_api_key: SecretStr | None = None
    customerio_pipelines_url: str | None = None
    identify_by_email: bool = False
    send_events_from_anonymous_users: AnonymousMode = "all"
    events_to_send: str = ""
    events_to_skip: str = ",".join(DEFAULT_EVENTS_TO_SKIP)
    convert_dates: bool = True
    merge_people: bool = True
    anonymous_events: Literal["anonymous", "person"] = "anonymous"
    group_type_map: str = ""
    suppress_on_delete: bool = False
    limits: Literal["truncate", "dead-letter"] = "truncate"
    properties_to_exclude: str = ""
    properties_to_include: str = ""
    event_name_map: str = ""
    posthog_customerio_data_dir: Path = Path(".posthog-customerio")
    customerio_max_rps: float = Field(100.0, gt=0)
    customerio_timeout_s: float = Field(30.0, gt=0)
    retry_after_max_s: float = Field(60.0, ge=0, le=3600, allow_inf_nan=False)
    delivery_concurrency: int = Field(4, ge=1, le=64)
    #: unset: the output's own default (Track 0.1 s; Pipelines 1 s, its requests carry everything)
    delivery_linger_s: float | None = Field(None, ge=0, le=10)
    anonymous_hold_s: float = Field(5.0, ge=0, le=3600, allow_inf_nan=False)
    sqlite_synchronous: Literal["FULL", "NORMAL"] = "FULL"
    outbox_url: str | None = None
    lease_s: float = Field(30.0, ge=2)
    # -- the HTTP service (serve) --
    webhook_token: SecretStr | None = None
    webhook_signing_secret: SecretStr | None = None
    ops_token: SecretStr | None = None
    allow_unauthenticated: bool = False
    max_body_bytes: int = Field(5_000_000, ge=1_000)
    max_queue: int = Field(1_000_000, ge=1)
    max_events_per_request: int = Field(10_000, ge=1)
    http_keep_alive_s: float = Field(5.0, gt=0, le=3600)
    http_read_timeout_s: float = Field(30.0, gt=0, le=3600)
    shutdown_grace_s: float = Field(10.0, ge=0)
    auth_retry_s: float = Field(60.0, gt=0)
    posthog_host: str | None = None
    posthog_timeout_s: float = Field(30.0, gt=0)
    cors_origins: str = "*"
    log_format: Literal["auto", "json", "text"] = "auto"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

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


def load_settings(flags: dict[str, Any] | None = None, plugin_config: Path | None = None) -> Settings:
    """Build :class:`Settings` from flags (non-None values), plugin JSON and the environment."""
    values: dict[str, Any] = {}
    if plugin_config is not None:
        values.update(plugin_config_values(plugin_config))
    values.update({key: value for key, value in (flags or {}).items() if value is not None})
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
