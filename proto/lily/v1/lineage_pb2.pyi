import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from lily.v1 import access_pb2 as _access_pb2
from lily.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LineageDirection(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LINEAGE_DIRECTION_UNSPECIFIED: _ClassVar[LineageDirection]
    LINEAGE_DIRECTION_UPSTREAM: _ClassVar[LineageDirection]
    LINEAGE_DIRECTION_DOWNSTREAM: _ClassVar[LineageDirection]
    LINEAGE_DIRECTION_BOTH: _ClassVar[LineageDirection]

class RelationshipOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RELATIONSHIP_OUTCOME_UNSPECIFIED: _ClassVar[RelationshipOutcome]
    RELATIONSHIP_OUTCOME_CREATED: _ClassVar[RelationshipOutcome]
    RELATIONSHIP_OUTCOME_UNCHANGED: _ClassVar[RelationshipOutcome]
    RELATIONSHIP_OUTCOME_STALE: _ClassVar[RelationshipOutcome]
    RELATIONSHIP_OUTCOME_DELETED: _ClassVar[RelationshipOutcome]
    RELATIONSHIP_OUTCOME_REJECTED: _ClassVar[RelationshipOutcome]

class PropagationJobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PROPAGATION_JOB_STATE_UNSPECIFIED: _ClassVar[PropagationJobState]
    PROPAGATION_JOB_STATE_PENDING: _ClassVar[PropagationJobState]
    PROPAGATION_JOB_STATE_RUNNING: _ClassVar[PropagationJobState]
    PROPAGATION_JOB_STATE_SUCCEEDED: _ClassVar[PropagationJobState]
    PROPAGATION_JOB_STATE_FAILED: _ClassVar[PropagationJobState]
LINEAGE_DIRECTION_UNSPECIFIED: LineageDirection
LINEAGE_DIRECTION_UPSTREAM: LineageDirection
LINEAGE_DIRECTION_DOWNSTREAM: LineageDirection
LINEAGE_DIRECTION_BOTH: LineageDirection
RELATIONSHIP_OUTCOME_UNSPECIFIED: RelationshipOutcome
RELATIONSHIP_OUTCOME_CREATED: RelationshipOutcome
RELATIONSHIP_OUTCOME_UNCHANGED: RelationshipOutcome
RELATIONSHIP_OUTCOME_STALE: RelationshipOutcome
RELATIONSHIP_OUTCOME_DELETED: RelationshipOutcome
RELATIONSHIP_OUTCOME_REJECTED: RelationshipOutcome
PROPAGATION_JOB_STATE_UNSPECIFIED: PropagationJobState
PROPAGATION_JOB_STATE_PENDING: PropagationJobState
PROPAGATION_JOB_STATE_RUNNING: PropagationJobState
PROPAGATION_JOB_STATE_SUCCEEDED: PropagationJobState
PROPAGATION_JOB_STATE_FAILED: PropagationJobState

class AssetRef(_message.Message):
    __slots__ = ("asset_id", "qualified_name")
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    QUALIFIED_NAME_FIELD_NUMBER: _ClassVar[int]
    asset_id: str
    qualified_name: str
    def __init__(self, asset_id: _Optional[str] = ..., qualified_name: _Optional[str] = ...) -> None: ...

class RelationshipInput(_message.Message):
    __slots__ = ("upstream", "downstream", "type", "source_event_time")
    UPSTREAM_FIELD_NUMBER: _ClassVar[int]
    DOWNSTREAM_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    upstream: AssetRef
    downstream: AssetRef
    type: str
    source_event_time: _timestamp_pb2.Timestamp
    def __init__(self, upstream: _Optional[_Union[AssetRef, _Mapping]] = ..., downstream: _Optional[_Union[AssetRef, _Mapping]] = ..., type: _Optional[str] = ..., source_event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class IngestRelationshipsRequest(_message.Message):
    __slots__ = ("relationships",)
    RELATIONSHIPS_FIELD_NUMBER: _ClassVar[int]
    relationships: _containers.RepeatedCompositeFieldContainer[RelationshipInput]
    def __init__(self, relationships: _Optional[_Iterable[_Union[RelationshipInput, _Mapping]]] = ...) -> None: ...

class RelationshipResult(_message.Message):
    __slots__ = ("index", "relationship", "outcome", "error")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    RELATIONSHIP_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    index: int
    relationship: _common_pb2.Relationship
    outcome: RelationshipOutcome
    error: _status_pb2.Status
    def __init__(self, index: _Optional[int] = ..., relationship: _Optional[_Union[_common_pb2.Relationship, _Mapping]] = ..., outcome: _Optional[_Union[RelationshipOutcome, str]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class IngestRelationshipsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RelationshipResult]
    def __init__(self, results: _Optional[_Iterable[_Union[RelationshipResult, _Mapping]]] = ...) -> None: ...

class DeleteRelationshipsRequest(_message.Message):
    __slots__ = ("relationships",)
    RELATIONSHIPS_FIELD_NUMBER: _ClassVar[int]
    relationships: _containers.RepeatedCompositeFieldContainer[RelationshipInput]
    def __init__(self, relationships: _Optional[_Iterable[_Union[RelationshipInput, _Mapping]]] = ...) -> None: ...

class DeleteRelationshipsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RelationshipResult]
    def __init__(self, results: _Optional[_Iterable[_Union[RelationshipResult, _Mapping]]] = ...) -> None: ...

class GetLineageRequest(_message.Message):
    __slots__ = ("asset_id", "direction", "depth", "include_deleted")
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_DELETED_FIELD_NUMBER: _ClassVar[int]
    asset_id: str
    direction: LineageDirection
    depth: int
    include_deleted: bool
    def __init__(self, asset_id: _Optional[str] = ..., direction: _Optional[_Union[LineageDirection, str]] = ..., depth: _Optional[int] = ..., include_deleted: _Optional[bool] = ...) -> None: ...

class LineageNode(_message.Message):
    __slots__ = ("asset_id", "qualified_name", "asset_type", "effective_tags", "open_issue_count", "depth", "exists", "is_deleted", "unhealthy_upstream_asset_ids")
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    QUALIFIED_NAME_FIELD_NUMBER: _ClassVar[int]
    ASSET_TYPE_FIELD_NUMBER: _ClassVar[int]
    EFFECTIVE_TAGS_FIELD_NUMBER: _ClassVar[int]
    OPEN_ISSUE_COUNT_FIELD_NUMBER: _ClassVar[int]
    DEPTH_FIELD_NUMBER: _ClassVar[int]
    EXISTS_FIELD_NUMBER: _ClassVar[int]
    IS_DELETED_FIELD_NUMBER: _ClassVar[int]
    UNHEALTHY_UPSTREAM_ASSET_IDS_FIELD_NUMBER: _ClassVar[int]
    asset_id: str
    qualified_name: str
    asset_type: _common_pb2.AssetType
    effective_tags: _containers.RepeatedCompositeFieldContainer[_common_pb2.EffectiveTag]
    open_issue_count: int
    depth: int
    exists: bool
    is_deleted: bool
    unhealthy_upstream_asset_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, asset_id: _Optional[str] = ..., qualified_name: _Optional[str] = ..., asset_type: _Optional[_Union[_common_pb2.AssetType, str]] = ..., effective_tags: _Optional[_Iterable[_Union[_common_pb2.EffectiveTag, _Mapping]]] = ..., open_issue_count: _Optional[int] = ..., depth: _Optional[int] = ..., exists: _Optional[bool] = ..., is_deleted: _Optional[bool] = ..., unhealthy_upstream_asset_ids: _Optional[_Iterable[str]] = ...) -> None: ...

class GetLineageResponse(_message.Message):
    __slots__ = ("nodes", "relationships", "truncated")
    NODES_FIELD_NUMBER: _ClassVar[int]
    RELATIONSHIPS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    nodes: _containers.RepeatedCompositeFieldContainer[LineageNode]
    relationships: _containers.RepeatedCompositeFieldContainer[_common_pb2.Relationship]
    truncated: bool
    def __init__(self, nodes: _Optional[_Iterable[_Union[LineageNode, _Mapping]]] = ..., relationships: _Optional[_Iterable[_Union[_common_pb2.Relationship, _Mapping]]] = ..., truncated: _Optional[bool] = ...) -> None: ...

class PropagateDownstreamRequest(_message.Message):
    __slots__ = ("asset_id",)
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    asset_id: str
    def __init__(self, asset_id: _Optional[str] = ...) -> None: ...

class PropagateDownstreamResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: PropagationJob
    def __init__(self, job: _Optional[_Union[PropagationJob, _Mapping]] = ...) -> None: ...

class GetPropagationJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class GetPropagationJobResponse(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: PropagationJob
    def __init__(self, job: _Optional[_Union[PropagationJob, _Mapping]] = ...) -> None: ...

class PropagationJob(_message.Message):
    __slots__ = ("job_id", "asset_id", "state", "assets_total", "assets_done", "assets_changed", "requested_by", "error", "created_at", "updated_at", "finished_at")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    ASSET_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    ASSETS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ASSETS_DONE_FIELD_NUMBER: _ClassVar[int]
    ASSETS_CHANGED_FIELD_NUMBER: _ClassVar[int]
    REQUESTED_BY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    asset_id: str
    state: PropagationJobState
    assets_total: int
    assets_done: int
    assets_changed: int
    requested_by: str
    error: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    def __init__(self, job_id: _Optional[str] = ..., asset_id: _Optional[str] = ..., state: _Optional[_Union[PropagationJobState, str]] = ..., assets_total: _Optional[int] = ..., assets_done: _Optional[int] = ..., assets_changed: _Optional[int] = ..., requested_by: _Optional[str] = ..., error: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
