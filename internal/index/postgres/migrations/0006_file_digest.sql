-- flakegate index, version 6: a file's union agreement key and decoded size,
-- computed at upload (adversarial review r4, F3: a union read decoded every
-- owner's listing to compare them, and a client not accepting the stored
-- encoding got it decoded whole into memory). Rows recorded before have
-- plain_size -1 and are completed on their first read (UpdateFileDigest).
-- Adding columns with constant defaults rewrites no row (PostgreSQL ≥ 11).
-- The same as the SQLite index's migration 7.

-- digest_of is the created_at of the upload they describe: a replica of an
-- older version replacing the file keeps them but not created_at, and the
-- stale pair is then recomputed, not served.

ALTER TABLE flake_files ADD COLUMN digest text NOT NULL DEFAULT '';
ALTER TABLE flake_files ADD COLUMN plain_size bigint NOT NULL DEFAULT -1;
ALTER TABLE flake_files ADD COLUMN digest_of timestamptz;
