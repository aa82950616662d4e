import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from lily.v1 import access_pb2 as _access_pb2
from lily.v1 import common_pb2 as _common_pb2
from lily.v1 import events_pb2 as _events_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IngestOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    INGEST_OUTCOME_UNSPECIFIED: _ClassVar[IngestOutcome]
    INGEST_OUTCOME_CREATED: _ClassVar[IngestOutcome]
    INGEST_OUTCOME_UPDATED: _ClassVar[IngestOutcome]
    INGEST_OUTCOME_UNCHANGED: _ClassVar[IngestOutcome]
    INGEST_OUTCOME_STALE: _ClassVar[IngestOutcome]
    INGEST_OUTCOME_ACCEPTED: _ClassVar[IngestOutcome]
    INGEST_OUTCOME_REJECTED: _ClassVar[IngestOutcome]

class BulkJobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    BULK_JOB_STATE_UNSPECIFIED: _ClassVar[BulkJobState]
    BULK_JOB_STATE_OPEN: _ClassVar[BulkJobState]
    BULK_JOB_STATE_DRAINING: _ClassVar[BulkJobState]
    BULK_JOB_STATE_SUCCEEDED: _ClassVar[BulkJobState]
    BULK_JOB_STATE_FAILED: _ClassVar[BulkJobState]
INGEST_OUTCOME_UNSPECIFIED: IngestOutcome
INGEST_OUTCOME_CREATED: IngestOutcome
INGEST_OUTCOME_UPDATED: IngestOutcome
INGEST_OUTCOME_UNCHANGED: IngestOutcome
INGEST_OUTCOME_STALE: IngestOutcome
INGEST_OUTCOME_ACCEPTED: IngestOutcome
INGEST_OUTCOME_REJECTED: IngestOutcome
BULK_JOB_STATE_UNSPECIFIED: BulkJobState
BULK_JOB_STATE_OPEN: BulkJobState
BULK_JOB_STATE_DRAINING: BulkJobState
BULK_JOB_STATE_SUCCEEDED: BulkJobState
BULK_JOB_STATE_FAILED: BulkJobState

class IngestMetadataRequest(_message.Message):
    __slots__ = ("assets", "bulk_job_id", "close_bulk_job")
    ASSETS_FIELD_NUMBER: _ClassVar[int]
    BULK_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    CLOSE_BULK_JOB_FIELD_NUMBER: _ClassVar[int]
    assets: _containers.RepeatedCompositeFieldContainer[_common_pb2.AssetInput]
    bulk_job_id: str
    close_bulk_job: bool
    def __init__(self, assets: _Optional[_Iterable[_Union[_common_pb2.AssetInput, _Mapping]]] = ..., bulk_job_id: _Optional[str] = ..., close_bulk_job: _Optional[bool] = ...) -> None: ...

