"""What Grafana and the ClickHouse datasource plugin do to a panel's SQL before ClickHouse sees it (pure).

Dashboards are tested by running every panel's SQL on the real engine, so the SQL must first be
expanded exactly as in production. Three passes, in the plugin's order (grafana-clickhouse-datasource
4.20: ``CHDatasource.applyTemplateVariables`` in the browser, then ``pkg/macros`` in the backend):

1. ``$__conditionalAll(condition, $var)``: the condition, or ``1=1`` when ``$var`` is All or empty.
   Calls are found from the last one backwards; arguments are split on commas at parenthesis depth
   one (quotes are *not* respected, as in the plugin), and the call's exact text is replaced.
2. Grafana template variables (``$var``, ``${var}``, ``${var:format}``, ``[[var]]``). Without an
   explicit format the plugin's formatter applies: a multi-value variable becomes ``'a','b'``, a
   single value is inserted as is. Unknown names (``$__timeFilter``…) are left alone.
3. Backend macros (the plugin's ``pkg/macros`` on grafana/macropro, comment styles LineComment |
   BlockComment | BackslashEscape): first every ``--`` comment (to the end of the line) and ``/* */`` comment is
   blanked to spaces, where a comment start is anything outside a '…' or "…" literal (doubled quotes and
   backslash escapes respected) - so ``--`` inside backticks or a ``$tag$`` block starts a comment too. Then every
   ``$__name`` is expanded wherever it stands, string literals included: ``$__timeFilter(col)`` ->
   ``col >= toDateTime(<from s>) AND col <= toDateTime(<to s>)``, ``$__timeFilter_ms``, ``$__fromTime(_ms)``,
   ``$__toTime(_ms)``, ``$__timeInterval(_ms)(col)``, ``$__interval_s``, ``$__dateFilter``,
   ``$__dateTimeFilter``/``$__dt``, ``$__timeFrom``, ``$__timeTo``, ``$__timeGroup``. Arguments are split at
   top-level commas outside quotes, trimmed and expanded first (macros nest); an unknown macro is left as
   written; a wrong argument count is an error. Seconds are truncated (``time.Unix()``), so ``$__timeFilter``
   drops the last partial second of a range: money panels use the ``_ms`` forms. (macropro replaces macro by
   macro, longest name first; this expander goes left to right: the same text for any query these dashboards
   hold.)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

ALL = "$__all"
CONDITIONAL_ALL = "$__conditionalAll("


class MacroError(ValueError):
    """A macro call the plugin would reject (wrong number of arguments, bad interval)."""


@dataclass(frozen=True)
class Variable:
    """A template variable as the dashboard holds it: its current value and, for All, every option."""

    name: str
    current: str | tuple[str, ...]
    options: tuple[str, ...] = ()
    all_value: str | None = None

    @property
    def is_all(self) -> bool:
        return self.current == ALL or (isinstance(self.current, tuple) and ALL in self.current)


@dataclass(frozen=True)
class QueryContext:
    """The panel's time range and interval (what Grafana sends with the query) and the variables."""

    time_from: datetime
    time_to: datetime
    interval: timedelta
    variables: Mapping[str, Variable] = field(default_factory=dict)


def expand(sql: str, ctx: QueryContext) -> str:
    """The SQL ClickHouse receives for this panel query."""
    sql = apply_conditional_all(sql, ctx.variables)
    sql = interpolate_variables(sql, ctx.variables)
    return interpolate_macros(sql, ctx)


# --- 1. $__conditionalAll (frontend) ---------------------------------------------------------------------------

def _js_macro_args(text: str, open_index: int) -> list[str]:
    """The plugin's getMacroArgs: split at commas of depth one, up to the matching ')'; [] if unbalanced."""
    args: list[str] = []
    depth, last = 0, open_index + 1
    for match in re.finditer(r"[(),]", text[open_index:]):
        i = open_index + match.start()
        depth += {"(": 1, ")": -1}.get(match.group(), 0)
        if match.group() == "," and depth == 1:
            args.append(text[last:i])
            last = i + 1
        if depth == 0:
            args.append(text[last:i])
            return args
    return []


def _js_replacement(phrase: str, matched: str, before: str, after: str) -> str:
    """String.prototype.replace with a string pattern expands $$, $&, $` and $' in the replacement."""
    subs = {"$$": "$", "$&": matched, "$`": before, "$'": after}
    return re.sub(r"\$[$&`']", lambda m: subs[m.group()], phrase)


def _selects_all(variable: Variable | None) -> bool:
    if variable is None:
        return False
    value = variable.current if isinstance(variable.current, str) else ",".join(variable.current)
    return value in {"", ALL}


