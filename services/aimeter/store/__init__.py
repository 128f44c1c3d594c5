"""ClickHouse: client factory, migrations, and the embedded engine's read-only query endpoint.

``client.py`` builds a client for ``chdb://path`` (embedded) or ``http(s)://`` (a server);
``migrations.py`` applies ``schemas/clickhouse/NNNN_*.sql`` in order. The query endpoint lets other
processes read the embedded store its owner (the pricer) holds: ``query_server.py`` serves it,
``query_auth.py`` decides who may ask, ``query_gate.py`` and ``readonly.py`` decide what may be asked,
``query_request.py`` shapes an accepted read for the engine.
"""
