"""The ai-meter dashboards: AI spend overview, Chargeback, Gateway operations on ClickHouse (pure), and Gateway
health on Prometheus (grafana/prometheus.py).

Kept as code rather than hand-written JSON because the spend panels share their SQL with
``aimeter chargeback`` (one builder, so the numbers agree) and because ids and grid positions are
computed. ``aimeter dashboards build`` writes them to dashboards/json/, which Grafana provisions.
"""

from __future__ import annotations

from aimeter.grafana.model import (
    Dashboard,
    Json,
    Panel,
    custom_variable,
    money,
    money_columns,
    query_variable,
    series_by_label,
    stat_options,
)
from aimeter.grafana.prometheus import gateway_health
from aimeter.reports import budget_use, panels, panels_books, panels_ops

USED_PCT = {"matcher": {"id": "byName", "options": "used_pct"},
            "properties": [{"id": "unit", "value": "percent"}, {"id": "decimals", "value": 1}]}
RED_WHEN_ANY = {"mode": "absolute", "steps": [{"color": "green", "value": None}, {"color": "red", "value": 1}]}


def variables(*extra: Json) -> list[Json]:
    """team, project, backend and model from the data in range; deployment is one of two values."""
    found = [query_variable(d, d.capitalize(), panels.variable_values(d))
             for d in ("team", "project", "backend", "model")]
    return [*extra, *found, custom_variable("deployment", "Deployment", ["proprietary", "self_hosted"], multi=True)]


def spend_overview() -> Dashboard:
    counts, dollars = money_columns()
    over_time = [Panel("timeseries", f"Spend over time by {key}", panels.spend_over_time(key),
                       f"Fully loaded spend per interval, stacked by {key} (self-hosted GPU hours billed by the hour).",
                       width=8, time_series=True, fields=series_by_label(key)) for key in ("team", "model", "backend")]
    shown = [
        Panel("stat", "Total spend", panels.spend(["loaded_cost_usd", "cost_usd"]),
              "Fully loaded (paid APIs + whole GPU hours, idle included) and marginal (what each request was "
              "charged) spend in the range.", width=6, height=5, fields=money(),
              options=stat_options("loaded_cost_usd", "cost_usd")),
        Panel("piechart", "Proprietary vs self-hosted", panels.deployment_split(),
              "Fully loaded spend: paid APIs versus the allocated cost of our GPUs.", width=6, height=5,
              fields=money(), options={"reduceOptions": {"values": True, "calcs": [], "fields": "/loaded_cost_usd/"},
                                       "pieType": "donut", "displayLabels": ["name", "percent"]}),
        Panel("stat", "Cache-read savings", panels.cache_read_savings(),
              "What prompt-cache reads saved on paid APIs versus the same tokens at the request's uncached input "
              "rate (requests without uncached input are left out, so this is a floor).", width=6, height=5,
              fields=money(), options=stat_options("cache_read_savings_usd")),
        Panel("stat", "Unpriced requests", panels.unpriced_count(),
              "Requests whose model has no price: their cost is unknown, never counted as zero.", width=6, height=5,
              fields={"thresholds": RED_WHEN_ANY, "color": {"mode": "thresholds"}},
              options=stat_options("unpriced_requests")),
        *over_time,
        Panel("barchart", "$ per 1M tokens by model", panels.usd_per_million_by_model(),
              "Marginal cost per million input + output tokens of priced requests.", width=8,
              fields={"unit": "currencyUSD", "decimals": 4}, options={"xField": "model", "orientation": "horizontal"}),
        Panel("table", "Top virtual keys", panels.top_by("api_key_id", "api_key_id"),
              "The ten gateway keys with the highest marginal spend.", width=8, fields=counts, overrides=dollars),
        Panel("table", "Top users", panels.top_by("user", "user"),
              "The ten users with the highest marginal spend.", width=8, fields=counts, overrides=dollars),
        Panel("table", "Self-hosted savings vs reference", panels.savings_by_backend(),
              "Per self-hosted backend: what its tokens would have cost on the paid model it names, its fully "
              "loaded GPU cost (idle hours included) and the difference.", width=12, fields=money()),
        Panel("table", "Unpriced requests by model", panels.unpriced_by_model(),
              "Which models lack a price (add them to the price overrides file).", width=12),
        Panel("table", "Metered vs billed per provider per day", panels_books.metered_vs_billed(),
              "What the gateway metered against what the provider's own cost report billed, per day, from the "
              "last `aimeter reconcile --provider` run; rows beyond tolerance say where the drift is.",
              width=24, fields=counts, overrides=dollars),
        Panel("table", "Budget use per scope", budget_use.budget_use_panel(panels.VARIABLE_FILTERS),
              "Each configured budget (key, team, project or user) against its priced spend in the budget's period "
              "that contains the end of the range (its current period when the range ends now), in its own "
              "timezone. Unpriced requests add nothing to a budget and are counted beside it. Soft budgets alert "
              "at their thresholds (`aimeter alerts`); hard ones refuse at the gateway.",
              width=24, fields=counts, overrides=(*dollars, USED_PCT)),
    ]
    return Dashboard("aimeter-spend", "AI spend overview",
                     "What the teams spend on AI: paid APIs and self-hosted models, marginal and fully loaded.",
                     shown, variables())