def apply_conditional_all(sql: str, variables: Mapping[str, Variable]) -> str:
    index = sql.rfind(CONDITIONAL_ALL)
    while index != -1:
        args = _js_macro_args(sql, index + len(CONDITIONAL_ALL) - 1)
        if len(args) != 2:
            return sql
        name = re.search(r"(?<=\$\{)\w+(?=\})|(?<=\$)\w+", args[1].strip())
        phrase = args[0]
        if name and _selects_all(variables.get(name.group())):
            phrase = "1=1"
        call = f"{CONDITIONAL_ALL}{args[0]},{args[1]})"
        at = sql.index(call)
        sql = sql[:at] + _js_replacement(phrase, call, sql[:at], sql[at + len(call):]) + sql[at + len(call):]
        index = sql.rfind(CONDITIONAL_ALL)
    return sql


# --- 2. Grafana template variables (frontend) ------------------------------------------------------------------

_VARIABLE = re.compile(r"\$(\w+)|\[\[(\w+?)(?::(\w+))?\]\]|\$\{(\w+)(?:\.([^:^}]+))?(?::([^}]+))?\}")


def _plugin_format(value: str | tuple[str, ...]) -> str:
    return "'" + "','".join(value) + "'" if isinstance(value, tuple) else value


def _format(value: str | tuple[str, ...], fmt: str | None) -> str:
    values = value if isinstance(value, tuple) else (value,)
    formats: dict[str, Callable[[], str]] = {
        "raw": lambda: ",".join(values),
        "csv": lambda: ",".join(values),
        "pipe": lambda: "|".join(values),
        "singlequote": lambda: ",".join("'" + v.replace("'", "\\'") + "'" for v in values),
        "doublequote": lambda: ",".join('"' + v.replace('"', '\\"') + '"' for v in values),
        "sqlstring": lambda: ",".join("'" + v.replace("'", "''") + "'" for v in values),
    }
    if fmt is None:
        return _plugin_format(value)
    if fmt not in formats:
        raise MacroError(f"variable format {fmt!r} is not supported by this expander")
    return formats[fmt]()


def _value(variable: Variable) -> str | tuple[str, ...]:
    """The current value; All without a custom All value stands for every option."""
    return variable.options if variable.is_all else variable.current


def interpolate_variables(sql: str, variables: Mapping[str, Variable]) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(4)
        fmt = match.group(3) or match.group(6)
        variable = variables.get(name)
        if variable is None:
            return match.group(0)
        if variable.is_all and variable.all_value is not None:
            return variable.all_value  # a custom All value is inserted verbatim, as Grafana does
        return _format(_value(variable), fmt)

    return _VARIABLE.sub(replace, sql)


# --- 3. backend macros ----------------------------------------------------------------------------------------

def _seconds(t: datetime) -> int:
    return int(t.timestamp() // 1)


def _millis(t: datetime) -> int:
    return (t - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def _date(t: datetime) -> str:
    return f"toDate('{t.astimezone(UTC):%Y-%m-%d}')"


def _between(col: str, lo: str, hi: str) -> str:
    return f"{col} >= {lo} AND {col} <= {hi}"


_GO_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)")
_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}


def _time_group(args: Sequence[str]) -> str:
    period = args[1].strip().strip("'\"")
    parts = _GO_DURATION.findall(period)
    if not parts or "".join(n + u for n, u in parts) != period:
        raise MacroError(f"$__timeGroup: invalid interval {period!r}")
    seconds = round(sum(float(n) * _GO_UNITS[u] for n, u in parts))
    if seconds <= 0:
        raise MacroError(f"$__timeGroup: interval must be positive, got {period!r}")
    return f"toStartOfInterval(toDateTime({args[0].strip()}), INTERVAL {seconds} second)"


MacroFn = Callable[[QueryContext, Sequence[str]], str]


