-- flakegate index, version 2: per-flake narinfos (issue 12). One narinfo per
-- store path across all flakes let a pusher of one flake probe, pre-empt and
-- poison another flake's paths. Each flake that owned a path gets its own
-- copy of the narinfo it served; then copies the flake could not have pushed
-- itself are dropped: before this version, a flake that pushed a path another
-- flake had pushed first (same NarHash) served the first pusher's narinfo,
-- whose NAR file or references it may not own. Dropping such a copy loses
-- nothing the flake pushed (its own narinfo was never stored); its next push
-- of the path stores its own. The same rule as the SQLite index's
-- pruneForeign.

CREATE TABLE flake_paths (
    hash       text NOT NULL,
    flake      text COLLATE "C" NOT NULL,
    store_path text NOT NULL,
    nar_file   text NOT NULL,
    nar_hash   text NOT NULL,
    refs       text[] NOT NULL,
    narinfo    bytea NOT NULL,
    signed_by  text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL,
    PRIMARY KEY (hash, flake)
);

INSERT INTO flake_paths (hash, flake, store_path, nar_file, nar_hash, refs, narinfo, signed_by, created_at)
SELECT p.hash, o.flake, p.store_path, p.nar_file, coalesce(n.nar_hash, ''), p.refs, p.narinfo, p.signed_by, p.created_at
FROM path_owners o JOIN paths p ON p.hash = o.hash LEFT JOIN nars n ON n.file = p.nar_file;

DROP TABLE path_owners;
DROP TABLE paths;

CREATE INDEX flake_paths_by_flake ON flake_paths (flake, hash);

DELETE FROM flake_paths p WHERE NOT EXISTS
    (SELECT 1 FROM nar_owners o WHERE o.file = p.nar_file AND o.flake = p.flake);

DO $$
DECLARE n bigint;
BEGIN
    LOOP
        DELETE FROM flake_paths p WHERE EXISTS (
            SELECT 1 FROM unnest(p.refs) AS r
            WHERE left(r, 32) <> p.hash AND NOT EXISTS (
                SELECT 1 FROM flake_paths q WHERE q.hash = left(r, 32) AND q.flake = p.flake));
        GET DIAGNOSTICS n = ROW_COUNT;
        EXIT WHEN n = 0;
    END LOOP;
END $$;
