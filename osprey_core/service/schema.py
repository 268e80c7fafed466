"""Print the service's OpenAPI schema, as ``/openapi.json`` publishes it.

``python -m osprey_core.service.schema > docs/openapi.json`` refreshes the committed copy
that ``tests/test_service_openapi.py`` compares with the live schema. The app is built
over a throw-away home: the schema depends on the routes, not on any stored data.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any


def openapi() -> dict[str, Any]:
    from osprey_core.service.app import create_app

    with tempfile.TemporaryDirectory(prefix="osprey-schema-") as home:
        app = create_app(Path(home))
        try:
            return app.openapi()
        finally:
            app.state.osprey_service.osprey.close()


def dumps(schema: dict[str, Any]) -> str:
    """The committed form: sorted keys, two-space indent, a final newline."""
    return json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    sys.stdout.write(dumps(openapi()))
