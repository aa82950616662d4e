import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AssetType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ASSET_TYPE_UNSPECIFIED: _ClassVar[AssetType]
    ASSET_TYPE_DATABASE: _ClassVar[AssetType]
    ASSET_TYPE_SCHEMA: _ClassVar[AssetType]
    ASSET_TYPE_TABLE: _ClassVar[AssetType]
    ASSET_TYPE_VIEW: _ClassVar[AssetType]
    ASSET_TYPE_COLUMN: _ClassVar[AssetType]
    ASSET_TYPE_DASHBOARD: _ClassVar[AssetType]
    ASSET_TYPE_BI_FIELD: _ClassVar[AssetType]
    ASSET_TYPE_PIPELINE: _ClassVar[AssetType]

class TagSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TAG_SOURCE_UNSPECIFIED: _ClassVar[TagSource]
    TAG_SOURCE_SOURCE: _ClassVar[TagSource]
    TAG_SOURCE_USER: _ClassVar[TagSource]
    TAG_SOURCE_PROPAGATED: _ClassVar[TagSource]
    TAG_SOURCE_RULE: _ClassVar[TagSource]

class ConsistencyClass(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONSISTENCY_CLASS_UNSPECIFIED: _ClassVar[ConsistencyClass]
    CONSISTENCY_CLASS_STRONG: _ClassVar[ConsistencyClass]
    CONSISTENCY_CLASS_EVENTUAL: _ClassVar[ConsistencyClass]

class IssueSeverity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ISSUE_SEVERITY_UNSPECIFIED: _ClassVar[IssueSeverity]
    ISSUE_SEVERITY_LOW: _ClassVar[IssueSeverity]
    ISSUE_SEVERITY_MEDIUM: _ClassVar[IssueSeverity]
    ISSUE_SEVERITY_HIGH: _ClassVar[IssueSeverity]
    ISSUE_SEVERITY_CRITICAL: _ClassVar[IssueSeverity]

class IssueStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ISSUE_STATUS_UNSPECIFIED: _ClassVar[IssueStatus]
    ISSUE_STATUS_OPEN: _ClassVar[IssueStatus]
    ISSUE_STATUS_ACKNOWLEDGED: _ClassVar[IssueStatus]
    ISSUE_STATUS_RESOLVED: _ClassVar[IssueStatus]
ASSET_TYPE_UNSPECIFIED: AssetType
ASSET_TYPE_DATABASE: AssetType
ASSET_TYPE_SCHEMA: AssetType
ASSET_TYPE_TABLE: AssetType
ASSET_TYPE_VIEW: AssetType
ASSET_TYPE_COLUMN: AssetType
ASSET_TYPE_DASHBOARD: AssetType
ASSET_TYPE_BI_FIELD: AssetType
ASSET_TYPE_PIPELINE: AssetType
TAG_SOURCE_UNSPECIFIED: TagSource
TAG_SOURCE_SOURCE: TagSource
TAG_SOURCE_USER: TagSource
TAG_SOURCE_PROPAGATED: TagSource
TAG_SOURCE_RULE: TagSource
CONSISTENCY_CLASS_UNSPECIFIED: ConsistencyClass
CONSISTENCY_CLASS_STRONG: ConsistencyClass
CONSISTENCY_CLASS_EVENTUAL: ConsistencyClass
ISSUE_SEVERITY_UNSPECIFIED: IssueSeverity
ISSUE_SEVERITY_LOW: IssueSeverity
ISSUE_SEVERITY_MEDIUM: IssueSeverity
ISSUE_SEVERITY_HIGH: IssueSeverity
ISSUE_SEVERITY_CRITICAL: IssueSeverity
ISSUE_STATUS_UNSPECIFIED: IssueStatus
ISSUE_STATUS_OPEN: IssueStatus
ISSUE_STATUS_ACKNOWLEDGED: IssueStatus
ISSUE_STATUS_RESOLVED: IssueStatus

class Tag(_message.Message):
    __slots__ = ("name", "value", "source", "upstream_asset_ids", "applied_by", "applied_at", "propagate")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_ASSET_IDS_FIELD_NUMBER: _ClassVar[int]
    APPLIED_BY_FIELD_NUMBER: _ClassVar[int]
    APPLIED_AT_FIELD_NUMBER: _ClassVar[int]
    PROPAGATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    source: TagSource
    upstream_asset_ids: _containers.RepeatedScalarFieldContainer[str]
    applied_by: str
    applied_at: _timestamp_pb2.Timestamp
    propagate: bool
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ..., source: _Optional[_Union[TagSource, str]] = ..., upstream_asset_ids: _Optional[_Iterable[str]] = ..., applied_by: _Optional[str] = ..., applied_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., propagate: _Optional[bool] = ...) -> None: ...

