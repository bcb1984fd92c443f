"""The example data set (zmqflow.examples.sales): deterministic, one product per item,
merge == single-process rollup."""

from __future__ import annotations

import json

import pytest

from zmqflow import handlers
from zmqflow.examples import sales

SMALL = sales.DataSet(seed=3, items=40, rows_per_item=25, products=6)


def test_the_same_params_give_the_same_rows() -> None:
    assert sales.item_csv(SMALL, 5) == sales.item_csv(sales.DataSet(3, 40, 25, 6), 5)
    assert sales.item_csv(SMALL, 5) != sales.item_csv(sales.DataSet(4, 40, 25, 6), 5)


def test_each_item_holds_one_product() -> None:
    for index in range(SMALL.items):
        products = {row[1] for row in sales.item_rows(SMALL, index)}
        assert products == {sales.item_product(index, SMALL.products)}


def test_merging_the_services_answers_equals_the_single_process_rollup() -> None:
    answers = [handlers.rollup(p) for p in sales.payloads(SMALL)]
    merged = sales.merge(SMALL, answers)
    assert merged == sales.rollup_dataset(SMALL)
    assert merged["rows"] == SMALL.rows and merged["items"] == SMALL.items


def test_the_whole_sets_rollup_matches_the_service_on_all_rows_at_once() -> None:
    # the rollup service on one CSV of every row gives the same totals
    rows = [row for i in range(SMALL.items) for row in sales.item_rows(SMALL, i)]
    csv = sales.HEADER + "\n" + "".join(f"{r},{p},{q},{c}\n" for r, p, q, c in rows)
    whole = json.loads(handlers.rollup(csv.encode()))
    expected = sales.rollup_dataset(SMALL)
    assert whole["total_revenue_cents"] == expected["total_revenue_cents"]
    assert whole["top_product"] == expected["top_product"]
    assert whole["regions"] == expected["regions"]


def test_merge_refuses_a_missing_or_misplaced_answer() -> None:
    answers = [handlers.rollup(p) for p in sales.payloads(SMALL)]
    with pytest.raises(ValueError, match="expected 40 answers"):
        sales.merge(SMALL, answers[:-1])
    with pytest.raises(ValueError, match="item 3 has no answer"):
        sales.merge(SMALL, [*answers[:3], None, *answers[4:]])
    swapped = [answers[1], answers[0], *answers[2:]]
    with pytest.raises(ValueError, match="item 0 answered for"):
        sales.merge(SMALL, swapped)


def test_the_default_data_set_is_a_million_rows_in_ten_thousand_items() -> None:
    assert sales.DataSet() == sales.DEFAULT
    assert sales.DEFAULT.items >= 10_000 and sales.DEFAULT.rows >= 1_000_000


def test_a_data_sets_tag_names_every_parameter() -> None:
    tags = {
        sales.DataSet(**{**vars_of(SMALL), field: getattr(SMALL, field) + 1}).tag
        for field in ("seed", "items", "rows_per_item", "products")
    }
    assert len(tags | {SMALL.tag}) == 5


def test_from_params_takes_the_data_sets_fields_and_ignores_others() -> None:
    params = {"seed": "3", "items": 40, "rows_per_item": 25, "products": 6, "note": "x"}
    assert sales.DataSet.from_params(params) == SMALL
    with pytest.raises(ValueError, match="at least 1"):
        sales.DataSet.from_params({"items": 0})


def test_canonical_json_is_the_same_for_the_same_result_in_any_key_order() -> None:
    result = sales.rollup_dataset(SMALL)
    shuffled = dict(reversed(list(result.items())))
    assert sales.canonical(shuffled) == sales.canonical(result)
    assert json.loads(sales.canonical(result)) == result
    assert " " not in sales.canonical(result)


def vars_of(data: sales.DataSet) -> dict[str, int]:
    return {f: getattr(data, f) for f in ("seed", "items", "rows_per_item", "products")}
