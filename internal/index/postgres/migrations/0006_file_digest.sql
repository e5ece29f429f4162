-- flakegate index, version 6: a file's union agreement key and decoded size,
-- computed at upload (adversarial review r4, F3: a union read decoded every
-- owner's listing to compare them, and a client not accepting the stored
-- encoding got it decoded whole into memory). Rows recorded before have
-- plain_size -1 and are completed on their first read (UpdateFileDigest).
-- Adding columns with constant defaults rewrites no row (PostgreSQL ≥ 11).
-- The same as the SQLite index's migration 7.

ALTER TABLE flake_files ADD COLUMN digest text NOT NULL DEFAULT '';
ALTER TABLE flake_files ADD COLUMN plain_size bigint NOT NULL DEFAULT -1;
