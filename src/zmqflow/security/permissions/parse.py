"""The permissions file: TOML, validated, every fault named with its file and line.

Contract: ``load(path)`` (or ``parse(text, source)``) returns a
``Permissions`` or raises ``PermissionsError`` whose message starts with
``FILE:LINE:`` (the line of the faulty key, table or list item; just
``FILE:`` when no line can be told) and says what is wrong. The format
(docs/security.md#permissions):

    [groups.clients]                  # any number of groups
    submit = ["echo", "sleep"]
    publish = ["data.>"]

    [keys.airflow]                    # a key name: its allow-list file without .key
    groups = ["clients"]
    submit = ["airflow.>"]
    status = true

Each entry (a group or a key) may hold ``submit``, ``serve``, ``publish``,
``subscribe``, ``collect`` (lists of patterns, see patterns.py) and
``status``, ``admin`` (true or false); a key may also list ``groups``.
Anything else is an error (a misspelt right must not silently grant
nothing), and so is a group that is not defined. Groups do not nest.
TOML is read by the standard library's ``tomllib``; the fields are checked
by pydantic.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, StrictBool, ValidationError

from zmqflow.security.permissions.engine import FLAGS, RIGHTS, Grant, KeyRights, Permissions
from zmqflow.security.permissions.patterns import Pattern

_NAME = re.compile(r"[A-Za-z0-9._@+-]{1,128}\Z")


class PermissionsError(ValueError):
    """A permissions file that cannot be used; the message names the file and line."""


def _pattern(text: str) -> str:
    Pattern.parse(text)  # its ValueError names the pattern and the fault
    return text


PatternText = Annotated[str, AfterValidator(_pattern)]


class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    submit: list[PatternText] = []
    serve: list[PatternText] = []
    publish: list[PatternText] = []
    subscribe: list[PatternText] = []
    collect: list[PatternText] = []
    status: StrictBool = False
    admin: StrictBool = False


class KeyEntry(Entry):
    groups: list[str] = []


def _name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"{name!r} is not a name: 1-128 characters of letters, digits and ._@+-")
    return name


Name = Annotated[str, AfterValidator(_name)]


class PermissionsModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    groups: dict[Name, Entry] = {}
    keys: dict[Name, KeyEntry] = {}


def load(path: str | Path) -> Permissions:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PermissionsError(f"{path}: cannot be read: {exc}") from None
    return parse(text, str(path))


def parse(text: str, source: str = "permissions.toml") -> Permissions:
    lines = Lines(text)
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        line = re.search(r"\(at line (\d+)", str(exc))
        at_end = "(at end of document)" in str(exc)
        where = _at(source, int(line.group(1)) if line else len(lines.text) if at_end else None)
        message = re.sub(r"\s*\(at (line \d+, column \d+|end of document)\)", "", str(exc))
        raise PermissionsError(f"{where}: not valid TOML: {message}") from None
    try:
        model = PermissionsModel.model_validate(data)
    except ValidationError as exc:
        raise PermissionsError(_describe(exc, lines, source)) from None
    return _build(model, lines, source)


def _describe(exc: ValidationError, lines: Lines, source: str) -> str:
    faults = []
    for error in exc.errors(include_url=False):
        loc = tuple(error["loc"])
        where = lines.find(loc, error.get("input"))
        loc = tuple(p for p in loc if p != "[key]")
        path = ".".join(str(p) if not isinstance(p, int) else f"[{p}]" for p in loc)
        path = path.replace(".[", "[")
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden" and len(loc) == 1:
            message = (
                f"unknown field {loc[0]!r}: the file holds [groups.NAME] and [keys.NAME] tables"
            )
        elif error["type"] == "extra_forbidden":
            message = (
                f"unknown field {loc[-1]!r}: an entry holds {', '.join((*RIGHTS, *FLAGS))}"
                + (" and groups" if loc[:1] == ("keys",) else "")
            )
        faults.append(f"{_at(source, where)}: {path}: {message}")
    return "\n".join(faults)


def _build(model: PermissionsModel, lines: Lines, source: str) -> Permissions:
    def grants(holder: tuple[str, str], entry: Entry) -> dict[str, list[Grant]]:
        found: dict[str, list[Grant]] = {}
        name = ".".join(holder)
        for right in RIGHTS:
            for i, text in enumerate(getattr(entry, right)):
                where = _at(source, lines.find((*holder, right, i), text))
                found.setdefault(right, []).append(Grant(right, Pattern.parse(text), name, where))
        for flag in FLAGS:
            if getattr(entry, flag):
                where = _at(source, lines.find((*holder, flag), None))
                found.setdefault(flag, []).append(Grant(flag, None, name, where))
        return found

    group_grants = {name: grants(("groups", name), e) for name, e in model.groups.items()}
    keys: dict[str, KeyRights] = {}
    for name, entry in model.keys.items():
        merged = grants(("keys", name), entry)
        for i, group in enumerate(entry.groups):
            if group not in group_grants:
                line = lines.find(("keys", name, "groups", i), group)
                known = ", ".join(sorted(group_grants)) or "none"
                raise PermissionsError(
                    f"{_at(source, line)}: keys.{name}.groups[{i}]: no group {group!r} "
                    f"(defined: {known})"
                )
            for right, found in group_grants[group].items():
                merged.setdefault(right, []).extend(found)
        keys[name] = KeyRights({r: tuple(g) for r, g in merged.items()}, tuple(entry.groups))
    return Permissions(keys, source, tuple(model.groups))


def _at(source: str, line: int | None) -> str:
    return f"{source}:{line}" if line else source


_BARE = r"[A-Za-z0-9_-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"|\'[^\']*\''
_KEY_PART = rf"\s*(?:{_BARE}|{_QUOTED})\s*"
_DOTTED = re.compile(rf"{_KEY_PART}(?:\.{_KEY_PART})*")
_TABLE = re.compile(rf"\s*\[\s*({_DOTTED.pattern})\]\s*(?:#.*)?$")
_ASSIGN = re.compile(rf"({_DOTTED.pattern})=")


def _split_key(text: str) -> tuple[str, ...]:
    parts = re.findall(rf"{_BARE}|{_QUOTED}", text)
    return tuple(p[1:-1] if p[:1] in "\"'" else p for p in parts)


class Lines:
    """Where each TOML key and table is written (1-based lines): for error messages.

    Good for the plain shapes a permissions file has (tables, ``key = value``,
    lists over several lines); an inline table's fields are found at its line.
    """

    def __init__(self, text: str) -> None:
        self.text = text.splitlines()
        self.at: dict[tuple[str, ...], int] = {}
        table: tuple[str, ...] = ()
        for number, line in enumerate(self.text, start=1):
            if line.lstrip().startswith("#"):
                continue
            header = _TABLE.match(line)
            if header:
                table = _split_key(header.group(1))
                self.at.setdefault(table, number)
                continue
            assign = _ASSIGN.match(line)
            if assign:
                self.at.setdefault((*table, *_split_key(assign.group(1))), number)

    def find(self, loc: tuple[Any, ...], value: Any) -> int | None:
        """The line of ``loc`` (a pydantic error location), or of its nearest parent.

        A list item (an int last in ``loc``) is looked for as its quoted text
        from its list's line on, so one pattern per line is found on its own.
        """
        names = tuple(str(p) for p in loc if not isinstance(p, int))
        below = [n for path, n in self.at.items() if path[: len(names)] == names]
        if names and names not in self.at and below:  # [keyz.a] for an unknown "keyz"
            return min(below)
        while names and names not in self.at:
            names = names[:-1]
        if not names:
            return None
        line = self.at[names]
        if (
            loc
            and isinstance(loc[-1], int)
            and isinstance(value, str)
            and len(names) == len([p for p in loc if not isinstance(p, int)])
        ):
            for number in range(line, min(line + 500, len(self.text) + 1)):
                text = self.text[number - 1]
                if number > line and (_TABLE.match(text) or _ASSIGN.match(text)):
                    break
                if f'"{value}"' in text or f"'{value}'" in text:
                    return number
        return line
