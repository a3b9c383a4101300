"""``python -m app.testkit.fake_openai [--port 0] [--reply TEXT] ...``: see ``app.testkit.fake_openai``."""

import sys

from .cli import main

sys.exit(main())
