"""``python -m gateway``: the same commands as the ``gateway`` script."""

from gateway.cli import main

raise SystemExit(main())
