"""``consume``: read PostHog events from a Kafka topic (self-hosted PostHog) and deliver them."""

from __future__ import annotations

import threading
from typing import Annotated, Any

import typer

from ..config import (
    CUSTOMERIO,
    DELIVERY,
    IDENTITY,
    KAFKA,
    MAPPING,
    PACING,
    SERVICE,
    STORE,
    ConfigError,
    Settings,
    require_extra,
)
from ..runtime import DeliveryLockError, Runtime
from .lifecycle import EXIT_FAILED, EXIT_OK, exits, fail, removed, stop_on_signals
from .options import Sandbox, SettingFlags, sandbox_data_dir, setting_options
from .render import consume_text, show, show_json


@setting_options(CUSTOMERIO, IDENTITY, MAPPING, PACING, DELIVERY, STORE, SERVICE, KAFKA, plugin_config=True)
def consume(
    flags: SettingFlags,
    kafka_config: Annotated[
        list[str] | None,
        typer.Option(
            "--kafka-config",
            help="librdkafka setting KEY=VALUE, repeatable (e.g. security.protocol=SASL_SSL)",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Messages per outbox transaction and offset commit")
    ] = 500,
    max_messages: Annotated[
        int | None,
        typer.Option(
            "--max-messages", min=1, help="Stop after this many messages (backfills, tests)", show_default=False
        ),
    ] = None,
    sandbox: Sandbox = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON")] = False,
) -> None:
    """Read PostHog events from a Kafka topic (self-hosted PostHog) and deliver them.

    Works with Apache Kafka, Redpanda and other Kafka-compatible brokers. Offsets are
    committed only after the events are in the outbox (at least once; dedupe ids make
    replays harmless). Runs until SIGTERM/SIGINT (or --max-messages), then delivers for
    SHUTDOWN_GRACE_S and keeps the rest queued. Exit 0 after a graceful stop, 1 when
    consuming failed (nothing unstored was committed), 2 for bad configuration.
    """
    from ..logs import configure_logging

    with exits(config=ValueError):  # ConfigError is a ValueError; so are bad Kafka settings
        require_extra("kafka", "consume")
        from ..sources.kafka import load_kafka_config, secret_values

        settings = flags.settings()
        for name, flag in (("kafka_bootstrap_servers", "--kafka-bootstrap"), ("kafka_topic", "--topic")):
            if not getattr(settings, name):
                raise ConfigError(f"{name.upper()} is required ({flag})")
        if not sandbox:
            settings.require_credentials()
        extra = load_kafka_config(kafka_config or (), settings.kafka_config_file)
        settings, throwaway = sandbox_data_dir(sandbox, settings)
    configure_logging(settings.log_format, settings.log_level, [*settings.secret_values(), *secret_values(extra)])
    stop = threading.Event()
    with stop_on_signals(stop), removed(throwaway):
        summary, failure = _consume(settings, sandbox, extra, stop, batch_size, max_messages)
    if as_json:
        show_json(summary)
    else:
        show(consume_text(summary))
    if failure:
        raise fail(failure, EXIT_FAILED)
    raise typer.Exit(EXIT_OK)


def _consume(
    settings: Settings,
    sandbox: bool,
    extra: dict[str, str],
    stop: threading.Event,
    batch_size: int,
    max_messages: int | None,
) -> tuple[dict[str, Any], str | None]:
    """Consume with delivery running; the summary, and why consuming failed (``None`` when it did not)."""
    from ..sources.kafka import KafkaConsumeError
    from ..sources.kafka import consume as consume_topic

    failure, report = None, None
    with (
        exits((DeliveryLockError, "{exc}"), config=ValueError),
        Runtime(settings, sandbox=sandbox, fallback_to_us=True) as runtime,
    ):
        deliverer = runtime.deliverer(pause_on_auth_error=True)
        deliverer.start()
        try:
            report = consume_topic(
                runtime,
                settings.kafka_bootstrap_servers or "",
                settings.kafka_topic or "",
                settings.kafka_group_id,
                batch_size=batch_size,
                stop=stop,
                max_messages=max_messages,
                config=extra,
            )
        except KafkaConsumeError as exc:
            failure = str(exc)
        if max_messages is not None:  # a bounded run (like send): nothing more comes to adopt what is held
            runtime.outbox.input_finished()
        # stopped by a signal: what is still held stays queued for the next start (which may adopt it)
        deliverer.wait_until_drained(settings.shutdown_grace_s)
        summary = {
            **(report.as_dict() if report else {}),
            "operations_delivered": deliverer.stats.delivered,
            "queued": runtime.outbox.depth(),
            "error": failure,
        }
    return summary, failure
