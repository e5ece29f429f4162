package policy

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"

	"github.com/open-policy-agent/opa/v1/ast"
)

// maxInputDepth bounds the nesting of an input document. Inputs are built by
// flakegate itself, but claims are raw token content.
const maxInputDepth = 64

// toValue converts an input document to an OPA value directly. It handles
// the types the authz service builds inputs from without the reflection and
// JSON round trip of ast.InterfaceToValue, which it falls back to for
// anything else (structs such as route.Flake).
func toValue(x any) (ast.Value, error) {
	return toValueDepth(x, 0)
}

func toValueDepth(x any, depth int) (ast.Value, error) {
	if depth > maxInputDepth {
		return nil, fmt.Errorf("input nested deeper than %d levels", maxInputDepth)
	}
	switch v := x.(type) {
	case nil:
		return ast.Null{}, nil
	case bool:
		return ast.Boolean(v), nil
	case string:
		return ast.String(v), nil
	case int:
		return ast.Number(strconv.Itoa(v)), nil
	case int64:
		return ast.Number(strconv.FormatInt(v, 10)), nil
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
		terms := make([]*ast.Term, len(v))
		for i, s := range v {
			terms[i] = ast.StringTerm(s)
		}
		return ast.NewArray(terms...), nil
	case []any:
		terms := make([]*ast.Term, len(v))
		for i, e := range v {
			ev, err := toValueDepth(e, depth+1)
			if err != nil {
				return nil, err
			}
			terms[i] = ast.NewTerm(ev)
		}
		return ast.NewArray(terms...), nil
	case map[string]string:
		obj := ast.NewObjectWithCapacity(len(v))
		for k, s := range v {
			obj.Insert(ast.StringTerm(k), ast.StringTerm(s))
		}
		return obj, nil
	case map[string]any:
		obj := ast.NewObjectWithCapacity(len(v))
		for k, e := range v {
			ev, err := toValueDepth(e, depth+1)
			if err != nil {
				return nil, err
			}
			obj.Insert(ast.StringTerm(k), ast.NewTerm(ev))
		}
		return obj, nil
	case ast.Value:
		return v, nil
	}
	v, err := ast.InterfaceToValue(x)
	if err != nil {
		return nil, fmt.Errorf("convert input value of type %T: %w", x, err)
	}
	return v, nil
}
