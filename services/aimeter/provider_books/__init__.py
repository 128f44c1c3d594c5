"""Reconcile the ledger with the providers' own books (issue 19).

Pure core: ``books`` (the shared row shape), ``openai_books`` / ``anthropic_books`` (query parameters and the
documented response shapes, parsed into rows), ``compare`` (drift per bucket x model x scope and its
classification), ``ledger`` (the SQL that reads the same figures from ClickHouse). Adapters: ``fetch`` (HTTP with
paging and rate-limit backoff), ``store`` (the ``provider_reconciliation`` table) and ``cli``.
"""
