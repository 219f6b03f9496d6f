"""Splitting the schema scripts into statements, and a table of an older schema brought up to date."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.kpi.store import KpiStoreError, open_kpi_store, split_statements
from services.platform.settings import ClickHouseSettings
from tests.support.embedded_clickhouse import drop_database
from tests.unit.kpi.facts import approval_step, read_view, ticket


def test_script_splits_on_semicolons_between_statements() -> None:
    assert split_statements("CREATE TABLE a (x UInt8) ENGINE = Memory;\n\nSELECT 1;\n") == [
        "CREATE TABLE a (x UInt8) ENGINE = Memory",
        "SELECT 1",
    ]


def test_semicolons_in_quotes_and_comments_do_not_split() -> None:
    script = """-- a comment; not a split
    SELECT 'a;b', 'it''s;', 'c\\';d', `we;ird`, "col;x" /* block; comment */ FROM t;
    SELECT 2 -- trailing; comment
    """

    assert split_statements(script) == [
        "SELECT 'a;b', 'it''s;', 'c\\';d', `we;ird`, \"col;x\"  FROM t",
        "SELECT 2",
    ]


@pytest.mark.parametrize("script", ["SELECT 'open", "SELECT 1 /* open"])
def test_unterminated_quote_or_comment_is_refused(script: str) -> None:
    with pytest.raises(ValueError, match="unterminated"):
        split_statements(script)


# The ticket_facts table as deploy/clickhouse/003_ticket_facts.sql made it before the ticket projection.
TICKET_FACTS_BEFORE = """
CREATE TABLE ticket_facts
(
    ticket_id String, ticket_type LowCardinality(String), priority UInt8, department LowCardinality(String),
    channel LowCardinality(String), origin_contact_id String, customer_hash String,
    issue_code LowCardinality(String), status LowCardinality(String), created_at DateTime64(3, 'UTC'),
    first_response_at Nullable(DateTime64(3, 'UTC')), first_response_due_at Nullable(DateTime64(3, 'UTC')),
    resolved_at Nullable(DateTime64(3, 'UTC')), resolution_due_at Nullable(DateTime64(3, 'UTC')),
    closed_at Nullable(DateTime64(3, 'UTC')), first_response_s Nullable(Float64),
    resolution_s Nullable(Float64), first_response_breached Bool, resolution_breached Bool,
    resolved_on_first_contact Bool, reopen_count UInt16, escalation_count UInt16, dispatch_count UInt16,
    csat_score Nullable(UInt8), outcome LowCardinality(String), version UInt64
)
ENGINE = ReplacingMergeTree(version) PARTITION BY toYYYYMM(created_at) ORDER BY ticket_id
"""


def test_a_ticket_facts_table_made_before_the_ticket_projection_takes_its_columns_and_constraint(
    embedded_kpi_settings: ClickHouseSettings, tmp_path: Path
) -> None:
    with open_kpi_store(embedded_kpi_settings, schema_dir=tmp_path) as before:
        before.apply_schema()  # the database alone: the folder holds no script
        before.command(TICKET_FACTS_BEFORE)
    with open_kpi_store(embedded_kpi_settings) as store:
        try:
            store.apply_schema()
            store.apply_schema()

            store.insert("ticket_facts", [ticket("t1", status="dispatched")])
            assert read_view(store, "kpi_tickets", "department")[0]["open_backlog"] == 1
            with pytest.raises(KpiStoreError, match="status_is_known"):
                store.insert("ticket_facts", [ticket("t2", status="open")])
        finally:
            drop_database(store)


# The approval_step_facts table as deploy/clickhouse/004_approval_step_facts.sql made it before the
# approvals projection (one row per step; nothing ever wrote it).
APPROVAL_STEP_FACTS_BEFORE = """
CREATE TABLE approval_step_facts
(
    step_fact_id String, request_id String, ticket_id String, chain LowCardinality(String), step UInt16,
    department LowCardinality(String), opened_at DateTime64(3, 'UTC'),
    deadline_at Nullable(DateTime64(3, 'UTC')), decided_at Nullable(DateTime64(3, 'UTC')),
    duration_s Float64, reminders UInt16, escalations UInt16, outcome LowCardinality(String),
    version UInt64,
    CONSTRAINT outcome_is_known CHECK outcome IN ('', 'approved', 'rejected', 'escalated', 'expired')
)
ENGINE = ReplacingMergeTree(version) PARTITION BY toYYYYMM(opened_at) ORDER BY step_fact_id
"""


def test_an_approval_step_facts_table_made_before_the_approvals_projection_takes_its_stint_columns(
    embedded_kpi_settings: ClickHouseSettings, tmp_path: Path
) -> None:
    with open_kpi_store(embedded_kpi_settings, schema_dir=tmp_path) as before:
        before.apply_schema()
        before.command(APPROVAL_STEP_FACTS_BEFORE)
    with open_kpi_store(embedded_kpi_settings) as store:
        try:
            store.apply_schema()
            store.apply_schema()

            store.insert("approval_step_facts", [approval_step("r1", outcome="withdrawn", version=2)])
            [row] = read_view(store, "kpi_approval_steps", "department")
            assert (row["kind"], row["withdrawn"]) == ("refund", 1)
            with pytest.raises(KpiStoreError, match="outcome_is_known"):
                store.insert("approval_step_facts", [approval_step("r2", outcome="cancelled")])
        finally:
            drop_database(store)
