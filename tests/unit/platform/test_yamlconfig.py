"""Strict YAML configuration: plain data out, and every refusal at the line that caused it."""

from __future__ import annotations

import pickle
import textwrap
from datetime import date
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, Field, model_validator

from services.platform.yamlconfig import ConfigError, dotted_path, load, read, validate


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    amount: int


class Limits(BaseModel):
    model_config = ConfigDict(extra="forbid")

    daily: int
    monthly: int

    @model_validator(mode="after")
    def _daily_within_monthly(self) -> Limits:
        if self.daily > self.monthly:
            raise ValueError(f"daily {self.daily} exceeds monthly {self.monthly}")
        return self


class Policy(BaseModel):
    model_config = ConfigDict(extra="forbid")

    policy: str
    starts: date
    rules: list[Rule] = Field(min_length=1)
    limits: dict[str, Limits] = {}


POLICY = """\
policy: refunds
starts: 2026-01-01
rules:
  - name: small
    amount: 50
  - {name: medium, amount: 500}
  - name: large
    amount: 5000
limits:
  finance:
    daily: 10
    monthly: 100
"""


def _file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def _refusal(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as refused:
        load(_file(tmp_path, text), Policy)
    return refused.value


def test_a_valid_file_loads_into_plain_python_with_dates(tmp_path: Path) -> None:
    document = read(_file(tmp_path, POLICY))

    assert document.data["starts"] == date(2026, 1, 1)
    assert document.data["rules"][1] == {"name": "medium", "amount": 500}
    assert type(document.data) is dict and type(document.data["rules"]) is list
    assert type(document.data["rules"][2]["amount"]) is int
    assert type(document.data["policy"]) is str
    assert validate(document, Policy).limits["finance"].monthly == 100


def test_lines_are_known_for_keys_and_list_items(tmp_path: Path) -> None:
    document = read(_file(tmp_path, POLICY))

    assert document.line("rules") == 3
    assert document.line("rules", 0) == 4
    assert document.line("rules", 2, "amount") == 8
    assert document.line("limits", "finance", "monthly") == 12


def test_a_missing_location_takes_the_line_of_its_nearest_enclosing_key(tmp_path: Path) -> None:
    document = read(_file(tmp_path, POLICY))

    assert document.line("rules", 2, "currency") == 7
    assert document.line("limits", "legal", "daily") == 9
    assert document.error(("rules", 1, "amount"), "too much").line == 6
    assert str(document.error(("rules", 1, "amount"), "too much")) == f"{document.path}:6: too much"


def test_a_syntax_error_names_its_line(tmp_path: Path) -> None:
    refused = _refusal(tmp_path, "policy: refunds\nrules:\n  - [name: small\n  - name: large\n")

    assert refused.line == 4
    assert "not valid YAML" in refused.reason
    assert str(refused).startswith(f"{tmp_path / 'policy.yaml'}:4: not valid YAML")


def test_a_duplicate_key_is_refused_at_its_second_occurrence(tmp_path: Path) -> None:
    refused = _refusal(tmp_path, POLICY.replace("    monthly: 100", "    monthly: 100\n    daily: 20"))

    assert refused.line == 13
    assert 'duplicate key "daily"' in refused.reason


def test_an_unknown_key_is_refused_at_its_line(tmp_path: Path) -> None:
    refused = _refusal(tmp_path, POLICY.replace("    amount: 5000", "    amount: 5000\n    amuont: 5"))

    assert (refused.line, refused.reason) == (9, "rules[2].amuont: unknown key")


def test_a_wrong_type_inside_a_list_is_refused_at_the_item_line(tmp_path: Path) -> None:
    refused = _refusal(tmp_path, POLICY.replace("amount: 500}", "amount: lots}"))

    assert refused.line == 6
    assert refused.reason.startswith("rules[1].amount: Input should be a valid integer")
    assert refused.reason.endswith("got 'lots'")


def test_a_nested_location_is_refused_at_its_line(tmp_path: Path) -> None:
    refused = _refusal(tmp_path, POLICY.replace("monthly: 100", "monthly: 5"))

    assert (refused.line, refused.reason) == (10, "limits.finance: daily 10 exceeds monthly 5")


def test_a_missing_key_is_refused_at_the_line_of_the_entry_that_lacks_it(tmp_path: Path) -> None:
    refused = _refusal(tmp_path, POLICY.replace("    amount: 5000\n", ""))

    assert (refused.line, refused.reason) == (7, "rules[2].amount: required key is missing")


def test_a_missing_file_is_refused_without_a_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        read(tmp_path / "absent.yaml")

    assert refused.value.line is None
    assert str(refused.value) == f"{tmp_path / 'absent.yaml'}: no such file"


def test_a_tagged_value_is_refused_at_its_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as refused:
        read(_file(tmp_path, POLICY.replace("policy: refunds", "policy: !secret refunds")))

    assert refused.value.line == 1
    assert "unsupported YAML value" in refused.value.reason


def test_a_config_error_survives_pickling(tmp_path: Path) -> None:
    error = ConfigError(tmp_path / "a.yaml", 3, "wrong")

    copy = pickle.loads(pickle.dumps(error))

    assert (copy.path, copy.line, copy.reason, str(copy)) == (error.path, 3, "wrong", str(error))


def test_dotted_paths_name_keys_and_indexes() -> None:
    assert dotted_path(("rules", 2, "amount")) == "rules[2].amount"
    assert dotted_path((0, "name")) == "[0].name"
    assert dotted_path(()) == ""
