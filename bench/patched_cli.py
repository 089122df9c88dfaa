"""``posthog-customerio`` with the what-if patches of bench/patches.py applied first.

    BENCH_PATCHES=claim-scan,depth python bench/patched_cli.py send FILE --json

The benchmark scripts use it instead of the installed command when ``BENCH_PATCHES``
is set (see _common.cli_command). Not for production use.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import patches  # noqa: E402

patches.apply(os.environ.get("BENCH_PATCHES", ""))

from posthog_customerio.cli import main  # noqa: E402

if __name__ == "__main__":
    main()
