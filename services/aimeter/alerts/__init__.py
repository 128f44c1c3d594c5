"""Alerts: soft-budget thresholds and a spend-spike rule, posted to a webhook exactly once per threshold per period.

Pure core: :mod:`.rules` (what fires, the webhook payload) and :mod:`.state` (spend per budget window and per
team-hour, de-duplicated by event id, and which alerts are fired or in flight).
Adapters: the ledger read at start (:mod:`.ledger`), the fired-alert log on a compacted Kafka topic
(:mod:`.fired`), the webhook poster (:mod:`.webhook`), the FastStream consumer (:mod:`.app`) and the
``aimeter alerts`` entry point (:mod:`.run`). Off the request path: the gateway never waits for any of it.
"""
