package identity

import (
	"reflect"
	"testing"
	"time"

	"github.com/flakegate/flakegate/internal/nixname"
)

func sealedSubject(t *testing.T) *Subject {
	t.Helper()
	scope, err := NewScope("omnicorp/app", []string{"/nix/store/0a9g8mz2ck6lw5yyz3bh3nxa0cacp2v1-hello"})
	if err != nil {
		t.Fatal(err)
	}
	s := &Subject{
		Authenticated: true, Issuer: "https://token.actions.githubusercontent.com", IssuerName: "github",
		Provider: "github", Kind: "ci", Org: "omnicorp", Repo: "omnicorp/app", User: "octo",
		Ref: "refs/heads/main", RefProtected: true, Environment: "prod", Via: "idp",
		Claims: map[string]any{"repository": "omnicorp/app"}, Scope: scope,
		TokenID: "jti-1", ParentTokenID: "jti-0", Expiry: time.Unix(2e9, 0),
	}
	s.seal()
	return s
}

// A sealed subject's memo is what an unsealed one renders, and it is used.
func TestSealedSubjectRendersAlike(t *testing.T) {
	s := sealedSubject(t)
	fresh := *s
	fresh.memo = nil
	if !reflect.DeepEqual(s.Input(), fresh.Input()) || s.Summary() != fresh.Summary() {
		t.Fatalf("sealed renders %v %q, unsealed %v %q", s.Input(), s.Summary(), fresh.Input(), fresh.Summary())
	}
	if reflect.ValueOf(s.Input()).UnsafePointer() != reflect.ValueOf(s.Input()).UnsafePointer() {
		t.Error("a sealed subject renders its input anew on every call: the memo is not used")
	}
}

// The memo can never show a subject other than the one asked: a copy of a
// sealed subject (which copies the memo) with any one field changed, or
// the scope changed in place, renders that change. Every exported field
// is tried, so a field that Input or Summary renders but the memo does not
// check fails here.
func TestSealedSubjectCopyWithAChangedFieldRendersTheChange(t *testing.T) {
	typ := reflect.TypeFor[Subject]()
	for i := range typ.NumField() {
		f := typ.Field(i)
		if !f.IsExported() {
			continue
		}
		t.Run(f.Name, func(t *testing.T) {
			s := sealedSubject(t)
			c := *s // copies the memo
			v := reflect.ValueOf(&c).Elem().Field(i)
			switch f.Type {
			case reflect.TypeFor[string]():
				v.SetString(v.String() + "-other")
			case reflect.TypeFor[bool]():
				v.SetBool(!v.Bool())
			case reflect.TypeFor[map[string]any]():
				v.Set(reflect.ValueOf(map[string]any{"repository": "evilcorp/tool"}))
			case reflect.TypeFor[*Scope]():
				v.Set(reflect.ValueOf(&Scope{Flake: nixname.Flake{Org: "evilcorp", Name: "tool"}, Roots: c.Scope.Roots}))
			case reflect.TypeFor[time.Time]():
				v.Set(reflect.ValueOf(time.Unix(1e9, 0)))
			default:
				t.Fatalf("field %s of type %s: teach this test to change it", f.Name, f.Type)
			}
			fresh := c
			fresh.memo = nil
			if got, want := c.Input(), fresh.Input(); !reflect.DeepEqual(got, want) {
				t.Errorf("Input after changing %s on a copy: %v, want %v", f.Name, got, want)
			}
			if got, want := c.Summary(), fresh.Summary(); got != want {
				t.Errorf("Summary after changing %s on a copy: %q, want %q", f.Name, got, want)
			}
		})
	}
	t.Run("scope changed in place", func(t *testing.T) {
		for _, change := range []func(*Scope){
			func(sc *Scope) { sc.Flake = nixname.Flake{Org: "evilcorp", Name: "tool"} },
			func(sc *Scope) { sc.Roots[0] = "/nix/store/1b9g8mz2ck6lw5yyz3bh3nxa0cacp2v1-other" },
			func(sc *Scope) { sc.Roots = append(sc.Roots, "/nix/store/1b9g8mz2ck6lw5yyz3bh3nxa0cacp2v1-other") },
		} {
			s := sealedSubject(t)
			change(s.Scope)
			fresh := *s
			fresh.memo = nil
			if got, want := s.Input(), fresh.Input(); !reflect.DeepEqual(got, want) {
				t.Errorf("Input after changing the scope in place: %v, want %v", got, want)
			}
			if got, want := s.Summary(), fresh.Summary(); got != want {
				t.Errorf("Summary after changing the scope in place: %q, want %q", got, want)
			}
		}
	})
}
