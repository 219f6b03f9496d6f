"""The department scorecard's weights (``settings.kpi.scorecard_file``, deploy/kpi/scorecard.yaml), strictly.

The file lists versions of the weights (see it for the format); each applies from the first day of its
month until the next version's. Every version's weights, one per KPI of ``kpi_department_scorecard``,
must each lie in 0..1 and sum to 1; a file that does not parse, names an unknown KPI, or leaves versions
out of order is refused with the file, the line and the reason. The KPI service writes the versions into
``scorecard_weights`` at start, so the view weighs each month by the version in force then.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from services.kpi.projection import Row
from services.platform.yamlconfig import Document, read, validate

# The KPIs a weight may name, as the scorecard_weights columns name them.
KPIS = ("response", "on_time_completion", "resolution", "satisfaction")
_SUM_TOLERANCE = 1e-9


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Weights(_Strict):
    response: float = Field(default=0.0, ge=0, le=1)
    on_time_completion: float = Field(default=0.0, ge=0, le=1)
    resolution: float = Field(default=0.0, ge=0, le=1)
    satisfaction: float = Field(default=0.0, ge=0, le=1)


class _Version(_Strict):
    version: int = Field(ge=1)
    effective_from: date
    weights: _Weights


class _ScorecardFile(_Strict):
    scorecard: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    versions: tuple[_Version, ...] = Field(min_length=1)


@dataclass(frozen=True)
class WeightsVersion:
    version: int
    effective_from: date
    weights: dict[str, float]
    source: str  # file:line


@dataclass(frozen=True)
class Scorecard:
    scorecard: str
    versions: tuple[WeightsVersion, ...]


def load_scorecard(path: Path) -> Scorecard:
    """The scorecard file, checked; a ``ConfigError`` (``path:line: reason``) when it is wrong."""
    document = read(path)
    parsed = validate(document, _ScorecardFile)
    versions = []
    for index, entry in enumerate(parsed.versions):
        _check(document, parsed, index)
        weights = entry.weights.model_dump()
        line = document.line("versions", index)
        versions.append(
            WeightsVersion(entry.version, entry.effective_from, weights, f"{document.path}:{line}")
        )
    return Scorecard(parsed.scorecard, tuple(versions))


def _check(document: Document, parsed: _ScorecardFile, index: int) -> None:
    entry = parsed.versions[index]
    if entry.effective_from.day != 1:
        raise document.error(
            ("versions", index, "effective_from"),
            f"effective_from must be the first day of a month (scorecards are monthly), "
            f"not {entry.effective_from.isoformat()}",
        )
    total = math.fsum(entry.weights.model_dump().values())
    if abs(total - 1.0) > _SUM_TOLERANCE:
        raise document.error(
            ("versions", index, "weights"), f"the weights of version {entry.version} sum to {total:g}, not 1"
        )
    if index == 0:
        return
    previous = parsed.versions[index - 1]
    if entry.version <= previous.version:
        raise document.error(
            ("versions", index, "version"),
            f"version {entry.version} follows version {previous.version}: versions must increase",
        )
    if entry.effective_from <= previous.effective_from:
        raise document.error(
            ("versions", index, "effective_from"),
            f"version {entry.version} is effective from {entry.effective_from.isoformat()}, not after "
            f"version {previous.version}'s {previous.effective_from.isoformat()}",
        )


def weight_rows(scorecard: Scorecard, loaded_at: datetime) -> list[Row]:
    """The ``scorecard_weights`` rows: one per version."""
    return [
        {
            "version": version.version,
            "effective_from": version.effective_from,
            **{kpi: version.weights[kpi] for kpi in KPIS},
            "source": version.source,
            "loaded_at": loaded_at,
        }
        for version in scorecard.versions
    ]
