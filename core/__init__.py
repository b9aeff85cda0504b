"""ticklet's foundation, the bottom floor: record types, telemetry, shared statistics, config types, version.

The record types (``events``), the Prometheus metrics (``telemetry``), the
statistics more than one layer uses (``stats``), the config base types and
validators (``config``) and the version (``version``).

Every other package imports from here; nothing here imports any other
package of the project (the import-linter contracts in ``pyproject.toml``
check it). This file imports nothing: ``core.events`` is imported by every
layer, and an import here would run first (``tests/test_layers.py``).
"""
