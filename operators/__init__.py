"""The pure logic, second floor: bars, features, the time-travel join, metrics, signals, fills and books.

Each operator is a state dataclass plus ``step(state, event) -> (state,
outputs)``, with its config beside it. It imports no Bytewax, no I/O client
and no metrics (the ``pure`` import contract), so the dataflow (through the
wrappers of :mod:`dataflows.ops`), the tests and the benchmarks run the same
code. It imports only :mod:`models`, on the same floor, and :mod:`core`.
"""
