"""The scorecard's weights file: the shipped one loads, and a wrong one is refused with its line."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from services.kpi import main as kpi_main
from services.kpi.scorecard import KPIS, load_scorecard, weight_rows
from services.platform.process import StartRefused
from services.platform.settings import KpiSettings, Settings
from services.platform.yamlconfig import ConfigError
from tests.unit.kpi.facts import NINE

VALID = """\
scorecard: departments-monthly
versions:
  - version: 1
    effective_from: 2025-01-01
    weights: {response: 0.30, resolution: 0.35, satisfaction: 0.35}
  - version: 2
    effective_from: 2026-03-01
    weights:
      response: 0.25
      on_time_completion: 0.15
      resolution: 0.30
      satisfaction: 0.30
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "scorecard.yaml"
    path.write_text(text)
    return path


def test_the_shipped_scorecard_weighs_response_30_resolution_35_satisfaction_35() -> None:
    scorecard = load_scorecard(Settings().kpi.scorecard_file)

    [version] = scorecard.versions
    assert version.weights == {
        "response": 0.30,
        "on_time_completion": 0.0,
        "resolution": 0.35,
        "satisfaction": 0.35,
    }
    assert version.effective_from.day == 1


def test_every_version_becomes_one_weights_row_naming_its_line(tmp_path: Path) -> None:
    path = write(tmp_path, VALID)

    rows = weight_rows(load_scorecard(path), NINE)

    assert [(row["version"], row["effective_from"], row["source"]) for row in rows] == [
        (1, date(2025, 1, 1), f"{path}:3"),
        (2, date(2026, 3, 1), f"{path}:6"),
    ]
    assert {kpi: rows[1][kpi] for kpi in KPIS} == {
        "response": 0.25,
        "on_time_completion": 0.15,
        "resolution": 0.30,
        "satisfaction": 0.30,
    }
    assert {row["loaded_at"] for row in rows} == {NINE}


@pytest.mark.parametrize(
    ("change", "line", "reason"),
    [
        (("satisfaction: 0.30\n", "satisfaction: 0.35\n"), 8, "the weights of version 2 sum to 1.05, not 1"),
        (("resolution: 0.35,", "resolution: 0.30,"), 5, "the weights of version 1 sum to 0.95, not 1"),
        (("response: 0.25", "speed: 0.25"), 9, "versions[1].weights.speed: unknown key"),
        (("response: 0.25", "response: 1.25"), 9, "versions[1].weights.response: Input should be less than"),
        (("effective_from: 2026-03-01", "effective_from: 2026-03-15"), 7, "must be the first day of a month"),
        (("effective_from: 2026-03-01", "effective_from: 2024-03-01"), 7, "not after version 1's 2025-01-01"),
        (("version: 2", "version: 1"), 6, "version 1 follows version 1: versions must increase"),
    ],
)
def test_a_wrong_scorecard_is_refused_with_its_file_and_line(
    tmp_path: Path, change: tuple[str, str], line: int, reason: str
) -> None:
    path = write(tmp_path, VALID.replace(*change))

    with pytest.raises(ConfigError) as refused:
        load_scorecard(path)

    assert (refused.value.path, refused.value.line) == (path, line)
    assert reason in refused.value.reason


def test_a_missing_scorecard_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_scorecard(tmp_path / "absent.yaml")


def test_the_kpi_service_refuses_to_start_on_a_wrong_scorecard_before_opening_anything(
    tmp_path: Path,
) -> None:
    path = write(tmp_path, VALID.replace("satisfaction: 0.30\n", "satisfaction: 0.35\n"))
    settings = Settings(kpi=KpiSettings(scorecard_file=path))

    with pytest.raises(
        StartRefused, match=f"kpi cannot start: {path}:8: the weights of version 2 sum to 1.05"
    ):
        kpi_main.start(settings)
