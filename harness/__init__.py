"""The harness that the tests and the benchmarks share: where the real data
is and how to read it (:mod:`harness.realdata`), a Kafka broker for a session
(:mod:`harness.kafka_broker`, :mod:`harness.kafkautil`), ``ticklet serve`` in a
process of its own (:mod:`harness.serveutil`) and a local Binance look-alike
(:mod:`harness.binance_server`).

Development only: it is no part of ticklet (not installed, and no package of
ticklet imports it: an import-linter contract). ``tests/`` and
``benchmarks/`` import it from the checkout; a benchmark imports nothing of
``tests/``.
"""
