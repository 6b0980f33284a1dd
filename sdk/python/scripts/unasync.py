#!/usr/bin/env python3
"""Writes the synchronous API, ``src/zygote/_sync*.py``, from the asynchronous
one, ``src/zygote/_async*.py`` (the ones to edit): ``_async.py`` -> ``_sync.py``,
``_async_commands.py`` -> ``_sync_commands.py``, ``_async_files.py`` ->
``_sync_files.py`` (:data:`PAIRS`).

    python3 sdk/python/scripts/unasync.py           # rewrite _sync.py
    python3 sdk/python/scripts/unasync.py --check   # exit 1, with a diff, if a _sync file differs

Line by line, as httpx's family of libraries does it:

- ``async def`` / ``async with`` / ``async for`` lose ``async``; ``await `` goes;
- ``Async``-prefixed names lose the prefix (``AsyncSandbox`` -> ``Sandbox``),
  except ``AsyncTransport`` -> ``SyncTransport``; modules ``._async*`` become
  ``._sync*``;
- httpx's ``aiter_*`` / ``aread`` / ``aclose`` and the async dunders, context
  managers and iterator types become their sync names;
- ``EXPLICIT`` below: the few wording and signature differences, each of which
  must still match something in one of the files (so a stale rule is noticed).

What is not a rename is marked in ``_async.py``:

- a line ending in ``# unasync: async-only`` is left out;
- ``# unasync: async-only`` on a line of its own starts a block left out, up to
  ``# unasync: end``, or up to ``# unasync: sync-only``, whose commented-out lines
  (``# code``) up to ``# unasync: end`` are written uncommented instead.

Blank lines a removed block leaves are trimmed as ``ruff format`` would (at most
two at module level, one inside a block). The result must not mention
``async``, ``await`` or an ``Async`` name any more. Standard library only.
"""

from __future__ import annotations

import difflib
import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src" / "zygote"
PAIRS: list[tuple[Path, Path]] = [
    (SRC / "_async.py", SRC / "_sync.py"),
    (SRC / "_async_commands.py", SRC / "_sync_commands.py"),
    (SRC / "_async_files.py", SRC / "_sync_files.py"),
]
ASYNC, SYNC = PAIRS[0]


def header(name: str = "_async.py") -> str:
    """The first line of a generated file."""
    return (
        f"# Generated from {name} by sdk/python/scripts/unasync.py: edit {name}, then run it.\n"
    )


HEADER = header()

# Wording and signatures that differ beyond the mechanical renames below.
EXPLICIT: list[tuple[str, str]] = [
    (r"\bThe asynchronous\b", "The synchronous"),
    (r"[;,] may be a coroutine function", ""),
    # PendingSandbox is async-only: the sync create() returns the sandbox.
    (r"-> PendingSandbox:", "-> AsyncSandbox:"),
    (r"\bCoroutine, Generator, Mapping\b", "Mapping"),
]

MECHANICAL: list[tuple[str, str]] = [
    (r"\bAsyncTransport\b", "SyncTransport"),
    (r"(?<=\.)_async(\w*)\b", r"_sync\1"),
    (r"\baiter_(\w+)", r"iter_\1"),
    (r"\baread\b", "read"),
    (r"\baclose\b", "close"),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\b__aiter__\b", "__iter__"),
    (r"\b__anext__\b", "__next__"),
    (r"\basynccontextmanager\b", "contextmanager"),
    (r"\bAsyncIterator\b", "Iterator"),
    (r"\bAsyncIterable\b", "Iterable"),
    (r"\bAsyncGenerator\b", "Generator"),
    (r"\bStopAsyncIteration\b", "StopIteration"),
    (r"\bAsync([A-Z]\w*)", r"\1"),
    (r"\basync (def|with|for)\b", r"\1"),
    (r"\bawait ", ""),
]

MARK = "# unasync: "
LEFTOVER = re.compile(r"\basync\b|\bawait\b|\bAsync[A-Z]\w*|unasync:")


class UnasyncError(Exception):
    """_async.py cannot be turned into _sync.py as it stands."""


def _directive(line: str) -> str | None:
    """The directive of a marker line (``async-only``, ``sync-only``, ``end``)."""
    s = line.strip()
    return s[len(MARK) :].strip() if s.startswith(MARK) else None


