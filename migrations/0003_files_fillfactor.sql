-- Every batch updates its file's row in ingest_files (the checkpoint). Room
-- on each page lets those updates stay on the page (HOT: no new index
-- entries), which matters when thousands of small files arrive at once.
ALTER TABLE ingest_files SET (fillfactor = 50);
