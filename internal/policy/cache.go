package policy

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/open-policy-agent/opa/v1/ast"
)

// defaultCacheSize bounds a policy set's decision cache (entries).
const defaultCacheSize = 4096

// decisionCache remembers decisions of one policy set, keyed by the parts of
// the input the policy can read. The default policy reads the action, the
// flake and a few subject fields, but not the object hash or the request
// path, so the hundreds of narinfo lookups of one build with one token are
// one evaluation. A set's cache dies with the set: a reload starts afresh.
//
// Sound by construction: the key holds the value at every input path any
// policy rule references (see inputPaths), the data is fixed for the set,
// and sets that could decide differently for equal keys (a bare `input`,
// `with input`, non-deterministic builtins such as time.now_ns) get no cache.
type decisionCache struct {
	paths [][]string
	// root is paths as a tree (children in paths' order), so that key
	// looks up a shared prefix such as [subject] once for all its paths.
	root *keyNode
	max  int

	mu sync.RWMutex
	m  map[string]Decision
}

// keyNode is one step of the key paths: the value at name below the
// parent's value. A leaf's value is rendered into the key; an inner node's
// children are looked up below it. leaves are the full paths of the leaves
// at or below the node.
type keyNode struct {
	name     string
	leaf     bool
	children []*keyNode
	leaves   [][]string
}

func newDecisionCache(paths [][]string, size int) *decisionCache {
	root := &keyNode{}
	for _, p := range paths {
		n := root
		n.leaves = append(n.leaves, p)
		for _, name := range p {
			var next *keyNode
			if k := len(n.children); k > 0 && n.children[k-1].name == name {
				next = n.children[k-1] // paths are sorted: a shared prefix is the last child
			} else {
				next = &keyNode{name: name}
				n.children = append(n.children, next)
			}
			n = next
			n.leaves = append(n.leaves, p)
		}
		n.leaf = true
	}
	return &decisionCache{paths: paths, root: root, max: size, m: make(map[string]Decision, min(size, 256))}
}

func (c *decisionCache) get(key []byte) (Decision, bool) {
	c.mu.RLock()
	d, ok := c.m[string(key)] // no copy of key for the lookup
	c.mu.RUnlock()
	return d, ok
}

func (c *decisionCache) put(key []byte, d Decision) {
	c.mu.Lock()
	if len(c.m) >= c.max {
		// Dropping everything is crude but bounded and cheap; the working
		// set (tokens × flakes in use) refills it in a few requests.
		clear(c.m)
	}
	c.m[string(key)] = d
	c.mu.Unlock()
}

// key appends to b the input's values at c.paths, in their order: for
// each path its value rendered by appendKey, or '-' when it is undefined.
// ok is false when a value cannot be rendered (the caller then evaluates
// without the cache).
//
// Hand-written for a measured reason (issue 16): the key is computed for
// every Check, and walking each path from the top and quoting each string
// with strconv.Quote was ≈ 60 % of a cached decision (docs/benchmarks.md).
// It walks the paths' tree instead and renders strings length-prefixed.
func (c *decisionCache) key(b []byte, input map[string]any) ([]byte, bool) {
	b, err := appendNode(b, input, c.root, 0)
	if err != nil {
		return nil, false
	}
	return b, true
}

// appendNode renders the leaves below n, cur being the value at n's path
// (depth steps long).
func appendNode(b []byte, cur any, n *keyNode, depth int) ([]byte, error) {
	for _, ch := range n.children {
		var v any
		var found bool
		switch m := cur.(type) {
		case map[string]any:
			v, found = m[ch.name]
		case map[string]string:
			if s, ok := m[ch.name]; ok && ch.leaf {
				b = appendString(b, s)
				continue
			} else if ok {
				v, found = s, true
			}
		default:
			// Not a plain map (a Prepared or OPA value, a struct, or no
			// object at all): each path below is looked up as the policy
			// sees it.
			for _, p := range ch.leaves {
				v, found, err := lookup(cur, p[depth:])
				if err != nil {
					return nil, err
				}
				if b, err = appendFound(b, v, found); err != nil {
					return nil, err
				}
			}
			continue
		}
		var err error
		switch {
		case !found:
			for range ch.leaves {
				b = append(b, '-') // undefined, distinct from null
			}
		case ch.leaf:
			b, err = appendKey(b, v, 0)
		default:
			b, err = appendNode(b, v, ch, depth+1)
		}
		if err != nil {
			return nil, err
		}
	}
	return b, nil
}

