"""Grafana dashboards: every panel's query, expanded as the ClickHouse plugin does, runs on the KPI views."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from services.kpi.store import SCHEMA_DIR, KpiStore
from services.platform.settings import PROJECT_ROOT
from tests.support.grafana_macros import (
    ALL,
    apply_conditional_all,
    expand_time_macros,
    grafana_sql,
    interpolate_variables,
)
from tests.unit.kpi.facts import (
    answered_visit,
    approval_step,
    at,
    closed_approval_step,
    completed_dispatch,
    contact_arrival,
    dispatch,
    offer,
    queue_settings,
    queue_visit,
    scorecard_weights,
    state_interval,
    state_visit,
    ticket,
)

GRAFANA_DIR = PROJECT_ROOT / "deploy" / "grafana"
DASHBOARD_FILES = sorted((GRAFANA_DIR / "dashboards").glob("*.json"))
DATASOURCE_UID = "clickhouse"

# The tests' day (facts.NINE is 09:00 on it), as the dashboard time range.
START = datetime(2024, 5, 6, tzinfo=UTC)
END = START + timedelta(days=1)
SALES_ONLY = {"queue": ["sales"]}

_SCHEMA = "\n".join(path.read_text() for path in sorted(SCHEMA_DIR.glob("*.sql")))
VIEWS = frozenset(re.findall(r"CREATE OR REPLACE VIEW (\w+)", _SCHEMA))
TABLES = frozenset(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", _SCHEMA))


@dataclass(frozen=True)
class PanelQuery:
    dashboard: dict[str, Any]
    file: str
    panel: dict[str, Any]
    target: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.file}/{self.panel['title']}"

    @property
    def time_series(self) -> bool:
        # The plugin's format: 0 time series (long frames turned wide), 1 table (sqlutil.FormatQueryOption).
        return self.target["format"] == 0


def load_dashboards() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in DASHBOARD_FILES}


def panels_of(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those of a collapsed row (nested in the row's "panels") included; rows themselves not."""
    for panel in dashboard.get("panels", []):
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def panel_queries() -> list[PanelQuery]:
    return [
        PanelQuery(dashboard, file, panel, target)
        for file, dashboard in load_dashboards().items()
        for panel in panels_of(dashboard)
        for target in panel.get("targets", [])
    ]


PANEL_QUERIES = panel_queries()


def variable_defaults(dashboard: dict[str, Any]) -> dict[str, str | list[str]]:
    return {variable["name"]: variable["current"]["value"] for variable in dashboard["templating"]["list"]}


def all_values(store: KpiStore, dashboard: dict[str, Any]) -> dict[str, list[str]]:
    """The options of each query variable, from its own query: what All expands to."""
    options = {}
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            rows = store.query(variable["query"]["rawSql"])
            options[variable["name"]] = [str(next(iter(row.values()))) for row in rows]
    return options


