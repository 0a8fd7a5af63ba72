"""Who is calling: ``X-API-Key`` resolved to a ``Caller`` (its tenant, or an admin).

Keys come from ``TENANTS_FILE``, ``API_KEY`` (the tenant ``default``) and ``ADMIN_API_KEY``
(``api.tenants``), compared in constant time. A missing key answers 401 where one is needed; an
unknown key answers 401 everywhere. With no key configured (ALLOW_ANONYMOUS) every caller is the
default tenant. An admin may look at one tenant with ``?tenant=<name>``.
"""
from __future__ import annotations

from fastapi import Request
from fastapi.security import APIKeyHeader

from api.errors import ApiError
from api.tenants import TENANT_NAME, Caller, TenantBook
from batcher.queue.jobs import DEFAULT_TENANT

ANONYMOUS = Caller(DEFAULT_TENANT)


def book_of(request: Request) -> TenantBook:
    return request.app.state.tenants.current()


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "unauthorized", message, headers={"WWW-Authenticate": "APIKey"})


def _scoped(request: Request, caller: Caller) -> Caller:
    """An admin's ``?tenant=``: the admin looks at that tenant alone."""
    named = request.query_params.get("tenant")
    if not caller.admin or named is None:
        return caller
    if not TENANT_NAME.fullmatch(named):
        raise ApiError(422, "invalid_field", "tenant must be 1 to 64 letters, digits, _ . -", "tenant")
    return Caller(named, admin=True)


def resolve(request: Request, required: bool) -> Caller:
    """The caller; without a key, where none is ``required``, the default tenant."""
    book = book_of(request)
    given = request.headers.get("x-api-key")
    if book.open:
        caller = ANONYMOUS
    elif not given:
        if required:
            raise _unauthorized("this endpoint needs an X-API-Key header")
        caller = ANONYMOUS
    elif (found := book.resolve(given)) is None:
        raise _unauthorized("the X-API-Key is not valid")
    else:
        caller = found
    request.state.caller = caller = _scoped(request, caller)
    return caller


class KeyCheck(APIKeyHeader):
    """One dependency that both documents ``X-API-Key`` in OpenAPI and resolves it (a single
    dependency per request rather than two nested ones)."""

    def __init__(self, required: bool, **kw) -> None:
        super().__init__(**kw)
        self.required = required

    async def __call__(self, request: Request) -> Caller:  # type: ignore[override]
        return resolve(request, self.required)


api_key = KeyCheck(True, name="X-API-Key", scheme_name="APIKeyHeader", auto_error=False,
                   description="Required when API_KEY, TENANTS_FILE or ADMIN_API_KEY is set; names the tenant.")
# the reads that need no key (a job's status by its unguessable id, the stats): the default
# tenant's view without one, the key's tenant's with one
optional_key = KeyCheck(False, name="X-API-Key", scheme_name="APIKeyHeader", auto_error=False,
                        description="Optional: scopes the answer to the key's tenant.")


def tenant_of(caller: Caller) -> str:
    """The tenant a write or a search acts in: an admin must name one (``?tenant=``)."""
    if caller.tenant is None:
        raise ApiError(422, "tenant_required", "an admin key acts in one tenant: name it with ?tenant=<name>",
                       "tenant")
    return caller.tenant


def sees_totals(request: Request, caller: Caller) -> bool:
    """Whether the caller may see the whole queue's counters: an admin looking at every tenant,
    or anyone where the default tenant is the only one (as before tenants)."""
    return caller.tenant is None or (caller.tenant == DEFAULT_TENANT and book_of(request).single)
