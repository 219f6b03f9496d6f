"""TEST ONLY: the one embedded ClickHouse (chdb) data folder of a pytest process, shared by every test.

chdb hosts one engine per process, bound to one data folder: while any store is open, a store on
another folder fails to open. So every test that needs an embedded KPI store, whatever its
directory, uses this folder and isolates itself by database name:

- ``embedded_clickhouse_dir`` (session fixture): the shared folder; it keeps one handle open for the
  whole run, so the engine starts once and a store on a stray folder fails loudly at once.
- ``embedded_kpi_settings`` (fixture): ``ClickHouseSettings`` on that folder with a fresh database,
  for code under test that opens its own store from settings.
- ``embedded_kpi_store`` (fixture): a store on a fresh database with the schema applied, dropped after.

Use the fixtures by importing them into a conftest (``from tests.support.embedded_clickhouse import
...``) or by listing this module in the root conftest's ``pytest_plugins``. Imported into several
conftests they still share one folder: the folder is chosen once per process.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.kpi.store import KpiStore, open_kpi_store
from services.platform.settings import ClickHouseSettings

_shared_dir: Path | None = None


def shared_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The process's embedded data folder, chosen on first use."""
    global _shared_dir
    if _shared_dir is None:
        _shared_dir = tmp_path_factory.mktemp("chdb")
    return _shared_dir


def unique_database(prefix: str = "test") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"


def drop_database(store: KpiStore) -> None:
    store.command(f"DROP DATABASE IF EXISTS `{store.database}`")


@pytest.fixture(scope="session")
def embedded_clickhouse_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    data_dir = shared_data_dir(tmp_path_factory)
    keeper = open_kpi_store(ClickHouseSettings(url=None, data_dir=data_dir, database="default"))
    yield data_dir
    keeper.close()


@pytest.fixture
def embedded_kpi_settings(embedded_clickhouse_dir: Path) -> ClickHouseSettings:
    return ClickHouseSettings(url=None, data_dir=embedded_clickhouse_dir, database=unique_database())


@pytest.fixture
def embedded_kpi_store(embedded_kpi_settings: ClickHouseSettings) -> Iterator[KpiStore]:
    store = open_kpi_store(embedded_kpi_settings)
    try:
        store.apply_schema()
        yield store
    finally:
        drop_database(store)
        store.close()
