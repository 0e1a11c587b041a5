"""The official API keys routes (``/v1/organizations/{organizationId}/keys``): thin; the rules
are in ``keyhouse.api_keys.service``."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from sqlalchemy.orm import Session

from keyhouse.api.envelope import EmptyEnvelope, Envelope, ok, ok_body
from keyhouse.api_keys import service
from keyhouse.api_keys.schemas import (
    ApiKey,
    ApiKeyPatchRequest,
    ApiKeyPostRequest,
    ApiKeyPostResponse,
)
from keyhouse.auth.permissions import Permission
from keyhouse.auth.principal import Principal
from keyhouse.context import Context, RequireInOrganization
from keyhouse.state import app_state

router = APIRouter(prefix="/organizations/{organizationId}/keys", tags=["OpenAPI"])

MAX_KEYS_PAGE = 250
KeyId = Annotated[uuid.UUID, Path(alias="keyId", description="ID of the key (its `id`, a UUID).")]


def _ctx(permission: Permission) -> object:
    return Depends(RequireInOrganization(permission))


@router.get("", operation_id="openapiKeyGetList", response_model=Envelope[list[ApiKey]])
async def list_keys(
    ctx: Annotated[Context, _ctx(Permission.ORGANIZATION_VIEW_API_KEYS)],
    limit: Annotated[
        int, Query(ge=1, le=MAX_KEYS_PAGE, description="Page size (1-250).")
    ] = MAX_KEYS_PAGE,
    cursor: Annotated[str | None, Query(description="nextCursor of the previous page.")] = None,
) -> Response:
    return _json(await key_list_body(ctx, limit, cursor))


async def key_list_body(ctx: Context, limit: int, cursor: str | None) -> bytes:
    """The list's envelope, whichever front answers it: the route above, or
    ``keyhouse.fast_paths`` before FastAPI's stack."""
    principal, (rows, count) = await ctx.authenticate_reading(
        lambda organization_id: service.key_page_reads(organization_id, limit, cursor)
    )
    page = service.key_page(principal, rows, count, limit)
    extra = {"limit": limit, "totalCount": page.total_count, "nextCursor": page.next_cursor}
    return ok_body(list(page.keys), extra=extra)


def _json(body: bytes) -> Response:
    return Response(body, media_type="application/json")


@router.post("", operation_id="openapiKeyCreate", response_model=Envelope[ApiKeyPostResponse])
async def create_key(
    request: Request,
    ctx: Annotated[Context, _ctx(Permission.ORGANIZATION_CREATE_API_KEYS)],
    body: Annotated[ApiKeyPostRequest, Body()],
) -> Response:
    state = app_state(request)

    def create(session: Session, principal: Principal) -> ApiKeyPostResponse:
        created = service.create_key(
            session,
            principal,
            body,
            pepper=state.pepper,
            max_keys=state.settings.max_keys_per_organization,
        )
        [view] = service.describe(session, [created.key])
        return ApiKeyPostResponse(key=view, key_id=created.key_id, key_secret=created.key_secret)

    return ok(await ctx.run(create))


@router.get("/{keyId}", operation_id="openapiKeyGet", response_model=Envelope[ApiKey])
async def get_key(
    ctx: Annotated[Context, _ctx(Permission.ORGANIZATION_VIEW_API_KEYS)], key_id: KeyId
) -> Response:
    return _json(await key_body(ctx, key_id))


async def key_body(ctx: Context, key_id: uuid.UUID) -> bytes:
    """One key's envelope, whichever front answers it (as ``key_list_body``)."""
    principal, (rows,) = await ctx.authenticate_reading(
        lambda organization_id: service.key_view_reads(organization_id, key_id)
    )
    return ok_body(service.key_view(principal, rows))


@router.patch("/{keyId}", operation_id="openapiKeyUpdate", response_model=Envelope[ApiKey])
async def update_key(
    ctx: Annotated[Context, _ctx(Permission.ORGANIZATION_UPDATE_API_KEYS)],
    key_id: KeyId,
    body: Annotated[ApiKeyPatchRequest, Body()],
) -> Response:
    def update(session: Session, principal: Principal) -> ApiKey:
        key = service.update_key(session, principal, key_id, body)
        return service.describe(session, [key])[0]

    return ok(await ctx.run(update))


@router.delete("/{keyId}", operation_id="openapiKeyDelete", response_model=EmptyEnvelope)
async def delete_key(
    ctx: Annotated[Context, _ctx(Permission.ORGANIZATION_DELETE_API_KEYS)], key_id: KeyId
) -> Response:
    def delete(session: Session, principal: Principal) -> None:
        service.delete_key(session, principal, key_id)

    await ctx.run(delete)
    return ok()
