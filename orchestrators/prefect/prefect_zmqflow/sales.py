"""The example data set: deterministic sales rows, cut into `rollup` items.

Contract: ``SalesSpec`` names a data set; the same spec always gives the same
rows (``generate``), the same items (``make_items``: rows partitioned by
product, then chunked, so each item holds ONE product and its
``total_revenue_cents`` is that product's revenue in it) and the same
``reference`` result, computed here in one process without zmqflow.
``reduce`` folds the per-item answers of the `rollup` service
(docs/services.md) into the result ``reference`` gives. Pure Python: no
Prefect, no sockets, so the test and the flow share one definition.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

HEADER = "region,product,quantity,unit_price_cents"
REGIONS = ("africa", "east-asia", "europe", "latam", "middle-east", "north-america", "oceania")


class SalesSpec(BaseModel):
    """Which data set: every field takes part in the item keys."""

    rows: int = Field(default=1_000_000, ge=1)
    seed: int = 20261130
    products: int = Field(default=200, ge=1, le=100_000)
    rows_per_item: int = Field(default=100, ge=1)

    def tag(self) -> str:
        """A short name of the data set, for idempotency keys."""
        return f"sales-r{self.rows}-s{self.seed}-p{self.products}-i{self.rows_per_item}"


@dataclass(slots=True)
class Rows:
    """Columns of the data set; product and region are indices."""

    region: list[int]
    product: list[int]
    quantity: list[int]
    price: list[int]  # unit price in cents, per product

    def __len__(self) -> int:
        return len(self.product)


@dataclass(slots=True)
class Item:
    key: str  # idempotency key, unique per data set, namespace and item
    product: str
    payload: bytes  # the CSV for `rollup`


def product_name(i: int) -> str:
    return f"product-{i:05d}"


def generate(spec: SalesSpec) -> Rows:
    """The rows: popular products sell more (Zipf-like weights), so top_product is a real
    answer rather than a tie."""
    rng = random.Random(spec.seed)
    prices = [rng.randrange(99, 50_000) for _ in range(spec.products)]
    weights = [1.0 / (i + 1) ** 0.8 for i in range(spec.products)]
    rng.shuffle(weights)  # the most popular product is not always product 0
    product = rng.choices(range(spec.products), weights=weights, k=spec.rows)
    region = rng.choices(range(len(REGIONS)), k=spec.rows)
    quantity = rng.choices(range(1, 21), k=spec.rows)
    return Rows(region, product, quantity, [prices[p] for p in product])


def make_items(spec: SalesSpec, rows: Rows, namespace: str) -> list[Item]:
    """Partition by product (in product order), then chunk each product's rows."""
    by_product: dict[int, list[int]] = defaultdict(list)
    for i, p in enumerate(rows.product):
        by_product[p].append(i)
    items: list[Item] = []
    tag = spec.tag()
    for p in sorted(by_product):
        indices = by_product[p]
        name = product_name(p)
        for chunk, start in enumerate(range(0, len(indices), spec.rows_per_item)):
            lines = [HEADER]
            for i in indices[start : start + spec.rows_per_item]:
                lines.append(f"{REGIONS[rows.region[i]]},{name},{rows.quantity[i]},{rows.price[i]}")
            lines.append("")
            items.append(Item(f"{namespace}:{tag}:{name}:{chunk}", name, "\n".join(lines).encode()))
    return items


def reference(spec: SalesSpec, rows: Rows) -> dict[str, Any]:
    """The result computed in one process straight from the rows, for comparison."""
    regions: dict[str, dict[str, int]] = {}
    revenue_by_product: dict[int, int] = defaultdict(int)
    per_product_rows: dict[int, int] = defaultdict(int)
    total = 0
    for r, p, q, c in zip(rows.region, rows.product, rows.quantity, rows.price, strict=True):
        revenue = q * c
        total += revenue
        revenue_by_product[p] += revenue
        per_product_rows[p] += 1
        agg = regions.setdefault(REGIONS[r], {"orders": 0, "quantity": 0, "revenue_cents": 0})
        agg["orders"] += 1
        agg["quantity"] += q
        agg["revenue_cents"] += revenue
    top = _top({product_name(p): v for p, v in revenue_by_product.items()})
    items = sum(-(-n // spec.rows_per_item) for n in per_product_rows.values())
    return _result(len(rows), regions, top, total, items)


def reduce(answers: Iterable[tuple[str, bytes]]) -> dict[str, Any]:
    """Fold `rollup` answers, given as (item product, answer JSON), into one result."""
    regions: dict[str, dict[str, int]] = {}
    revenue_by_product: dict[str, int] = defaultdict(int)
    rows = total = items = 0
    for product, raw in answers:
        answer = json.loads(raw)
        items += 1
        rows += answer["rows"]
        total += answer["total_revenue_cents"]
        # one product per item: the item's revenue is that product's revenue in it
        revenue_by_product[product] += answer["total_revenue_cents"]
        for region, agg in answer["regions"].items():
            into = regions.setdefault(region, {"orders": 0, "quantity": 0, "revenue_cents": 0})
            for field in ("orders", "quantity", "revenue_cents"):
                into[field] += agg[field]
    return _result(rows, regions, _top(revenue_by_product), total, items)


def _top(revenue: dict[str, int]) -> str | None:
    """Largest revenue; ties go to the smallest name (as the rollup service breaks them)."""
    if not revenue:
        return None
    return min(revenue, key=lambda name: (-revenue[name], name.encode()))


def _result(
    rows: int, regions: dict[str, dict[str, int]], top: str | None, total: int, items: int
) -> dict[str, Any]:
    return {
        "rows": rows,
        "regions": dict(sorted(regions.items())),
        "top_product": top,
        "total_revenue_cents": total,
        "items": items,
    }


def canonical(result: dict[str, Any]) -> str:
    """The JSON form compared by tests and shown in the artifact."""
    return json.dumps(result, sort_keys=True, separators=(",", ":"))


def chunks(seq: list[Item], size: int) -> Iterator[list[Item]]:
    for start in range(0, len(seq), size):
        yield seq[start : start + size]


def main(argv: list[str] | None = None) -> None:
    """`python -m prefect_zmqflow.sales [--rows N --seed S --products P --rows-per-item I]`:
    print the single-process reference result as canonical JSON."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    for name, field in SalesSpec.model_fields.items():
        parser.add_argument(f"--{name.replace('_', '-')}", type=int, default=field.default)
    spec = SalesSpec(**vars(parser.parse_args(argv)))
    print(canonical(reference(spec, generate(spec))))


if __name__ == "__main__":
    main()
