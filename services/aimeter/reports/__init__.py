"""Every report the ledger answers, and the one home of their SQL.

``sql.py`` builds every spend figure (``aimeter spend``, ``aimeter chargeback``, the HTML report and the spend
and chargeback dashboards) from one aggregation, so they agree to the last digit; each reader chooses how the
window and filters are spelled (bound parameters for the CLI, the Grafana plugin's macros for panels).

Map of the folder:

* ``sql.py``: the spend / chargeback builder (measures, windows, filters, groupings); it reads the exact
  hourly rollups for clean hours and raw rows with ``FINAL`` for the rest.
* ``rollup.py``: the exact hourly rollups (issue 17): how readers split a window between rollup and raw rows,
  the rollup job, and why the answer equals ``FINAL`` over raw rows at every moment.
* ``terms.py``: SQL terms every report spells the same way (typed zeros, "no cost" statuses).
* ``queries.py``: ledger SQL beside the spend figures: re-rating pages, counts, corrections, self-hosted use.
* ``panels.py``, ``panels_ops.py``, ``panels_books.py``: the SQL of every Grafana panel (spend and
  chargeback, gateway operations, provider books), in the ClickHouse datasource plugin's dialect.
* ``chargeback.py``: ``aimeter chargeback`` (table, csv, json), ``chargeback_html.py`` + ``chargeback_svg.py``
  its self-contained HTML report; ``clean_first.py`` runs its queries without planning the raw GPU tail when the
  month is all rolled up (and the ordinary way when it is not).
* ``reconcile.py``: ``aimeter reconcile``: gateway-emitted counts per hour against the ledger.
* ``format.py``: report periods (``24h``, ISO) and the one spelling of amounts (``amount``, ``decimal_text``)
  for tables, CSV and JSON.

Everything here except the ``cmd_*`` entry points is pure: SQL is text plus bound parameters.
"""
