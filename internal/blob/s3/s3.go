// Package s3 is a blob.Store on S3-compatible object storage (AWS S3, MinIO,
// Ceph RGW, R2…), so that several blob servers can share one set of blobs.
//
// # URL
//
//	s3://BUCKET[/PREFIX]?endpoint=HOST:PORT&region=REGION&secure=false&path_style=true&part_size=16MiB
//
// Without endpoint the store talks to AWS (s3.amazonaws.com, HTTPS). secure
// defaults to true; path_style forces path-style bucket addressing (the
// default picks path style for non-AWS endpoints); part_size is the multipart
// part size (5MiB…5GiB, default 16MiB) and bounds the memory one upload holds;
// it is a bytesize (16MB = 16,000,000 bytes, 16MiB = 16,777,216; see
// internal/bytesize, which flags use too).
// Credentials come from the usual chain: AWS_ACCESS_KEY_ID /
// AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, then the shared credentials file
// (~/.aws/credentials, AWS_SHARED_CREDENTIALS_FILE, AWS_PROFILE), then the
// instance/pod IAM role. Credentials never appear in the URL: one that has
// them is refused, and errors show it through internal/redact.
//
// # How a blob becomes visible only when complete
//
// A Writer does not know its key until Commit, so it cannot upload straight
// to the final key from the first byte. It works in two phases:
//
//   - Small blobs (up to DirectPutMax, the common case for narinfo-sized
//     NARs and build logs) are held in memory and sent at Commit with one PUT
//     to the final key. An S3 PUT is atomic: readers see the old object or the
//     new one, never a part of it.
//   - Once a blob outgrows DirectPutMax, the Writer starts a multipart upload
//     of unknown length (PutObject with size -1 and a fixed part size) to a
//     temporary key under "PREFIX/.tmp/", fed through a pipe as the caller
//     writes, so at most about two parts are in memory whatever the blob
//     size. Commit completes that upload and then copies the temporary
//     object to the final key server-side (a single atomic CopyObject up to
//     5 GiB, a multipart copy above), and deletes the temporary object.
//
// Abort (or a failed Write) aborts the multipart upload, so S3 keeps no
// parts. A crash can leave a temporary object or an incomplete multipart
// upload behind, never a partial object under a real key: the store deletes
// temporary objects older than a day when it starts (SweepTemp), and a bucket
// lifecycle rule "abort incomplete multipart uploads after 1 day" cleans up
// the rest (see docs/scale-out.md).
//
// Keys follow blob.CheckKey (the store has no key rule of its own): no
// segment may be empty or start with '.', which keeps "../" out and keeps
// user keys apart from the store's own ".tmp/" area, and a key has at most
// blob.MaxKeyLen bytes, so PREFIX/KEY fits S3's 1024-byte object names with
// a prefix of up to 511 bytes.
package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/flakegate/flakegate/internal/blob"
	"github.com/flakegate/flakegate/internal/bytesize"
	"github.com/flakegate/flakegate/internal/redact"
)

const (
	// DirectPutMax is the largest blob a Writer buffers in memory and sends
	// with a single PUT at Commit; larger blobs stream as multipart uploads.
	DirectPutMax = 8 << 20

	defaultPartSize = 16 * bytesize.MiB
	minPartSize     = 5 * bytesize.MiB
	maxPartSize     = 5 * bytesize.GiB

	// Timeouts for calls that move no blob data. Data transfers are bounded
	// by the caller's context and the transport's header timeout instead.
	opTimeout = 30 * time.Second
	// copyTimeout bounds the server-side copy at Commit (it moves data
	// inside the object store, up to several GiB).
	copyTimeout = 30 * time.Minute

	// maxObjectName is S3's limit on an object name (bytes). A name is
	// PREFIX/KEY, so the prefix gets what blob.MaxKeyLen leaves.
	maxObjectName = 1024
	maxPrefixLen  = maxObjectName - 1 - blob.MaxKeyLen

	tmpDir = ".tmp/"
	// tmpMaxAge is the age after which SweepTemp deletes a temporary object:
	// far longer than any upload takes.
	tmpMaxAge = 24 * time.Hour
)

