-- Declared pipelines (spec/pipelines.md): every file and every reject
-- belongs to one. Rows written before pipelines existed belong to the
-- built-in one, `ecommerce` (a metadata-only change: no table rewrite).
ALTER TABLE ingest_files ADD COLUMN pipeline text NOT NULL DEFAULT 'ecommerce';
ALTER TABLE ingest_rejects ADD COLUMN pipeline text NOT NULL DEFAULT 'ecommerce';
CREATE INDEX ingest_rejects_pipeline_reason_idx ON ingest_rejects (pipeline, reason);
