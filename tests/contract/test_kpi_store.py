"""The KPI store's contract, run against the embedded chdb engine and a ClickHouse HTTP endpoint."""

from __future__ import annotations

from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.kpi.store import KpiStore, KpiStoreError, open_kpi_store
from services.platform.settings import ClickHouseSettings
from tests.support.embedded_clickhouse import drop_database, unique_database
from tests.unit.kpi.facts import NINE, approval_step, closed_approval_step, queue_visit

SCHEMA_TABLES = {
    "contact_facts",
    "agent_state_intervals",
    "ticket_facts",
    "dispatch_facts",
    "ticket_state_intervals",
    "scorecard_weights",
    "approval_step_facts",
    "live_gauges",
    "offer_facts",
    "queue_settings",
    "staffing_advice",
}


def contact_fact(contact_id: str, version: int = 1, **changes: Any) -> dict[str, Any]:
    """An open queue visit on sales, queued at 09:00:20."""
    return queue_visit(contact_id, version=version, **({"queued_at": NINE + timedelta(seconds=20)} | changes))


def answered(contact_id: str, version: int = 2) -> dict[str, Any]:
    return contact_fact(
        contact_id,
        version,
        offered_at=NINE + timedelta(seconds=30),
        answered_at=NINE + timedelta(seconds=32, milliseconds=250),
        ended_at=NINE + timedelta(minutes=5),
        wait_s=12.25,
        talk_s=240.0,
        outcome="answered",
        agent_id="agent-7",
    )


def facts(store: KpiStore) -> list[dict[str, Any]]:
    return store.query("SELECT * FROM contact_facts FINAL ORDER BY fact_id")


def stored_rows(store: KpiStore, table: str) -> int:
    """Rows in the table's parts, before FINAL collapses versions of a fact."""
    return store.query(f"SELECT count() AS n FROM {table}")[0]["n"]


def test_schema_applies_twice_without_error(kpi_store: KpiStore) -> None:
    kpi_store.apply_schema()

    tables = kpi_store.query(
        "SELECT name FROM system.tables WHERE database = {db:String}", {"db": kpi_store.database}
    )
    assert {row["name"] for row in tables} >= SCHEMA_TABLES


def test_inserted_rows_are_read_back(kpi_store: KpiStore) -> None:
    batch = [answered("c1"), contact_fact("c2")]

    assert kpi_store.insert("contact_facts", batch) == 2

    assert facts(kpi_store) == batch


def test_a_batch_large_enough_to_travel_in_several_compressed_frames_is_read_back_whole(
    kpi_store: KpiStore,
) -> None:
    batch = [answered(f"c{n:05d}") for n in range(20_000)]

    assert kpi_store.insert("contact_facts", batch) == len(batch)

    assert stored_rows(kpi_store, "contact_facts") == len(batch)
    assert facts(kpi_store)[-1] == batch[-1]


def test_a_batch_of_closed_agent_intervals_with_empty_labels_is_read_back_whole(kpi_store: KpiStore) -> None:
    # Found in the fault suite: a valid Native block of this shape, inline in the query text, is
    # misread by chdb ("Cannot read all data in NativeReader. Rows read: 20. Rows expected: 22").
    batch = [
        {
            "interval_id": f"a{n:03d}:{n}",
            "agent_id": f"a{n // 2:03d}",
            "state": ("ready", "reserved")[n % 2],
            "reason": "",
            "started_at": NINE + timedelta(milliseconds=137 * n),
            "ended_at": NINE + timedelta(milliseconds=137 * n + 250),
            "duration_s": 0.25,
            "queue_id": "",
            "skill_group": "",
            "contact_id": "",
            "version": 2,
        }
        for n in range(30)
    ]

    assert kpi_store.insert("agent_state_intervals", batch) == len(batch)

    assert stored_rows(kpi_store, "agent_state_intervals") == len(batch)


def test_approval_step_stints_are_read_back_at_their_newest_version(kpi_store: KpiStore) -> None:
    paused = approval_step("r1", version=3, paused_since=NINE + timedelta(minutes=5), info_requests=1)
    backup = closed_approval_step("r2", "approved", 90.5, stint=1, department="legal", paused_s=12.25)
    kpi_store.insert("approval_step_facts", [paused, backup])
    kpi_store.insert("approval_step_facts", [approval_step("r1", version=2)])

    rows = kpi_store.query("SELECT * FROM approval_step_facts FINAL ORDER BY step_fact_id")

    assert rows == [paused, backup]


def test_retried_batch_changes_no_count(kpi_store: KpiStore) -> None:
    batch = [answered("c1"), contact_fact("c2")]
    kpi_store.insert("contact_facts", batch)

    kpi_store.insert("contact_facts", batch)

    assert len(facts(kpi_store)) == 2


def test_retried_batch_is_dropped_by_its_deduplication_token(kpi_store: KpiStore) -> None:
    batch = [answered("c1"), contact_fact("c2")]
    kpi_store.insert("contact_facts", batch)

    kpi_store.insert("contact_facts", batch)

    assert stored_rows(kpi_store, "contact_facts") == 2


