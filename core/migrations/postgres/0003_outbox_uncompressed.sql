-- Outbox batches arrive compressed by Lily (core/events/outbox.py): Postgres need not try again.
ALTER TABLE outbox_batch ALTER COLUMN events SET STORAGE EXTERNAL;
