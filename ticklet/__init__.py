"""ticklet's apps, the top floor: the command line, the backtest runner, collector, publisher, report and server.

The command line (``cli``), the backtest runner (``backtest``), the live
collector, the Kafka publisher, the HTML report and ``ticklet serve`` (see
docs/explanation/layers.md).

Nothing in the project imports this package (tests and benchmarks may): the
record types, telemetry and config base types are in :mod:`core`, the
settings in :mod:`dataflows.settings`. This file imports nothing
(``tests/test_layers.py`` checks it).
"""
