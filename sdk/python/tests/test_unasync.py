"""scripts/unasync.py, which writes the _sync*.py modules from the _async*.py ones:
the tree's sync modules are its output, and its markers and safety checks work on
small inputs."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "unasync.py"


@pytest.fixture(scope="module")
def unasync() -> ModuleType:
    spec = importlib.util.spec_from_file_location("unasync_script", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def test_the_tree_sync_modules_are_generated(unasync: ModuleType) -> None:
    wanted = unasync.generate()
    assert set(wanted) == {s for _, s in unasync.PAIRS} and len(wanted) == 3
    for sync, text in wanted.items():
        assert sync.read_text() == text, sync
    assert unasync.main(["unasync.py", "--check"]) == 0


def test_module_names_and_headers(unasync: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unasync, "EXPLICIT", [])
    src = "from ._files_async import AsyncFiles\nfrom ._async import AsyncSandbox\n"
    out = unasync.unasync(src, "_x_async.py")
    assert out == unasync.header("_x_async.py") + (
        "from ._files_sync import Files\nfrom ._sync import Sandbox\n"
    )
    assert "from _x_async.py: edit that" in out.splitlines()[0]


def test_renames_and_markers(unasync: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(unasync, "EXPLICIT", [])
    src = (
        "import inspect  # unasync: async-only\n"
        "class AsyncThing:\n"
        "    async def go(self, t: AsyncTransport) -> None:\n"
        "        async with t.stream() as r:\n"
        "            async for line in r.aiter_lines():\n"
        "                # unasync: async-only\n"
        "                x = f(line)\n"
        "                if inspect.isawaitable(x):\n"
        "                    await x\n"
        "                # unasync: sync-only\n"
        "                # f(line)\n"
        "                # unasync: end\n"
        "        await t.aclose()\n"
    )
    assert unasync.unasync(src) == unasync.HEADER + (
        "class Thing:\n"
        "    def go(self, t: SyncTransport) -> None:\n"
        "        with t.stream() as r:\n"
        "            for line in r.iter_lines():\n"
        "                f(line)\n"
        "        t.close()\n"
    )


def test_blank_lines_of_a_removed_block_are_trimmed(
    unasync: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(unasync, "EXPLICIT", [])
    src = "x = 1\n\n\n# unasync: async-only\nclass P:\n    pass\n\n\n# unasync: end\n\n\ny = 2\n"
    assert unasync.unasync(src) == unasync.HEADER + "x = 1\n\n\ny = 2\n"


@pytest.mark.parametrize(
    ("src", "why"),
    [
        ("# unasync: async-only\nx = 1\n", "has no `# unasync: end`"),
        ("# unasync: end\n", "unexpected `# unasync: end` outside a block"),
        ("# unasync: async-only\n# unasync: sync-only\nx = 1\n# unasync: end\n", "commented"),
        ("x = aiter(y)  # async iterator\nasync_thing = await_me\nz = async_gen\n", ""),
        ("lambda: foo(async_=True)\nasync = 1\n", "async left in the sync module"),
    ],
)
def test_refusals(unasync: ModuleType, monkeypatch: pytest.MonkeyPatch, src: str, why: str) -> None:
    monkeypatch.setattr(unasync, "EXPLICIT", [])
    if not why:
        unasync.unasync(src)  # names that merely contain "async" stay
        return
    with pytest.raises(unasync.UnasyncError, match=why):
        unasync.unasync(src)


def test_a_stale_explicit_rule_is_refused(
    unasync: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(unasync, "EXPLICIT", [("no such text", "")])
    with pytest.raises(unasync.UnasyncError, match="match nothing"):
        unasync.unasync("x = 1\n")
