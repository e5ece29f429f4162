package policy

import (
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/flakegate/flakegate/internal/nixname"
	"github.com/flakegate/flakegate/internal/testutil"
)

func TestInputPaths(t *testing.T) {
	tests := []struct {
		name        string
		rules       string
		want        string // describePaths of the result
		uncacheable string // substring of the reason, if not cacheable
	}{
		{name: "fields by name", rules: "allow if input.subject.org == input.flake.org", want: "flake.org, subject.org"},
		{name: "object hash is part of the key when read", rules: "allow if input.object.hash == \"x\"", want: "object.hash"},
		{name: "a parent path covers its children", rules: "allow if input.subject\n\nallow if input.subject.org == \"x\"", want: "subject"},
		{name: "computed key below a field", rules: "allow if {\n\tsome k\n\tinput.subject[k] == 1\n}", want: "subject"},
		{name: "refs inside a computed key", rules: "allow if input.a[input.b] == 1", want: "a, b"},
		{name: "imports resolve to input paths", rules: "import input.subject as s\n\nallow if s.org == \"x\"", want: "subject.org"},
		{name: "with data from input", rules: "allow if ok with data.x as input.y\n\nok if data.x == 1", want: "y"},
		{name: "helper rules count", rules: "allow if ok\n\nok if input.action == \"read\"", want: "action"},
		{name: "functions count", rules: "allow if f(input.flake)\n\nf(x) if x.org == \"o\"", want: "flake"},
		{name: "no input at all", rules: "allow := true", want: ""},
		{name: "input as a whole", rules: "allow if object.get(input, \"a\", 1) == 1", uncacheable: "reads input as a whole"},
		{name: "input assigned", rules: "allow if {\n\tx := input\n\tx.a == 1\n}", uncacheable: "input as a whole"},
		{name: "computed top-level key", rules: "allow if {\n\tsome k\n\tinput[k] == 1\n}", uncacheable: "computed key"},
		{name: "time", rules: "allow if time.now_ns() > 0", uncacheable: "time.now_ns"},
		{name: "randomness", rules: "allow if rand.intn(\"x\", 10) == 1", uncacheable: "rand.intn"},
		// Not flagged nondeterministic by OPA, but checks validity against the clock.
		{name: "certificate validity", rules: "allow if crypto.x509.parse_and_verify_certificates(input.chain)[0]", uncacheable: "crypto.x509.parse_and_verify_certificates"},
		{name: "with input", rules: "allow if ok with input as {\"a\": 1}\n\nok if input.a == 1", uncacheable: "with"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			snap, err := readDir(policyDir(t, map[string]string{"p.rego": "package flakegate.authz\n\n" + tc.rules + "\n"}), false)
			if err != nil {
				t.Fatal(err)
			}
			parsed, problems := parse(snap)
			if len(problems) > 0 {
				t.Fatal(problems)
			}
			c, problems := compileModules(parsed.Modules, false)
			if len(problems) > 0 {
				t.Fatal(problems)
			}
			paths, why := inputPaths(c.Modules)
			if tc.uncacheable != "" {
				if !strings.Contains(why, tc.uncacheable) {
					t.Errorf("inputPaths = %v, %q; want uncacheable because %q", paths, why, tc.uncacheable)
				}
				return
			}
			if why != "" || describePaths(paths) != tc.want {
				t.Errorf("inputPaths = %q, %q; want %q", describePaths(paths), why, tc.want)
			}
		})
	}
}

// The shipped policy reads neither the object nor the request: a build's
// many lookups with one token share a decision.
func TestShippedPolicyIsCacheable(t *testing.T) {
	e, err := NewEngine("../../policies", Options{Logger: testLogger(&testutil.LogBuffer{}), Rescan: -1})
	if err != nil {
		t.Fatal(err)
	}
	set := e.active.Load()
	if set.cache == nil {
		t.Fatalf("shipped policy not cacheable: %s", set.noCache)
	}
	got := describePaths(set.cache.paths)
	for _, p := range set.cache.paths {
		// One claim (environment_protected) is a value a token keeps; the
		// whole claims object (jti, iat, exp) differs per token refresh.
		if p[0] == "object" || p[0] == "request" || (p[0] == "subject" && len(p) == 1) || (len(p) == 2 && p[1] == "claims") {
			t.Errorf("the cache key includes %v (all: %s): every request would miss", p, got)
		}
	}
	if !strings.Contains(got, "action") || !strings.Contains(got, "subject.org") || !strings.Contains(got, "flake.org") {
		t.Errorf("paths %s miss fields the policy reads", got)
	}
}

func narinfoInput(hash, user string) map[string]any {
	return map[string]any{
		"action":  "read",
		"flake":   nixname.Flake{Org: "omnicorp", Name: "app"},
		"object":  map[string]any{"kind": "narinfo", "hash": hash},
		"subject": map[string]any{"authenticated": true, "user": user, "claims": map[string]any{"jti": hash}},
	}
}

