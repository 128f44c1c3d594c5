"""The macro expander behaves as grafana-clickhouse-datasource 4.20 does.

Expected strings are the plugin's own documented outputs (docs/sources/query-editor.md, and the
cases in pkg/macros/macros_test.go: trimmed arguments, nested macros, quotes and comments) and the
behaviour of CHDatasource.applyConditionalAll / the plugin's variable formatter.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from aimeter.grafana.macros import ALL, MacroError, QueryContext, Variable, expand, interpolate_macros

FROM = datetime(2014, 11, 12, 11, 45, 26, 123000, tzinfo=UTC)  # 1415792726123 ms
TO = datetime(2015, 11, 12, 11, 45, 26, 456000, tzinfo=UTC)  # 1447328726456 ms
CTX = QueryContext(FROM, TO, timedelta(seconds=20))
S_FILTER = "col >= toDateTime(1415792726) AND col <= toDateTime(1447328726)"


@pytest.mark.parametrize(("sql", "expanded"), [
    ("$__timeFilter(col)", S_FILTER),
    ("$__timeFilter( col )", S_FILTER),  # arguments are trimmed
    ("$__timeFilter_ms(col)", "col >= fromUnixTimestamp64Milli(1415792726123) AND col <= "
                              "fromUnixTimestamp64Milli(1447328726456)"),
    ("$__dateFilter(d)", "d >= toDate('2014-11-12') AND d <= toDate('2015-11-12')"),
    ("$__dt(d, t)", "(d >= toDate('2014-11-12') AND d <= toDate('2015-11-12')) AND "
                    "(t >= toDateTime(1415792726) AND t <= toDateTime(1447328726))"),
    ("$__timeFrom(t) AND $__timeTo(t)", "t >= toDateTime(1415792726) AND t <= toDateTime(1447328726)"),
    ("$__fromTime, $__toTime", "toDateTime(1415792726), toDateTime(1447328726)"),
    ("$__fromTime_ms, $__toTime_ms",
     "fromUnixTimestamp64Milli(1415792726123), fromUnixTimestamp64Milli(1447328726456)"),
    ("$__interval_s", "20"),
    ("$__timeInterval(c)", "toStartOfInterval(toDateTime(c), INTERVAL 20 second)"),
    ("$__timeInterval_ms(c)", "toStartOfInterval(toDateTime64(c, 3), INTERVAL 20000 millisecond)"),
    ("$__timeGroup(c, 5m)", "toStartOfInterval(toDateTime(c), INTERVAL 300 second)"),
    ("$__timeGroup(c, '1h30m')", "toStartOfInterval(toDateTime(c), INTERVAL 5400 second)"),
    # nested: the inner macro is expanded inside the outer one's argument
    ("$__timeInterval($__fromTime)", "toStartOfInterval(toDateTime(toDateTime(1415792726)), INTERVAL 20 second)"),
    ("$__timeFilter(coalesce(c, $__toTime))", "coalesce(c, toDateTime(1447328726)) >= toDateTime(1415792726) AND "
                                              "coalesce(c, toDateTime(1447328726)) <= toDateTime(1447328726)"),
    # comments are blanked to spaces first; '…' and "…" literals (backslash and doubled quotes) protect a `--`
    ("'it\\'s -- fine' and $__fromTime", "'it\\'s -- fine' and toDateTime(1415792726)"),
    ("'it''s' and $__fromTime", "'it''s' and toDateTime(1415792726)"),
    ("x -- $__fromTime\ny", "x " + " " * 14 + "\ny"),
    ("x -- $__fromTime\ry", "x " + " " * 14 + "\ry"),
    ("/* $__fromTime */ $__toTime", " " * 17 + " toDateTime(1447328726)"),
    ("$__toTime /* unterminated $__fromTime", "toDateTime(1447328726) " + " " * 27),
    # ... but backticks and $tag$ blocks do not: a `--` in them starts a comment, as in the plugin
    ("`a--b`, $__toTime", "`a" + " " * 15),
    ("$doc$a--b$doc$ $__toTime", "$doc$a" + " " * 18),
    ("`a` $__toTime", "`a` toDateTime(1447328726)"),
    # macros are expanded inside string literals too (the plugin does not skip them)
    ("'$__fromTime' AND $__toTime", "'toDateTime(1415792726)' AND toDateTime(1447328726)"),
    ("\"$__interval_s\"", '"20"'),
    # quotes protect commas and parentheses in arguments
    ("$__timeFilter(concat('a,(', c))", "concat('a,(', c) >= toDateTime(1415792726) AND "
                                        "concat('a,(', c) <= toDateTime(1447328726)"),
    ("$__notAMacro(x)", "$__notAMacro(x)"),  # unknown macros are left as written
    ("$__fromTimeX", "$__fromTimeX"),  # a name is matched whole
])
def test_backend_macros(sql, expanded):
    assert expand(sql, CTX) == expanded


def test_second_macros_truncate_so_the_last_second_of_a_range_is_lost():
    end = QueryContext(FROM, datetime(2027, 2, 28, 23, 59, 59, 999000, tzinfo=UTC), timedelta(hours=1))
    assert expand("$__toTime", end) == "toDateTime(1803859199)"  # 23:59:59, so 23:59:59.500 fails `<=`
    assert expand("$__toTime_ms", end) == "fromUnixTimestamp64Milli(1803859199999)"


def test_interval_is_at_least_one_second():
    assert expand("$__interval_s", QueryContext(FROM, TO, timedelta(milliseconds=200))) == "1"


@pytest.mark.parametrize("sql", ["$__timeFilter", "$__timeFilter(a, b)", "$__dt(a)", "$__timeGroup(c, 5x)"])
def test_bad_calls_are_errors(sql):
    with pytest.raises(MacroError):
        interpolate_macros(sql, CTX)


def ctx(**variables: str | tuple[str, ...]) -> QueryContext:
    return QueryContext(FROM, TO, timedelta(seconds=20), {n: Variable(n, v, ("a", "b", "c")) for n, v in
                                                           variables.items()})


CONDITION = "WHERE $__conditionalAll(team IN (${team}), $team)"


@pytest.mark.parametrize(("value", "expanded"), [
    (ALL, "WHERE 1=1"),
    ((ALL,), "WHERE 1=1"),  # a multi-value variable holds ['$__all']
    ((), "WHERE 1=1"),  # nothing selected behaves like All
    ("", "WHERE 1=1"),
    (("a",), "WHERE team IN ('a')"),
    (("a", "b"), "WHERE team IN ('a','b')"),  # the plugin's formatter quotes multi values
])
def test_conditional_all(value, expanded):
    assert expand(CONDITION, ctx(team=value)) == expanded


def test_conditional_all_calls_are_replaced_from_the_last_and_with_braced_names():
    sql = "$__conditionalAll(t IN ($team), $team) AND $__conditionalAll(p IN (${project}), ${project})"
    assert expand(sql, ctx(team=ALL, project=("x",))) == "1=1 AND p IN ('x')"


def test_template_variables():
    values = ctx(one="v", many=("a", "b"), every=ALL)
    assert expand("$one ${one} [[one]]", values) == "v v v"  # a single value is inserted as is
    assert expand("${many:raw} ${many:singlequote} ${many:sqlstring} ${many:csv}", values) == \
        "a,b 'a','b' 'a','b' a,b"
    quoted = ctx(model=("o'brien", "x"))
    assert expand("${model:singlequote}", quoted) == "'o\\'brien','x'"  # Grafana escapes ' with a backslash
    assert expand("${model:sqlstring}", quoted) == "'o''brien','x'"
    assert expand("${model}", quoted) == "'o'brien','x'"  # the plugin's own formatting does not escape
    assert expand("$every", values) == "'a','b','c'"  # All without a custom value: every option
    assert expand("$unknown ${__from}", values) == "$unknown ${__from}"


def test_custom_all_value_is_inserted_verbatim():
    variable = Variable("team", ALL, ("a",), all_value=".*")
    assert expand("$team", QueryContext(FROM, TO, timedelta(seconds=1), {"team": variable})) == ".*"
