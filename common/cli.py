"""The ``fedgaze`` command line."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``fedgaze`` console script."""
    parser = argparse.ArgumentParser(prog="fedgaze")
    parser.parse_args(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
