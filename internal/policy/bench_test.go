package policy

import (
	"context"
	"fmt"
	"io"
	"testing"

	"github.com/open-policy-agent/opa/v1/ast"

	"github.com/flakegate/flakegate/internal/identity"
	"github.com/flakegate/flakegate/internal/testutil"
)

func benchInput(action, flake string, s *identity.Subject) map[string]any {
	org, name, _ := cutFlake(flake)
	return map[string]any{
		"action":  action,
		"flake":   map[string]any{"org": org, "name": name},
		"object":  map[string]any{"kind": "narinfo", "hash": "0c6kzph7l0dcbfmjap64f0czdafn3b7x"},
		"request": map[string]any{"method": "GET", "path": "/" + flake + "/0c6kzph7l0dcbfmjap64f0czdafn3b7x.narinfo"},
		"subject": s.Input(),
	}
}

func cutFlake(s string) (string, string, bool) {
	for i := range len(s) {
		if s[i] == '/' {
			return s[:i], s[i+1:], true
		}
	}
	return s, "", false
}

var (
	benchCI = &identity.Subject{
		Authenticated: true, Issuer: "https://token.actions.githubusercontent.com", Provider: "github", Kind: "ci",
		Org: "omnicorp", Repo: "omnicorp/super-duper-secure", User: "octocat", Ref: "refs/heads/main", RefProtected: true, Via: "idp",
		Claims: map[string]any{
			"sub": "repo:omnicorp/super-duper-secure:ref:refs/heads/main", "repository": "omnicorp/super-duper-secure",
			"repository_owner": "omnicorp", "ref": "refs/heads/main", "ref_protected": "true", "repository_id": "123456",
			"actor": "octocat", "workflow": "ci", "event_name": "push", "aud": "https://cache.example.com",
			"iat": float64(1.7e9), "exp": float64(1.7e9 + 300),
		},
	}
	benchUser = &identity.Subject{
		Authenticated: true, Issuer: "https://login.omnicorp.example", Provider: "oidc", Kind: "user",
		Org: "omnicorp", User: "alice", Via: "idp",
		Claims: map[string]any{"sub": "alice", "email": "alice@omnicorp.example", "groups": []any{"dev", "ops"}},
	}
)

// BenchmarkEvaluate measures one decision of the shipped policy, the cost
// paid per request (per owning flake for a union read): evaluated (cache
// off), and answered by the decision cache for a build's stream of lookups.
func BenchmarkEvaluate(b *testing.B) {
	e, err := NewEngine("../../policies", Options{Logger: testLogger(io.Discard), Rescan: -1, CacheSize: -1})
	if err != nil {
		b.Fatal(err)
	}
	cases := []struct {
		name  string
		input map[string]any
		allow bool
	}{
		{"read/listed user", benchInput("read", "omnicorp/super-duper-secure", benchUser), true},
		{"read/org default", benchInput("read", "omnicorp/dev-environments", benchUser), true},
		{"read/denied", benchInput("read", "evilcorp/app", benchUser), false},
		{"push/CI", benchInput("push", "omnicorp/super-duper-secure", benchCI), true},
		{"info/anonymous", benchInput("info", "", nil), true},
	}
	ctx := context.Background()
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				d, err := e.Evaluate(ctx, c.input)
				if err != nil || d.Allow != c.allow {
					b.Fatalf("Evaluate = %+v, %v; want allow=%v", d, err, c.allow)
				}
			}
		})
	}
	// One token fetching many narinfos of a flake: the object hash differs
	// in every request, the decision is computed once.
	b.Run("read/listed user, cached", func(b *testing.B) {
		cached, err := NewEngine("../../policies", Options{Logger: testLogger(io.Discard), Rescan: -1})
		if err != nil {
			b.Fatal(err)
		}
		hashes := make([]string, 1024)
		for i := range hashes {
			hashes[i] = fmt.Sprintf("%032d", i)
		}
		in := benchInput("read", "omnicorp/super-duper-secure", benchUser)
		b.ReportAllocs()
		stop := testutil.ReportCPU(b)
		i := 0
		for b.Loop() {
			in["object"] = map[string]any{"kind": "narinfo", "hash": hashes[i%len(hashes)]}
			i++
			if d, err := cached.Evaluate(ctx, in); err != nil || !d.Allow {
				b.Fatalf("Evaluate = %+v, %v", d, err)
			}
		}
		stop()
	})
	// A union read evaluates one input per owning flake; the subject,
	// prepared once, is not converted again for each.
	b.Run("read/listed user, prepared subject", func(b *testing.B) {
		b.ReportAllocs()
		in := benchInput("read", "omnicorp/super-duper-secure", benchUser)
		subject, err := Prepare(in["subject"])
		if err != nil {
			b.Fatal(err)
		}
		in["subject"] = subject
		for b.Loop() {
			if d, err := e.Evaluate(ctx, in); err != nil || !d.Allow {
				b.Fatalf("Evaluate = %+v, %v", d, err)
			}
		}
	})
	// The same decision with the input converted by OPA's generic
	// converter, for comparison with toValue.
	b.Run("read/listed user, InterfaceToValue", func(b *testing.B) {
		b.ReportAllocs()
		set := e.active.Load()
		for b.Loop() {
			v, err := ast.InterfaceToValue(cases[0].input)
			if err != nil {
				b.Fatal(err)
			}
			if d, err := set.evaluate(ctx, v); err != nil || !d.Allow {
				b.Fatalf("evaluate = %+v, %v", d, err)
			}
		}
	})
}

func BenchmarkToValue(b *testing.B) {
	in := benchInput("push", "omnicorp/super-duper-secure", benchCI)
	b.Run("toValue", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := toValue(in); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("InterfaceToValue", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if _, err := ast.InterfaceToValue(in); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkBuild is the CPU of one reload of the shipped policy directory
// (read, parse, compile, config_errors, prepare): what each of the reload
// row's 10 changes per second costs authz.
func BenchmarkBuild(b *testing.B) {
	dir := "../../policies"
	snap, err := readDir(dir, false)
	if err != nil {
		b.Fatal(err)
	}
	first, err := build(context.Background(), dir, snap, defaultCacheSize, nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		prev *policySet
	}{{"all-files-changed", nil}, {"data-files-changed", first}} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := build(context.Background(), dir, snap, defaultCacheSize, bc.prev); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