class IngestResult(_message.Message):
    __slots__ = ("index", "asset_id", "qualified_name", "outcome", "version", "consistency", "changed_fields", "error")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    QUALIFIED_NAME_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    CONSISTENCY_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    index: int
    asset_id: str
    qualified_name: str
    outcome: IngestOutcome
    version: int
    consistency: _common_pb2.ConsistencyClass
    changed_fields: _containers.RepeatedScalarFieldContainer[str]
    error: _status_pb2.Status
    def __init__(self, index: _Optional[int] = ..., asset_id: _Optional[str] = ..., qualified_name: _Optional[str] = ..., outcome: _Optional[_Union[IngestOutcome, str]] = ..., version: _Optional[int] = ..., consistency: _Optional[_Union[_common_pb2.ConsistencyClass, str]] = ..., changed_fields: _Optional[_Iterable[str]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class IngestMetadataResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[IngestResult]
    def __init__(self, results: _Optional[_Iterable[_Union[IngestResult, _Mapping]]] = ...) -> None: ...

class IngestMetadataStreamRequest(_message.Message):
    __slots__ = ("assets", "bulk_job_id")
    ASSETS_FIELD_NUMBER: _ClassVar[int]
    BULK_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    assets: _containers.RepeatedCompositeFieldContainer[_common_pb2.AssetInput]
    bulk_job_id: str
    def __init__(self, assets: _Optional[_Iterable[_Union[_common_pb2.AssetInput, _Mapping]]] = ..., bulk_job_id: _Optional[str] = ...) -> None: ...

class IngestMetadataStreamResponse(_message.Message):
    __slots__ = ("bulk_job_id", "received", "created", "updated", "unchanged", "stale", "accepted", "rejected", "rejections")
    BULK_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTED_FIELD_NUMBER: _ClassVar[int]
    REJECTIONS_FIELD_NUMBER: _ClassVar[int]
    bulk_job_id: str
    received: int
    created: int
    updated: int
    unchanged: int
    stale: int
    accepted: int
    rejected: int
    rejections: _containers.RepeatedCompositeFieldContainer[IngestResult]
    def __init__(self, bulk_job_id: _Optional[str] = ..., received: _Optional[int] = ..., created: _Optional[int] = ..., updated: _Optional[int] = ..., unchanged: _Optional[int] = ..., stale: _Optional[int] = ..., accepted: _Optional[int] = ..., rejected: _Optional[int] = ..., rejections: _Optional[_Iterable[_Union[IngestResult, _Mapping]]] = ...) -> None: ...

class GetMetadataRequest(_message.Message):
    __slots__ = ("asset_id", "include_deleted")
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_DELETED_FIELD_NUMBER: _ClassVar[int]
    asset_id: str
    include_deleted: bool
    def __init__(self, asset_id: _Optional[str] = ..., include_deleted: _Optional[bool] = ...) -> None: ...

class GetMetadataResponse(_message.Message):
    __slots__ = ("asset",)
    ASSET_FIELD_NUMBER: _ClassVar[int]
    asset: _common_pb2.Asset
    def __init__(self, asset: _Optional[_Union[_common_pb2.Asset, _Mapping]] = ...) -> None: ...

class LookupMetadataRequest(_message.Message):
    __slots__ = ("qualified_name", "include_deleted")
    QUALIFIED_NAME_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_DELETED_FIELD_NUMBER: _ClassVar[int]
    qualified_name: str
    include_deleted: bool
    def __init__(self, qualified_name: _Optional[str] = ..., include_deleted: _Optional[bool] = ...) -> None: ...

class LookupMetadataResponse(_message.Message):
    __slots__ = ("asset",)
    ASSET_FIELD_NUMBER: _ClassVar[int]
    asset: _common_pb2.Asset
    def __init__(self, asset: _Optional[_Union[_common_pb2.Asset, _Mapping]] = ...) -> None: ...

class UpdateMetadataRequest(_message.Message):
    __slots__ = ("asset_id", "asset", "update_mask", "expected_version", "source_event_time")
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    ASSET_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    SOURCE_EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    asset_id: str
    asset: _common_pb2.Asset
    update_mask: _field_mask_pb2.FieldMask
    expected_version: int
    source_event_time: _timestamp_pb2.Timestamp
    def __init__(self, asset_id: _Optional[str] = ..., asset: _Optional[_Union[_common_pb2.Asset, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ..., expected_version: _Optional[int] = ..., source_event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class UpdateMetadataResponse(_message.Message):
    __slots__ = ("asset", "outcome", "changed_fields")
    ASSET_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    asset: _common_pb2.Asset
    outcome: IngestOutcome
    changed_fields: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, asset: _Optional[_Union[_common_pb2.Asset, _Mapping]] = ..., outcome: _Optional[_Union[IngestOutcome, str]] = ..., changed_fields: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteMetadataRequest(_message.Message):
    __slots__ = ("asset_id", "expected_version")
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    asset_id: str
    expected_version: int
    def __init__(self, asset_id: _Optional[str] = ..., expected_version: _Optional[int] = ...) -> None: ...

class DeleteMetadataResponse(_message.Message):
    __slots__ = ("asset", "already_deleted")
    ASSET_FIELD_NUMBER: _ClassVar[int]
    ALREADY_DELETED_FIELD_NUMBER: _ClassVar[int]
    asset: _common_pb2.Asset
    already_deleted: bool
    def __init__(self, asset: _Optional[_Union[_common_pb2.Asset, _Mapping]] = ..., already_deleted: _Optional[bool] = ...) -> None: ...

class SearchMetadataRequest(_message.Message):
    __slots__ = ("asset_type", "tag", "qualified_name_prefix", "data_source", "owner", "include_deleted", "page_size", "page_token")
    ASSET_TYPE_FIELD_NUMBER: _ClassVar[int]
    TAG_FIELD_NUMBER: _ClassVar[int]
    QUALIFIED_NAME_PREFIX_FIELD_NUMBER: _ClassVar[int]
    DATA_SOURCE_FIELD_NUMBER: _ClassVar[int]
    OWNER_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_DELETED_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    asset_type: _common_pb2.AssetType
    tag: str
    qualified_name_prefix: str
    data_source: str
    owner: str
    include_deleted: bool
    page_size: int
    page_token: str
    def __init__(self, asset_type: _Optional[_Union[_common_pb2.AssetType, str]] = ..., tag: _Optional[str] = ..., qualified_name_prefix: _Optional[str] = ..., data_source: _Optional[str] = ..., owner: _Optional[str] = ..., include_deleted: _Optional[bool] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class SearchMetadataResponse(_message.Message):
    __slots__ = ("assets", "next_page_token")
    ASSETS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    assets: _containers.RepeatedCompositeFieldContainer[_common_pb2.Asset]
    next_page_token: str
    def __init__(self, assets: _Optional[_Iterable[_Union[_common_pb2.Asset, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateTagsRequest(_message.Message):
    __slots__ = ("asset_id", "add", "remove", "source", "expected_version")
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    ADD_FIELD_NUMBER: _ClassVar[int]
    REMOVE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    EXPECTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    asset_id: str
    add: _containers.RepeatedCompositeFieldContainer[_common_pb2.TagAssignment]
    remove: _containers.RepeatedScalarFieldContainer[str]
    source: _common_pb2.TagSource
    expected_version: int
    def __init__(self, asset_id: _Optional[str] = ..., add: _Optional[_Iterable[_Union[_common_pb2.TagAssignment, _Mapping]]] = ..., remove: _Optional[_Iterable[str]] = ..., source: _Optional[_Union[_common_pb2.TagSource, str]] = ..., expected_version: _Optional[int] = ...) -> None: ...

class UpdateTagsResponse(_message.Message):
    __slots__ = ("asset", "tags_added", "tags_removed")
    ASSET_FIELD_NUMBER: _ClassVar[int]
    TAGS_ADDED_FIELD_NUMBER: _ClassVar[int]
    TAGS_REMOVED_FIELD_NUMBER: _ClassVar[int]
    asset: _common_pb2.Asset
    tags_added: _containers.RepeatedScalarFieldContainer[str]
    tags_removed: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, asset: _Optional[_Union[_common_pb2.Asset, _Mapping]] = ..., tags_added: _Optional[_Iterable[str]] = ..., tags_removed: _Optional[_Iterable[str]] = ...) -> None: ...

class AttachIssueRequest(_message.Message):
    __slots__ = ("asset_id", "issue")
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    ISSUE_FIELD_NUMBER: _ClassVar[int]
    asset_id: str
    issue: _common_pb2.DataQualityIssue
    def __init__(self, asset_id: _Optional[str] = ..., issue: _Optional[_Union[_common_pb2.DataQualityIssue, _Mapping]] = ...) -> None: ...

class AttachIssueResponse(_message.Message):
    __slots__ = ("issue", "created")
    ISSUE_FIELD_NUMBER: _ClassVar[int]
    CREATED_FIELD_NUMBER: _ClassVar[int]
    issue: _common_pb2.DataQualityIssue
    created: bool
    def __init__(self, issue: _Optional[_Union[_common_pb2.DataQualityIssue, _Mapping]] = ..., created: _Optional[bool] = ...) -> None: ...

class ListIssuesRequest(_message.Message):
    __slots__ = ("asset_id", "status", "page_size", "page_token")
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    asset_id: str
    status: _common_pb2.IssueStatus
    page_size: int
    page_token: str
    def __init__(self, asset_id: _Optional[str] = ..., status: _Optional[_Union[_common_pb2.IssueStatus, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListIssuesResponse(_message.Message):
    __slots__ = ("issues", "next_page_token")
    ISSUES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    issues: _containers.RepeatedCompositeFieldContainer[_common_pb2.DataQualityIssue]
    next_page_token: str
    def __init__(self, issues: _Optional[_Iterable[_Union[_common_pb2.DataQualityIssue, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class GetAuditTrailRequest(_message.Message):
    __slots__ = ("asset_id", "page_size", "page_token")
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    asset_id: str
    page_size: int
    page_token: str
    def __init__(self, asset_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class AuditEntry(_message.Message):
    __slots__ = ("sequence", "asset_id", "principal", "action", "change", "changed_fields", "asset_version", "at", "request_id", "origin", "event_id")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    PRINCIPAL_FIELD_NUMBER: _ClassVar[int]
    ACTION_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    ASSET_VERSION_FIELD_NUMBER: _ClassVar[int]
    AT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ORIGIN_FIELD_NUMBER: _ClassVar[int]
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    asset_id: str
    principal: str
    action: str
    change: _events_pb2.ChangeKind
    changed_fields: _containers.RepeatedScalarFieldContainer[str]
    asset_version: int
    at: _timestamp_pb2.Timestamp
    request_id: str
    origin: str
    event_id: str
    def __init__(self, sequence: _Optional[int] = ..., asset_id: _Optional[str] = ..., principal: _Optional[str] = ..., action: _Optional[str] = ..., change: _Optional[_Union[_events_pb2.ChangeKind, str]] = ..., changed_fields: _Optional[_Iterable[str]] = ..., asset_version: _Optional[int] = ..., at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., request_id: _Optional[str] = ..., origin: _Optional[str] = ..., event_id: _Optional[str] = ...) -> None: ...

class GetAuditTrailResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[AuditEntry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[AuditEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class BulkJob(_message.Message):
    __slots__ = ("job_id", "description", "state", "accepted", "written", "unchanged", "stale", "failed", "created_at", "updated_at", "finished_at")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    STALE_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    description: str
    state: BulkJobState
    accepted: int
    written: int
    unchanged: int
    stale: int
    failed: int
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[str] = ..., description: _Optional[str] = ..., state: _Optional[_Union[BulkJobState, str]] = ..., accepted: _Optional[int] = ..., written: _Optional[int] = ..., unchanged: _Optional[int] = ..., stale: _Optional[int] = ..., failed: _Optional[int] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CreateBulkJobRequest(_message.Message):
    __slots__ = ("description",)
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    description: str
    def __init__(self, description: _Optional[str] = ...) -> None: ...

class CreateBulkJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: BulkJob
    def __init__(self, job: _Optional[_Union[BulkJob, _Mapping]] = ...) -> None: ...

class GetBulkJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetBulkJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: BulkJob
    def __init__(self, job: _Optional[_Union[BulkJob, _Mapping]] = ...) -> None: ...

class WatchChangesRequest(_message.Message):
    __slots__ = ("entities", "changes", "asset_types", "tags")
    ENTITIES_FIELD_NUMBER: _ClassVar[int]
    CHANGES_FIELD_NUMBER: _ClassVar[int]
    ASSET_TYPES_FIELD_NUMBER: _ClassVar[int]
    TAGS_FIELD_NUMBER: _ClassVar[int]
    entities: _containers.RepeatedScalarFieldContainer[_events_pb2.EntityKind]
    changes: _containers.RepeatedScalarFieldContainer[_events_pb2.ChangeKind]
    asset_types: _containers.RepeatedScalarFieldContainer[_common_pb2.AssetType]
    tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, entities: _Optional[_Iterable[_Union[_events_pb2.EntityKind, str]]] = ..., changes: _Optional[_Iterable[_Union[_events_pb2.ChangeKind, str]]] = ..., asset_types: _Optional[_Iterable[_Union[_common_pb2.AssetType, str]]] = ..., tags: _Optional[_Iterable[str]] = ...) -> None: ...

class WatchChangesResponse(_message.Message):
    __slots__ = ("event",)
    EVENT_FIELD_NUMBER: _ClassVar[int]
    event: _events_pb2.ChangeEvent
    def __init__(self, event: _Optional[_Union[_events_pb2.ChangeEvent, _Mapping]] = ...) -> None: ...
