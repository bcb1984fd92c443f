"""Built-in handlers (docs/services.md): the same bytes out in every language.

Contract: ``handler(payload: bytes, headers: dict) -> bytes``. Raising is the
way to fail a task; the worker turns the exception into a FAILED reply.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

ROLLUP_HEADER = "region,product,quantity,unit_price_cents"
_MAX_INT = 2**31


def echo(payload: bytes, headers: Mapping[str, Any] | None = None) -> bytes:
    return payload


def sleep(payload: bytes, headers: Mapping[str, Any] | None = None) -> bytes:
    try:
        millis = int(payload.strip())
    except ValueError:
        raise ValueError("sleep: payload must be a whole number of milliseconds") from None
    if millis < 0:
        raise ValueError("sleep: payload must be a whole number of milliseconds")
    time.sleep(millis / 1000)
    return payload


def sha256(payload: bytes, headers: Mapping[str, Any] | None = None) -> bytes:
    return hashlib.sha256(payload).hexdigest().encode("ascii")


def _count(text: str, line: int, name: str) -> int:
    text = text.strip()
    if not text.isascii() or not text.isdigit() or int(text) >= _MAX_INT:
        raise ValueError(f"rollup: line {line}: {name} is not a non-negative integer")
    return int(text)


def rollup(payload: bytes, headers: Mapping[str, Any] | None = None) -> bytes:
    """Sales CSV to per-region totals (docs/services.md#rollup)."""
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("rollup: payload is not UTF-8") from None
    lines = text.split("\n")
    if lines[0].rstrip("\r") != ROLLUP_HEADER:
        raise ValueError(f"rollup: header must be {ROLLUP_HEADER}")
    regions: dict[str, dict[str, int]] = {}
    products: dict[str, int] = {}
    rows = total = 0
    for number, raw in enumerate(lines[1:], start=2):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        fields = line.split(",")
        if len(fields) != 4:
            raise ValueError(f"rollup: line {number}: expected 4 fields, got {len(fields)}")
        region, product = fields[0].strip(), fields[1].strip()
        if not region:
            raise ValueError(f"rollup: line {number}: empty region")
        if not product:
            raise ValueError(f"rollup: line {number}: empty product")
        quantity = _count(fields[2], number, "quantity")
        price = _count(fields[3], number, "unit_price_cents")
        revenue = quantity * price
        totals = regions.setdefault(region, {"orders": 0, "quantity": 0, "revenue_cents": 0})
        totals["orders"] += 1
        totals["quantity"] += quantity
        totals["revenue_cents"] += revenue
        products[product] = products.get(product, 0) + revenue
        rows += 1
        total += revenue
    top = min(products, key=lambda p: (-products[p], p.encode())) if products else None
    result = {
        "regions": regions,
        "rows": rows,
        "top_product": top,
        "total_revenue_cents": total,
    }
    return json.dumps(result, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


BUILTIN = {"echo": echo, "sleep": sleep, "sha256": sha256, "rollup": rollup}
