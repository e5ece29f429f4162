package storage

import (
	"context"
	"os"
	"testing"
	"time"
)

// The scale-out schemes reach their backends; their errors name the
// problem and never the password.
func TestScaleOutSchemes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	checkOpenErrors(t, ctx, []badURL{
		{true, "s3://bucket?colour=blue", "unknown parameter"},
		{true, "s3://ak:hunter2@bucket", "credentials in the URL"},
		{false, "postgres://u:hunter2@127.0.0.1:1/db?connect_timeout=2", "connect"},
		{false, "postgresql://u:hunter2@127.0.0.1:1/db?connect_timeout=2", "connect"},
	})

	if u := os.Getenv("FLAKEGATE_TEST_S3_URL"); u != "" {
		b, err := OpenBlob(ctx, u)
		if err != nil {
			t.Errorf("OpenBlob(FLAKEGATE_TEST_S3_URL): %v", err)
		} else {
			b.Close()
		}
	}
	// (The PostgreSQL index migrates at Open: internal/index/postgres
	// tests that on a schema of their own, not on the shared database.)
}
