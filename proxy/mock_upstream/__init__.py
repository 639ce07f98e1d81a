"""A faithful fake of the Mistral API for offline demos, tests and benchmarks.

Start it with ``mistral-sidecar mock-upstream`` or, in tests, serve
:func:`create_mock_app` with pytest-aiohttp's ``aiohttp_server``. The real ``mistralai``
SDK works against it unchanged. Faults, settings and the request log are driven through
the unauthenticated control API under ``/__mock__`` (see :mod:`.control`).
"""

from .app import create_mock_app, run_mock
from .config import MockConfig, add_arguments, config_from_args

__all__ = ["MockConfig", "add_arguments", "config_from_args", "create_mock_app", "run_mock"]
