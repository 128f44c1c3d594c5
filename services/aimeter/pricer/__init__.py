"""The pricer: consumes usage events from Kafka, prices them and writes the priced rows to ClickHouse.

Pure pricing (no I/O, no clock): ``pricebook.py`` (the reference PriceBook: an event in, a Decimal cost out),
``listprice.py`` (genai-prices rate cards), ``overrides.py`` (the overrides model; ``overrides_load.py``
parses the file), ``rates.py`` (token classes, per-class components), ``gpu.py`` (self-hosted marginal
cost), ``unitmath.py`` and ``tariff.py`` (the memoized integer fast path), ``rerate.py`` (what a re-rating
changes). Batch decoding: ``fastparse.py`` (msgspec structs from the contract), ``rows.py`` (a batch's
rows, the fast path checked against the reference).

Ingest I/O: ``consumer.py`` (the confluent-kafka loop: poll, write, commit), ``batch_writer.py`` (one batch:
price, dead-letter, insert), ``write.py`` / ``native.py`` (Native-format inserts), ``gpu_periods.py``
(GPU cost history in ClickHouse), ``alerts.py`` (unpriced rows logged), ``metrics.py`` (Prometheus) and
``run.py`` (the process).
"""