class EffectiveTag(_message.Message):
    __slots__ = ("name", "value", "source", "overridden")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    OVERRIDDEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    source: TagSource
    overridden: _containers.RepeatedCompositeFieldContainer[Tag]
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ..., source: _Optional[_Union[TagSource, str]] = ..., overridden: _Optional[_Iterable[_Union[Tag, _Mapping]]] = ...) -> None: ...

class TagAssignment(_message.Message):
    __slots__ = ("name", "value", "upstream_asset_ids", "propagate")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    UPSTREAM_ASSET_IDS_FIELD_NUMBER: _ClassVar[int]
    PROPAGATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    upstream_asset_ids: _containers.RepeatedScalarFieldContainer[str]
    propagate: bool
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ..., upstream_asset_ids: _Optional[_Iterable[str]] = ..., propagate: _Optional[bool] = ...) -> None: ...

class Asset(_message.Message):
    __slots__ = ("tenant_id", "asset_id", "qualified_name", "asset_type", "name", "description", "owners", "data_source", "parent_qualified_name", "parent_id", "tags", "effective_tags", "business_terms", "attributes", "version", "is_deleted", "external_id", "created_at", "updated_at", "source_event_time", "consistency", "unhealthy_upstream_asset_ids", "redacted_fields")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TENANT_ID_FIELD_NUMBER: _ClassVar[int]
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    QUALIFIED_NAME_FIELD_NUMBER: _ClassVar[int]
    ASSET_TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    OWNERS_FIELD_NUMBER: _ClassVar[int]
    DATA_SOURCE_FIELD_NUMBER: _ClassVar[int]
    PARENT_QUALIFIED_NAME_FIELD_NUMBER: _ClassVar[int]
    PARENT_ID_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_TAGS_FIELD_NUMBER: _ClassVar[int]
    BUSINESS_TERMS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    IS_DELETED_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    UNHEALTHY_UPSTREAM_ASSET_IDS_FIELD_NUMBER: _ClassVar[int]
    REDACTED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    tenant_id: str
    asset_id: str
    qualified_name: str
    asset_type: AssetType
    name: str
    description: str
    owners: _containers.RepeatedScalarFieldContainer[str]
    data_source: str
    parent_qualified_name: str
    parent_id: str
    tags: _containers.RepeatedCompositeFieldContainer[Tag]
    effective_tags: _containers.RepeatedCompositeFieldContainer[EffectiveTag]
    business_terms: _containers.RepeatedScalarFieldContainer[str]
    attributes: _containers.ScalarMap[str, str]
    version: int
    is_deleted: bool
    external_id: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    source_event_time: _timestamp_pb2.Timestamp
    consistency: ConsistencyClass
    unhealthy_upstream_asset_ids: _containers.RepeatedScalarFieldContainer[str]
    redacted_fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, tenant_id: _Optional[str] = ..., asset_id: _Optional[str] = ..., qualified_name: _Optional[str] = ..., asset_type: _Optional[_Union[AssetType, str]] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., owners: _Optional[_Iterable[str]] = ..., data_source: _Optional[str] = ..., parent_qualified_name: _Optional[str] = ..., parent_id: _Optional[str] = ..., tags: _Optional[_Iterable[_Union[Tag, _Mapping]]] = ..., effective_tags: _Optional[_Iterable[_Union[EffectiveTag, _Mapping]]] = ..., business_terms: _Optional[_Iterable[str]] = ..., attributes: _Optional[_Mapping[str, str]] = ..., version: _Optional[int] = ..., is_deleted: _Optional[bool] = ..., external_id: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source_event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., consistency: _Optional[_Union[ConsistencyClass, str]] = ..., unhealthy_upstream_asset_ids: _Optional[_Iterable[str]] = ..., redacted_fields: _Optional[_Iterable[str]] = ...) -> None: ...

