"""The SQL text Keyhouse writes itself (``keyhouse.engine.sql``): what a caller's value can and
cannot turn into."""

from __future__ import annotations

import pytest

from keyhouse.engine.sql import identifier, literal, parameter_text, quoted, setting_text


def test_a_string_cannot_leave_its_literal() -> None:
    assert quoted("it's") == "'it\\'s'"
    assert quoted("a\\' OR 1=1 --") == "'a\\\\\\' OR 1=1 --'"
    assert literal("x'") == "'x\\''"
    assert literal(True) == "1"
    assert literal(2.5) == "2.5"


def test_a_name_cannot_leave_its_backquotes() -> None:
    assert identifier("db") == "`db`"
    assert identifier("a`; DROP TABLE t; --") == "`a\\`; DROP TABLE t; --`"
    assert identifier("a\\`") == "`a\\\\\\``"


def test_settings_as_url_text() -> None:
    assert (setting_text(True), setting_text(False), setting_text(60)) == ("1", "0", "60")


def test_query_parameters_as_a_server_reads_them() -> None:
    assert parameter_text("it's") == "it's"  # a parameter's text is not SQL
    assert parameter_text(["a'b", 1, None]) == "['a\\'b',1,\\N]"
    assert parameter_text(None) == "\\N"
    assert (parameter_text(True), parameter_text(3)) == ("true", "3")
    with pytest.raises(ValueError, match="strings, numbers"):
        parameter_text({"nested": 1})
