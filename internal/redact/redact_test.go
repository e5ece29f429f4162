package redact

import (
	"errors"
	"fmt"
	"testing"
)

func TestURL(t *testing.T) {
	cases := []struct{ in, want string }{
		{"postgres://u:pw@h/db", "postgres://u:***@h/db"},
		{"postgres://u@h/db", "postgres://u@h/db"},
		{"postgresql://h/db?sslmode=disable", "postgresql://h/db?sslmode=disable"},
		{"garbage", "(unparseable URL)"},
		{"host=h user=u password=secret", "(unparseable URL)"},
		{"u:secret@h/db", "(unparseable URL)"},
		{"postgres://u:p@ss:w@rd@h/db", "postgres://u:***@h/db"},
		{"postgres://u:@h/db", "postgres://u:***@h/db"},
		{"postgres://:pw@h", "postgres://:***@h"},
		{"mysql://user:hunter2@db/x", "mysql://user:***@db/x"},
		{"mysql://user@db/x", "mysql://user@db/x"},
		{"s3://key:secret@bucket/prefix?endpoint=h:9000", "s3://key:***@bucket/prefix?endpoint=h:9000"},
		{"postgres://u:p%40ss@h/db", "postgres://u:***@h/db"},
		// A later '@' hides more than the password, never less.
		{"postgres://u:pw@h/db?application_name=a@b", "postgres://u:***@b"},
		{"file:///var/lib/flakegate/blobs", "file:///var/lib/flakegate/blobs"},
		{"", "(unparseable URL)"},
	}
	for _, c := range cases {
		if got := URL(c.in); got != c.want {
			t.Errorf("URL(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}

func TestError(t *testing.T) {
	cases := []struct{ url, err, want string }{
		{"postgres://u:hunter2@h/db", "cannot parse `postgres://u:hunter2@h/db`", "cannot parse `postgres://u:***@h/db`"},
		{"postgres://u:a:b@c@h/db", "bad password a:b@c", "bad password ***"},
		{"postgres://u:hunter2@h/db", "no password here", "no password here"},
		{"postgres://u:@h/db", "empty: u:@h", "empty: u:@h"},
		{"postgres://u@h/db", "user u only", "user u only"},
		{"garbage:hunter2@h", "garbage:hunter2@h", "garbage:hunter2@h"},
		// Percent-encoded in the URL, decoded in the error.
		{"postgres://u:p%40ss@h/db", "auth failed for p@ss (p%40ss)", "auth failed for *** (***)"},
	}
	for _, c := range cases {
		if got := Error(errors.New(c.err), c.url).Error(); got != c.want {
			t.Errorf("Error(%q, %q) = %q, want %q", c.err, c.url, got, c.want)
		}
	}
	if Error(nil, "postgres://u:pw@h") != nil {
		t.Error("Error(nil) != nil")
	}
	// Untouched errors keep their identity; redacted ones do not unwrap to
	// the original text.
	base := errors.New("connection refused")
	if err := Error(base, "postgres://u:pw@h"); err != base {
		t.Errorf("an error without the password was replaced: %v", err)
	}
	wrapped := fmt.Errorf("dial: %w", errors.New("pw rejected"))
	if err := Error(wrapped, "postgres://u:pw@h"); errors.Unwrap(err) != nil {
		t.Errorf("a redacted error unwraps to %v", errors.Unwrap(err))
	}
}
