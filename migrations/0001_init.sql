-- ingestd schema, version 1. Never edit once released: add a new file.

-- One row per written event: the contract's columns (events.md) plus where
-- the row came from and when it was committed. Column widths are the
-- contract's (varchar counts characters, as the contract does).
CREATE TABLE ecommerce_events (
    event_id         uuid PRIMARY KEY,
    event_type       text NOT NULL,
    user_id          varchar(64) NOT NULL,
    session_id       varchar(100),
    product_id       varchar(64) NOT NULL,
    product_name     varchar(200),
    product_category varchar(100),
    price            numeric(10, 2),
    quantity         integer NOT NULL,
    event_timestamp  timestamptz NOT NULL,
    device_type      text,
    user_agent       varchar(512),
    ingested_at      timestamptz NOT NULL DEFAULT now(),
    source_file      text NOT NULL,
    source_line      bigint NOT NULL
);
CREATE INDEX ecommerce_events_event_type_idx ON ecommerce_events (event_type);
CREATE INDEX ecommerce_events_user_id_idx ON ecommerce_events (user_id);
CREATE INDEX ecommerce_events_product_id_idx ON ecommerce_events (product_id);
CREATE INDEX ecommerce_events_event_timestamp_idx ON ecommerce_events (event_timestamp);

-- One row per input file identity (path + fingerprint). The checkpoint
-- (committed_offset/line and the counts) is updated in the same transaction
-- as the batch's events and rejects: that is the exactly-once guarantee.
CREATE TABLE ingest_files (
    id               bigserial PRIMARY KEY,
    path             text NOT NULL,
    file_name        text NOT NULL,
    fingerprint      text NOT NULL,
    size             bigint NOT NULL,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'in_progress', 'done', 'failed')),
    rows_total       bigint NOT NULL DEFAULT 0,
    rows_written     bigint NOT NULL DEFAULT 0,
    rows_duplicate   bigint NOT NULL DEFAULT 0,
    rows_rejected    bigint NOT NULL DEFAULT 0,
    committed_offset bigint NOT NULL DEFAULT 0,
    committed_line   bigint NOT NULL DEFAULT 1,
    batches          bigint NOT NULL DEFAULT 0,
    attempts         integer NOT NULL DEFAULT 0,
    error            text,
    first_seen_at    timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    finished_at      timestamptz,
    UNIQUE (path, fingerprint),
    CHECK (state <> 'done' OR rows_total = rows_written + rows_duplicate + rows_rejected)
);
CREATE INDEX ingest_files_unfinished_idx ON ingest_files (state) WHERE state <> 'done';

-- One row per rejected row, committed with its batch. The unique key makes
-- a second commit of the same row impossible, whatever happens upstream.
CREATE TABLE ingest_rejects (
    id            bigserial PRIMARY KEY,
    file_id       bigint NOT NULL REFERENCES ingest_files (id),
    source_file   text NOT NULL,
    source_line   bigint NOT NULL,
    reason        text NOT NULL,
    detail        text NOT NULL,
    raw_line      bytea NOT NULL,
    raw_truncated boolean NOT NULL DEFAULT false,
    rejected_at   timestamptz NOT NULL DEFAULT now(),
    UNIQUE (file_id, source_line)
);
CREATE INDEX ingest_rejects_reason_idx ON ingest_rejects (reason);