// Config is a parsed store URL.
type Config struct {
	Bucket    string
	Prefix    string // "" or ends with "/"
	Endpoint  string // host:port
	Region    string
	Secure    bool
	PathStyle bool
	PartSize  uint64
}

// ParseURL parses s3://BUCKET[/PREFIX]?endpoint=…&region=…&secure=…&path_style=…&part_size=….
func ParseURL(raw string) (Config, error) {
	u, err := url.Parse(raw)
	if err != nil {
		// url.Error quotes the URL, credentials and all.
		return Config{}, fmt.Errorf("parse s3 url: %w", redact.Error(err, raw))
	}
	if u.Scheme != "s3" {
		return Config{}, fmt.Errorf("parse s3 url: scheme %q, want s3", u.Scheme)
	}
	if u.User != nil {
		return Config{}, errors.New("parse s3 url: credentials in the URL are not accepted: use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or a credentials file")
	}
	c := Config{
		Bucket:   u.Host,
		Endpoint: "s3.amazonaws.com",
		Region:   "",
		Secure:   true,
		PartSize: defaultPartSize,
	}
	if c.Bucket == "" {
		return Config{}, errors.New("parse s3 url: missing bucket (s3://BUCKET/prefix)")
	}
	if p := strings.Trim(u.Path, "/"); p != "" {
		if err := blob.CheckKey(p); err != nil {
			return Config{}, fmt.Errorf("parse s3 url: prefix %q: %w", p, err)
		}
		if len(p) > maxPrefixLen {
			return Config{}, fmt.Errorf("parse s3 url: prefix of %d bytes: at most %d, so that prefix/key fits S3's %d-byte object names", len(p), maxPrefixLen, maxObjectName)
		}
		c.Prefix = p + "/"
	}
	q := u.Query()
	for k, vs := range q {
		v := vs[len(vs)-1]
		switch k {
		case "endpoint":
			if v == "" || strings.Contains(v, "/") {
				return Config{}, fmt.Errorf("parse s3 url: endpoint %q: want host[:port]", v)
			}
			c.Endpoint = v
		case "region":
			c.Region = v
		case "secure":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return Config{}, fmt.Errorf("parse s3 url: secure=%q: want true or false", v)
			}
			c.Secure = b
		case "path_style":
			b, err := strconv.ParseBool(v)
			if err != nil {
				return Config{}, fmt.Errorf("parse s3 url: path_style=%q: want true or false", v)
			}
			c.PathStyle = b
		case "part_size":
			n, err := bytesize.Parse(v)
			if err != nil {
				return Config{}, fmt.Errorf("parse s3 url: part_size: %w", err)
			}
			if n < minPartSize || n > maxPartSize {
				return Config{}, fmt.Errorf("parse s3 url: part_size=%q (%d bytes): want 5MiB…5GiB (MB = 1000², MiB = 1024²)", v, n)
			}
			c.PartSize = uint64(n)
		default:
			return Config{}, fmt.Errorf("parse s3 url: unknown parameter %q (known: endpoint, region, secure, path_style, part_size)", k)
		}
	}
	return c, nil
}

// Store is a blob.Store in one bucket, below one prefix.
type Store struct {
	client *minio.Client
	core   minio.Core
	cfg    Config
	log    *slog.Logger

	stop   context.CancelFunc
	sweeps sync.WaitGroup
}

var _ blob.Store = (*Store)(nil)

// Open opens the store a URL names (see the package doc). It checks that the
// bucket exists and starts a background sweep of stale temporary objects.
func Open(ctx context.Context, rawURL string, log *slog.Logger) (*Store, error) {
	cfg, err := ParseURL(rawURL)
	if err != nil {
		return nil, err
	}
	return New(ctx, cfg, log)
}