func TestDecisionCache(t *testing.T) {
	const byUser = "package flakegate.authz\n\ndefault allow := false\n\nallow if input.subject.user == \"alice\"\n\nreason := concat(\"/\", [input.flake.org, input.subject.user])\n"
	const byHash = "package flakegate.authz\n\ndefault allow := false\n\nallow if input.object.hash == \"good\"\n"
	type call struct {
		hash, user string
		allow      bool
		reason     string
	}
	tests := []struct {
		name       string
		policy     string
		size       int
		calls      []call
		hits, miss float64
	}{
		{
			name:   "fields the policy does not read share a decision",
			policy: byUser,
			calls: []call{
				{"h1", "alice", true, "omnicorp/alice"},
				{"h2", "alice", true, "omnicorp/alice"},
				{"h3", "alice", true, "omnicorp/alice"},
				{"h1", "bob", false, "omnicorp/bob"},
				{"h2", "bob", false, "omnicorp/bob"},
			},
			hits: 3, miss: 2,
		},
		{
			name:   "fields the policy reads are part of the key",
			policy: byHash,
			calls: []call{
				{"good", "alice", true, ""},
				{"bad", "alice", false, ""},
				{"good", "bob", true, ""},
				{"bad", "bob", false, ""},
			},
			hits: 2, miss: 2,
		},
		{
			name:   "a full cache starts over and stays correct",
			policy: byUser,
			size:   2,
			calls: []call{
				{"h", "alice", true, "omnicorp/alice"},
				{"h", "bob", false, "omnicorp/bob"},
				{"h", "carol", false, "omnicorp/carol"}, // clears, then holds carol
				{"h", "alice", true, "omnicorp/alice"},
				{"h", "alice", true, "omnicorp/alice"},
			},
			hits: 1, miss: 4,
		},
		{
			name:   "disabled",
			policy: byUser,
			size:   -1,
			calls:  []call{{"h", "alice", true, "omnicorp/alice"}, {"h", "alice", true, "omnicorp/alice"}},
			hits:   0, miss: 0,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			e, err := NewEngine(policyDir(t, map[string]string{"flakegate.rego": tc.policy}),
				Options{Logger: testLogger(&testutil.LogBuffer{}), Registerer: prometheus.NewRegistry(), CacheSize: tc.size})
			if err != nil {
				t.Fatal(err)
			}
			for i, c := range tc.calls {
				d := decide(t, e, narinfoInput(c.hash, c.user))
				if d.Allow != c.allow || d.Reason != c.reason || d.Revision != e.Revision() {
					t.Errorf("call %d (%s, %s): %+v, want allow=%v reason=%q", i, c.hash, c.user, d, c.allow, c.reason)
				}
			}
			if h, m := metricValue(t, e.metrics.cacheHits), metricValue(t, e.metrics.cacheMisses); h != tc.hits || m != tc.miss {
				t.Errorf("cache hits/misses = %v/%v, want %v/%v", h, m, tc.hits, tc.miss)
			}
		})
	}
}

func TestDecisionCachePreparedSubject(t *testing.T) {
	e, err := NewEngine(policyDir(t, map[string]string{"flakegate.rego": userPolicy("v1"), "users.yaml": usersYAML}),
		Options{Logger: testLogger(&testutil.LogBuffer{})})
	if err != nil {
		t.Fatal(err)
	}
	for _, user := range []string{"alice", "bob", "alice", "bob"} {
		in := userInput(user)
		want := decide(t, e, in)
		p, err := Prepare(in["subject"])
		if err != nil {
			t.Fatal(err)
		}
		in["subject"] = p
		if got := decide(t, e, in); got != want {
			t.Errorf("%s: prepared subject decided %+v, map subject %+v", user, got, want)
		}
	}
}

func TestCacheKeyIsInjective(t *testing.T) {
	c := newDecisionCache([][]string{{"a"}, {"b"}}, 10)
	inputs := []map[string]any{
		{},
		{"a": nil},
		{"a": "x", "b": "y"},
		{"a": "xb", "b": ""},
		{"a": "x\"", "b": "y"},
		{"a": 1},
		{"a": "1"},
		{"a": 12},
		{"a": 1, "b": 2},
		{"a": true},
		{"a": "true"},
		{"a": []any{"x", "y"}},
		{"a": []any{"x,y"}},
		{"a": map[string]any{"k": "v"}},
		{"a": map[string]any{"k": "v", "l": nil}},
		{"a": map[string]any{"k": map[string]any{}}},
		{"a": "v", "b": map[string]any{}},
	}
	seen := map[string]int{}
	for i, in := range inputs {
		k, ok := c.key(nil, in)
		if !ok {
			t.Fatalf("key(%v) failed", in)
		}
		if j, dup := seen[string(k)]; dup {
			t.Errorf("inputs %v and %v share the key %q", inputs[j], in, k)
		}
		seen[string(k)] = i
	}
}