def chargeback() -> Dashboard:
    counts, dollars = money_columns()
    group_by = custom_variable("group_by", "Group by", ["team", "project"], multi=False)
    shown = [
        Panel("stat", "Total for the period", panels.chargeback_total(),
              "The grand total of the table below: what `aimeter chargeback` prints as TOTAL.", width=24, height=5,
              fields=counts, overrides=dollars,
              options=stat_options("loaded_cost_usd", "cost_usd", "self_hosted_cost_usd", "savings_usd", "requests",
                                   "unpriced_requests")),
        Panel("table", "Chargeback by month", panels.chargeback_table(),
              "Month x ${group_by}: token classes, marginal and fully loaded cost, the paid / self-hosted split, "
              "savings versus reference and unpriced requests. Idle GPU capacity is the row 'idle'.",
              width=24, height=12, fields=counts, overrides=dollars),
        Panel("table", "Idle self-hosted capacity", panels.idle_capacity(),
              "GPU hours nobody used, per month and backend, beside the backend's whole GPU cost.",
              width=24, height=6, fields=money()),
    ]
    return Dashboard("aimeter-chargeback", "Chargeback",
                     "Monthly chargeback per team or project, the same numbers as `aimeter chargeback`.",
                     shown, variables(group_by), time_from="now/M", time_to="now/M")


def gateway_operations() -> Dashboard:
    def series(title: str, query: str, unit: str, text: str) -> Panel:
        return Panel("timeseries", title, query, text, width=12, time_series=True, fields={"unit": unit})

    shown = [
        series("Requests/s", panels_ops.requests_per_second(), "reqps", "Upstream attempts per second."),
        series("Error rate by status", panels_ops.error_rate_by_status(), "percentunit",
               "Share of attempts per non-ok status (upstream_error, timeout, client_cancelled, …)."),
        series("Latency p50 / p95 / p99", panels_ops.latency(), "ms", "Request start to end, successful attempts."),
        series("Time to first token (streams)", panels_ops.time_to_first_token(), "ms",
               "Request start to the first streamed token."),
        series("Tokens/s", panels_ops.tokens_per_second(), "short", "Input and output tokens per second."),
        series("Pipeline lag", panels_ops.pipeline_lag(), "s",
               "From a request's end at the gateway to its row in ClickHouse (Kafka, pricer, insert)."),
        Panel("table", "Attempts by status", panels_ops.status_breakdown(),
              "Every attempt, by outcome and HTTP status.", width=24, height=6),
    ]
    return Dashboard("aimeter-gateway-ops", "Gateway operations",
                     "Throughput, errors, latency and metering pipeline lag, from the usage ledger.",
                     shown, variables(), time_from="now-6h")


def all_dashboards() -> list[Dashboard]:
    return [spend_overview(), chargeback(), gateway_operations(), gateway_health()]
