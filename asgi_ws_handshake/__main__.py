"""``python -m asgi_ws_handshake``: the same as the ``asgi-ws-handshake`` command."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
