-- Nothing silent: entries of an incoming folder whose name matches the
-- input pattern but which are not read, with why (a bounded set of
-- reasons: not_regular_file, unreadable). A row goes when the entry goes,
-- or when it is read after all.
CREATE TABLE ingest_skipped (
    pipeline      text NOT NULL,
    path          text NOT NULL,
    reason        text NOT NULL,
    detail        text,
    first_seen_at timestamptz NOT NULL DEFAULT now(),
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pipeline, path)
);

-- Per file, the same answer `ingestd status` and the status page give,
-- one query away in psql or pgAdmin: its pipeline, state, counts, lag (from
-- first seen to finished, or to now while unfinished) and last error.
CREATE VIEW ingest_file_status AS
SELECT pipeline,
       file_name,
       path,
       state,
       rows_total,
       rows_written,
       rows_duplicate,
       rows_rejected,
       committed_offset,
       size,
       attempts,
       first_seen_at,
       finished_at,
       coalesce(finished_at, now()) - first_seen_at AS lag,
       error AS last_error
FROM ingest_files;
