"""``python -m server`` is the ``inferd`` command."""

from server.cli import main

raise SystemExit(main())
