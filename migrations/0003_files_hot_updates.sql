-- Every batch updates its file's row in ingest_files (the checkpoint), and
-- the last one sets the state. Room on each page, and no index on the state,
-- let those updates stay on the page (HOT: no new index entries), which
-- matters when thousands of small files arrive at once. (Nothing of ours
-- looked files up by state; `WHERE state <> 'done'` scans a small table.)
ALTER TABLE ingest_files SET (fillfactor = 50);
DROP INDEX IF EXISTS ingest_files_unfinished_idx;
