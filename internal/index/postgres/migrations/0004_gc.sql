-- flakegate index, garbage collection (issue 14): when each path was last
-- used (and whether a collection doomed it) and each NAR ownership and record last touched by a push (existing
-- rows: their creation time), NAR records being deleted, pins, and the
-- generation counter servers watch to drop cached answers. The same schema
-- as the SQLite index's migration 4.

ALTER TABLE flake_paths ADD COLUMN last_used timestamptz;
UPDATE flake_paths SET last_used = created_at;
ALTER TABLE flake_paths ALTER COLUMN last_used SET NOT NULL;
ALTER TABLE flake_paths ADD COLUMN doomed boolean NOT NULL DEFAULT false;

ALTER TABLE nars ADD COLUMN touched_at timestamptz;
UPDATE nars SET touched_at = created_at;
ALTER TABLE nars ALTER COLUMN touched_at SET NOT NULL;
ALTER TABLE nars ADD COLUMN deleting boolean NOT NULL DEFAULT false;

ALTER TABLE nar_owners ADD COLUMN touched_at timestamptz;
UPDATE nar_owners o SET touched_at = coalesce((SELECT n.created_at FROM nars n WHERE n.file = o.file), 'epoch');
ALTER TABLE nar_owners ALTER COLUMN touched_at SET NOT NULL;

CREATE INDEX flake_paths_by_nar ON flake_paths (flake, nar_file);
CREATE INDEX nar_owners_by_flake ON nar_owners (flake, file);
-- A collection's scan of a flake reads this index only (index-only scan),
-- not the rows with their narinfo text.
DROP INDEX flake_paths_by_flake;
CREATE INDEX flake_paths_by_flake ON flake_paths (flake, hash) INCLUDE (last_used, nar_file, refs);

CREATE TABLE pins (
    flake      text COLLATE "C" NOT NULL,
    name       text NOT NULL,
    hash       text NOT NULL,
    store_path text NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (flake, name)
);
CREATE INDEX pins_by_path ON pins (flake, hash);

CREATE TABLE gc_state (
    id         integer PRIMARY KEY CHECK (id = 1),
    generation bigint NOT NULL
);
INSERT INTO gc_state (id, generation) VALUES (1, 0);
