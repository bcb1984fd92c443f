"""Dot-separated name patterns: the wildcards of permission grants (NATS subjects).

Contract: a pattern is tokens joined by dots. A literal token matches that
segment only; ``*`` matches exactly one segment; ``>`` (``**`` is the same)
as the last token matches one or more segments, so ``airflow.>`` matches
``airflow.default`` and ``airflow.gpu.large`` but not ``airflow``, and ``>``
alone matches every name. ``Pattern.parse`` raises ``ValueError`` saying why
a text is not a pattern (an empty segment, ``*`` or ``>`` inside a segment,
``>`` before the end, whitespace). A name with an empty segment (``a..b``,
``a.``) matches no pattern.

``covers_prefix(prefix)`` is the subscription rule: a ZeroMQ subscription is
a byte prefix, and the subscriber receives every topic that starts with it,
segment boundary or not (``data`` also receives ``database.x``). A prefix is
covered only when every topic starting with it matches: that takes a pattern
ending in ``>`` whose tokens before the ``>`` match the prefix's whole
segments (``data.>`` covers ``data.`` and ``data.ready``, not ``data``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

REST = ">"  # one or more trailing segments
ONE = "*"  # exactly one segment
_REST_ALIASES = (">", "**")
_LITERAL = re.compile(r"[^\s.*>]+\Z")


@dataclass(frozen=True, slots=True)
class Pattern:
    text: str
    tokens: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Pattern:
        if not isinstance(text, str) or not text:
            raise ValueError("a pattern is a non-empty text such as 'echo', 'airflow.*', 'data.>'")
        tokens = text.split(".")
        for i, token in enumerate(tokens):
            if token in _REST_ALIASES:
                if i != len(tokens) - 1:
                    raise ValueError(f"{text!r}: '{token}' may only end a pattern")
                tokens[i] = REST
            elif token == ONE:
                continue
            elif not token:
                raise ValueError(f"{text!r}: empty segment (two dots, or a dot at an end)")
            elif not _LITERAL.match(token):
                raise ValueError(
                    f"{text!r}: segment {token!r}: '*' and '>' stand for whole segments "
                    "only, and segments hold no whitespace"
                )
        return cls(text, tuple(tokens))

    def matches(self, name: str) -> bool:
        """``name`` (a service, or a topic without ``<env>.``) is matched."""
        parts = name.split(".")
        if not all(parts):
            return False
        tokens = self.tokens
        for i, token in enumerate(tokens):
            if token == REST:
                return i < len(parts)
            if i >= len(parts) or (token != ONE and token != parts[i]):
                return False
        return len(parts) == len(tokens)

    def covers_prefix(self, prefix: str) -> bool:
        """Every topic that starts with ``prefix`` (a subscription) is matched."""
        whole = prefix.split(".")[:-1]  # segments ended by a dot; the rest may still grow
        if not all(whole):
            return False
        for i, token in enumerate(self.tokens):
            if token == REST:
                return i <= len(whole)
            if i >= len(whole) or (token != ONE and token != whole[i]):
                return False
        return False  # no '>': longer topics with this prefix exist and do not match

    def __str__(self) -> str:
        return self.text
