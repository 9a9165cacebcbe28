"""The admin API (/admin/*): what the UI, the CLI and scripts use. Every route needs a token."""

from __future__ import annotations

from starlette.routing import BaseRoute

from proxy.admin import (
    cycles_api,
    datasets,
    evals_api,
    faults,
    governance,
    interactions,
    jobs,
    keys,
    promote_api,
    review,
    routes_api,
    savings_api,
    sql,
    stats,
    templates_api,
)


def admin_routes(*, fault_injection: bool) -> list[BaseRoute]:
    routes: list[BaseRoute] = [
        *interactions.ROUTES,
        *review.ROUTES,
        *stats.ROUTES,
        *routes_api.ROUTES,
        *promote_api.ROUTES,
        *savings_api.ROUTES,
        *evals_api.ROUTES,
        *cycles_api.ROUTES,
        *keys.ROUTES,
        *sql.ROUTES,
        *governance.ROUTES,
        *datasets.ROUTES,
        *jobs.ROUTES,
        *templates_api.ROUTES,
    ]
    if fault_injection:
        routes += faults.ROUTES
    return routes
