"""posthog-customerio: keep a Customer.io workspace in sync with a PostHog project."""

__version__ = "0.1.0"
