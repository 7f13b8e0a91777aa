#!/usr/bin/env python3
"""Entry point: ``python run.py`` serves the embedded default (config/gateway.yaml)."""

import sys

from gateway.cli import main

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
