"""The example data set: deterministic sales rows, cut into rollup work items.

Contract: ONE definition of the example data set for every orchestrator
(the Airflow DAGs and the Prefect flows both roll it up) and their tests.
``DataSet(seed, items, rows_per_item, products)`` names a data set
(``DEFAULT``: 10,000 items of 100 rows, 1,000,000 rows); ``item_rows(data,
index)`` gives the same rows for the same arguments on any machine and
Python (random.Random seeded with a string), lazily, one item at a time.
Item ``i`` holds sales of ONE product, ``item_product(i)``, so an item's
``total_revenue_cents`` is that product's revenue in it and the whole set's
``top_product`` follows from the items' answers. ``merge`` combines the
rollup service's per-item answers (docs/services.md#rollup), in item order,
into the rollup of the whole set (rows, regions, top_product,
total_revenue_cents, items); ``rollup_dataset`` computes the same object in
one process straight from the rows, without CSV or the fabric, so a test
can compare the two. ``canonical`` is the one JSON form of a result (sorted
keys, no spaces). Item keys (idempotency) are the caller's business;
``DataSet.tag`` names the data set inside them.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

HEADER = "region,product,quantity,unit_price_cents"
REGIONS = (
    "africa",
    "asia",
    "europe",
    "latin-america",
    "middle-east",
    "north-america",
    "oceania",
    "nordics",
)

_QUANTITIES = range(1, 21)
_PRICE_STEPS = range(100)


@dataclass(frozen=True, slots=True)
class DataSet:
    """A data set is fully named by these numbers: rows = items x rows_per_item."""

    seed: int = 42
    items: int = 10_000
    rows_per_item: int = 100
    products: int = 250

    def __post_init__(self) -> None:
        if min(self.items, self.rows_per_item, self.products) < 1:
            raise ValueError("items, rows_per_item and products must be at least 1")

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> DataSet:
        fields = ("seed", "items", "rows_per_item", "products")
        return cls(**{f: int(params[f]) for f in fields if f in params})

    @property
    def rows(self) -> int:
        return self.items * self.rows_per_item

    @property
    def tag(self) -> str:
        """A short name of the data set, for the callers' item keys."""
        return f"sales-s{self.seed}-i{self.items}-r{self.rows_per_item}-p{self.products}"


DEFAULT = DataSet()


def item_product(index: int, products: int) -> str:
    return f"product-{index % products:04d}"


def _base_price(index: int, products: int) -> int:
    # spread prices so products differ in revenue; deterministic per product
    return 100 + ((index % products) * 7919) % 9_900


def item_rows(data: DataSet, index: int) -> Iterator[tuple[str, str, int, int]]:
    """The rows of item ``index``: (region, product, quantity, unit_price_cents)."""
    rng = random.Random(f"zmqflow-sales:{data.seed}:{index}")
    product = item_product(index, data.products)
    base = _base_price(index, data.products)
    n = data.rows_per_item
    # drawn in bulk: a million rows in about a second, not three
    regions = rng.choices(REGIONS, k=n)
    quantities = rng.choices(_QUANTITIES, k=n)
    prices = rng.choices(_PRICE_STEPS, k=n)
    for region, quantity, step in zip(regions, quantities, prices, strict=True):
        yield region, product, quantity, base + step


def item_csv(data: DataSet, index: int) -> bytes:
    """Item ``index`` as the rollup service's input."""
    body = "".join(f"{r},{p},{q},{c}\n" for r, p, q, c in item_rows(data, index))
    return f"{HEADER}\n{body}".encode()


def payloads(data: DataSet) -> Iterator[bytes]:
    return (item_csv(data, i) for i in range(data.items))


def _top(products: Mapping[str, int]) -> str | None:
    # largest revenue; ties broken by the smallest name in byte order (docs/services.md)
    return min(products, key=lambda p: (-products[p], p.encode())) if products else None


def merge(
    data: DataSet, answers: Sequence[str | bytes | Mapping[str, Any] | None]
) -> dict[str, Any]:
    """The rollup of the whole set from the per-item answers, in item order."""
    if len(answers) != data.items:
        raise ValueError(f"expected {data.items} answers, got {len(answers)}")
    regions: dict[str, dict[str, int]] = {}
    products: dict[str, int] = {}
    rows = total = 0
    for index, answer in enumerate(answers):
        if answer is None:
            raise ValueError(f"item {index} has no answer")
        out = json.loads(answer) if isinstance(answer, str | bytes) else answer
        product = item_product(index, data.products)
        if out["rows"] and out["top_product"] != product:
            raise ValueError(f"item {index} answered for {out['top_product']!r}, not {product!r}")
        for region, totals in out["regions"].items():
            mine = regions.setdefault(region, {"orders": 0, "quantity": 0, "revenue_cents": 0})
            for field in ("orders", "quantity", "revenue_cents"):
                mine[field] += totals[field]
        products[product] = products.get(product, 0) + out["total_revenue_cents"]
        rows += out["rows"]
        total += out["total_revenue_cents"]
    return _result(regions, products, rows, total, data.items)


def rollup_rows(rows: Iterable[tuple[str, str, int, int]], items: int) -> dict[str, Any]:
    """The rollup of rows computed directly, in one process."""
    regions: dict[str, dict[str, int]] = {}
    products: dict[str, int] = {}
    count = total = 0
    for region, product, quantity, price in rows:
        revenue = quantity * price
        totals = regions.setdefault(region, {"orders": 0, "quantity": 0, "revenue_cents": 0})
        totals["orders"] += 1
        totals["quantity"] += quantity
        totals["revenue_cents"] += revenue
        products[product] = products.get(product, 0) + revenue
        count += 1
        total += revenue
    return _result(regions, products, count, total, items)


def rollup_dataset(data: DataSet) -> dict[str, Any]:
    """Single-process reference: the whole data set's rollup without the fabric."""
    rows = (row for i in range(data.items) for row in item_rows(data, i))
    return rollup_rows(rows, data.items)


def _result(
    regions: dict[str, dict[str, int]], products: dict[str, int], rows: int, total: int, items: int
) -> dict[str, Any]:
    return {
        "items": items,
        "regions": {r: regions[r] for r in sorted(regions)},
        "rows": rows,
        "top_product": _top(products),
        "total_revenue_cents": total,
    }


def canonical(result: Mapping[str, Any]) -> str:
    """The JSON form compared by tests and shown in artifacts."""
    return json.dumps(result, sort_keys=True, separators=(",", ":"))
