"""The input connectors, third floor: Binance messages, the Kafka wire format, files, archives and Kafka.

Pure conversions (Binance's messages, ticklet's wire format for raw ticks)
beside the I/O around them (recordings and archives read or downloaded, the
ticks topic), the input settings and the reading of model bundles. Beside
:mod:`sinks` on its floor, it imports neither it nor anything above.
"""
