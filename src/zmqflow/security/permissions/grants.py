"""One key's entry in a permissions file, written from a short grant spec.

Contract: ``parse_spec("submit=airflow.>,echo publish=data.> admin=true")``
turns a spec (what ``make client-key NAME=x GRANTS=...`` passes) into an
entry: whitespace-separated ``field=value[,value...]`` items, the fields
being the file's (``groups``, ``submit``, ``serve``, ``publish``,
``subscribe``, ``collect``: lists of patterns or group names; ``status``,
``admin``: true or false). An unknown field or a bad pattern raises
``PermissionsError``. Without ``groups=`` the entry is in ``default_groups``
(the stack's ``demo-clients``: the demo services and ``data.>`` events).

``set_key(text, name, entry)`` returns the file's text with ``[keys.NAME]``
replaced by the entry (its old table removed, the rest of the file, comments
included, kept) or added at the end; the result is parsed before it is
returned, so a file that would not load is never written. A key defined
some other way (an inline table, dotted keys) is refused: edit it by hand.

``python -m zmqflow.security.permissions.grants FILE NAME [SPEC]`` prints
the new text (FILE ``-``: read from stdin; an empty or missing file starts
empty); exit 2 with the reason on a bad spec or file.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

from zmqflow.security.permissions.engine import FLAGS, RIGHTS
from zmqflow.security.permissions.parse import _NAME, _TABLE, Lines, PermissionsError, parse
from zmqflow.security.permissions.patterns import Pattern

DEFAULT_GROUPS = ("demo-clients",)
_BARE_NAME = re.compile(r"[A-Za-z0-9_-]+\Z")


def parse_spec(spec: str, default_groups: tuple[str, ...] = DEFAULT_GROUPS) -> dict[str, Any]:
    entry: dict[str, Any] = {"groups": list(default_groups)}
    for item in spec.split():
        field, sep, value = item.partition("=")
        if not sep:
            raise PermissionsError(f"grant {item!r}: write FIELD=VALUE[,VALUE...]")
        if field in FLAGS:
            if value not in ("true", "false"):
                raise PermissionsError(f"grant {item!r}: {field} is true or false")
            entry[field] = value == "true"
            continue
        if field not in (*RIGHTS, "groups"):
            fields = ", ".join((*RIGHTS, *FLAGS, "groups"))
            raise PermissionsError(f"grant {item!r}: unknown field {field!r} (one of {fields})")
        values = [v for v in value.split(",") if v]
        for v in values:
            try:
                if field == "groups":
                    if not _NAME.match(v):
                        raise ValueError(f"{v!r} is not a group name")
                else:
                    Pattern.parse(v)
            except ValueError as exc:
                raise PermissionsError(f"grant {item!r}: {exc}") from None
        if field == "groups":
            entry["groups"] = values
        else:
            entry.setdefault(field, []).extend(values)
    return entry


def _table_name(name: str) -> str:
    return name if _BARE_NAME.match(name) else json.dumps(name)


def render(name: str, entry: dict[str, Any]) -> str:
    lines = [f"[keys.{_table_name(name)}]"]
    for field in ("groups", *RIGHTS):
        if entry.get(field):
            lines.append(f"{field} = {json.dumps(entry[field])}")
    for flag in FLAGS:
        if entry.get(flag):
            lines.append(f"{flag} = true")
    return "\n".join(lines) + "\n"


def set_key(text: str, name: str, entry: dict[str, Any], source: str = "permissions") -> str:
    if not _NAME.match(name):
        raise PermissionsError(f"{name!r} is not a key name: letters, digits and ._@+-")
    existing = parse(text, source)  # the file as it is must load: never build on a broken one
    found = Lines(text)
    old = text.splitlines(keepends=True)
    start = found.at.get(("keys", name))
    if name in existing.keys and (start is None or not _TABLE.match(old[start - 1])):
        raise PermissionsError(
            f"{source}: key {name!r} is not written as a [keys.{name}] table "
            "(an inline table or dotted keys): edit it by hand"
        )
    if start is not None:
        end = next(
            (i for i in range(start, len(old)) if _TABLE.match(old[i]) or old[i].startswith("[[")),
            len(old),
        )
        # blank lines and comments just above the next table belong to it
        while end > start and (not old[end - 1].strip() or old[end - 1].lstrip().startswith("#")):
            end -= 1
        rest = "".join(old[end:]).lstrip("\n")
        new = "".join(old[: start - 1]) + render(name, entry) + ("\n" + rest if rest else "")
    else:
        body = text if not text or text.endswith("\n") else text + "\n"
        new = body + ("\n" if body.strip() else "") + render(name, entry)
    parse(new, source)
    return new


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) not in (2, 3):
        usage = "usage: python -m zmqflow.security.permissions.grants FILE NAME [SPEC]"
        print(usage, file=sys.stderr)
        return 2
    file, name = args[0], args[1]
    spec = args[2] if len(args) == 3 else ""
    try:
        if file == "-":
            text = sys.stdin.read()
        else:
            path = Path(file)
            text = path.read_text(encoding="utf-8") if path.exists() else ""
        sys.stdout.write(set_key(text, name, parse_spec(spec), file))
    except PermissionsError as exc:
        print(f"permissions: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
