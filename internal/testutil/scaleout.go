package testutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/flakegate/flakegate/internal/blob/s3"
)

// ScaleOutURLs returns a PostgreSQL URL on a fresh schema and an S3 URL on
// a fresh prefix of the test services (scripts/test-services.sh: the
// bucket is created if needed), both removed when the test ends, or skips
// the test when FLAKEGATE_TEST_POSTGRES_URL / FLAKEGATE_TEST_S3_URL are not
// set. The id names the schema and the prefix.
func ScaleOutURLs(t testing.TB, id string) (pgURL, s3URL string) {
	t.Helper()
	s3Base, pgBase := os.Getenv("FLAKEGATE_TEST_S3_URL"), os.Getenv("FLAKEGATE_TEST_POSTGRES_URL")
	if s3Base == "" || pgBase == "" {
		t.Skip("FLAKEGATE_TEST_S3_URL / FLAKEGATE_TEST_POSTGRES_URL not set: run `eval \"$(scripts/test-services.sh start)\"` to start MinIO and PostgreSQL on loopback")
	}
	var rnd [6]byte
	_, _ = rand.Read(rnd[:])
	id += "_" + hex.EncodeToString(rnd[:])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, pgBase)
	if err != nil {
		t.Fatalf("connect to PostgreSQL: %v", err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE SCHEMA "+id); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if c, err := pgx.Connect(ctx, pgBase); err == nil {
			_, _ = c.Exec(ctx, "DROP SCHEMA "+id+" CASCADE")
			c.Close(ctx)
		}
	})
	pu, err := url.Parse(pgBase)
	if err != nil {
		t.Fatal(err)
	}
	q := pu.Query()
	q.Set("search_path", id)
	pu.RawQuery = q.Encode()

	su, err := url.Parse(s3Base)
	if err != nil {
		t.Fatal(err)
	}
	su.Path = strings.TrimSuffix(su.Path, "/") + "/" + id
	cfg, mc := MinioFor(t, su.String())
	if ok, err := mc.BucketExists(ctx, cfg.Bucket); err != nil {
		t.Fatalf("MinIO: %v", err)
	} else if !ok {
		if err := mc.MakeBucket(ctx, cfg.Bucket, minio.MakeBucketOptions{Region: cfg.Region}); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		for oi := range mc.ListObjectsIter(ctx, cfg.Bucket, minio.ListObjectsOptions{Prefix: cfg.Prefix, Recursive: true}) {
			if oi.Err == nil {
				_ = mc.RemoveObject(ctx, cfg.Bucket, oi.Key, minio.RemoveObjectOptions{})
			}
		}
	})
	return pu.String(), su.String()
}

// MinioFor parses an s3:// URL of the test services and returns it with a
// MinIO client for its endpoint (credentials from the AWS_* environment,
// as the blob store's own).
func MinioFor(t testing.TB, s3URL string) (s3.Config, *minio.Client) {
	t.Helper()
	cfg, err := s3.ParseURL(s3URL)
	if err != nil {
		t.Fatal(err)
	}
	mc, err := minio.New(cfg.Endpoint, &minio.Options{Creds: credentials.NewEnvAWS(), Secure: cfg.Secure, Region: cfg.Region})
	if err != nil {
		t.Fatal(err)
	}
	return cfg, mc
}