// New opens a store from a Config.
func New(ctx context.Context, cfg Config, log *slog.Logger) (*Store, error) {
	if log == nil {
		log = slog.Default()
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = defaultPartSize
	}
	client, err := newClient(cfg)
	if err != nil {
		return nil, err
	}
	cctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	ok, err := client.BucketExists(cctx, cfg.Bucket)
	if err != nil {
		return nil, fmt.Errorf("check s3 bucket %q at %s: %w", cfg.Bucket, cfg.Endpoint, err)
	}
	if !ok {
		return nil, fmt.Errorf("s3 bucket %q does not exist at %s: create it first", cfg.Bucket, cfg.Endpoint)
	}
	bg, stop := context.WithCancel(context.Background())
	s := &Store{client: client, core: minio.Core{Client: client}, cfg: cfg, log: log, stop: stop}
	s.sweeps.Go(func() {
		n, err := s.SweepTemp(bg, tmpMaxAge)
		if err != nil && bg.Err() == nil {
			s.log.Warn("s3 sweep of stale temporary uploads failed", "bucket", cfg.Bucket, "err", err)
		} else if n > 0 {
			s.log.Info("s3 deleted stale temporary uploads", "bucket", cfg.Bucket, "count", n)
		}
	})
	return s, nil
}

// newClient makes a client with the AWS credentials chain.
func newClient(cfg Config) (*minio.Client, error) {
	tr, err := minio.DefaultTransport(cfg.Secure)
	if err != nil {
		return nil, fmt.Errorf("s3 transport: %w", err)
	}
	creds := credentials.NewChainCredentials([]credentials.Provider{
		&credentials.EnvAWS{},
		&credentials.FileAWSCredentials{},
		&credentials.IAM{Client: &http.Client{Transport: tr, Timeout: 10 * time.Second}},
	})
	lookup := minio.BucketLookupAuto
	if cfg.PathStyle {
		lookup = minio.BucketLookupPath
	}
	client, err := minio.New(cfg.Endpoint, &minio.Options{
		Creds:        creds,
		Secure:       cfg.Secure,
		Transport:    tr,
		Region:       cfg.Region,
		BucketLookup: lookup,
	})
	if err != nil {
		return nil, fmt.Errorf("s3 client for %s: %w", cfg.Endpoint, err)
	}
	return client, nil
}

var _ blob.Presigner = (*Store)(nil)

// MaxPresignExpiry is S3's limit on a presigned URL's lifetime (SigV4).
const MaxPresignExpiry = 7 * 24 * time.Hour

// Presign returns a presigned URL for GET or HEAD of key, valid for expiry
// (1 s to 7 days). It is computed locally (SigV4 query signing) and makes
// no request to S3 when the store's region is configured (the URL's
// region=; without it minio-go asks the bucket's location once and caches
// it). The URL grants that method on that one object to whoever holds it
// until it expires; it is not tied to the client.
func (s *Store) Presign(ctx context.Context, method, key string, expiry time.Duration) (*url.URL, error) {
	if err := blob.CheckKey(key); err != nil {
		return nil, err
	}
	if method != http.MethodGet && method != http.MethodHead {
		return nil, fmt.Errorf("s3 presign %s: method %s: only GET and HEAD", key, method)
	}
	if expiry < time.Second || expiry > MaxPresignExpiry {
		return nil, fmt.Errorf("s3 presign %s: expiry %s: want 1s to %s", key, expiry, MaxPresignExpiry)
	}
	u, err := s.client.Presign(ctx, method, s.cfg.Bucket, s.object(key), expiry, nil)
	if err != nil {
		return nil, fmt.Errorf("s3 presign %s: %w", key, err)
	}
	return u, nil
}