def _macros() -> dict[str, tuple[int, MacroFn]]:
    """name -> (number of arguments, expansion), as registered in the plugin's ClickHouseMacros."""
    s = lambda c: f"toDateTime({_seconds(c)})"  # noqa: E731 - table of one-liners
    ms = lambda c: f"fromUnixTimestamp64Milli({_millis(c)})"  # noqa: E731
    interval_s = lambda x: int(max(x.interval.total_seconds(), 1))  # noqa: E731
    return {
        "fromTime": (0, lambda x, _a: s(x.time_from)),
        "toTime": (0, lambda x, _a: s(x.time_to)),
        "fromTime_ms": (0, lambda x, _a: ms(x.time_from)),
        "toTime_ms": (0, lambda x, _a: ms(x.time_to)),
        "interval_s": (0, lambda x, _a: str(interval_s(x))),
        "timeFilter": (1, lambda x, a: _between(a[0], s(x.time_from), s(x.time_to))),
        "timeFilter_ms": (1, lambda x, a: _between(a[0], ms(x.time_from), ms(x.time_to))),
        "timeFrom": (1, lambda x, a: f"{a[0]} >= {s(x.time_from)}"),
        "timeTo": (1, lambda x, a: f"{a[0]} <= {s(x.time_to)}"),
        "dateFilter": (1, lambda x, a: _between(a[0], _date(x.time_from), _date(x.time_to))),
        "dateTimeFilter": (2, lambda x, a: f"({_between(a[0], _date(x.time_from), _date(x.time_to))}) AND "
                                           f"({_between(a[1], s(x.time_from), s(x.time_to))})"),
        "timeInterval": (1, lambda x, a: f"toStartOfInterval(toDateTime({a[0]}), INTERVAL {interval_s(x)} second)"),
        "timeInterval_ms": (1, lambda x, a: f"toStartOfInterval(toDateTime64({a[0]}, 3), INTERVAL "
                                            f"{max(x.interval // timedelta(milliseconds=1), 1)} millisecond)"),
        "timeGroup": (2, lambda _x, a: _time_group(a)),
    }


MACROS = _macros()
MACROS["dt"] = MACROS["dateTimeFilter"]


_MACRO = re.compile(r"\$__(\w+)")


def _quoted_end(sql: str, i: int) -> int:
    """Index past the '…' or "…" literal opening at ``i``: backslash escapes and doubled quotes."""
    quote, j = sql[i], i + 1
    while j < len(sql):
        if sql[j] == "\\" or sql[j:j + 2] == quote * 2:  # an escaped or a doubled quote
            j += 2
        elif sql[j] == quote:
            return j + 1
        else:
            j += 1
    return len(sql)


def strip_comments(sql: str) -> str:
    """The plugin's comment pass: comments become spaces of the same length; only '…' and "…" protect text."""
    out, i = [], 0
    while i < len(sql):
        if sql[i] in "'\"":
            end = _quoted_end(sql, i)
            out.append(sql[i:end])
        elif sql.startswith("--", i):
            end = min((k for k in (sql.find("\n", i), sql.find("\r", i)) if k != -1), default=len(sql))
            out.append(" " * (end - i))
        elif sql.startswith("/*", i):
            close = sql.find("*/", i + 2)
            end = len(sql) if close == -1 else close + 2  # an unterminated comment runs to the end
            out.append(" " * (end - i))
        else:
            end = i + 1
            out.append(sql[i])
        i = end
    return "".join(out)


def _call_args(sql: str, open_index: int) -> tuple[list[str], int]:
    """Arguments of the call whose '(' is at ``open_index`` (split at top-level commas), and the index past ')'."""
    depth, start, args, i = 0, open_index + 1, [], open_index
    while i < len(sql):
        if sql[i] in "'\"":
            i = _quoted_end(sql, i)
            continue
        if sql[i] == "(":
            depth += 1
        elif sql[i] == ")":
            depth -= 1
            if depth == 0:
                args.append(sql[start:i])
                return ([] if args == [""] else args), i + 1
        elif sql[i] == "," and depth == 1:
            args.append(sql[start:i])
            start = i + 1
        i += 1
    raise MacroError(f"unbalanced parentheses after {sql[max(0, open_index - 20):open_index]!r}")


def _expand_call(sql: str, match: re.Match[str], ctx: QueryContext) -> tuple[str, int]:
    name = match.group(1)
    arity, fn = MACROS[name]
    if arity == 0:
        return fn(ctx, []), match.end()
    if not sql.startswith("(", match.end()):
        raise MacroError(f"$__{name} expected {arity} argument(s), received 0")
    raw, end = _call_args(sql, match.end())
    if len(raw) != arity:
        raise MacroError(f"$__{name} expected {arity} argument(s), received {len(raw)}")
    return fn(ctx, [_expand_all(a.strip(), ctx) for a in raw]), end


def interpolate_macros(sql: str, ctx: QueryContext) -> str:
    """The backend pass; an unknown ``$__name`` is left as written, as the plugin does."""
    return _expand_all(strip_comments(sql), ctx)


def _expand_all(sql: str, ctx: QueryContext) -> str:
    out, i = [], 0
    while (match := _MACRO.search(sql, i)) is not None:
        out.append(sql[i:match.start()])
        if match.group(1) in MACROS:
            text, i = _expand_call(sql, match, ctx)
            out.append(text)
        else:
            out.append(match.group())
            i = match.end()
    out.append(sql[i:])
    return "".join(out)