class AssetInput(_message.Message):
    __slots__ = ("qualified_name", "asset_type", "name", "description", "owners", "data_source", "parent_qualified_name", "tags", "business_terms", "attributes", "external_id", "source_event_time")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    QUALIFIED_NAME_FIELD_NUMBER: _ClassVar[int]
    ASSET_TYPE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    OWNERS_FIELD_NUMBER: _ClassVar[int]
    DATA_SOURCE_FIELD_NUMBER: _ClassVar[int]
    PARENT_QUALIFIED_NAME_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    BUSINESS_TERMS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    qualified_name: str
    asset_type: AssetType
    name: str
    description: str
    owners: _containers.RepeatedScalarFieldContainer[str]
    data_source: str
    parent_qualified_name: str
    tags: _containers.RepeatedCompositeFieldContainer[TagAssignment]
    business_terms: _containers.RepeatedScalarFieldContainer[str]
    attributes: _containers.ScalarMap[str, str]
    external_id: str
    source_event_time: _timestamp_pb2.Timestamp
    def __init__(self, qualified_name: _Optional[str] = ..., asset_type: _Optional[_Union[AssetType, str]] = ..., name: _Optional[str] = ..., description: _Optional[str] = ..., owners: _Optional[_Iterable[str]] = ..., data_source: _Optional[str] = ..., parent_qualified_name: _Optional[str] = ..., tags: _Optional[_Iterable[_Union[TagAssignment, _Mapping]]] = ..., business_terms: _Optional[_Iterable[str]] = ..., attributes: _Optional[_Mapping[str, str]] = ..., external_id: _Optional[str] = ..., source_event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class DataQualityIssue(_message.Message):
    __slots__ = ("issue_id", "asset_id", "external_id", "source", "type", "severity", "status", "title", "description", "url", "opened_at", "updated_at", "resolved_at")
    ISSUE_ID_FIELD_NUMBER: _ClassVar[int]
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    EXTERNAL_ID_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    OPENED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_AT_FIELD_NUMBER: _ClassVar[int]
    issue_id: str
    asset_id: str
    external_id: str
    source: str
    type: str
    severity: IssueSeverity
    status: IssueStatus
    title: str
    description: str
    url: str
    opened_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    resolved_at: _timestamp_pb2.Timestamp
    def __init__(self, issue_id: _Optional[str] = ..., asset_id: _Optional[str] = ..., external_id: _Optional[str] = ..., source: _Optional[str] = ..., type: _Optional[str] = ..., severity: _Optional[_Union[IssueSeverity, str]] = ..., status: _Optional[_Union[IssueStatus, str]] = ..., title: _Optional[str] = ..., description: _Optional[str] = ..., url: _Optional[str] = ..., opened_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., resolved_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Relationship(_message.Message):
    __slots__ = ("upstream_asset_id", "downstream_asset_id", "type", "source_event_time", "is_deleted")
    UPSTREAM_ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    DOWNSTREAM_ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    IS_DELETED_FIELD_NUMBER: _ClassVar[int]
    upstream_asset_id: str
    downstream_asset_id: str
    type: str
    source_event_time: _timestamp_pb2.Timestamp
    is_deleted: bool
    def __init__(self, upstream_asset_id: _Optional[str] = ..., downstream_asset_id: _Optional[str] = ..., type: _Optional[str] = ..., source_event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., is_deleted: _Optional[bool] = ...) -> None: ...
