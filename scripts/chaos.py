#!/usr/bin/env python3
"""The chaos run from the command line: worker SIGKILLs, a Redis SIGKILL and restart and a
SIGTERM while photos are uploaded; exit 0 only when no accepted job was lost.

The harness lives with the tests (tests/chaos/, whose docstring says what is checked);
tests/test_chaos.py runs its short version. Prints one summary line on stdout.

    python -m scripts.chaos --short
    python -m scripts.chaos --redis-kill unfriendly --appendfsync always
    python -m scripts.chaos --help
"""
from __future__ import annotations

import sys

from tests.chaos.run import main

if __name__ == "__main__":
    sys.exit(main())
