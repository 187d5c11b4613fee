"""The budget levels' admin API: a tenant's (a school), a group's (a class) and a user's (a learner)
budget, created, changed, read with what is left this period (404 without one), or removed (the
config file's comes back). Admin keys only. Kept with the usage ledger (router/usage/levels.py):
every replica applies a change within `budgets.levels_refresh_s`, this one at once."""

# No `from __future__ import annotations`: FastAPI reads these annotations at run time.

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request

from core.budget_config import LevelBudget
from core.errors import InvalidRequest, NotFound
from router.http.auth import require_admin
from router.http.openapi import errors
from router.services.wiring import Services
from router.usage.scopes import LevelKey
from router.wire.budgets import BudgetLevel
from router.wire.replies import ErrorResponse
from router.wire.rules import ID_PATTERN

budget_routes = APIRouter()
Name = Annotated[str, Path(min_length=1, max_length=256, pattern=ID_PATTERN)]
BASE = "/api/v1/ai/budgets/{tenant}"
NOT_FOUND: dict[int | str, dict[str, Any]] = {404: {
    "model": ErrorResponse, "description": "No budget at this level (none set through the API, for "
    "a removal).", "content": {"application/json": {"example": NotFound(
        "group 'class-7a' of tenant 'school' has no budget; set one with PUT").body()}}}}
READ = {**errors(400, 401, 403, 503), **NOT_FOUND}
WRITE = errors(400, 401, 403, 413, 503)


async def _view(request: Request, key: LevelKey) -> BudgetLevel:
    budgets = _services(request).accounting.budgets
    tenant, group, user = key
    levels = await budgets.levels.current()
    return BudgetLevel.model_validate({
        "level": "group" if group else "user" if user else "tenant", "tenant": tenant,
        "group": group, "user": user, "source": budgets.levels.source(key),
        "budget": levels.get(key), "status": await budgets.of_level(key)})


async def _put(request: Request, key: LevelKey, budget: LevelBudget | None) -> BudgetLevel:
    require_admin(request.state.api_key, "managing budgets")
    levels = _services(request).accounting.budgets.levels
    if budget is not None and budget.learner_cap_usd is not None and key[1] is None:
        raise InvalidRequest("learner_cap_usd is a group's: what one learner may spend of it",
                             param="learner_cap_usd")
    if budget is None and levels.source(key) != "api":
        raise NotFound(f"{_named(key)} has no budget set through the API" + (
            " (its budget is the config file's: change it there)" if levels.source(key) else ""))
    await _services(request).accounting.budgets.set_level(key, budget)
    return await _view(request, key)


async def _get(request: Request, key: LevelKey) -> BudgetLevel:
    require_admin(request.state.api_key, "reading budgets")
    await _services(request).accounting.budgets.levels.current()
    if _services(request).accounting.budgets.levels.source(key) is None:
        raise NotFound(f"{_named(key)} has no budget; set one with PUT")
    return await _view(request, key)


def _named(key: LevelKey) -> str:
    tenant, group, user = key
    if group is not None:
        return f"group {group!r} of tenant {tenant!r}"
    return f"user {user!r} of tenant {tenant!r}" if user is not None else f"tenant {tenant!r}"


def _services(request: Request) -> Services:
    found: Services = request.app.state.services
    return found


@budget_routes.get(BASE, responses=READ)
async def get_tenant_budget(request: Request, tenant: Name) -> BudgetLevel:
    """The tenant's (a school's) budget, and what is spent and left of it this period."""
    return await _get(request, (tenant, None, None))


@budget_routes.put(BASE, responses=WRITE)
async def put_tenant_budget(request: Request, tenant: Name, body: LevelBudget) -> BudgetLevel:
    """Create or change the tenant's budget: every request of the tenant spends it."""
    return await _put(request, (tenant, None, None), body)


@budget_routes.delete(BASE, responses=READ)
async def delete_tenant_budget(request: Request, tenant: Name) -> BudgetLevel:
    """Remove the budget set through the API (the config file's, if any, applies again)."""
    return await _put(request, (tenant, None, None), None)


@budget_routes.get(BASE + "/groups/{group}", responses=READ)
async def get_group_budget(request: Request, tenant: Name, group: Name) -> BudgetLevel:
    """A group's (a class's) budget in the tenant, and what is spent and left of it."""
    return await _get(request, (tenant, group, None))


@budget_routes.put(BASE + "/groups/{group}", responses=WRITE)
async def put_group_budget(request: Request, tenant: Name, group: Name,
                           body: LevelBudget) -> BudgetLevel:
    """Create or change a group's budget: requests naming the group spend it, each learner at
    most their share (`learner_cap_usd`, or the budget among the group's active learners)."""
    return await _put(request, (tenant, group, None), body)


@budget_routes.delete(BASE + "/groups/{group}", responses=READ)
async def delete_group_budget(request: Request, tenant: Name, group: Name) -> BudgetLevel:
    """Remove the group's budget set through the API (the config file's, if any, applies again)."""
    return await _put(request, (tenant, group, None), None)


@budget_routes.get(BASE + "/users/{user}", responses=READ)
async def get_user_budget(request: Request, tenant: Name, user: Name) -> BudgetLevel:
    """A user's (a learner's) budget in the tenant, and what is spent and left of it."""
    return await _get(request, (tenant, None, user))


@budget_routes.put(BASE + "/users/{user}", responses=WRITE)
async def put_user_budget(request: Request, tenant: Name, user: Name,
                          body: LevelBudget) -> BudgetLevel:
    """Create or change a user's budget in the tenant (in place of the per-user budget)."""
    return await _put(request, (tenant, None, user), body)


@budget_routes.delete(BASE + "/users/{user}", responses=READ)
async def delete_user_budget(request: Request, tenant: Name, user: Name) -> BudgetLevel:
    """Remove the user's budget set through the API (the config file's, or else the per-user
    budget, applies again)."""
    return await _put(request, (tenant, None, user), None)
