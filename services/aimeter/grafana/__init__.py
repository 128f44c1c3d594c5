"""Grafana dashboards as code, and pushing them to a Grafana.

``model.py`` (typed dashboard pieces) and ``dashboards.py`` build the ClickHouse dashboards from the panel
SQL in :mod:`aimeter.reports`; ``prometheus.py`` builds the Gateway health dashboard on the metrics;
``build.py`` writes or checks ``dashboards/json/``; ``push.py`` creates the folder, datasources and
dashboards over Grafana's HTTP API; ``cli.py`` holds the commands; ``macros.py`` expands Grafana's SQL
macros the way the ClickHouse datasource plugin does, so tests run each panel's SQL.
"""
