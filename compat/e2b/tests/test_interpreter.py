"""E2B's code interpreter SDK against zygote's warm interpreter."""

from __future__ import annotations

import pytest


def test_run_code_keeps_state(template: str) -> None:
    from e2b_code_interpreter import Sandbox

    sb = Sandbox.create(template=template)
    try:
        first = sb.run_code("x = 1")
        assert first.error is None
        second = sb.run_code("x + 1")
        assert second.text == "2"
        out = sb.run_code("print('printed')")
        assert out.logs.stdout == ["printed\n"]
        bad = sb.run_code("undefined_name")
        assert bad.error is not None and bad.error.name == "NameError"
    finally:
        sb.kill()


def test_other_languages_are_refused(template: str) -> None:
    from e2b_code_interpreter import Sandbox

    sb = Sandbox.create(template=template)
    try:
        with pytest.raises(Exception, match="Python"):
            sb.run_code("1", language="r")
    finally:
        sb.kill()
