"""Lily's error hierarchy. Each error names its gRPC status code, a stable reason and its
google.rpc details; core/wire/status.py turns them into a google.rpc.Status on the wire."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


class LilyError(Exception):
    code: str = "INTERNAL"
    reason: str = "INTERNAL"

    def __init__(self, message: str, *, metadata: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.metadata = dict(metadata or {})


class InvalidArgument(LilyError):
    code = "INVALID_ARGUMENT"
    reason = "INVALID_ARGUMENT"

    def __init__(self, violations: list[FieldViolation], message: str | None = None) -> None:
        text = message or "; ".join(f"{v.field}: {v.description}" for v in violations[:5])
        super().__init__(text)
        self.violations = violations


class TransformRejected(InvalidArgument):
    """A pre-ingest transformer refused an asset, or failed on it (core/transforms)."""

    reason = "TRANSFORM_REJECTED"


class Unauthenticated(LilyError):
    """No credential, or one that proves nothing."""

    code = "UNAUTHENTICATED"
    reason = "UNAUTHENTICATED"


class PermissionDenied(LilyError):
    """The caller is known, and may not do this."""

    code = "PERMISSION_DENIED"
    reason = "PERMISSION_DENIED"


class AlreadyExists(LilyError):
    code = "ALREADY_EXISTS"
    reason = "ALREADY_EXISTS"


class FailedPrecondition(LilyError):
    code = "FAILED_PRECONDITION"
    reason = "FAILED_PRECONDITION"


class NotFound(LilyError):
    code = "NOT_FOUND"
    reason = "NOT_FOUND"


class AssetNotFound(NotFound):
    reason = "ASSET_NOT_FOUND"

    def __init__(self, asset_id: str) -> None:
        super().__init__(f"asset {asset_id!r} not found", metadata={"asset_id": asset_id})


class AssetDeleted(LilyError):
    code = "FAILED_PRECONDITION"
    reason = "ASSET_DELETED"

    def __init__(self, asset_id: str) -> None:
        super().__init__(
            f"asset {asset_id!r} is deleted; re-ingest it to restore it",
            metadata={"asset_id": asset_id},
        )


class Aborted(LilyError):
    """Somebody else changed it between the caller's read and this write: read, try again."""

    code = "ABORTED"
    reason = "CONCURRENT_CHANGE"


class VersionMismatch(LilyError):
    code = "ABORTED"
    reason = "VERSION_MISMATCH"

    def __init__(self, asset_id: str, expected: int, current: int) -> None:
        super().__init__(
            f"asset {asset_id!r} is at version {current}, not {expected}",
            metadata={
                "asset_id": asset_id,
                "expected_version": str(expected),
                "current_version": str(current),
            },
        )
        self.current_version = current


class Unavailable(LilyError):
    code = "UNAVAILABLE"
    reason = "BACKEND_UNAVAILABLE"

    def __init__(self, message: str, *, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class JobClosed(FailedPrecondition):
    """A bulk job that was closed takes no more assets."""

    reason = "BULK_JOB_CLOSED"
