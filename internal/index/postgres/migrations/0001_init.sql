-- flakegate index, version 1: content recorded once, ownership as (flake,
-- object) relations. Flakes are "org/name" text in the "C" collation so that
-- ORDER BY flake is byte order, as in the SQLite index.

CREATE TABLE nars (
    file        text PRIMARY KEY,
    compression text NOT NULL,
    file_hash   text NOT NULL,
    file_size   bigint NOT NULL,
    nar_hash    text NOT NULL,
    nar_size    bigint NOT NULL,
    created_at  timestamptz NOT NULL
);

CREATE TABLE nar_owners (
    file  text NOT NULL REFERENCES nars (file),
    flake text COLLATE "C" NOT NULL,
    PRIMARY KEY (file, flake)
);

CREATE TABLE paths (
    hash       text PRIMARY KEY,
    store_path text NOT NULL,
    nar_file   text NOT NULL,
    refs       text[] NOT NULL,
    narinfo    bytea NOT NULL,
    signed_by  text NOT NULL DEFAULT '',
    created_at timestamptz NOT NULL
);

CREATE TABLE path_owners (
    hash  text NOT NULL REFERENCES paths (hash),
    flake text COLLATE "C" NOT NULL,
    PRIMARY KEY (hash, flake)
);
CREATE INDEX path_owners_by_flake ON path_owners (flake, hash);

-- Every flake that owns a path or a NAR, so that Stats need not scan the
-- ownership tables.
CREATE TABLE flakes (
    flake text COLLATE "C" PRIMARY KEY
);

CREATE TABLE logs (
    flake      text COLLATE "C" NOT NULL,
    drv        text NOT NULL,
    blob_key   text NOT NULL,
    created_at timestamptz NOT NULL,
    PRIMARY KEY (flake, drv)
);
