package policy

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Prepared is part of an input converted once to the engine's form, to be
// reused in many evaluations: a union read evaluates the same subject once
// per owning flake, and a verified token's subject can be prepared once and
// cached with the token. Put it anywhere in an input map in place of the
// value it was made from. It is immutable and safe for concurrent use.
type Prepared struct{ v ast.Value }

// Prepare converts x (JSON-like Go values: maps, slices, strings, numbers,
// booleans, nil, or anything encoding/json can marshal) for reuse.
func Prepare(x any) (Prepared, error) {
	v, err := toValue(x)
	if err != nil {
		return Prepared{}, err
	}
	return Prepared{v: v}, nil
}

// maxInputDepth bounds the nesting of an input document. Inputs are built by
// flakegate itself, but claims are raw token content.
const maxInputDepth = 64

// toValue converts an input document to an OPA value directly. It handles
// the types the authz service builds inputs from without the reflection and
// JSON round trip of ast.InterfaceToValue, which it falls back to for
// anything else (structs such as nixname.Flake).
func toValue(x any) (ast.Value, error) {
	return toValueDepth(x, 0)
}

func toValueDepth(x any, depth int) (ast.Value, error) {
	if depth > maxInputDepth {
		return nil, fmt.Errorf("input nested deeper than %d levels", maxInputDepth)
	}
	switch v := x.(type) {
	case nil:
		return ast.NullValue, nil
	case Prepared:
		if v.v == nil {
			return ast.NullValue, nil
		}
		return v.v, nil
	case bool:
		return ast.InternedValue(v), nil
	case string:
		// Common strings ("", "read", "org"…) are interned: no allocation.
		return ast.InternedValue(v), nil
	case int:
		return ast.InternedValue(v), nil
	case int64:
		return ast.InternedValue(v), nil
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("input number %v is not representable in JSON", v)
		}
		return ast.Number(strconv.FormatFloat(v, 'g', -1, 64)), nil
	case json.Number:
		if _, err := v.Float64(); err != nil {
			return nil, fmt.Errorf("input number %q: %w", v.String(), err)
		}
		return ast.Number(v), nil
	case []string:
		// One allocation for all the terms, as ast.InterfaceToValue does.
		terms := make([]ast.Term, len(v))
		ptrs := make([]*ast.Term, len(v))
		for i, s := range v {
			terms[i].Value = ast.InternedValue(s)
			ptrs[i] = &terms[i]
		}
		return ast.NewArray(ptrs...), nil
	case []any:
		terms := make([]ast.Term, len(v))
		ptrs := make([]*ast.Term, len(v))
		for i, e := range v {
			ev, err := toValueDepth(e, depth+1)
			if err != nil {
				return nil, err
			}
			terms[i].Value = ev
			ptrs[i] = &terms[i]
		}
		return ast.NewArray(ptrs...), nil
	case map[string]string:
		terms := make([]ast.Term, 2*len(v))
		items := make([][2]*ast.Term, 0, len(v))
		i := 0
		for k, s := range v {
			terms[i].Value, terms[i+1].Value = ast.InternedValue(k), ast.InternedValue(s)
			items = append(items, [2]*ast.Term{&terms[i], &terms[i+1]})
			i += 2
		}
		return ast.NewObject(items...), nil
	case map[string]any:
		terms := make([]ast.Term, 2*len(v))
		items := make([][2]*ast.Term, 0, len(v))
		i := 0
		for k, e := range v {
			ev, err := toValueDepth(e, depth+1)
			if err != nil {
				return nil, err
			}
			terms[i].Value, terms[i+1].Value = ast.InternedValue(k), ev
			items = append(items, [2]*ast.Term{&terms[i], &terms[i+1]})
			i += 2
		}
		return ast.NewObject(items...), nil
	case ast.Value:
		return v, nil
	}
	// Anything else (structs such as nixname.Flake, other slice and map
	// types) goes through OPA's JSON round trip.
	v, err := ast.InterfaceToValue(x)
	if err != nil {
		return nil, fmt.Errorf("convert input value of type %T: %w", x, err)
	}
	return v, nil
}