func appendFound(b []byte, v any, found bool) ([]byte, error) {
	if !found {
		return append(b, '-'), nil
	}
	return appendKey(b, v, 0)
}

// appendString renders s self-delimited: its length, then its bytes.
func appendString(b []byte, s string) []byte {
	b = strconv.AppendInt(append(b, 's'), int64(len(s)), 10)
	return append(append(b, ':'), s...)
}

// lookup walks path through nested maps. A missing key, or a non-object on
// the way, is "not found", exactly as the reference is undefined in Rego.
func lookup(x any, path []string) (any, bool, error) {
	cur := x
	for i, p := range path {
		switch m := cur.(type) {
		case map[string]any:
			v, ok := m[p]
			if !ok {
				return nil, false, nil
			}
			cur = v
		case map[string]string:
			v, ok := m[p]
			if !ok {
				return nil, false, nil
			}
			cur = v
		case Prepared:
			return lookupValue(m.v, path[i:])
		case ast.Value:
			return lookupValue(m, path[i:])
		case nil, string, bool, int, int64, float64, []any, []string:
			return nil, false, nil
		default: // a struct such as nixname.Flake: look at it as the policy does
			v, err := toValue(m)
			if err != nil {
				return nil, false, err
			}
			return lookupValue(v, path[i:])
		}
	}
	return cur, true, nil
}

func lookupValue(v ast.Value, path []string) (any, bool, error) {
	for _, p := range path {
		obj, ok := v.(ast.Object)
		if !ok {
			return nil, false, nil
		}
		t := obj.Get(ast.InternedTerm(p))
		if t == nil {
			return nil, false, nil
		}
		v = t.Value
	}
	return v, true, nil
}

// appendKey renders v self-delimited and injectively (two different values
// never render alike; equal values usually do, which only costs a miss).
func appendKey(b []byte, v any, depth int) ([]byte, error) {
	if depth > maxInputDepth {
		return nil, fmt.Errorf("input nested deeper than %d levels", maxInputDepth)
	}
	switch x := v.(type) {
	case string:
		return appendString(b, x), nil
	case bool:
		if x {
			return append(b, 't'), nil
		}
		return append(b, 'f'), nil
	case nil:
		return append(b, 'n'), nil
	case map[string]any:
		b = strconv.AppendInt(append(b, 'm'), int64(len(x)), 10)
		b = append(b, ':')
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var err error
		for _, k := range keys {
			b = appendString(b, k)
			if b, err = appendKey(b, x[k], depth+1); err != nil {
				return nil, err
			}
		}
		return b, nil
	case []any:
		b = strconv.AppendInt(append(b, 'l'), int64(len(x)), 10)
		b = append(b, ':')
		var err error
		for _, e := range x {
			if b, err = appendKey(b, e, depth+1); err != nil {
				return nil, err
			}
		}
		return b, nil
	case Prepared:
		if x.v == nil {
			return append(b, 'n'), nil
		}
		return appendValue(b, x.v), nil
	case ast.Value:
		return appendValue(b, x), nil
	}
	// Numbers, []string, map[string]string, structs: as the policy sees them.
	val, err := toValue(v)
	if err != nil {
		return nil, err
	}
	return appendValue(b, val), nil
}