// A cache must never widen access: two inputs share a key only when they
// hold equal values (as the policy sees them) at every path the policy
// reads, however the paths nest and whatever shape the values have (plain
// maps, map[string]string, structs, prepared values, values where an
// object is expected, absent). Every pair of a generated set of inputs is
// compared both ways: by key, and by the values at the paths.
func TestCacheKeySharedOnlyByEqualValues(t *testing.T) {
	paths := minimalPaths([][]string{
		{"action"}, {"flake", "name"}, {"flake", "org"}, {"subject", "org"}, {"subject", "ref"},
		{"subject", "scope", "flake"}, {"subject", "kind"}, {"x"},
	})
	c := newDecisionCache(paths, 10)
	prepared := func(x any) Prepared {
		p, err := Prepare(x)
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	// Values for each top-level key; they differ in one field the policy
	// reads, in one it does not, in shape, or in being there at all.
	actions := []any{nil, "read", "push", "rea" + "d"}
	flakes := []any{
		nil, "omnicorp/app",
		map[string]any{"org": "omnicorp", "name": "app"},
		map[string]any{"org": "omnicorp", "name": "app", "extra": "ignored"},
		map[string]any{"org": "omnicorp", "name": "tool"},
		map[string]any{"org": "omnicorpapp", "name": ""},
		map[string]string{"org": "omnicorp", "name": "app"},
		map[string]string{"org": "evilcorp", "name": "app"},
		nixname.Flake{Org: "omnicorp", Name: "app"},
		nixname.Flake{Org: "evilcorp", Name: "app"},
		prepared(map[string]any{"org": "omnicorp", "name": "app"}),
		map[string]any{"org": map[string]any{"name": "app"}},
	}
	subjects := []any{
		nil, map[string]any{},
		map[string]any{"org": "omnicorp", "ref": "refs/heads/main", "kind": "ci"},
		map[string]any{"org": "omnicorp", "ref": "refs/heads/main", "kind": "ci", "user": "ignored"},
		map[string]any{"org": "omnicorp", "ref": "refs/heads/dev", "kind": "ci"},
		map[string]any{"org": "omnicorp", "ref": "refs/heads/main", "kind": "user"},
		map[string]any{"org": "omnicorp", "ref": "refs/heads/main", "kind": "ci", "scope": map[string]any{"flake": "omnicorp/app"}},
		map[string]any{"org": "omnicorp", "ref": "refs/heads/main", "kind": "ci", "scope": map[string]any{"flake": "omnicorp/tool"}},
		map[string]any{"org": "omnicorp", "ref": "refs/heads/main", "kind": "ci", "scope": "omnicorp/app"},
		map[string]any{"org": "omnicorp", "ref": "refs/heads/main", "kind": "ci", "scope": map[string]string{"flake": "omnicorp/app"}},
		prepared(map[string]any{"org": "omnicorp", "ref": "refs/heads/main", "kind": "ci"}),
		prepared(map[string]any{"org": "omnicorp", "ref": "refs/heads/dev", "kind": "ci"}),
		map[string]any{"org": "omnicorp", "ref": "refs/heads/main", "kind": "ci", "scope": prepared(map[string]any{"flake": "omnicorp/app"})},
		map[string]any{"org": []any{"omnicorp"}},
		map[string]any{"org": true},
		map[string]any{"org": "true"},
		map[string]any{"org": nil},
	}
	xs := []any{nil, 1, "1", 1.5, []string{"a"}}
	var inputs []map[string]any
	for _, a := range actions {
		for _, f := range flakes {
			for _, s := range subjects {
				for _, x := range xs {
					in := map[string]any{}
					for k, v := range map[string]any{"action": a, "flake": f, "subject": s, "x": x} {
						if v != nil {
							in[k] = v
						}
					}
					inputs = append(inputs, in)
				}
			}
		}
	}
	// The values at the paths as the policy sees them ("" when undefined).
	seen := func(in map[string]any) []string {
		var out []string
		for _, p := range paths {
			v, found, err := lookup(in, p)
			if err != nil {
				t.Fatal(err)
			}
			if !found {
				out = append(out, "undefined")
				continue
			}
			val, err := toValue(v)
			if err != nil {
				t.Fatal(err)
			}
			out = append(out, val.String())
		}
		return out
	}
	byKey := map[string][]string{}
	for _, in := range inputs {
		k, ok := c.key(nil, in)
		if !ok {
			t.Fatalf("key(%v) failed", in)
		}
		vals := seen(in)
		if prev, dup := byKey[string(k)]; dup && !slices.Equal(prev, vals) {
			t.Fatalf("inputs with different values %v and %v share the key %q", prev, vals, k)
		}
		byKey[string(k)] = vals
	}
	if len(byKey) < 100 {
		t.Errorf("only %d distinct keys from %d inputs: the test does not vary what it should", len(byKey), len(inputs))
	}
}
