"""Splitting the schema scripts into statements."""

from __future__ import annotations

import pytest

from services.kpi.store import split_statements


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
