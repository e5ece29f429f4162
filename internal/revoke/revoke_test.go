package revoke

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/flakegate/flakegate/internal/identity"
)

func parseYAML(t *testing.T, doc string) any {
	t.Helper()
	var v any
	if err := yaml.Unmarshal([]byte(doc), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestParseErrors(t *testing.T) {
	tests := []struct{ name, doc, want string }{
		{"not a map", `[a, b]`, "want a map"},
		{"unknown key", `token_id: [x]`, `unknown key "token_id"`},
		{"token_ids not a list", `token_ids: abc`, "token_ids: want a list"},
		{"empty token id", `token_ids: [""]`, "token_ids[0]"},
		{"numeric token id", `token_ids: [12]`, "token_ids[0]"},
		{"subject without provider", `subjects: [omnicorp/app]`, "subjects[0]"},
		{"subject empty name", `subjects: ["github:"]`, "subjects[0]"},
		{"subject bad glob", `subjects: ["github:*/app"]`, "subjects[0]"},
		{"subject map without issuer", `subjects: [{sub: x}]`, "issuer is required"},
		{"subject map unknown key", `subjects: [{issuer: x, subject: z}]`, `unknown key "subject"`},
		{"subject wrong type", `subjects: [[x]]`, "want a string or an {issuer, sub} map"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse(parseYAML(t, tt.doc))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestRevoked(t *testing.T) {
	l, err := Parse(normalize(parseYAML(t, `
token_ids: [jti-revoked]
subjects:
  - github:Omnicorp/App
  - gitlab:bigcorp/*
  - oidc:mallory
  - issuer: https://idp.example.com
    sub: 248289761001
  - issuer: https://compromised.example.com
`)))
	if err != nil {
		t.Fatal(err)
	}
	gh := func(repo, actor, jti string) *identity.Subject {
		org, _, _ := strings.Cut(repo, "/")
		return &identity.Subject{Authenticated: true, Issuer: "https://token.actions.githubusercontent.com",
			Provider: "github", Kind: "ci", Org: org, Repo: repo, User: actor, TokenID: jti,
			Claims: map[string]any{"sub": "repo:" + repo + ":ref:refs/heads/main"}}
	}
	user := func(iss, provider, name, sub string) *identity.Subject {
		return &identity.Subject{Authenticated: true, Issuer: iss, Provider: provider, Kind: "user",
			User: name, Claims: map[string]any{"sub": sub}}
	}
	exchanged := gh("omnicorp/app", "alice", "cache-jti")
	exchanged.Via = "exchange"
	// A cache token exchanged from the IdP token jti-revoked.
	child := gh("omnicorp/other", "bob", "cache-jti-2")
	child.Via, child.ParentTokenID = "exchange", "jti-revoked"
	// A cache token whose parent is not revoked.
	sibling := gh("omnicorp/other", "bob", "cache-jti-3")
	sibling.Via, sibling.ParentTokenID = "exchange", "jti-other"
	// An IdP token whose claims name the revoked id as some parent: only
	// ParentTokenID (set from flakegate-signed claims) counts.
	claimsOnly := gh("omnicorp/other", "bob", "j3")
	claimsOnly.Claims["parent_jti"] = "jti-revoked"
	tests := []struct {
		name string
		s    *identity.Subject
		want string // "" = not revoked
	}{
		{"anonymous", &identity.Subject{}, ""},
		{"nil", nil, ""},
		{"token id", gh("omnicorp/other", "bob", "jti-revoked"), "token id jti-revoked"},
		{"parent token id", child, "token id jti-revoked (the identity-provider token"},
		{"other parent token id", sibling, ""},
		{"parent id only in raw claims", claimsOnly, ""},
		{"repo, case-insensitive", gh("omnicorp/app", "bob", "j1"), "subject github:Omnicorp/App"},
		{"exchanged token of a revoked repo", exchanged, "subject github:Omnicorp/App"},
		{"other repo of the org", gh("omnicorp/app2", "bob", "j2"), ""},
		{"same repo name on another provider", &identity.Subject{Authenticated: true, Provider: "gitlab", Org: "omnicorp", Repo: "omnicorp/app"}, ""},
		{"org glob", &identity.Subject{Authenticated: true, Provider: "gitlab", Org: "bigcorp/team", Repo: "bigcorp/team/svc"}, "subject gitlab:bigcorp/*"},
		{"org glob exact org", &identity.Subject{Authenticated: true, Provider: "gitlab", Org: "bigcorp", Repo: "bigcorp/svc"}, "subject gitlab:bigcorp/*"},
		{"org glob is not a prefix match", &identity.Subject{Authenticated: true, Provider: "gitlab", Org: "bigcorpx", Repo: "bigcorpx/svc"}, ""},
		{"user", user("https://idp", "oidc", "Mallory", "u1"), "subject oidc:mallory"},
		{"user name on another provider", user("https://idp", "github", "mallory", "u1"), ""},
		{"issuer + sub (numeric in YAML)", user("https://idp.example.com", "oidc", "carol", "248289761001"), "subject https://idp.example.com sub 248289761001"},
		{"issuer, other sub", user("https://idp.example.com", "oidc", "carol", "1"), ""},
		{"whole issuer", user("https://compromised.example.com", "oidc", "dave", "x"), "subject https://compromised.example.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			why, revoked := l.Revoked(tt.s)
			if revoked != (tt.want != "") || !strings.Contains(why, tt.want) {
				t.Fatalf("Revoked = %q, %v; want %q", why, revoked, tt.want)
			}
		})
	}
}

// dataSource stands in for the policy engine's active data document.
type dataSource struct {
	mu   sync.Mutex
	rev  string
	data map[string]any
}

func (d *dataSource) set(rev, doc string) {
	var v map[string]any
	if doc != "" {
		if err := yaml.Unmarshal([]byte(doc), &v); err != nil {
			panic(err)
		}
	}
	d.mu.Lock()
	d.rev, d.data = rev, map[string]any{DataKey: normalize(v)}
	d.mu.Unlock()
}

// normalize turns float64 into json.Number, as the policy engine gives data.
func normalize(v any) any {
	b, _ := json.Marshal(v)
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	var out any
	_ = dec.Decode(&out)
	return out
}

func (d *dataSource) Data() map[string]any { d.mu.Lock(); defer d.mu.Unlock(); return d.data }
func (d *dataSource) Revision() string     { d.mu.Lock(); defer d.mu.Unlock(); return d.rev }

func TestCheckerFollowsRevisions(t *testing.T) {
	ctx := context.Background()
	alice := &identity.Subject{Authenticated: true, Provider: "oidc", User: "alice", TokenID: "t1"}
	src := &dataSource{}
	src.set("r0", "")
	c := NewChecker(src, slog.New(slog.DiscardHandler))
	if err := c.Check(ctx, alice); err != nil {
		t.Fatalf("no denylist: %v", err)
	}

	src.set("r1", "token_ids: [t1]")
	if err := c.Check(ctx, alice); !errors.Is(err, ErrRevoked) {
		t.Fatalf("after revoking t1: %v", err)
	}

	// A broken edit keeps the last good list (t1 stays revoked).
	src.set("r2", "token_ids: t1")
	if err := c.Check(ctx, alice); !errors.Is(err, ErrRevoked) {
		t.Fatalf("broken edit lifted the revocation: %v", err)
	}
	if c.Err() == nil {
		t.Error("Err() does not report the broken denylist")
	}

	src.set("r3", "subjects: []")
	if err := c.Check(ctx, alice); err != nil {
		t.Fatalf("after un-revoking: %v", err)
	}
	if c.Err() != nil {
		t.Errorf("Err() = %v after a good edit", c.Err())
	}
}

func TestCheckerFailsClosedWithoutAGoodList(t *testing.T) {
	src := &dataSource{}
	src.set("r0", "subjects: nope")
	c := NewChecker(src, slog.New(slog.DiscardHandler))
	err := c.Check(context.Background(), &identity.Subject{Authenticated: true, Provider: "oidc", User: "x"})
	if !errors.Is(err, ErrRevoked) || !strings.Contains(err.Error(), "unusable") {
		t.Fatalf("err = %v, want fail closed", err)
	}
}

func TestCheckDir(t *testing.T) {
	tests := []struct {
		name, file, content, wantErr string
	}{
		{name: "no denylist"},
		{name: "good yaml", file: "denylist.yaml", content: "token_ids: [a]\nsubjects:\n  - github:o/r\n  - {issuer: https://i, sub: 42}\n"},
		{name: "good json", file: "denylist.json", content: `{"subjects": ["oidc:mallory"]}`},
		{name: "typo", file: "denylist.yml", content: "token_id: [a]\n", wantErr: `unknown key "token_id"`},
		{name: "bad yaml", file: "denylist.yaml", content: "subjects: [\n", wantErr: "denylist.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.file != "" {
				if err := os.WriteFile(filepath.Join(dir, tt.file), []byte(tt.content), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			_, err := CheckDir(dir, nil)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
		})
	}
}

// Red-team finding: deleting denylist.yaml, or catching it blank or
// comment-only mid-edit, lifted every revocation. Once a list with entries
// is in force, only an explicit empty list lifts it.
func TestVanishedDenylistKeepsRevocations(t *testing.T) {
	ctx := context.Background()
	alice := &identity.Subject{Authenticated: true, Provider: "oidc", User: "alice", TokenID: "t1"}
	src := &dataSource{}
	src.set("r1", "token_ids: [t1]")
	c := NewChecker(src, slog.New(slog.DiscardHandler))
	for _, step := range []struct {
		rev, doc string
		deleted  bool
	}{
		{"r2", "", true},                 // file deleted: no data.denylist at all
		{"r3", "", false},                // blank file: null
		{"r4", "# editing…\n", false},    // comments only: null
		{"r5", "token_ids: [t1]", false}, // restored
		{"r6", "", true},                 // deleted again
	} {
		if step.deleted {
			src.mu.Lock()
			src.rev, src.data = step.rev, map[string]any{}
			src.mu.Unlock()
		} else {
			src.set(step.rev, step.doc)
		}
		if err := c.Check(ctx, alice); !errors.Is(err, ErrRevoked) {
			t.Fatalf("%s: t1 no longer revoked: %v", step.rev, err)
		}
		if step.rev != "r5" && (c.Err() == nil || !strings.Contains(c.Err().Error(), "would lift what is revoked now")) {
			t.Errorf("%s: Err() = %v, want the vanished denylist reported", step.rev, c.Err())
		}
	}
	src.set("r7", "token_ids: []")
	if err := c.Check(ctx, alice); err != nil || c.Err() != nil {
		t.Fatalf("an explicit empty list must lift the revocations: %v, Err %v", err, c.Err())
	}
	// Without any list ever in force, no denylist is simply none.
	fresh := &dataSource{}
	fresh.set("s1", "")
	if err := NewChecker(fresh, slog.New(slog.DiscardHandler)).Check(ctx, alice); err != nil {
		t.Fatalf("no denylist ever: %v", err)
	}
}

// An issuer rule naming no configured identity provider revokes nothing:
// said in the log when the list loads (review r6, 2026-12-05: silent).
func TestUnknownIssuerRuleIsLogged(t *testing.T) {
	var logged strings.Builder
	src := &dataSource{}
	src.set("r1", "subjects:\n  - issuer: https://cache.example.com\n  - {issuer: https://idp.example.com, sub: '1'}\n")
	NewChecker(src, slog.New(slog.NewTextHandler(&logged, nil)), "https://idp.example.com")
	if out := logged.String(); !strings.Contains(out, "revokes nothing") || !strings.Contains(out, "issuer=https://cache.example.com") || strings.Contains(out, "issuer=https://idp.example.com") {
		t.Errorf("log:\n%s", out)
	}
}