def insert_facts(store: KpiStore) -> None:
    """A morning on the sales queue and of three departments: enough facts that every panel has a row."""
    store.insert("queue_settings", [queue_settings("sales", 20.0), queue_settings("billing", 30.0)])
    store.insert(
        "contact_facts",
        [
            contact_arrival("c1"),
            contact_arrival("c2", arrival=at(minutes=30)),
            contact_arrival("c3", outcome="self_service", queue_id=""),
            contact_arrival("c4", arrival=at(minutes=20)),
            contact_arrival("c5", arrival=at(minutes=40)),
            answered_visit("c1", wait_s=10.0, hold_s=5.0, wrap_s=30.0, transferred=True),
            # The same caller again half an hour later: a repeat contact against c1's FCR.
            answered_visit("c2", wait_s=40.0, arrival=at(minutes=30), queued_at=at(minutes=30)),
            queue_visit(
                "c4", outcome="abandoned", wait_s=25.0, arrival=at(minutes=20), queued_at=at(minutes=20)
            ),
            answered_visit("c5", wait_s=5.0, callback=True, arrival=at(minutes=40), queued_at=at(minutes=40)),
        ],
    )
    store.insert(
        "agent_state_intervals",
        [
            state_interval("agent-1", "ready", at(), at(minutes=5)),
            state_interval("agent-1", "on_contact", at(minutes=5), at(minutes=10), queue_id="sales"),
            state_interval("agent-1", "wrap_up", at(minutes=10), at(minutes=12), queue_id="sales"),
            state_interval("agent-1", "not_ready", at(minutes=12), at(minutes=30), reason="break"),
            state_interval("agent-2", "ready", at(), at(minutes=30), skill_group="billing-team"),
        ],
    )
    store.insert("offer_facts", [offer("o1", "accepted"), offer("o2", "timed_out", at(minutes=1))])
    gauges = [
        ("queue", "sales", "contacts_waiting", 3.0),
        ("queue", "sales", "callbacks_waiting", 1.0),
        ("queue", "sales", "longest_wait_s", 42.0),
        ("queue", "sales", "estimated_wait_s", 30.0),
        ("queue", "sales", "agents_ready", 2.0),
        ("queue", "sales", "agents_on_contact", 1.0),
        ("skill_group", "sales-team", "agents_ready", 2.0),
        ("center", "", "contacts_waiting", 3.0),
        ("center", "", "longest_wait_s", 42.0),
        ("center", "", "agents_ready", 2.0),
        ("center", "", "agents_on_contact", 1.0),
    ]
    store.insert(
        "live_gauges",
        [
            {"scope": scope, "queue_id": key, "gauge": gauge, "value": value, "measured_at": at(minutes=60)}
            for scope, key, gauge, value in gauges
        ],
    )
    store.insert(
        "staffing_advice",
        [
            {
                "queue_id": "sales",
                "computed_at": at(minutes=60),
                "arrivals_per_hour": 120.0,
                "aht_s": 180.0,
                "sl_threshold_s": 20.0,
                "sl_target_percent": 80,
                "agents_needed": 9,
                "predicted_service_level": 0.83,
                "predicted_asa_s": 9.5,
                "predicted_occupancy": 0.67,
                "agents_logged_in": 7,
            }
        ],
    )
    store.insert(
        "ticket_facts",
        [
            ticket(
                "t1",
                status="closed",
                first_response_at=at(minutes=10),
                first_response_s=600.0,
                resolved_at=at(minutes=60),
                resolution_s=3600.0,
                resolved_on_first_contact=True,
                csat_score=5,
            ),
            ticket("t2", status="in_progress", resolved_at=at(minutes=30), reopen_count=1, csat_score=3),
            ticket("t3", ticket_type="inquiry", department="finance"),
        ],
    )
    store.insert(
        "dispatch_facts",
        [
            completed_dispatch("t1", 1800.0, follow_up_reached=True, satisfaction="satisfied"),
            completed_dispatch(
                "t2", 3600.0, department="transport", on_time=False, returns=1, returns_refused=1
            ),
            dispatch("t3", department="finance", extensions_requested=1),
        ],
    )
    store.insert(
        "ticket_state_intervals",
        [
            state_visit("t1", "new", at(), 60.0),
            state_visit("t1", "in_progress", at(minutes=1), 3540.0),
            state_visit("t1", "closed", at(minutes=60), None),
            state_visit("t2", "in_progress", at(minutes=30), None),
        ],
    )
    store.insert("scorecard_weights", [scorecard_weights()])
    store.insert(
        "approval_step_facts",
        [
            closed_approval_step("r1", "approved", 1800.0),
            closed_approval_step("r3", "escalated", 3600.0, step=2),
            approval_step("r3", step=2, stint=1, department="legal", opened_at=at(minutes=60)),
            approval_step("r2", step=2, department="legal", paused_since=at(minutes=10), info_requests=1),
        ],
    )


@pytest.fixture
def kpi_store(embedded_kpi_store: KpiStore) -> KpiStore:
    insert_facts(embedded_kpi_store)
    return embedded_kpi_store


@pytest.mark.parametrize("query", PANEL_QUERIES, ids=lambda query: query.id)
def test_panel_query_runs_on_the_kpi_views(kpi_store: KpiStore, query: PanelQuery) -> None:
    selections = variable_defaults(query.dashboard) | SALES_ONLY
    sql = grafana_sql(query.target["rawSql"], START, END, selections)

    assert "$" not in sql, sql
    rows = kpi_store.query(sql)

    assert rows, f"no rows from\n{sql}"
    if query.time_series:
        assert all(isinstance(row["time"], datetime) for row in rows)


def test_every_panel_query_runs_with_every_queue_selected(kpi_store: KpiStore) -> None:
    for query in PANEL_QUERIES:
        sql = grafana_sql(
            query.target["rawSql"],
            START,
            END,
            variable_defaults(query.dashboard),
            all_values(kpi_store, query.dashboard),
        )
        assert "$" not in sql, query.id
        assert kpi_store.query(sql), query.id


@pytest.mark.parametrize("query", PANEL_QUERIES, ids=lambda query: query.id)
def test_panel_reads_the_views_not_the_fact_tables(query: PanelQuery) -> None:
    words = set(re.findall(r"\w+", query.target["rawSql"]))

    assert words & VIEWS, "the query reads no KPI view"
    assert not words & TABLES, f"the query reads a table: {sorted(words & TABLES)}"
    assert query.target["datasource"] == {"type": "grafana-clickhouse-datasource", "uid": DATASOURCE_UID}
    assert query.target["format"] == (0 if query.panel["type"] == "timeseries" else 1)
    assert query.target["editorType"] == "sql"


def test_dashboards_have_unique_uids_and_panel_ids() -> None:
    dashboards = load_dashboards()

    assert set(dashboards) == {"wallboard", "intraday", "agents", "tickets_approvals", "departments"}
    uids = [dashboard["uid"] for dashboard in dashboards.values()]
    assert len(set(uids)) == len(uids)
    for dashboard in dashboards.values():
        ids = [panel["id"] for panel in dashboard["panels"]]
        ids += [nested["id"] for panel in dashboard["panels"] for nested in panel.get("panels", [])]
        assert len(set(ids)) == len(ids), dashboard["uid"]
        assert dashboard["schemaVersion"] >= 39
        assert dashboard["time"]["to"] == "now"
    assert dashboards["wallboard"]["refresh"] == "5s"