def test_batches_with_the_same_token_count_once(kpi_store: KpiStore) -> None:
    kpi_store.insert("contact_facts", [contact_fact("c1")], dedup_token="contacts.events.v1:0:0-41")

    kpi_store.insert(
        "contact_facts", [contact_fact("c1", version=2)], dedup_token="contacts.events.v1:0:0-41"
    )

    assert [fact["version"] for fact in facts(kpi_store)] == [1]


def test_newer_version_replaces_the_older_whatever_the_arrival_order(kpi_store: KpiStore) -> None:
    kpi_store.insert("contact_facts", [contact_fact("c1", version=1), answered("c2", version=2)])

    kpi_store.insert("contact_facts", [answered("c1", version=2), contact_fact("c2", version=1)])

    assert facts(kpi_store) == [answered("c1", version=2), answered("c2", version=2)]


def test_newest_gauge_measurement_wins(kpi_store: KpiStore) -> None:
    def gauge(value: float, seconds: int) -> dict[str, Any]:
        return {
            "queue_id": "sales",
            "gauge": "contacts_waiting",
            "value": value,
            "measured_at": NINE + timedelta(seconds=seconds),
        }

    kpi_store.insert("live_gauges", [gauge(4, 2)])
    kpi_store.insert("live_gauges", [gauge(7, 3)])
    kpi_store.insert("live_gauges", [gauge(5, 1)])

    assert kpi_store.query("SELECT value, measured_at FROM live_gauges FINAL") == [
        {"value": 7.0, "measured_at": NINE + timedelta(seconds=3)}
    ]


def test_column_oriented_batch_is_inserted(kpi_store: KpiStore) -> None:
    rows = [answered("c1"), contact_fact("c2")]
    columns = {name: [row[name] for row in rows] for name in rows[0]}

    assert kpi_store.insert("contact_facts", columns) == 2

    assert facts(kpi_store) == rows


def test_parameters_are_bound_by_the_server(kpi_store: KpiStore) -> None:
    kpi_store.insert(
        "contact_facts",
        [
            contact_fact("c1", queue_id="o'brien\\desk"),
            contact_fact("c2", queue_id="o'brien\\desk", arrival=NINE + timedelta(hours=1)),
            contact_fact("c3", queue_id="sales"),
        ],
    )

    rows = kpi_store.query(
        "SELECT contact_id FROM contact_facts FINAL"
        " WHERE queue_id = {queue:String} AND arrival < {until:DateTime64(3, 'UTC')}"
        " AND contact_id IN {ids:Array(String)}",
        {"queue": "o'brien\\desk", "until": NINE + timedelta(minutes=30), "ids": ["c1", "c2", "c3"]},
    )

    assert rows == [{"contact_id": "c1"}]


def test_bad_query_raises_a_clear_error(kpi_store: KpiStore) -> None:
    with pytest.raises(
        KpiStoreError, match=r"query failed: Code: 47\..*no_such_column.*UNKNOWN_IDENTIFIER"
    ) as error:
        kpi_store.query("SELECT no_such_column FROM contact_facts")

    assert error.value.code == 47
    assert "version" not in str(error.value) and "http" not in str(error.value)


def test_insert_into_an_unknown_table_raises_a_clear_error(kpi_store: KpiStore) -> None:
    with pytest.raises(KpiStoreError, match="insert into no_such_table failed"):
        kpi_store.insert("no_such_table", [{"id": "x"}])


def test_a_clear_caller_number_is_refused_and_kept_out_of_the_error(kpi_store: KpiStore) -> None:
    with pytest.raises(KpiStoreError, match="caller_is_pseudonymised") as error:
        kpi_store.insert("contact_facts", [contact_fact("c1", caller_hash="+49 30 1234567")])

    assert "1234567" not in str(error.value)
    assert error.value.__cause__ is None


def test_naive_times_are_refused(kpi_store: KpiStore) -> None:
    with pytest.raises(ValueError, match="arrival holds a naive datetime"):
        kpi_store.insert("contact_facts", [contact_fact("c1", arrival=datetime(2024, 5, 6, 9, 0))])


def test_server_side_time_arithmetic_is_in_utc(kpi_store: KpiStore) -> None:
    assert kpi_store.query("SELECT timezone() AS tz, toDate(toDateTime('2024-05-06 23:30:00')) AS day") == [
        {"tz": "UTC", "day": date(2024, 5, 6)}
    ]


def test_embedded_stores_in_one_process_share_the_data_folder(embedded_clickhouse_dir: Path) -> None:
    first = open_kpi_store(ClickHouseSettings(data_dir=embedded_clickhouse_dir, database=unique_database()))
    second = open_kpi_store(ClickHouseSettings(data_dir=embedded_clickhouse_dir, database=first.database))
    try:
        first.apply_schema()
        first.insert("contact_facts", [contact_fact("c1")])

        assert [fact["contact_id"] for fact in facts(second)] == ["c1"]
    finally:
        drop_database(first)
        second.close()
        first.close()


def test_embedded_store_on_a_second_data_folder_fails_clearly(
    embedded_clickhouse_dir: Path, tmp_path: Path
) -> None:
    with pytest.raises(KpiStoreError, match="one data folder per process"):
        open_kpi_store(ClickHouseSettings(data_dir=tmp_path / "elsewhere"))
