"""ticklet: the record types (``events``) and Prometheus metrics (``telemetry``)
at the bottom of the layers, the settings, CLI, live collector and Kafka
publisher at the top (see the README's design section).

This file imports nothing: ``ticklet.events`` is imported by every layer, and
an import here would run first (``tests/test_layers.py`` checks it).
"""
