"""`python -m posthog_customerio` = the `posthog-customerio` command."""

from .cli import main

main()
