"""ai-meter: open AI usage metering (gateway -> Kafka -> pricer -> ClickHouse -> reports and dashboards).

``events/`` the contract (UsageEvent v1); ``gateway/`` the metering proxy; ``pricer/`` pricing and
ingest; ``store/`` ClickHouse; ``reports/`` every report and its SQL; ``grafana/`` dashboards;
``provider_books/`` reconciliation with the providers' own books; ``local/`` ``aimeter up``;
``fake_upstream/`` the project-owned fake LLM APIs. ``cli.py`` is the ``aimeter`` command, ``settings.py``
the one settings object, ``config.py`` the gateway/backends file.
"""