def test_fcr_window_defaults_to_seven_days() -> None:
    dashboard = load_dashboards()["tickets_approvals"]

    assert variable_defaults(dashboard)["fcr_days"] == "7"
    assert any("days = $fcr_days" in query.target["rawSql"] for query in PANEL_QUERIES)


def test_macros_expand_as_the_plugin_documents() -> None:
    start = datetime.fromtimestamp(1415792726, UTC)
    end = datetime.fromtimestamp(1447328726, UTC)

    assert expand_time_macros("WHERE $__timeFilter(time)", start, end) == (
        "WHERE time >= toDateTime(1415792726) AND time <= toDateTime(1447328726)"
    )
    assert expand_time_macros("f($__fromTime, $__toTime)", start, end) == (
        "f(toDateTime(1415792726), toDateTime(1447328726))"
    )
    assert expand_time_macros("$__fromTime_ms", start, end) == "fromUnixTimestamp64Milli(1415792726000)"
    assert expand_time_macros("$__interval_s", start, end) == "$__interval_s"


def test_conditional_all_keeps_the_condition_unless_all_is_selected() -> None:
    sql = "WHERE $__conditionalAll(key IN (${queue:singlequote}), $queue) AND x"

    assert apply_conditional_all(sql, {"queue": [ALL]}) == "WHERE 1=1 AND x"
    assert apply_conditional_all(sql, {"queue": ["sales"]}) == "WHERE key IN (${queue:singlequote}) AND x"
    assert apply_conditional_all(sql, {}) == "WHERE key IN (${queue:singlequote}) AND x"


def test_variables_are_quoted_as_grafana_formats_them() -> None:
    values = {"queue": ["sales", "o'neil"], "fcr_days": "7"}

    assert interpolate_variables("IN (${queue:singlequote})", values) == "IN ('sales','o\\'neil')"
    assert interpolate_variables("IN ($queue) AND d = $fcr_days", values) == (
        "IN ('sales','o\\'neil') AND d = 7"
    )
    assert interpolate_variables("$__fromTime, $unknown", values) == "$__fromTime, $unknown"


def yaml_leaves(text: str) -> dict[str, str]:
    """The scalar values of a block-style YAML file by path (``a.b[0].c``): a check without PyYAML.

    Covers the subset the provisioning files use (mappings, lists of mappings, plain scalars) and
    fails on anything else, such as tabs or a line that is not ``key: value`` or ``- key: value``.
    """
    leaves: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    items: dict[str, int] = {}
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        assert "\t" not in line, line
        indent = len(line) - len(line.lstrip(" "))
        body = line.strip()
        if body.startswith("- "):
            while stack and stack[-1][0] >= indent:
                stack.pop()
            parent = stack[-1][1] if stack else ""
            items[parent] = items.get(parent, -1) + 1
            stack.append((indent, f"{parent}[{items[parent]}]"))
            body, indent = body[2:], indent + 2
        match = re.fullmatch(r"([A-Za-z_]\w*):(?: +(.+))?", body)
        assert match, f"not a key: value line: {line!r}"
        while stack and stack[-1][0] >= indent:
            stack.pop()
        parent = stack[-1][1] if stack else ""
        path = f"{parent}.{match.group(1)}" if parent else match.group(1)
        if match.group(2) is None:
            stack.append((indent, path))
        else:
            leaves[path] = match.group(2)
    return leaves


def test_datasource_provisioning_reads_the_address_from_the_environment() -> None:
    leaves = yaml_leaves((GRAFANA_DIR / "provisioning/datasources/clickhouse.yaml").read_text())

    assert leaves["apiVersion"] == "1"
    assert leaves["datasources[0].type"] == "grafana-clickhouse-datasource"
    assert leaves["datasources[0].uid"] == DATASOURCE_UID
    assert leaves["datasources[0].jsonData.protocol"] == "http"
    assert leaves["datasources[0].jsonData.host"] == "${CLICKHOUSE_HOST}"
    assert leaves["datasources[0].jsonData.port"] == "${CLICKHOUSE_PORT}"
    assert leaves["datasources[0].jsonData.username"] == "${CLICKHOUSE_USER}"
    assert leaves["datasources[0].jsonData.defaultDatabase"] == "${CLICKHOUSE_DATABASE}"
    assert leaves["datasources[0].secureJsonData.password"] == "${CLICKHOUSE_PASSWORD}"


def test_dashboard_provisioning_loads_the_dashboard_folder() -> None:
    leaves = yaml_leaves((GRAFANA_DIR / "provisioning/dashboards/callcenter.yaml").read_text())

    assert leaves["apiVersion"] == "1"
    assert leaves["providers[0].type"] == "file"
    assert leaves["providers[0].options.path"] == "/var/lib/grafana/dashboards"


def test_provisioning_files_are_all_checked() -> None:
    files = {path.relative_to(GRAFANA_DIR).as_posix() for path in GRAFANA_DIR.rglob("*.yaml")}

    assert files == {"provisioning/datasources/clickhouse.yaml", "provisioning/dashboards/callcenter.yaml"}