// Config returns the store's configuration.
func (s *Store) Config() Config { return s.cfg }

// Close stops background work. It does not wait for open Readers or Writers.
func (s *Store) Close() error {
	s.stop()
	s.sweeps.Wait()
	return nil
}

func (s *Store) object(key string) string { return s.cfg.Prefix + key }

func isNotFound(err error) bool {
	code := minio.ToErrorResponse(err).Code
	return code == minio.NoSuchKey || code == "NotFound"
}

// Stat returns a blob's size and modification time.
func (s *Store) Stat(ctx context.Context, key string) (blob.Info, error) {
	if err := blob.CheckKey(key); err != nil {
		return blob.Info{}, fmt.Errorf("stat blob: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	oi, err := s.client.StatObject(ctx, s.cfg.Bucket, s.object(key), minio.StatObjectOptions{})
	if err != nil {
		if isNotFound(err) {
			return blob.Info{}, fmt.Errorf("stat blob %s: %w", key, blob.ErrNotFound)
		}
		return blob.Info{}, fmt.Errorf("stat blob %s: %w", key, err)
	}
	return blob.Info{Key: key, Size: oi.Size, ModTime: oi.LastModified}, nil
}

// Open opens a blob for reading. Reads and seeks are served with ranged
// GETs; the Reader stays usable as long as ctx is.
func (s *Store) Open(ctx context.Context, key string) (blob.Reader, error) {
	info, err := s.Stat(ctx, key)
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	return &reader{s: s, ctx: ctx, info: info}, nil
}

// Delete removes a blob. Deleting an absent key succeeds.
func (s *Store) Delete(ctx context.Context, key string) error {
	if err := blob.CheckKey(key); err != nil {
		return fmt.Errorf("delete blob: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, opTimeout)
	defer cancel()
	if err := s.client.RemoveObject(ctx, s.cfg.Bucket, s.object(key), minio.RemoveObjectOptions{}); err != nil && !isNotFound(err) {
		return fmt.Errorf("delete blob %s: %w", key, err)
	}
	return nil
}

// SweepTemp deletes temporary upload objects older than maxAge (left by a
// crash between upload and Commit) and returns how many it deleted.
func (s *Store) SweepTemp(ctx context.Context, maxAge time.Duration) (int, error) {
	cutoff := time.Now().Add(-maxAge)
	n := 0
	for oi := range s.client.ListObjectsIter(ctx, s.cfg.Bucket, minio.ListObjectsOptions{Prefix: s.cfg.Prefix + tmpDir, Recursive: true}) {
		if oi.Err != nil {
			return n, fmt.Errorf("list temporary uploads in %s: %w", s.cfg.Bucket, oi.Err)
		}
		if oi.LastModified.After(cutoff) {
			continue
		}
		rctx, cancel := context.WithTimeout(ctx, opTimeout)
		err := s.client.RemoveObject(rctx, s.cfg.Bucket, oi.Key, minio.RemoveObjectOptions{})
		cancel()
		if err != nil && !isNotFound(err) {
			return n, fmt.Errorf("delete temporary upload %s: %w", oi.Key, err)
		}
		n++
	}
	return n, nil
}

// Create starts a new blob. The upload (once it outgrows DirectPutMax) runs
// under ctx: cancelling ctx fails the upload.
func (s *Store) Create(ctx context.Context) (blob.Writer, error) {
	return &writer{s: s, ctx: ctx}, nil
}

var errAborted = errors.New("blob upload aborted")

type writer struct {
	s   *Store
	ctx context.Context

	buf  []byte // small phase: the whole blob so far
	size int64

	// Streaming phase (after the blob outgrew DirectPutMax).
	pw     *io.PipeWriter
	tmpKey string
	done   chan struct{} // closed when the upload goroutine returns
	upErr  error         // the upload's result, read after done

	finished bool // Commit or Abort was called
}

func (w *writer) Write(p []byte) (int, error) {
	if w.finished {
		return 0, errors.New("write to a committed or aborted blob")
	}
	if w.pw == nil {
		if len(w.buf)+len(p) <= DirectPutMax {
			w.buf = append(w.buf, p...)
			w.size += int64(len(p))
			return len(p), nil
		}
		if err := w.startUpload(); err != nil {
			return 0, err
		}
	}
	n, err := w.pw.Write(p)
	w.size += int64(n)
	if err != nil {
		return n, fmt.Errorf("upload blob: %w", err)
	}
	return n, nil
}

// startUpload switches to the streaming phase: a multipart upload of
// unknown length to a temporary key, fed by a pipe.
func (w *writer) startUpload() error {
	var rnd [16]byte
	if _, err := rand.Read(rnd[:]); err != nil {
		return fmt.Errorf("temporary upload name: %w", err)
	}
	w.tmpKey = w.s.cfg.Prefix + tmpDir + hex.EncodeToString(rnd[:])
	pr, pw := io.Pipe()
	w.pw, w.done = pw, make(chan struct{})
	go func() {
		defer close(w.done)
		_, err := w.s.client.PutObject(w.ctx, w.s.cfg.Bucket, w.tmpKey, pr, -1, minio.PutObjectOptions{
			PartSize:    w.s.cfg.PartSize,
			ContentType: "application/octet-stream",
		})
		if err != nil {
			err = fmt.Errorf("upload to %s: %w", w.tmpKey, err)
		}
		w.upErr = err
		// Unblock a Write waiting on the pipe if the upload stopped early.
		pr.CloseWithError(cmpErr(err, errors.New("upload finished")))
	}()
	buf := w.buf
	w.buf = nil
	if _, err := w.pw.Write(buf); err != nil {
		return fmt.Errorf("upload blob: %w", err)
	}
	return nil
}

func cmpErr(err, def error) error {
	if err != nil {
		return err
	}
	return def
}

// Commit makes the blob visible under key (see the package doc).
func (w *writer) Commit(ctx context.Context, key string) error {
	if w.finished {
		return errors.New("commit of a committed or aborted blob")
	}
	if err := blob.CheckKey(key); err != nil {
		_ = w.Abort()
		return fmt.Errorf("commit blob: %w", err)
	}
	w.finished = true
	obj := w.s.object(key)

	if w.pw == nil {
		pctx, cancel := context.WithTimeout(ctx, copyTimeout)
		defer cancel()
		_, err := w.s.client.PutObject(pctx, w.s.cfg.Bucket, obj, bytes.NewReader(w.buf), int64(len(w.buf)), minio.PutObjectOptions{
			ContentType: "application/octet-stream",
		})
		w.buf = nil
		if err != nil {
			return fmt.Errorf("commit blob %s: put: %w", key, err)
		}
		return nil
	}

	// Streaming phase: finish the upload, then copy into place.
	_ = w.pw.Close()
	select {
	case <-w.done:
	case <-ctx.Done():
		_ = w.pw.CloseWithError(errAborted)
		<-w.done
		w.removeTemp()
		return fmt.Errorf("commit blob %s: %w", key, ctx.Err())
	}
	if w.upErr != nil {
		return fmt.Errorf("commit blob %s: %w", key, w.upErr)
	}
	defer w.removeTemp()
	cctx, cancel := context.WithTimeout(ctx, copyTimeout)
	defer cancel()
	_, err := w.s.client.ComposeObject(cctx,
		minio.CopyDestOptions{Bucket: w.s.cfg.Bucket, Object: obj},
		minio.CopySrcOptions{Bucket: w.s.cfg.Bucket, Object: w.tmpKey})
	if err != nil {
		return fmt.Errorf("commit blob %s: copy from %s: %w", key, w.tmpKey, err)
	}
	return nil
}

// removeTemp deletes the temporary object; a failure only leaves it for
// SweepTemp.
func (w *writer) removeTemp() {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(w.ctx), opTimeout)
	defer cancel()
	if err := w.s.client.RemoveObject(ctx, w.s.cfg.Bucket, w.tmpKey, minio.RemoveObjectOptions{}); err != nil && !isNotFound(err) {
		w.s.log.Warn("s3 could not delete temporary upload; the startup sweep will", "object", w.tmpKey, "err", err)
	}
}

// Abort discards the blob: the multipart upload, if any, is aborted.
func (w *writer) Abort() error {
	if w.finished {
		return nil
	}
	w.finished = true
	w.buf = nil
	if w.pw == nil {
		return nil
	}
	_ = w.pw.CloseWithError(errAborted)
	<-w.done
	if w.upErr == nil {
		// The upload had already completed (cannot happen without Commit
		// closing the pipe, but never leave an object behind).
		w.removeTemp()
	}
	return nil
}

// reader serves a blob with ranged GETs: one streaming GET per contiguous
// run of reads, a new one after a Seek that moves the position.
type reader struct {
	s    *Store
	ctx  context.Context
	info blob.Info

	pos  int64
	body io.ReadCloser
	// closed is set by Close; reads after it fail.
	closed bool
}

func (r *reader) Info() blob.Info { return r.info }

func (r *reader) Read(p []byte) (int, error) {
	if r.closed {
		return 0, errors.New("read of a closed blob")
	}
	if r.pos >= r.info.Size {
		return 0, io.EOF
	}
	if len(p) == 0 {
		return 0, nil
	}
	if r.body == nil {
		opts := minio.GetObjectOptions{}
		if r.pos > 0 {
			if err := opts.SetRange(r.pos, 0); err != nil {
				return 0, fmt.Errorf("read blob %s: %w", r.info.Key, err)
			}
		}
		body, _, _, err := r.s.core.GetObject(r.ctx, r.s.cfg.Bucket, r.s.object(r.info.Key), opts)
		if err != nil {
			if isNotFound(err) {
				return 0, fmt.Errorf("read blob %s: %w", r.info.Key, blob.ErrNotFound)
			}
			return 0, fmt.Errorf("read blob %s at %d: %w", r.info.Key, r.pos, err)
		}
		r.body = body
	}
	if rest := r.info.Size - r.pos; int64(len(p)) > rest {
		p = p[:rest]
	}
	n, err := r.body.Read(p)
	r.pos += int64(n)
	if err == io.EOF {
		_ = r.body.Close()
		r.body = nil
		if r.pos < r.info.Size {
			return n, fmt.Errorf("read blob %s: object ended at %d of %d bytes: %w", r.info.Key, r.pos, r.info.Size, io.ErrUnexpectedEOF)
		}
		err = nil
		if n == 0 {
			err = io.EOF
		}
	} else if err != nil {
		_ = r.body.Close()
		r.body = nil
		err = fmt.Errorf("read blob %s at %d: %w", r.info.Key, r.pos, err)
	}
	return n, err
}

func (r *reader) Seek(offset int64, whence int) (int64, error) {
	if r.closed {
		return 0, errors.New("seek in a closed blob")
	}
	var pos int64
	switch whence {
	case io.SeekStart:
		pos = offset
	case io.SeekCurrent:
		pos = r.pos + offset
	case io.SeekEnd:
		pos = r.info.Size + offset
	default:
		return 0, fmt.Errorf("seek blob %s: invalid whence %d", r.info.Key, whence)
	}
	if pos < 0 {
		return 0, fmt.Errorf("seek blob %s: negative position %d", r.info.Key, pos)
	}
	if pos != r.pos && r.body != nil {
		_ = r.body.Close()
		r.body = nil
	}
	r.pos = pos
	return pos, nil
}

func (r *reader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	if r.body != nil {
		err := r.body.Close()
		r.body = nil
		return err
	}
	return nil
}
