"""SQL of the provider-books panel: what the gateway metered against what the provider billed, per provider and
day, from ``provider_reconciliation`` (written by ``aimeter reconcile --provider``; read with FINAL so the newest
run of a day wins). Pure.

The panel honours the dashboard's filters where they mean something for a provider's bill: deployment (the
books cover proprietary APIs only) and backend (the providers of the chosen backends, from the ledger)."""

from __future__ import annotations


def metered_vs_billed() -> str:
    return """SELECT
    toDate(bucket_start) AS day,
    provider,
    sum(ledger_usd) AS metered_usd,
    sum(provider_usd) AS billed_usd,
    sum(provider_usd) - sum(ledger_usd) AS drift_usd,
    countIf(beyond_tolerance = 1) AS rows_beyond_tolerance
FROM provider_reconciliation FINAL
WHERE kind = 'cost'
  AND $__timeFilter(bucket_start)
  AND $__conditionalAll('proprietary' IN (${deployment:singlequote}), $deployment)
  AND ($__conditionalAll(0, $backend) OR provider IN (
      SELECT DISTINCT provider FROM usage_costs
      WHERE $__timeFilter_ms(started_at) AND $__conditionalAll(backend IN (${backend:singlequote}), $backend)))
GROUP BY day, provider
ORDER BY day, provider"""
