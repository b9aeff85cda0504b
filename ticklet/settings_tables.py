"""``ticklet config``: the settings as Markdown tables, the defaults and what a run would use.

The defaults (:func:`settings_table`) are the configuration reference; what
a run would use is :func:`config_table`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

from dataflows.settings import Settings
from sources.input_config import SAMPLE_DIR

__all__ = ["config_table", "settings_table"]


def _leaves(model: type[BaseModel], prefix: str) -> Iterator[tuple[str, Any, str]]:
    for name, f in model.model_fields.items():
        ann = f.annotation
        env = f"{prefix}{name.upper()}"
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            yield from _leaves(ann, env + "__")
        else:
            default = f.get_default(call_default_factory=True)
            yield env, default, f.description or ""


def _values(obj: BaseModel, prefix: str) -> Iterator[tuple[str, Any, str]]:
    for name, f in type(obj).model_fields.items():
        value, env = getattr(obj, name), f"{prefix}{name.upper()}"
        if isinstance(value, BaseModel):
            yield from _values(value, env + "__")
        else:
            yield env, value, f.description or ""


def _shown(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return json.dumps([str(x) if isinstance(x, Path) else x for x in value])
    if value is None:
        return "(unset)"
    return str(value)


def settings_table() -> str:
    """The configuration reference as a Markdown table of the defaults (``ticklet config --defaults``).

    The docs' settings page shows the same table.

    >>> print(settings_table().splitlines()[4][:61])
    | `TICKLET_INPUT__MARKET` | `(unset)` | Force the market of e
    """
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for env, default, desc in _leaves(Settings, "TICKLET_"):
        shown = _shown(default)
        if str(SAMPLE_DIR) in shown:
            shown = shown.replace(str(SAMPLE_DIR), "data/sample")
        rows.append(f"| `{env}` | `{shown}` | {desc} |")
    return "\n".join(rows) + "\n"


def config_table(settings: Settings) -> str:
    """What a run would use (``ticklet config``), as a Markdown table.

    Every setting's effective value and where it comes from
    (``environment``, ``.env`` or ``default``). Secrets show as
    ``**********``.

    >>> print(config_table(Settings()).splitlines()[2][:48])
    | `TICKLET_INPUT__SOURCE` | `replay` | default |
    """
    from pydantic_settings import DotEnvSettingsSource, EnvSettingsSource

    environ, dotenv = EnvSettingsSource(Settings)(), DotEnvSettingsSource(Settings)()  # what each one sets

    def sets(data: Any, path: list[str]) -> bool:
        for name in path:
            if not isinstance(data, dict) or name not in data:
                return False
            data = data[name]
        return True

    rows = ["| variable | value | from | meaning |", "|---|---|---|---|"]
    for env, value, desc in _values(settings, "TICKLET_"):
        path = env[8:].lower().split("__")
        origin = "environment" if sets(environ, path) else ".env" if sets(dotenv, path) else "default"
        shown = ("**********" if value.get_secret_value() else "") if isinstance(value, SecretStr) else _shown(value)
        rows.append(f"| `{env}` | `{shown}` | {origin} | {desc} |")
    return "\n".join(rows) + "\n"
