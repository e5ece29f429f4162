// Package redact is flakegate's one rule for keeping the password of a
// connection URL (postgres://user:PASSWORD@host/db, any scheme) out of
// errors and logs. Storage URLs, the postgres index and the S3 store all
// use it.
//
// The rule: the password runs from the first ':' after "scheme://" to the
// last '@'. Taking the last '@' hides a password that contains an unescaped
// '@' or ':' whole; when an '@' appears later (in a path or query) more than
// the password is hidden, never less. A string without "://" (a key=value
// DSN such as "host=h password=x", or a typo) is not shown at all.
package redact

import (
	"errors"
	"net/url"
	"strings"
)

// Mask replaces a password.
const Mask = "***"

// Unparseable replaces a string without "://", which may hold a password
// anywhere.
const Unparseable = "(unparseable URL)"

// URL returns u with its password replaced by Mask: u itself when it has
// none, Unparseable when it has no "://".
func URL(u string) string {
	if !strings.Contains(u, "://") {
		return Unparseable
	}
	before, _, after, ok := split(u)
	if !ok {
		return u
	}
	return before + Mask + after
}

// Error returns err with every occurrence of u's password in its text (as
// written in u, and percent-decoded) replaced by Mask, or err itself when
// the text holds no password. The returned error does not wrap err:
// unwrapping would give the password back.
func Error(err error, u string) error {
	if err == nil {
		return nil
	}
	_, pass, _, ok := split(u)
	if !ok || pass == "" {
		return err
	}
	msg := err.Error()
	secrets := []string{pass}
	if dec, derr := url.PathUnescape(pass); derr == nil && dec != pass && dec != "" {
		secrets = append(secrets, dec)
	}
	redacted := msg
	for _, s := range secrets {
		redacted = strings.ReplaceAll(redacted, s, Mask)
	}
	if redacted == msg {
		return err
	}
	return errors.New(redacted)
}

// split cuts "scheme://user:pass@host…" into "scheme://user:", the password
// and "@host…"; ok is false when u has no "://", no userinfo or no ':' in
// it.
func split(u string) (before, pass, after string, ok bool) {
	scheme, rest, found := strings.Cut(u, "://")
	if !found {
		return "", "", "", false
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return "", "", "", false
	}
	user, pass, hasPass := strings.Cut(rest[:at], ":")
	if !hasPass {
		return "", "", "", false
	}
	return scheme + "://" + user + ":", pass, rest[at:], true
}
