-- flakegate index, garbage collection continued (issue 14): when each path
-- was last used and whether a collection doomed it move to a side table,
-- so that a read's touch and a collection's doom update a small row (HOT:
-- no indexed column changes) instead of the row holding the narinfo text.
-- Files are found by flake (a collection drops those whose path is gone),
-- and build logs can be marked as being deleted. The same schema as the
-- SQLite index's migration 5.

CREATE TABLE path_use (
    flake     text COLLATE "C" NOT NULL,
    hash      text NOT NULL,
    last_used timestamptz NOT NULL,
    doomed    boolean NOT NULL DEFAULT false,
    PRIMARY KEY (flake, hash)
) WITH (fillfactor = 80);
INSERT INTO path_use (flake, hash, last_used, doomed)
    SELECT flake, hash, last_used, doomed FROM flake_paths;

DROP INDEX flake_paths_by_flake;
ALTER TABLE flake_paths DROP COLUMN last_used, DROP COLUMN doomed;
-- A collection's scan of a flake reads this index and path_use only.
CREATE INDEX flake_paths_by_flake ON flake_paths (flake, hash) INCLUDE (nar_file, refs);
CREATE INDEX flake_files_by_flake ON flake_files (flake, needs);
ALTER TABLE logs ADD COLUMN deleting boolean NOT NULL DEFAULT false;
