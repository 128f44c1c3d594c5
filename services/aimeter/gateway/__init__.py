"""The gateway: an HTTP/1.1 proxy in front of the LLM APIs that meters every upstream attempt.

Request path: ``server.py`` (listener, lifespan) with ``server_conn.py`` / ``server_cycle.py`` (one
connection, one request) serves ``app.py``, which routes by the provider registry in ``providers/``
(one unit per API: routes, key, upstream, usage, errors) and forwards with ``proxy.py`` over the upstream
client ``http1.py`` / ``http1_pool.py``. ``keys.py`` checks gateway keys, ``attribution.py`` reads who
pays, ``usage.py`` / ``streams.py`` / ``sse.py`` read usage from whole and streamed answers.

Metering, off the request path: ``event_json.py`` encodes the UsageEvent, ``journal.py`` keeps it on disk
before the answer ends, ``publisher.py`` hands it to Kafka and ``spool.py`` holds what Kafka could not take.
``metrics.py`` (Prometheus) and ``otel.py`` (OpenTelemetry, optional) observe; ``run.py`` starts it all.
"""
