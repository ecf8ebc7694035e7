"""Finding the user's app from a `module:attribute` reference."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

from corral.app import App
from corral.config import AppConfig
from corral.errors import ConfigError, UsageError


def load_app(ref: str, config: AppConfig) -> App:
    """Import `module:attr`; `attr` is an `App` or a factory `(AppConfig) -> App`.

    Raises:
        UsageError: the reference is malformed, the module or attribute is missing.
    """
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise UsageError(f"--app must look like package.module:attribute, got {ref!r}")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise UsageError(f"cannot import {module_name!r} for --app ({exc})") from exc
    target = getattr(module, attr, None)
    if target is None:
        raise UsageError(f"module {module_name!r} has no attribute {attr!r}")
    if isinstance(target, App):
        return target
    if callable(target):
        app = target(config)
        if isinstance(app, App):
            return app
    raise ConfigError(f"{ref} is neither a corral App nor a function returning one", key="app")
