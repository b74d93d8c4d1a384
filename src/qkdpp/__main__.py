"""``python -m qkdpp`` runs the command-line interface."""

from qkdpp.cli import main

raise SystemExit(main())
