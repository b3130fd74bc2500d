"""JsonArrayWriter writes what json.dumps(items, indent=2) writes for the whole list, an item at a
time; closed after a failure, it holds the items written before it."""

from __future__ import annotations

import io
import json

import pytest

from signserver.json_array import JsonArrayWriter

ITEMS = [{"serial": "5e1a", "subject": "CN=Lei Ka Io 李家耀", "nested": {"list": [1, 2], "empty": {}}}, [], "text",
         None, 7]


@pytest.mark.parametrize("count", [0, 1, len(ITEMS)])
def test_the_items_as_json_dumps_gives_the_list(count):
    out = io.StringIO()
    array = JsonArrayWriter(out)
    for item in ITEMS[:count]:
        array.add(item)
    array.close()
    array.close()  # once
    assert out.getvalue() == json.dumps(ITEMS[:count], ensure_ascii=False, indent=2) + "\n"


def test_nothing_is_written_before_the_first_item_and_a_listing_cut_short_is_an_array():
    out = io.StringIO()
    array = JsonArrayWriter(out)
    assert out.getvalue() == "" and not array.started
    array.add(ITEMS[0])
    array.add(ITEMS[1])
    assert array.started
    array.close()
    assert json.loads(out.getvalue()) == ITEMS[:2]
