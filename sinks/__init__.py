"""The output connectors, third floor: files, Kafka, InfluxDB, the run report and model bundles.

Pure conversions of records (file rows, Kafka JSON, InfluxDB points, the
end-of-run summary) beside the I/O around them (files, Kafka, InfluxDB, raw
capture, the report on stderr), the outputs' settings and the writing of
model bundles. Beside :mod:`sources` on its floor, it imports neither it nor
anything above.
"""
