import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from lily.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EntityKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ENTITY_KIND_UNSPECIFIED: _ClassVar[EntityKind]
    ENTITY_KIND_ASSET: _ClassVar[EntityKind]
    ENTITY_KIND_ISSUE: _ClassVar[EntityKind]
    ENTITY_KIND_RELATIONSHIP: _ClassVar[EntityKind]
    ENTITY_KIND_PROPAGATION: _ClassVar[EntityKind]

class ChangeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANGE_KIND_UNSPECIFIED: _ClassVar[ChangeKind]
    CHANGE_KIND_CREATED: _ClassVar[ChangeKind]
    CHANGE_KIND_UPDATED: _ClassVar[ChangeKind]
    CHANGE_KIND_TAGGED: _ClassVar[ChangeKind]
    CHANGE_KIND_UNTAGGED: _ClassVar[ChangeKind]
    CHANGE_KIND_DELETED: _ClassVar[ChangeKind]
    CHANGE_KIND_ATTACHED: _ClassVar[ChangeKind]
ENTITY_KIND_UNSPECIFIED: EntityKind
ENTITY_KIND_ASSET: EntityKind
ENTITY_KIND_ISSUE: EntityKind
ENTITY_KIND_RELATIONSHIP: EntityKind
ENTITY_KIND_PROPAGATION: EntityKind
CHANGE_KIND_UNSPECIFIED: ChangeKind
CHANGE_KIND_CREATED: ChangeKind
CHANGE_KIND_UPDATED: ChangeKind
CHANGE_KIND_TAGGED: ChangeKind
CHANGE_KIND_UNTAGGED: ChangeKind
CHANGE_KIND_DELETED: ChangeKind
CHANGE_KIND_ATTACHED: ChangeKind

class ChangeEvent(_message.Message):
    __slots__ = ("event_id", "tenant_id", "entity", "change", "asset_id", "qualified_name", "asset_type", "asset_version", "changed_fields", "actor", "cause_event_id", "occurred_at", "tags", "tags_added", "tags_removed", "issue", "request_id", "relationship", "own_tags_moved", "propagate_tags_moved")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    ENTITY_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    QUALIFIED_NAME_FIELD_NUMBER: _ClassVar[int]
    ASSET_TYPE_FIELD_NUMBER: _ClassVar[int]
    ASSET_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    CAUSE_EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    OCCURRED_AT_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    TAGS_ADDED_FIELD_NUMBER: _ClassVar[int]
    TAGS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    ISSUE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RELATIONSHIP_FIELD_NUMBER: _ClassVar[int]
    OWN_TAGS_MOVED_FIELD_NUMBER: _ClassVar[int]
    PROPAGATE_TAGS_MOVED_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    tenant_id: str
    entity: EntityKind
    change: ChangeKind
    asset_id: str
    qualified_name: str
    asset_type: _common_pb2.AssetType
    asset_version: int
    changed_fields: _containers.RepeatedScalarFieldContainer[str]
    actor: str
    cause_event_id: str
    occurred_at: _timestamp_pb2.Timestamp
    tags: _containers.RepeatedScalarFieldContainer[str]
    tags_added: _containers.RepeatedScalarFieldContainer[str]
    tags_removed: _containers.RepeatedScalarFieldContainer[str]
    issue: _common_pb2.DataQualityIssue
    request_id: str
    relationship: _common_pb2.Relationship
    own_tags_moved: _containers.RepeatedScalarFieldContainer[str]
    propagate_tags_moved: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, event_id: _Optional[str] = ..., tenant_id: _Optional[str] = ..., entity: _Optional[_Union[EntityKind, str]] = ..., change: _Optional[_Union[ChangeKind, str]] = ..., asset_id: _Optional[str] = ..., qualified_name: _Optional[str] = ..., asset_type: _Optional[_Union[_common_pb2.AssetType, str]] = ..., asset_version: _Optional[int] = ..., changed_fields: _Optional[_Iterable[str]] = ..., actor: _Optional[str] = ..., cause_event_id: _Optional[str] = ..., occurred_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., tags: _Optional[_Iterable[str]] = ..., tags_added: _Optional[_Iterable[str]] = ..., tags_removed: _Optional[_Iterable[str]] = ..., issue: _Optional[_Union[_common_pb2.DataQualityIssue, _Mapping]] = ..., request_id: _Optional[str] = ..., relationship: _Optional[_Union[_common_pb2.Relationship, _Mapping]] = ..., own_tags_moved: _Optional[_Iterable[str]] = ..., propagate_tags_moved: _Optional[_Iterable[str]] = ...) -> None: ...

class IngestWorkBatch(_message.Message):
    __slots__ = ("tenant_id", "bulk_job_id", "assets", "actor", "request_id", "accepted_at")
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    BULK_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ASSETS_FIELD_NUMBER: _ClassVar[int]
    ACTOR_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_AT_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    bulk_job_id: str
    assets: _containers.RepeatedCompositeFieldContainer[_common_pb2.AssetInput]
    actor: str
    request_id: str
    accepted_at: _timestamp_pb2.Timestamp
    def __init__(self, tenant_id: _Optional[str] = ..., bulk_job_id: _Optional[str] = ..., assets: _Optional[_Iterable[_Union[_common_pb2.AssetInput, _Mapping]]] = ..., actor: _Optional[str] = ..., request_id: _Optional[str] = ..., accepted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
