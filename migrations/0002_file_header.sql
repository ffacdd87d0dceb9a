-- The header record of each file, as read: `ingestd replay-rejects`
-- re-validates stored rejects against it.
ALTER TABLE ingest_files ADD COLUMN header bytea;
