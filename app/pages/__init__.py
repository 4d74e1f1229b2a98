"""HTML routers, one module per screen; none of them appears in the OpenAPI schema.

new_run comes before runs: /runs/new must match before /runs/{run_id}.
"""

from fastapi import APIRouter

from app.pages import compare, datasets, new_run, playground, runs

router = APIRouter(include_in_schema=False)
for module in (new_run, runs, datasets, compare, playground):
    router.include_router(module.router)
