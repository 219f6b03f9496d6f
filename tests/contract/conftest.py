"""Fixtures of the contract suites: the KPI store on the embedded engine and over HTTP.

The HTTP path runs against ``CC_TEST_CLICKHOUSE_URL`` when it is set (a real ClickHouse server,
e.g. ``http://user:password@127.0.0.1:8123``), else against the test stand-in in a child process.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

from services.kpi.store import KpiStore, open_kpi_store
from services.platform.settings import ClickHouseSettings
from tests.support.clickhouse_http_standin import running_standin
from tests.support.embedded_clickhouse import drop_database, unique_database


@pytest.fixture(scope="session")
def clickhouse_http_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseSettings]:
    """Where the HTTP path connects: the real server named by the environment, or the stand-in."""
    url = os.environ.get("CC_TEST_CLICKHOUSE_URL")
    if url:
        parts = urlsplit(url)
        netloc = parts.hostname or ""
        if parts.port:
            netloc = f"{netloc}:{parts.port}"
        yield ClickHouseSettings(
            url=urlunsplit((parts.scheme, netloc, "", "", "")),
            username=parts.username or "default",
            password=parts.password or "",
        )
        return
    with running_standin(tmp_path_factory.mktemp("clickhouse-standin")) as standin_url:
        yield ClickHouseSettings(url=standin_url)


@pytest.fixture(params=["embedded", "http"])
def kpi_settings(request: pytest.FixtureRequest) -> ClickHouseSettings:
    """Settings for a fresh database on one path; every test using it runs once per path."""
    if request.param == "embedded":
        data_dir: Path = request.getfixturevalue("embedded_clickhouse_dir")
        return ClickHouseSettings(url=None, data_dir=data_dir, database=unique_database())
    http: ClickHouseSettings = request.getfixturevalue("clickhouse_http_settings")
    return http.model_copy(update={"database": unique_database()})


@pytest.fixture
def kpi_store(kpi_settings: ClickHouseSettings) -> Iterator[KpiStore]:
    store = open_kpi_store(kpi_settings)
    try:
        store.apply_schema()
        yield store
    finally:
        drop_database(store)
        store.close()
