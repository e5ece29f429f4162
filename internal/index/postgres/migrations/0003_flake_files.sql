-- flakegate index, version 3: the rest of Nix's binary-cache files (issue
-- 13): per-flake NAR listings, debug info links, realisations and build trace
-- entries (small JSON, stored as uploaded with their Content-Encoding), and
-- the Content-Encoding of build logs. The same as the SQLite index's
-- migration 3.

CREATE TABLE flake_files (
    kind       text NOT NULL,
    key        text NOT NULL,
    flake      text COLLATE "C" NOT NULL,
    needs      text NOT NULL,
    encoding   text NOT NULL DEFAULT '',
    data       bytea NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (kind, key, flake)
);

ALTER TABLE logs ADD COLUMN encoding text NOT NULL DEFAULT '';