// appendValue renders an OPA value (canonical: object keys sorted) with a
// length prefix, since numbers are not self-delimiting.
func appendValue(b []byte, v ast.Value) []byte {
	s := v.String()
	b = strconv.AppendInt(append(b, 'a'), int64(len(s)), 10)
	return append(append(b, ':'), s...)
}

// inputPaths finds every input path the compiled policy modules reference,
// e.g. [action] [flake org] [subject kind]. It returns a reason instead when
// decisions could differ for inputs equal at those paths: the policy reads
// input as a whole (or under a computed key), replaces it with `with`, or
// calls a non-deterministic builtin.
func inputPaths(modules map[string]*ast.Module) (paths [][]string, uncacheable string) {
	var found [][]string
	var visit func(x any)
	visit = func(x any) {
		ast.NewGenericVisitor(func(n any) bool {
			if uncacheable != "" {
				return true
			}
			switch n := n.(type) {
			case *ast.Expr:
				for _, w := range n.With {
					if ref, ok := w.Target.Value.(ast.Ref); ok && ref.HasPrefix(ast.InputRootRef) {
						uncacheable = "a rule replaces input with `with`"
					}
				}
				if n.IsCall() {
					if b, ok := ast.BuiltinMap[n.Operator().String()]; ok && changesBetweenCalls(b) {
						uncacheable = "the policy calls " + b.Name + ", whose result changes between calls"
					}
				}
			case ast.Call:
				if len(n) > 0 {
					if b, ok := ast.BuiltinMap[n[0].String()]; ok && changesBetweenCalls(b) {
						uncacheable = "the policy calls " + b.Name + ", whose result changes between calls"
					}
				}
			case ast.Ref:
				if !n.HasPrefix(ast.InputRootRef) {
					return false
				}
				var path []string
				for _, t := range n[1:] {
					s, ok := t.Value.(ast.String)
					if !ok {
						break
					}
					path = append(path, string(s))
				}
				if len(path) == 0 {
					uncacheable = "the policy reads input as a whole or under a computed key"
					return true
				}
				found = append(found, path)
				for _, t := range n[1+len(path):] { // refs inside a computed key
					visit(t)
				}
				return true
			case ast.Var:
				if n.Equal(ast.InputRootDocument.Value) {
					uncacheable = "the policy reads input as a whole"
				}
			}
			return false
		}).Walk(x)
	}
	for _, name := range slices.Sorted(maps.Keys(modules)) {
		visit(modules[name])
	}
	if uncacheable != "" {
		return nil, uncacheable
	}
	return minimalPaths(found), ""
}

// minimalPaths sorts and dedupes paths, dropping any path below another
// (the value at [subject] covers [subject org]).
func minimalPaths(paths [][]string) [][]string {
	slices.SortFunc(paths, func(a, b []string) int { return slices.Compare(a, b) })
	var out [][]string
	for _, p := range paths {
		if n := len(out); n > 0 && hasPrefix(p, out[n-1]) {
			continue
		}
		out = append(out, p)
	}
	return out
}

func hasPrefix(p, prefix []string) bool {
	return len(p) >= len(prefix) && slices.Equal(p[:len(prefix)], prefix)
}

// describePaths renders paths for logs: "action, flake.org, subject.kind".
func describePaths(paths [][]string) string {
	parts := make([]string, len(paths))
	for i, p := range paths {
		parts[i] = strings.Join(p, ".")
	}
	return strings.Join(parts, ", ")
}

// changesBetweenCalls reports whether a builtin's result may differ between
// two calls with the same arguments: OPA's Nondeterministic flag, and the
// certificate verifications that check validity against the clock without
// being flagged (a decision "allowed while the certificate is valid" must
// not be served from the cache after it expires).
func changesBetweenCalls(b *ast.Builtin) bool {
	switch b.Name {
	case "crypto.x509.parse_and_verify_certificates", "crypto.x509.parse_and_verify_certificates_with_options":
		return true
	}
	return b.Nondeterministic
}
