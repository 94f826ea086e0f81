"""``python -m mapsync``: the same command line as the ``mapsync`` script."""

from mapsync.engine.cli import main

raise SystemExit(main())
