"""The Routes page's savings charts (AppTest against a real proxy): cost per request by day
per target, and what the canary saved against the baseline."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pyarrow as pa
from streamlit.testing.v1 import AppTest

from proxy.pricing import PriceMap
from tests.conftest import ProxyServer
from tests.test_savings import chat
from tests.test_ui_routes import FT, routes_page  # noqa: F401  (the fixture)

BASE = "gpt-4o-mini"


def chart_data(chart: Any) -> dict[str, list[Any]]:
    """A Streamlit chart's data (Arrow IPC in its proto), as columns."""
    table = pa.ipc.open_stream(chart.proto.datasets[0].data.data).read_all()
    return table.to_pydict()


def test_routes_page_charts_cost_and_savings(routes_page: Callable[..., AppTest],  # noqa: F811
                                             proxy: ProxyServer) -> None:
    proxy.upstream.state.model_usage.update({BASE: (4_000, 100), FT: (300, 100)})
    served = chat(proxy, 16, model="support-bot")
    assert served[BASE] and served[FT]
    at = routes_page()
    prices = PriceMap.load()
    base_cost, ft_cost = prices.cost(BASE, 4_000, 100), prices.cost(FT, 300, 100)
    assert base_cost is not None and ft_cost is not None and base_cost > ft_cost
    table = next(d.value for d in at.dataframe if "saved/req $" in d.value.columns)
    assert list(table["target"]) == [BASE, FT] and list(table["role"]) == ["baseline", "target"]
    assert table["saved/req $"][1] == round(base_cost - ft_cost, 8)
    assert "no training cost known" in table["break-even"][1]
    cost_chart, saved_chart = at.get("vega_lite_chart")
    cost = chart_data(cost_chart)
    by_target = dict(zip(cost["target"], cost["USD"], strict=True))
    assert by_target == {BASE: round(base_cost, 8), FT: round(ft_cost, 8)}
    saved = chart_data(saved_chart)
    assert saved["target"] == [FT]
    assert saved["USD"][0] == round((base_cost - ft_cost) * served[FT], 8)
    assert '"type": "bar"' in saved_chart.proto.spec and '"type": "line"' in cost_chart.proto.spec
