"""``python -m server`` is the ``inferd`` command."""

from server.cli.main import main

raise SystemExit(main())
