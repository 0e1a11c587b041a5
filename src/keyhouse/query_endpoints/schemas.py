"""Wire models of Query API endpoints and saved queries, as the newer official spec (Beta)
names them: ``PublicQueryApiEndpoint*`` and ``PublicSavedQuery*``. The vendored spec predates
them; clickhousectl 0.5.0 and the Terraform provider send and read these shapes."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from pydantic import Field

from keyhouse.api.wire import MAX_LIST_ITEMS, Wire, WireRequest

MAX_SQL_CHARS = 4_194_304
MAX_PARAMETERS = 256
Name = Annotated[str, Field(min_length=1, max_length=255, pattern=r"\S")]
Sql = Annotated[str, Field(min_length=1, max_length=MAX_SQL_CHARS, pattern=r"\S")]
Parameters = Annotated[dict[Name, Annotated[str, Field(max_length=65536)]], Field(max_length=256)]
RoleName = Annotated[str, Field(min_length=1, max_length=255, pattern=r"\S")]
Origin = Annotated[str, Field(min_length=1, max_length=2048)]


class PublicQueryApiEndpointRequest(WireRequest):
    name: Name
    sql: Sql
    database: Name
    parameters: Parameters | None = None
    api_key_ids: list[uuid.UUID] = Field(alias="apiKeyIds", min_length=1, max_length=MAX_LIST_ITEMS)
    roles: list[RoleName] = Field(min_length=1, max_length=64)
    allowed_origins: list[Origin] | None = Field(
        default=None, alias="allowedOrigins", max_length=MAX_LIST_ITEMS
    )


class PublicQueryApiEndpointListItem(Wire):
    id: str
    name: str
    database: str
    api_key_ids: list[str] = Field(alias="apiKeyIds")
    roles: list[str]
    allowed_origins: list[str] = Field(alias="allowedOrigins")
    url: str
    owner_type: Literal["user", "queryApiEndpoint"] = Field(alias="ownerType")


class PublicQueryApiEndpoint(PublicQueryApiEndpointListItem):
    sql: str
    parameters: dict[str, str]


class PublicSavedQueryRequest(WireRequest):
    name: Name
    sql: Sql
    database: Name
    parameters: Parameters | None = None


class PublicSavedQueryListItem(Wire):
    id: str
    name: str
    database: str


class PublicSavedQuery(PublicSavedQueryListItem):
    sql: str
    parameters: dict[str, str]
