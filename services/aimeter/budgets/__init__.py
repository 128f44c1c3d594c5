"""Budgets: USD caps per key, team, project or user, enforced at the gateway by reserve-then-settle.

Pure core: :mod:`.model` (what a budget is, its periods) and :mod:`.ledger` (committed, reserved, the check).
Adapters: the gateway hook (:mod:`.gate`), the ledger sync from ClickHouse and the usage topic (:mod:`.sync`),
and the ``aimeter budgets`` commands (:mod:`.cli`).
"""