def _select(lines: list[str]) -> list[str]:
    """The lines of the sync file before renaming: marked blocks resolved."""
    out: list[str] = []
    state = "both"  # or "async-only" / "sync-only" inside a block
    for n, line in enumerate(lines, 1):
        d = _directive(line)
        if d is not None:
            if (state, d) in (("both", "async-only"), ("async-only", "sync-only")):
                state = d
            elif d == "end" and state != "both":
                state = "both"
            else:
                where = "outside a block" if state == "both" else f"in a {state} block"
                raise UnasyncError(
                    f"_async.py:{n}: unexpected `{line.strip()}` {where} (a block is "
                    f"`{MARK}async-only`, optionally `{MARK}sync-only`, then `{MARK}end`)"
                )
            continue
        if state == "async-only" or line.rstrip().endswith(MARK + "async-only"):
            continue
        if state == "sync-only":
            body = line.lstrip()
            if body.strip() and not body.startswith("#"):
                raise UnasyncError(f"_async.py:{n}: a sync-only line must be commented out")
            indent = line[: len(line) - len(body)]
            body = body[1:]
            line = indent + (body[1:] if body.startswith(" ") else body)
        out.append(line)
    if state != "both":
        raise UnasyncError(f"_async.py: a `{MARK}{state}` block has no `{MARK}end`")
    return out


def _trim_blank_lines(lines: list[str]) -> list[str]:
    """At most two blank lines before module-level code, one before indented code."""
    out: list[str] = []
    blank = 0
    for line in lines:
        if not line.strip():
            blank += 1
            continue
        top = not line[0].isspace()
        out.extend([""] * min(blank, 2 if top else 1))
        blank = 0
        out.append(line)
    return out


def unasync(text: str, name: str = "_async.py", used: list[bool] | None = None) -> str:
    """The sync module for the async module ``text`` (named ``name``). With
    ``used``, the EXPLICIT rules that matched are marked there and a stale rule
    is the caller's to report; without, it is refused here."""
    check_stale = used is None
    if used is None:
        used = [False] * len(EXPLICIT)
    rules = [(re.compile(p), r) for p, r in EXPLICIT + MECHANICAL]
    lines: list[str] = []
    for line in _select(text.splitlines()):
        for i, (pattern, repl) in enumerate(rules):
            line, n = pattern.subn(repl, line)
            if n and i < len(EXPLICIT):
                used[i] = True
        lines.append(line)
    if check_stale:
        _refuse_stale(used)
    lines = _trim_blank_lines(lines)
    left = [
        f"  {n}: {line}"
        for n, line in enumerate(lines, 1)
        if LEFTOVER.search(line.split("#", 1)[0] if "#" in line else line)
    ]
    if left:
        raise UnasyncError(f"async left in the sync module of {name}:\n" + "\n".join(left))
    return header(name) + "\n".join(lines) + "\n"


def _refuse_stale(used: list[bool]) -> None:
    stale = [p for (p, _), u in zip(EXPLICIT, used, strict=True) if not u]
    if stale:
        raise UnasyncError(f"EXPLICIT rules that match nothing any more: {stale}")


def generate() -> dict[Path, str]:
    """Every sync module, by path, from its async module."""
    used = [False] * len(EXPLICIT)
    out = {sync: unasync(a.read_text(), a.name, used) for a, sync in PAIRS}
    _refuse_stale(used)
    return out


def main(argv: list[str]) -> int:
    check = argv[1:] == ["--check"]
    if argv[1:] and not check:
        print(f"usage: {argv[0]} [--check]", file=sys.stderr)
        return 2
    try:
        wanted = generate()
    except UnasyncError as e:
        print(f"unasync: {e}", file=sys.stderr)
        return 1
    status = 0
    for sync, want in wanted.items():
        have = sync.read_text() if sync.exists() else ""
        if have == want:
            continue
        if check:
            src = sync.name.replace("_sync", "_async", 1)
            diff = difflib.unified_diff(
                have.splitlines(keepends=True),
                want.splitlines(keepends=True),
                f"src/zygote/{sync.name} (in the tree)",
                f"src/zygote/{sync.name} (generated from {src})",
            )
            sys.stderr.writelines(diff)
            print(
                f"unasync: {sync.name} is not what scripts/unasync.py writes from {src}: "
                f"edit {src}, then run `python3 sdk/python/scripts/unasync.py`",
                file=sys.stderr,
            )
            status = 1
            continue
        sync.write_text(want)
        print(f"unasync: wrote {sync}")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
