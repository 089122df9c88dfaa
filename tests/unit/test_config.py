"""Settings from env vars, flags and the original plugin's JSON config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from posthog_customerio.config import ENV_NAMES, ConfigError, Settings, load_settings, plugin_config_values

SITE = "site-SECRET-1234"
KEY = "key-SECRET-5678"


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ENV_NAMES.values():
        monkeypatch.delenv(name, raising=False)


def _plugin_file(tmp_path: Path, data: Any) -> Path:
    path = tmp_path / "plugin.json"
    path.write_text(json.dumps(data))
    return path


def test_env_names_are_upper_cased_fields() -> None:
    assert ENV_NAMES["customerio_site_id"] == "CUSTOMERIO_SITE_ID"
    assert set(ENV_NAMES) == set(Settings.model_fields)


def test_defaults() -> None:
    s = load_settings()
    assert s.customerio_site_id is None and s.customerio_api_key is None
    assert s.customerio_region == "auto"
    assert s.customerio_track_url is None
    assert s.customerio_api == "v2"
    assert s.identify_by_email is False
    assert s.send_events_from_anonymous_users == "all"
    assert s.allowlist == frozenset()
    assert s.posthog_customerio_data_dir == Path(".posthog-customerio")
    assert s.database_path == Path(".posthog-customerio/posthog-customerio.sqlite")
    assert s.customerio_max_rps == 100.0
    assert s.customerio_timeout_s == 30.0
    assert s.delivery_concurrency == 4
    assert s.sqlite_synchronous == "FULL"
    assert s.webhook_token is None and s.webhook_signing_secret is None
    assert s.log_format == "auto" and s.log_level == "INFO"
    assert s.secret_values() == []


def test_env_vars_are_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    env = {
        "CUSTOMERIO_SITE_ID": SITE,
        "CUSTOMERIO_API_KEY": KEY,
        "CUSTOMERIO_REGION": "EU",
        "CUSTOMERIO_TRACK_URL": "http://127.0.0.1:9999/",
        "CUSTOMERIO_API": "v1",
        "IDENTIFY_BY_EMAIL": "true",
        "SEND_EVENTS_FROM_ANONYMOUS_USERS": "with-email",
        "EVENTS_TO_SEND": "a,b",
        "POSTHOG_CUSTOMERIO_DATA_DIR": str(tmp_path),
        "CUSTOMERIO_MAX_RPS": "5.5",
        "CUSTOMERIO_TIMEOUT_S": "3",
        "DELIVERY_CONCURRENCY": "8",
        "SQLITE_SYNCHRONOUS": "normal",
        "LOG_LEVEL": "debug",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = load_settings()
    assert s.credentials() == (SITE, KEY)
    assert s.customerio_region == "eu"
    assert s.customerio_track_url == "http://127.0.0.1:9999"
    assert s.customerio_api == "v1"
    assert s.identify_by_email is True
    assert s.send_events_from_anonymous_users == "with_email"
    assert s.allowlist == {"a", "b"}
    assert s.posthog_customerio_data_dir == tmp_path
    assert (s.customerio_max_rps, s.customerio_timeout_s, s.delivery_concurrency) == (5.5, 3.0, 8)
    assert s.sqlite_synchronous == "NORMAL" and s.log_level == "DEBUG"
    assert sorted(s.secret_values()) == sorted([SITE, KEY])


def test_precedence_flags_then_plugin_then_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CUSTOMERIO_REGION", "us")
    monkeypatch.setenv("EVENTS_TO_SEND", "env")
    monkeypatch.setenv("IDENTIFY_BY_EMAIL", "false")
    monkeypatch.setenv("CUSTOMERIO_SITE_ID", "env-site")
    plugin = _plugin_file(
        tmp_path, {"host": "track-eu.customer.io", "eventsToSend": "plugin", "identifyByEmail": "Yes"}
    )

    assert load_settings().customerio_region == "us"
    from_plugin = load_settings(plugin_config=plugin)
    assert (from_plugin.customerio_region, from_plugin.allowlist, from_plugin.identify_by_email) == (
        "eu",
        {"plugin"},
        True,
    )
    assert from_plugin.customerio_site_id is not None
    assert from_plugin.customerio_site_id.get_secret_value() == "env-site"  # env fills what the plugin lacks

    flags = {"customerio_region": "auto", "events_to_send": "flag", "identify_by_email": None}
    both = load_settings(flags, plugin_config=plugin)
    assert (both.customerio_region, both.allowlist) == ("auto", {"flag"})
    assert both.identify_by_email is True  # a None flag does not override


def test_flags_beat_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUSTOMERIO_API", "v1")
    monkeypatch.setenv("DELIVERY_CONCURRENCY", "2")
    s = load_settings({"customerio_api": "v2", "delivery_concurrency": 16})
    assert (s.customerio_api, s.delivery_concurrency) == ("v2", 16)


@pytest.mark.parametrize(
    ("plugin", "expected"),
    [
        ({"host": "track.customer.io"}, {"customerio_region": "us"}),
        ({"host": "track-eu.customer.io"}, {"customerio_region": "eu"}),
        ({"host": "https://track-eu.customer.io/"}, {"customerio_region": "eu"}),
        ({"identifyByEmail": "Yes"}, {"identify_by_email": True}),
        ({"identifyByEmail": "No"}, {"identify_by_email": False}),
        ({"sendEventsFromAnonymousUsers": "Send all events"}, {"send_events_from_anonymous_users": "all"}),
        (
            {"sendEventsFromAnonymousUsers": "Only send events from users that have been identified"},
            {"send_events_from_anonymous_users": "identified"},
        ),
        (
            {"sendEventsFromAnonymousUsers": "Only send events from users with emails"},
            {"send_events_from_anonymous_users": "with_email"},
        ),
        ({"eventsToSend": " a, b ,,c "}, {"allowlist": frozenset({"a", "b", "c"})}),
        ({"eventsToSend": ""}, {"allowlist": frozenset()}),
        (
            {"config": {"host": "track-eu.customer.io", "identifyByEmail": "Yes"}},
            {"customerio_region": "eu", "identify_by_email": True},
        ),
        ({"unknownKey": "ignored", "customerioSiteId": SITE}, {"customerio_region": "auto"}),
    ],
)
def test_plugin_values(tmp_path: Path, plugin: dict[str, Any], expected: dict[str, Any]) -> None:
    s = load_settings(plugin_config=_plugin_file(tmp_path, plugin))
    assert {name: getattr(s, name) for name in expected} == expected


def test_plugin_credentials(tmp_path: Path) -> None:
    path = _plugin_file(tmp_path, {"config": {"customerioSiteId": SITE, "customerioToken": KEY}})
    assert plugin_config_values(path)["customerio_site_id"] == SITE
    assert load_settings(plugin_config=path).credentials() == (SITE, KEY)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("Yes", True), ("No", False), ("true", True), ("false", False), ("yes", True), ("1", True), ("0", False)],
)
def test_env_identify_by_email(monkeypatch: pytest.MonkeyPatch, value: str, expected: bool) -> None:
    monkeypatch.setenv("IDENTIFY_BY_EMAIL", value)
    assert load_settings().identify_by_email is expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("Send all events", "all"),
        ("Only send events from users that have been identified", "identified"),
        ("Only send events from users with emails", "with_email"),
        ("identified", "identified"),
        ("with_email", "with_email"),
        (" ALL ", "all"),
    ],
)
def test_env_anonymous_mode(monkeypatch: pytest.MonkeyPatch, value: str, expected: str) -> None:
    monkeypatch.setenv("SEND_EVENTS_FROM_ANONYMOUS_USERS", value)
    s = load_settings()
    assert s.send_events_from_anonymous_users == expected
    assert s.mapping_config().anonymous_mode == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [(" a, b ,,c ", {"a", "b", "c"}), ("", set()), (" , ,", set()), ("$pageview", {"$pageview"})],
)
def test_events_to_send(monkeypatch: pytest.MonkeyPatch, value: str, expected: set[str]) -> None:
    monkeypatch.setenv("EVENTS_TO_SEND", value)
    s = load_settings()
    assert s.allowlist == expected
    assert s.mapping_config().events_to_send == expected


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"CUSTOMERIO_REGION": "mars"}, "CUSTOMERIO_REGION"),
        ({"CUSTOMERIO_API": "v3"}, "CUSTOMERIO_API"),
        ({"SEND_EVENTS_FROM_ANONYMOUS_USERS": "Only some"}, "SEND_EVENTS_FROM_ANONYMOUS_USERS"),
        ({"CUSTOMERIO_TRACK_URL": "track.customer.io"}, "CUSTOMERIO_TRACK_URL"),
        ({"IDENTIFY_BY_EMAIL": "maybe"}, "IDENTIFY_BY_EMAIL"),
        ({"CUSTOMERIO_MAX_RPS": "0"}, "CUSTOMERIO_MAX_RPS"),
        ({"DELIVERY_CONCURRENCY": "100"}, "DELIVERY_CONCURRENCY"),
        ({"SQLITE_SYNCHRONOUS": "OFF"}, "SQLITE_SYNCHRONOUS"),
    ],
)
def test_bad_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], variable: str) -> None:
    monkeypatch.setenv("CUSTOMERIO_SITE_ID", SITE)
    monkeypatch.setenv("CUSTOMERIO_API_KEY", KEY)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    message = str(info.value)
    assert message.startswith(f"{variable}: ")
    assert "\n" not in message
    assert SITE not in message and KEY not in message


def test_several_bad_values_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUSTOMERIO_REGION", "mars")
    monkeypatch.setenv("CUSTOMERIO_API", "v3")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    message = str(raised.value)
    assert "CUSTOMERIO_REGION" in message and "CUSTOMERIO_API:" in message and "\n" not in message


def test_bad_secret_value_is_not_echoed() -> None:
    with pytest.raises(ConfigError) as info:
        load_settings({"customerio_api_key": ["key-SECRET-5678"]})
    assert "CUSTOMERIO_API_KEY" in str(info.value) and KEY not in str(info.value)


def test_bad_plugin_value_names_variable(tmp_path: Path) -> None:
    path = _plugin_file(tmp_path, {"host": "track.example.com", "customerioToken": KEY})
    with pytest.raises(ConfigError, match="^CUSTOMERIO_REGION: ") as info:
        load_settings(plugin_config=path)
    assert KEY not in str(info.value)


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({}, "CUSTOMERIO_SITE_ID"),
        ({"CUSTOMERIO_SITE_ID": "  "}, "CUSTOMERIO_SITE_ID"),
        ({"CUSTOMERIO_SITE_ID": SITE}, "CUSTOMERIO_API_KEY"),
    ],
)
def test_credentials_missing(monkeypatch: pytest.MonkeyPatch, env: dict[str, str], missing: str) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = load_settings()
    with pytest.raises(ConfigError, match=f"^{missing} is required") as info:
        s.credentials()
    assert SITE not in str(info.value)


def test_credentials_are_stripped() -> None:
    assert load_settings({"customerio_site_id": f" {SITE}\n", "customerio_api_key": KEY}).credentials() == (SITE, KEY)


def test_repr_and_str_hide_secrets() -> None:
    s = load_settings(
        {
            "customerio_site_id": SITE,
            "customerio_api_key": KEY,
            "webhook_token": "tok-SECRET-9",
            "webhook_signing_secret": "whsec-SECRET-0",
        }
    )
    for text in (repr(s), str(s), repr(s.model_dump()), s.model_dump_json()):
        for secret in (SITE, KEY, "tok-SECRET-9", "whsec-SECRET-0"):
            assert secret not in text


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "cannot read"),
        ("{not json", "is not valid JSON"),
        ('["a"]', "must hold a JSON object"),
        ('{"config": "x"}', None),  # a non-object "config" is just an unknown key
    ],
)
def test_plugin_file_errors(tmp_path: Path, content: str | None, fragment: str | None) -> None:
    path = tmp_path / "plugin.json"
    if content is not None:
        path.write_text(content)
    if fragment is None:
        assert plugin_config_values(path) == {}
        return
    with pytest.raises(ConfigError) as info:
        load_settings(plugin_config=path)
    assert str(info.value).startswith("--plugin-config: ") and fragment in str(info.value)
    assert "\n" not in str(info.value)


def test_plugin_file_is_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        plugin_config_values(tmp_path)


# -- the settings as the single source of the CLI and the documentation ---------------------
def test_every_setting_has_a_description_a_group_and_a_flag() -> None:
    from posthog_customerio.config import GROUPS, settings_reference

    docs = settings_reference()
    assert {doc.name for doc in docs} == set(Settings.model_fields)
    for doc in docs:
        assert doc.description.strip(), f"{doc.env} has no description"
        assert doc.group in GROUPS and doc.flags and doc.flags[0].startswith("--") and doc.type
    flags = [flag for doc in docs for flag in doc.flags]
    assert len(flags) == len(set(flags)), "two settings share a flag"


def test_settings_reference_rows() -> None:
    from posthog_customerio.config import settings_reference

    rows = {doc.env: doc for doc in settings_reference()}
    assert rows["CUSTOMERIO_SITE_ID"].flags == ("--site-id",) and rows["CUSTOMERIO_SITE_ID"].secret
    assert rows["IDENTIFY_BY_EMAIL"].flags == ("--identify-by-email", "--no-identify-by-email")
    assert (rows["IDENTIFY_BY_EMAIL"].type, rows["IDENTIFY_BY_EMAIL"].default) == ("boolean", "false")
    assert rows["HTTP_KEEP_ALIVE_S"].flags == ("--timeout-keep-alive",)
    assert rows["DELIVERY_CONCURRENCY"].type == "integer (≥ 1, ≤ 64)" and rows["DELIVERY_CONCURRENCY"].default == "4"
    assert rows["CUSTOMERIO_REGION"].type == "us | eu | auto" and not rows["CUSTOMERIO_REGION"].secret
    assert rows["KAFKA_GROUP_ID"].default == "posthog-customerio" and rows["KAFKA_TOPIC"].default == ""


def test_kafka_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KAFKA_BOOTSTRAP_SERVERS", "broker:9092")
    monkeypatch.setenv("KAFKA_TOPIC", "events")
    s = load_settings({"kafka_group_id": "mine"})
    assert (s.kafka_bootstrap_servers, s.kafka_topic, s.kafka_group_id, s.kafka_config_file) == (
        "broker:9092",
        "events",
        "mine",
        None,
    )


def test_plugin_config_is_a_settings_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from posthog_customerio.config import PluginConfigSource

    path = _plugin_file(tmp_path, {"eventsToSend": "plugin", "identifyByEmail": "no"})
    assert PluginConfigSource(Settings, path)() == {"events_to_send": "plugin", "identify_by_email": False}
    assert PluginConfigSource(Settings, None)() == {}
    monkeypatch.setenv("EVENTS_TO_SEND", "env")
    monkeypatch.setenv("CONVERT_DATES", "false")
    s = load_settings({"identify_by_email": True}, plugin_config=path)
    assert (s.events_to_send, s.identify_by_email, s.convert_dates) == ("plugin", True, False)
    # what was given (flags, plugin, environment) is told apart from the defaults
    assert {"events_to_send", "identify_by_email", "convert_dates"} <= s.model_fields_set
    assert "posthog_customerio_data_dir" not in s.model_fields_set


def test_the_service_gets_a_small_config_from_the_runtime_not_the_settings(tmp_path: Path) -> None:
    import ast

    from posthog_customerio.runtime import Runtime

    from ..helpers import make_settings

    settings = make_settings(
        tmp_path / "data",
        webhook_token="hook-token",
        max_queue=7,
        cors_origins="https://a.example,https://b.example",
        customerio_timeout_s=3,
        anonymous_hold_s=2,
    )
    with Runtime(settings) as runtime:
        config = runtime.service_config()
    assert (config.max_queue, config.cors_origins, config.stall_after_s) == (
        7,
        ["https://a.example", "https://b.example"],
        3,  # CUSTOMERIO_TIMEOUT_S: held anonymous events do not count as waiting work
    )
    # OPS_TOKEN unset: the operations token is the webhook token; secrets stay out of the repr
    assert config.ops_token.get_secret_value() == config.webhook_token.get_secret_value() == "hook-token"
    assert "hook-token" not in repr(config)
    # no module of the service imports Settings: what it reads comes through ServiceConfig
    service_dir = Path(__file__).resolve().parents[2] / "src" / "posthog_customerio" / "service"
    for module in service_dir.glob("*.py"):
        names = {
            alias.name
            for node in ast.walk(ast.parse(module.read_text()))
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
        }
        assert "Settings" not in names, module.name
