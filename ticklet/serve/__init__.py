"""``ticklet serve``: the latest forecasts, metrics and signals over HTTP, a live stream, and a live page.

The live stream is a WebSocket stream of the output topic.

- :mod:`ticklet.serve.state`: pure conversions (record decoding, the bounded
  latest-state store, the resume buffer, stream filters and query checks);
  no server, no Kafka;
- :mod:`ticklet.serve.feed`: the Kafka consumer of the output topic;
- :mod:`ticklet.serve.app`: the ASGI application (FastAPI) and its runner.
"""
