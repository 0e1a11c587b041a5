"""Wire models of services, as the official spec's ``Service*`` and ``ServiceQueryAPIEndpoint``
schemas name them. Every official field is declared; those that only mean something in a
cloud (encryption, BYOC, private endpoints, tiers, profiles, compliance, scaling schedules) are
never filled in a response, and a request that asks for one is refused (400)."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any, Literal

from pydantic import Field, field_validator

from keyhouse.api.wire import MAX_LIST_ITEMS, Wire, WireRequest
from keyhouse.auth.network import IpAccessListEntry

Provider = Literal["aws", "gcp", "azure"]
Region = Literal[
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-south-1",
    "ap-southeast-1",
    "ap-southeast-2",
    "ca-central-1",
    "eu-central-1",
    "eu-west-1",
    "eu-west-2",
    "il-central-1",
    "us-east-1",
    "us-east-2",
    "us-west-2",
    "us-east1",
    "us-central1",
    "europe-west2",
    "europe-west4",
    "asia-southeast1",
    "asia-northeast1",
    "eastus",
    "eastus2",
    "westus3",
    "germanywestcentral",
    "centralus",
]
ServiceState = Literal[
    "starting",
    "stopping",
    "terminating",
    "softdeleting",
    "awaking",
    "partially_running",
    "provisioning",
    "running",
    "stopped",
    "terminated",
    "softdeleted",
    "degraded",
    "failed",
    "idle",
]
ReleaseChannel = Literal["slow", "default", "fast"]
AutoscalingMode = Literal["vertical", "horizontal"]
Tier = Literal[
    "development",
    "production",
    "dedicated_high_mem",
    "dedicated_high_cpu",
    "dedicated_standard",
    "dedicated_standard_n2d_standard_4",
]
Profile = Literal[
    "v1-default", "v1-highmem-xs", "v1-highmem-s", "v1-highmem-m", "v1-highmem-l", "v1-highmem-xl"
]
QueryEndpointRole = Literal["sql_console_read_only", "sql_console_admin"]

_TAG = re.compile(r"^[a-zA-Z0-9._-]+$")
# "Alphanumerical string with whitespaces"; also - and _, which console users type.
_SERVICE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _-]*$")


def _service_name(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not _SERVICE_NAME.match(value):
        raise ValueError("letters, digits, spaces, '-' and '_' only")
    return value


class ResourceTag(Wire):
    key: str = Field(min_length=1, max_length=128)
    value: str | None = Field(default=None, max_length=256)

    @field_validator("key", "value")
    @classmethod
    def _pattern(cls, value: str | None) -> str | None:
        if value is not None and value != "" and not _TAG.match(value):
            raise ValueError("must match ^[a-zA-Z0-9._-]+$")
        return value


class ServiceEndpoint(Wire):
    protocol: Literal["https", "nativesecure", "mysql"]
    host: str
    port: int
    username: str | None = None


class ServiceEndpointChange(Wire):
    protocol: Literal["mysql"]
    enabled: bool


class CurrentScaling(Wire):
    effective_autoscaling_mode: AutoscalingMode = Field(alias="effectiveAutoscalingMode")
    effective_min_replica_memory_gb: int = Field(alias="effectiveMinReplicaMemoryGb")
    effective_max_replica_memory_gb: int = Field(alias="effectiveMaxReplicaMemoryGb")
    effective_min_replicas: int | None = Field(default=None, alias="effectiveMinReplicas")
    effective_max_replicas: int | None = Field(default=None, alias="effectiveMaxReplicas")
    effective_idle_scaling: bool = Field(alias="effectiveIdleScaling")
    effective_idle_timeout_minutes: int = Field(alias="effectiveIdleTimeoutMinutes")
    active_entry_id: str | None = Field(default=None, alias="activeEntryId")


class Service(Wire):
    id: str
    name: str
    provider: Provider
    region: Region
    state: ServiceState
    clickhouse_version: str | None = Field(default=None, alias="clickhouseVersion")
    endpoints: list[ServiceEndpoint]
    tier: Tier | None = None
    min_total_memory_gb: int | None = Field(default=None, alias="minTotalMemoryGb")
    max_total_memory_gb: int | None = Field(default=None, alias="maxTotalMemoryGb")
    min_replica_memory_gb: int = Field(alias="minReplicaMemoryGb")
    max_replica_memory_gb: int = Field(alias="maxReplicaMemoryGb")
    num_replicas: int = Field(alias="numReplicas")
    min_replicas: int | None = Field(default=None, alias="minReplicas")
    max_replicas: int | None = Field(default=None, alias="maxReplicas")
    autoscaling_mode: AutoscalingMode = Field(alias="autoscalingMode")
    replica_memory_gb: int | None = Field(default=None, alias="replicaMemoryGb")
    idle_scaling: bool = Field(alias="idleScaling")
    idle_timeout_minutes: int = Field(alias="idleTimeoutMinutes")
    ip_access_list: list[IpAccessListEntry] = Field(alias="ipAccessList")
    created_at: dt.datetime = Field(alias="createdAt")
    encryption_key: str | None = Field(default=None, alias="encryptionKey")
    encryption_assumed_role_identifier: str | None = Field(
        default=None, alias="encryptionAssumedRoleIdentifier"
    )
    iam_role: str | None = Field(default=None, alias="iamRole")
    private_endpoint_ids: list[str] = Field(alias="privateEndpointIds")
    available_private_endpoint_ids: list[str] = Field(alias="availablePrivateEndpointIds")
    data_warehouse_id: str = Field(alias="dataWarehouseId")
    is_primary: bool = Field(alias="isPrimary")
    is_readonly: bool = Field(alias="isReadonly")
    release_channel: ReleaseChannel = Field(alias="releaseChannel")
    byoc_id: str | None = Field(default=None, alias="byocId")
    has_transparent_data_encryption: bool | None = Field(
        default=None, alias="hasTransparentDataEncryption"
    )
    profile: Profile | None = None
    transparent_data_encryption_key_id: str | None = Field(
        default=None, alias="transparentDataEncryptionKeyId"
    )
    encryption_role_id: str | None = Field(default=None, alias="encryptionRoleId")
    compliance_type: Literal["hipaa", "pci"] | None = Field(default=None, alias="complianceType")
    tags: list[ResourceTag]
    enable_core_dumps: bool = Field(alias="enableCoreDumps")
    scaling_schedule: dict[str, Any] | None = Field(default=None, alias="scalingSchedule")
    current_scaling: CurrentScaling = Field(alias="currentScaling")


class AttachedClickHouse(WireRequest):
    """Keyhouse extension: a ClickHouse server or cluster the operator runs, reached over its
    HTTP interface; the service then proxies to it instead of starting an engine."""

    url: str = Field(min_length=1, max_length=1024, description="e.g. https://ch.internal:8443")
    username: str = Field(default="default", min_length=1, max_length=255)
    password: str = Field(default="", max_length=1024, repr=False)


class ServicePostRequest(WireRequest):
    name: str = Field(min_length=1, max_length=50)
    provider: Provider | None = None
    region: Region | None = None
    tier: Tier | None = None
    ip_access_list: list[IpAccessListEntry] | None = Field(
        default=None, alias="ipAccessList", max_length=MAX_LIST_ITEMS
    )
    min_total_memory_gb: int | None = Field(default=None, alias="minTotalMemoryGb", ge=24, le=1068)
    max_total_memory_gb: int | None = Field(default=None, alias="maxTotalMemoryGb", ge=24, le=1068)
    autoscaling_mode: AutoscalingMode | None = Field(default=None, alias="autoscalingMode")
    min_replica_memory_gb: int | None = Field(
        default=None, alias="minReplicaMemoryGb", ge=8, le=356, multiple_of=4
    )
    max_replica_memory_gb: int | None = Field(
        default=None, alias="maxReplicaMemoryGb", ge=8, le=356, multiple_of=4
    )
    num_replicas: int | None = Field(default=None, alias="numReplicas", ge=1, le=20)
    min_replicas: int | None = Field(default=None, alias="minReplicas", ge=1, le=20)
    max_replicas: int | None = Field(default=None, alias="maxReplicas", ge=1, le=20)
    idle_scaling: bool | None = Field(default=None, alias="idleScaling")
    idle_timeout_minutes: int | None = Field(default=None, alias="idleTimeoutMinutes", ge=5)
    is_readonly: bool | None = Field(default=None, alias="isReadonly")
    data_warehouse_id: str | None = Field(default=None, alias="dataWarehouseId")
    backup_id: str | None = Field(default=None, alias="backupId")
    encryption_key: str | None = Field(default=None, alias="encryptionKey")
    encryption_assumed_role_identifier: str | None = Field(
        default=None, alias="encryptionAssumedRoleIdentifier"
    )
    private_endpoint_ids: list[str] | None = Field(default=None, alias="privateEndpointIds")
    private_preview_terms_checked: bool | None = Field(
        default=None, alias="privatePreviewTermsChecked"
    )
    release_channel: ReleaseChannel | None = Field(default=None, alias="releaseChannel")
    byoc_id: str | None = Field(default=None, alias="byocId")
    has_transparent_data_encryption: bool | None = Field(
        default=None, alias="hasTransparentDataEncryption"
    )
    endpoints: list[ServiceEndpointChange] | None = None
    profile: Profile | None = None
    compliance_type: Literal["hipaa", "pci"] | None = Field(default=None, alias="complianceType")
    tags: list[ResourceTag] | None = Field(default=None, max_length=50)
    enable_core_dumps: bool | None = Field(default=None, alias="enableCoreDumps")
    keyhouse_attach: AttachedClickHouse | None = Field(
        default=None,
        alias="keyhouseAttach",
        description="Keyhouse extension: attach the service to an existing ClickHouse "
        "(allowed hosts: KEYHOUSE_ATTACH_ALLOWED_HOSTS).",
    )

    _check_name = field_validator("name")(_service_name)


class ServicePostResponse(Wire):
    service: Service
    password: str


class IpAccessListPatch(Wire):
    add: list[IpAccessListEntry] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)
    remove: list[IpAccessListEntry] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)


class InstanceTagsPatch(Wire):
    add: list[ResourceTag] = Field(default_factory=list, max_length=50)
    remove: list[ResourceTag] = Field(default_factory=list, max_length=50)


class InstancePrivateEndpointsPatch(Wire):
    add: list[str] = Field(default_factory=list)
    remove: list[str] = Field(default_factory=list)


class ServicePatchRequest(WireRequest):
    name: str | None = Field(default=None, min_length=1, max_length=50)
    ip_access_list: IpAccessListPatch | None = Field(default=None, alias="ipAccessList")
    private_endpoint_ids: InstancePrivateEndpointsPatch | None = Field(
        default=None, alias="privateEndpointIds"
    )
    release_channel: ReleaseChannel | None = Field(default=None, alias="releaseChannel")
    endpoints: list[ServiceEndpointChange] | None = None
    transparent_data_encryption_key_id: str | None = Field(
        default=None, alias="transparentDataEncryptionKeyId"
    )
    tags: InstanceTagsPatch | None = None
    enable_core_dumps: bool | None = Field(default=None, alias="enableCoreDumps")

    _check_name = field_validator("name")(_service_name)


class ServiceStatePatchRequest(WireRequest):
    command: Literal["start", "stop", "awake"]


class ServicePasswordPatchRequest(WireRequest):
    new_password_hash: str | None = Field(default=None, alias="newPasswordHash")
    new_double_sha1_hash: str | None = Field(default=None, alias="newDoubleSha1Hash")


class ServicePasswordPatchResponse(Wire):
    password: str | None = None


class ServiceQueryAPIEndpoint(Wire):
    id: str
    open_api_keys: list[str] = Field(alias="openApiKeys")
    roles: list[QueryEndpointRole]
    allowed_origins: str = Field(alias="allowedOrigins")


class InstanceServiceQueryApiEndpointsPostRequest(WireRequest):
    roles: list[QueryEndpointRole] = Field(min_length=1, max_length=2)
    open_api_keys: list[str] = Field(alias="openApiKeys", max_length=MAX_LIST_ITEMS)
    allowed_origins: str | None = Field(default=None, alias="allowedOrigins", max_length=2048)


class ServiceScalingPatchRequest(WireRequest):
    min_total_memory_gb: int | None = Field(default=None, alias="minTotalMemoryGb", ge=24, le=1068)
    max_total_memory_gb: int | None = Field(default=None, alias="maxTotalMemoryGb", ge=24, le=1068)
    num_replicas: int | None = Field(default=None, alias="numReplicas", ge=1, le=20)
    idle_scaling: bool | None = Field(default=None, alias="idleScaling")
    idle_timeout_minutes: int | None = Field(default=None, alias="idleTimeoutMinutes", ge=5)


class ServiceReplicaScalingPatchRequest(WireRequest):
    min_replica_memory_gb: int | None = Field(
        default=None, alias="minReplicaMemoryGb", ge=8, le=356, multiple_of=4
    )
    max_replica_memory_gb: int | None = Field(
        default=None, alias="maxReplicaMemoryGb", ge=8, le=356, multiple_of=4
    )
    autoscaling_mode: AutoscalingMode | None = Field(default=None, alias="autoscalingMode")
    num_replicas: int | None = Field(default=None, alias="numReplicas", ge=1, le=20)
    min_replicas: int | None = Field(default=None, alias="minReplicas", ge=1, le=20)
    max_replicas: int | None = Field(default=None, alias="maxReplicas", ge=1, le=20)
    idle_scaling: bool | None = Field(default=None, alias="idleScaling")
    idle_timeout_minutes: int | None = Field(default=None, alias="idleTimeoutMinutes", ge=5)
