from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response

from keyhouse.api.envelope import EmptyEnvelope, Envelope, ok
from keyhouse.api_keys import service
from keyhouse.api_keys.schemas import (
    ApiKey,
    ApiKeyPatchRequest,
    ApiKeyPostRequest,
    ApiKeyPostResponse,
)
from keyhouse.auth.dependencies import Context, RequireInOrganization
from keyhouse.auth.permissions import Permission
from keyhouse.state import AppState

router = APIRouter(prefix="/organizations/{organizationId}/keys", tags=["OpenAPI"])

KeyId = Annotated[uuid.UUID, Path(alias="keyId", description="ID of the key (its `id`, a UUID).")]


def _ctx(permission: Permission) -> object:
    return Depends(RequireInOrganization(permission))


@router.get("", operation_id="openapiKeyGetList", response_model=Envelope[list[ApiKey]])
def list_keys(
    ctx: Annotated[Context, _ctx(Permission.ORGANIZATION_VIEW_API_KEYS)],
    limit: Annotated[int, Query(ge=1, le=250, description="Page size (1-250).")] = 250,
    cursor: Annotated[str | None, Query(description="nextCursor of the previous page.")] = None,
) -> Response:
    page = service.list_keys(ctx.session, ctx.principal, limit=limit, cursor=cursor)
    return ok(
        service.describe(ctx.session, page.keys),
        extra={"limit": limit, "totalCount": page.total_count, "nextCursor": page.next_cursor},
    )


@router.post("", operation_id="openapiKeyCreate", response_model=Envelope[ApiKeyPostResponse])
def create_key(
    request: Request,
    ctx: Annotated[Context, _ctx(Permission.ORGANIZATION_CREATE_API_KEYS)],
    body: Annotated[ApiKeyPostRequest, Body()],
) -> Response:
    state: AppState = request.app.state.keyhouse
    created = service.create_key(
        ctx.session,
        ctx.principal,
        body,
        pepper=state.pepper,
        max_keys=state.settings.max_keys_per_organization,
    )
    [view] = service.describe(ctx.session, [created.key])
    return ok(ApiKeyPostResponse(key=view, key_id=created.key_id, key_secret=created.key_secret))


@router.get("/{keyId}", operation_id="openapiKeyGet", response_model=Envelope[ApiKey])
def get_key(
    ctx: Annotated[Context, _ctx(Permission.ORGANIZATION_VIEW_API_KEYS)], key_id: KeyId
) -> Response:
    key = service.get_key(ctx.session, ctx.principal, key_id)
    return ok(service.describe(ctx.session, [key])[0])


@router.patch("/{keyId}", operation_id="openapiKeyUpdate", response_model=Envelope[ApiKey])
def update_key(
    ctx: Annotated[Context, _ctx(Permission.ORGANIZATION_UPDATE_API_KEYS)],
    key_id: KeyId,
    body: Annotated[ApiKeyPatchRequest, Body()],
) -> Response:
    key = service.update_key(ctx.session, ctx.principal, key_id, body)
    return ok(service.describe(ctx.session, [key])[0])


@router.delete("/{keyId}", operation_id="openapiKeyDelete", response_model=EmptyEnvelope)
def delete_key(
    ctx: Annotated[Context, _ctx(Permission.ORGANIZATION_DELETE_API_KEYS)], key_id: KeyId
) -> Response:
    service.delete_key(ctx.session, ctx.principal, key_id)
    return ok()
