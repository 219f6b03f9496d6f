"""TEST ONLY: a panel's rawSql as Grafana and the ClickHouse data source plugin turn it into SQL.

The plugin (grafana/clickhouse-datasource, v4) rewrites a query in three steps, applied here in the
same order by ``grafana_sql``:

1. ``$__conditionalAll(condition, $var)`` in the browser (``CHDatasource.applyConditionalAll``):
   ``1=1`` when ``$var`` has All (``$__all``) or nothing selected, else ``condition``.
2. Template variables in the browser (Grafana's ``templateSrv.replace``): ``${var:singlequote}``,
   ``${var}``, ``$var``, ``[[var]]``.
3. Time macros on the backend (``pkg/macros/macros.go``), see ``expand_time_macros``.

Sources: the plugin's README, section "Macros"
(https://github.com/grafana/clickhouse-datasource#macros, the same table as
https://grafana.com/grafana/plugins/grafana-clickhouse-datasource/), and its code,
``pkg/macros/macros.go`` and ``src/data/CHDatasource.ts``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime

VariableValue = str | Sequence[str]
"""A variable's selection: a text (single-value variable) or the selected values (multi-value)."""

ALL = "$__all"

_CONDITIONAL_ALL = "$__conditionalAll("
_VARIABLE = re.compile(r"\$\{(\w+)(?::(\w+))?\}|\[\[(\w+)(?::(\w+))?\]\]|\$(\w+)")


def expand_time_macros(sql: str, start: datetime, end: datetime) -> str:
    """The plugin's backend time macros, as its README documents them (section "Macros"):

    - ``$__fromTime`` -> ``toDateTime(<start, epoch seconds>)``, ``$__toTime`` likewise with the end
    - ``$__fromTime_ms`` -> ``fromUnixTimestamp64Milli(<start, epoch milliseconds>)``, ``$__toTime_ms``
    - ``$__timeFilter(col)`` -> ``col >= toDateTime(<start>) AND col <= toDateTime(<end>)``
    - ``$__timeFilter_ms(col)`` -> the same with ``fromUnixTimestamp64Milli``

    Epoch seconds truncate (Go's ``time.Unix()``), as in ``pkg/macros/macros.go``. Other macros
    (``$__interval_s``, ``$__timeInterval``, ...) are left as they are, so a caller sees them.
    """
    start_s, end_s = int(start.timestamp()), int(end.timestamp())
    start_ms, end_ms = int(start.timestamp() * 1000), int(end.timestamp() * 1000)

    def time_filter(match: re.Match[str]) -> str:
        column = match.group(2).strip()
        if match.group(1):
            low, high = f"fromUnixTimestamp64Milli({start_ms})", f"fromUnixTimestamp64Milli({end_ms})"
        else:
            low, high = f"toDateTime({start_s})", f"toDateTime({end_s})"
        return f"{column} >= {low} AND {column} <= {high}"

    sql = re.sub(r"\$__timeFilter(_ms)?\(([^)]*)\)", time_filter, sql)
    replacements = {
        "fromTime_ms": f"fromUnixTimestamp64Milli({start_ms})",
        "toTime_ms": f"fromUnixTimestamp64Milli({end_ms})",
        "fromTime": f"toDateTime({start_s})",
        "toTime": f"toDateTime({end_s})",
    }
    return re.sub(r"\$__(fromTime_ms|toTime_ms|fromTime|toTime)\b", lambda m: replacements[m.group(1)], sql)


def apply_conditional_all(sql: str, selections: Mapping[str, VariableValue]) -> str:
    """``$__conditionalAll(condition, $var)`` as ``CHDatasource.applyConditionalAll`` rewrites it.

    README, section "Macros": replaced by ``condition`` when ``$var`` does not select every value,
    by ``1=1`` when it does (or selects nothing). Like the plugin, the last macro in the text is
    rewritten first, its arguments split on commas at bracket depth one, and a macro naming an
    unknown variable keeps its condition.
    """
    while (index := sql.rfind(_CONDITIONAL_ALL)) != -1:
        arguments, end = _macro_arguments(sql, index + len(_CONDITIONAL_ALL))
        if len(arguments) != 2:
            raise ValueError(f"$__conditionalAll takes 2 arguments, got {arguments!r}")
        condition, variable = arguments
        name = variable.strip().removeprefix("$")
        value = selections.get(name, ())
        selected = [value] if isinstance(value, str) else list(value)
        everything = name in selections and (selected in ([], [""]) or ALL in selected)
        phrase = "1=1" if everything else condition
        sql = sql[:index] + phrase + sql[end:]
    return sql


def interpolate_variables(sql: str, values: Mapping[str, VariableValue]) -> str:
    """Template variables as Grafana's ``templateSrv.replace`` with the plugin's formatter.

    ``${var:singlequote}`` quotes every value (``'a','b'``, a quote escaped as ``\\'``); without a
    format, a multi-value selection is quoted and joined the same way (the plugin's ``format``) and
    a single value goes in as it is. Unknown variables and Grafana's own ``$__`` names stay.
    """

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(3) or match.group(5)
        form = match.group(2) or match.group(4)
        if name not in values:
            return match.group(0)
        value = values[name]
        if form is None and isinstance(value, str):
            return value
        selected = [value] if isinstance(value, str) else list(value)
        if form not in (None, "singlequote"):
            raise ValueError(f"variable format {form!r} of ${name} is not emulated")
        return ",".join("'" + item.replace("'", "\\'") + "'" for item in selected)

    return _VARIABLE.sub(replace, sql)


def grafana_sql(
    raw_sql: str,
    start: datetime,
    end: datetime,
    selections: Mapping[str, VariableValue],
    all_values: Mapping[str, Sequence[str]] | None = None,
) -> str:
    """A panel's rawSql as ClickHouse receives it, for the time range [start, end].

    ``selections`` are the variables' selected values (``$__all`` for All); ``all_values`` the
    options a variable with All selected expands to (Grafana's default when it has no allValue).
    """
    sql = apply_conditional_all(raw_sql, selections)
    values: dict[str, VariableValue] = {}
    for name, value in selections.items():
        selected = [value] if isinstance(value, str) else list(value)
        values[name] = list((all_values or {}).get(name, ())) if ALL in selected else value
    return expand_time_macros(interpolate_variables(sql, values), start, end)


def _macro_arguments(sql: str, open_paren: int) -> tuple[list[str], int]:
    """The arguments of the macro whose "(" is at ``open_paren - 1``, and the index after its ")"."""
    depth, start, arguments = 1, open_paren, []
    for index in range(open_paren, len(sql)):
        char = sql[index]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                arguments.append(sql[start:index])
                return arguments, index + 1
        elif char == "," and depth == 1:
            arguments.append(sql[start:index])
            start = index + 1
    raise ValueError(f"unclosed macro at {open_paren}: {sql[open_paren - 20 : open_paren + 40]!r}")
