package postgres

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/flakegate/flakegate/internal/index"
	"github.com/flakegate/flakegate/internal/index/indextest"
)

// testURL returns FLAKEGATE_TEST_POSTGRES_URL or skips the test.
func testURL(t *testing.T) string {
	t.Helper()
	u := os.Getenv("FLAKEGATE_TEST_POSTGRES_URL")
	if u == "" {
		t.Skip("FLAKEGATE_TEST_POSTGRES_URL not set: run `eval \"$(scripts/test-services.sh start)\"` to start PostgreSQL on loopback")
	}
	return u
}

// testSchema creates a fresh schema in the test PostgreSQL (dropped at the
// end of the test) and returns a URL whose search_path selects it, or skips.
func testSchema(t *testing.T) string {
	t.Helper()
	base := testURL(t)
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	schema := "fgtest_" + hex.EncodeToString(rnd[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, base)
	if err != nil {
		t.Fatalf("connect to FLAKEGATE_TEST_POSTGRES_URL: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+schema); err != nil {
		t.Fatalf("create schema: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		conn, err := pgx.Connect(ctx, base)
		if err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
			return
		}
		defer conn.Close(ctx)
		if _, err := conn.Exec(ctx, "DROP SCHEMA "+schema+" CASCADE"); err != nil {
			t.Errorf("drop schema %s: %v", schema, err)
		}
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	q.Set("pool_max_conns", "8")
	u.RawQuery = q.Encode()
	return u.String()
}

func open(t *testing.T, u string) *Index {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	x, err := Open(ctx, u)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func TestConformance(t *testing.T) {
	testURL(t)
	indextest.Run(t, func(t *testing.T) index.Index { return open(t, testSchema(t)) })
}

// Two Index instances (two pools) on one database, as two servers.
func TestConformanceShared(t *testing.T) {
	testURL(t)
	indextest.RunShared(t, func(t *testing.T) (index.Index, index.Index) {
		u := testSchema(t)
		return open(t, u), open(t, u)
	})
}

// Servers starting together on an empty database: every one opens, each
// migration is applied once.
func TestMigrateConcurrently(t *testing.T) {
	u := testSchema(t)
	const n = 6
	var wg sync.WaitGroup
	errs := make([]error, n)
	xs := make([]*Index, n)
	for i := range n {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			xs[i], errs[i] = Open(ctx, u)
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Open %d: %v", i, err)
		} else {
			defer xs[i].Close()
		}
	}
	if t.Failed() {
		return
	}
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	var rows, maxV int
	if err := xs[0].pool.QueryRow(context.Background(), `SELECT count(*), max(version) FROM flakegate_schema_migrations`).Scan(&rows, &maxV); err != nil {
		t.Fatal(err)
	}
	if rows != len(ms) || maxV != len(ms) {
		t.Fatalf("migrations table has %d rows up to version %d, want %d", rows, maxV, len(ms))
	}
	// A later start is a no-op.
	open(t, u).Close()
}

func TestRefusesNewerSchema(t *testing.T) {
	u := testSchema(t)
	x := open(t, u)
	if _, err := x.pool.Exec(context.Background(), `INSERT INTO flakegate_schema_migrations (version, name) VALUES (999, '0999_future.sql')`); err != nil {
		t.Fatal(err)
	}
	x.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := Open(ctx, u); err == nil || !strings.Contains(err.Error(), "newer than this server") {
		t.Fatalf("Open of a newer schema: err = %v, want a refusal", err)
	}
}

func TestOpenErrors(t *testing.T) {
	cases := []struct {
		name, url, want string
	}{
		{"not a URL", "postgres://u:hunter2@[::1/x", "invalid URL"},
		{"bad pool size", "postgres://u:hunter2@127.0.0.1:1/db?pool_max_conns=0", "invalid URL"},
		{"nobody listening", "postgres://u:hunter2@127.0.0.1:1/db?connect_timeout=2", "connect"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			_, err := Open(ctx, c.url)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want one containing %q", err, c.want)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Fatalf("error leaks the password: %v", err)
			}
		})
	}
	// A schema that does not exist is named in the error.
	if base := os.Getenv("FLAKEGATE_TEST_POSTGRES_URL"); base != "" {
		u, _ := url.Parse(base)
		q := u.Query()
		q.Set("search_path", "fgtest_no_such_schema")
		u.RawQuery = q.Encode()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		if _, err := Open(ctx, u.String()); err == nil || !strings.Contains(err.Error(), "schema") {
			t.Fatalf("Open with a missing schema: err = %v", err)
		}
	}
}

// TestMigrateV1 opens a database written by the version-1 schema (one
// narinfo per store path) and checks the per-flake records made of it.
func TestMigrateV1(t *testing.T) {
	u := testSchema(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ms, err := migrations()
	if err != nil {
		t.Fatal(err)
	}
	pcfg, err := pgxpool.ParseConfig(u) // takes pool_max_conns, which a plain connection refuses
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.ConnectConfig(ctx, pcfg.ConnConfig)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	exec := func(q string, args ...any) {
		t.Helper()
		if _, err := conn.Exec(ctx, q, args...); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	exec(`CREATE TABLE flakegate_schema_migrations (version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`)
	exec(ms[0].sql)
	exec(`INSERT INTO flakegate_schema_migrations (version, name) VALUES (1, $1)`, ms[0].name)
	nars, paths := indextest.V1Fixture()
	for _, n := range nars {
		exec(`INSERT INTO nars VALUES ($1, $2, $3, $4, $5, $6, $7)`, n.Nar.File, string(n.Nar.Compression), n.Nar.FileHash, n.Nar.FileSize, n.Nar.NarHash, n.Nar.NarSize, n.Nar.CreatedAt)
		for _, f := range n.Owners {
			exec(`INSERT INTO nar_owners VALUES ($1, $2)`, n.Nar.File, f.String())
			exec(`INSERT INTO flakes VALUES ($1) ON CONFLICT DO NOTHING`, f.String())
		}
	}
	for _, p := range paths {
		refs := p.Path.References
		if refs == nil {
			refs = []string{}
		}
		exec(`INSERT INTO paths VALUES ($1, $2, $3, $4, $5, $6, $7)`, p.Path.Hash, p.Path.StorePath, p.Path.NarFile, refs, p.Path.NarInfo, p.Path.SignedBy, p.Path.CreatedAt)
		for _, f := range p.Owners {
			exec(`INSERT INTO path_owners VALUES ($1, $2)`, p.Path.Hash, f.String())
		}
	}
	x := open(t, u)
	defer x.Close()
	indextest.CheckMigrated(t, x)
	var v int
	if err := x.pool.QueryRow(ctx, `SELECT max(version) FROM flakegate_schema_migrations`).Scan(&v); err != nil || v != len(ms) {
		t.Fatalf("schema version = %d, %v; want %d", v, err, len(ms))
	}
}

// ClaimNar commits asynchronously (SET LOCAL synchronous_commit = off):
// that must stay within its transaction, so every other write of every
// pooled connection is still a synchronous commit, and the claim must be
// visible at once to another pool (another server's collection).
func TestClaimNarStaysLocal(t *testing.T) {
	testURL(t)
	// The test server runs with synchronous_commit off (speed): these
	// sessions start with it on, so that a leak would show.
	u := testSchema(t) + "&synchronous_commit=on"
	x, other := open(t, u), open(t, u)
	defer x.Close()
	defer other.Close()
	ctx := context.Background()
	n := index.Nar{File: strings.Repeat("1", 52) + ".nar", Compression: "none",
		FileHash: "sha256:f", FileSize: 1, NarHash: "sha256:f", NarSize: 1}
	// More claims than the pool has connections, so every one served one.
	for i := range 16 {
		n.File = strings.Repeat("1", 51) + string(rune('a'+i)) + ".nar"
		if _, err := x.ClaimNar(ctx, n); err != nil {
			t.Fatal(err)
		}
	}
	conns, err := x.pool.Acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conns.Release()
	// Hold every idle connection of the pool and ask each.
	held := []*pgxpool.Conn{conns}
	defer func() {
		for _, c := range held[1:] {
			c.Release()
		}
	}()
	for int(x.pool.Stat().IdleConns()) > 0 {
		c, err := x.pool.Acquire(ctx)
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
	}
	for i, c := range held {
		var v string
		if err := c.QueryRow(ctx, `SHOW synchronous_commit`).Scan(&v); err != nil {
			t.Fatal(err)
		}
		if v != "on" {
			t.Fatalf("connection %d: synchronous_commit = %q after claims, want on", i, v)
		}
	}
	// Visible to the other pool: a collection whose cutoff is before the
	// claims dooms none of the claimed (unowned, touched now) records.
	doomed, err := other.DoomNars(ctx, time.Now().Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(doomed) != 0 {
		t.Fatalf("fresh claims doomed: %v", doomed)
	}
}
