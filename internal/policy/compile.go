package policy

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/open-policy-agent/opa/v1/ast"
	"github.com/open-policy-agent/opa/v1/rego"
	"github.com/open-policy-agent/opa/v1/storage"
	"github.com/open-policy-agent/opa/v1/storage/inmem"
	yaml2 "go.yaml.in/yaml/v2"
	"sigs.k8s.io/yaml"
)

// Package is the Rego package every flakegate policy set must define.
const Package = "flakegate.authz"

var (
	packageRef = ast.MustParseRef("data." + Package)
	allowRef   = ast.MustParseRef("data." + Package + ".allow")

	// decisionQuery reads allow and reason in one evaluation. Each key is
	// bound before the ref is looked up, so only those two rules are
	// evaluated (querying the whole package would evaluate every helper
	// rule too). An undefined rule is simply absent from the object.
	decisionQuery = ast.MustParseBodyWithOpts(
		`decision := {k: v | some k in ["allow", "reason"]; v := data.`+Package+`[k]}`,
		ast.ParserOptions{RegoVersion: ast.RegoV1})
	decisionVar = ast.Var("decision")

	configErrorsQuery = ast.NewBody(ast.NewExpr(ast.NewTerm(ast.MustParseRef("data." + Package + ".config_errors"))))
)

// networkBuiltins are left out of the capabilities: a policy runs on the
// request path of every cache request and must be a pure function of its
// input and data files. Data that changes goes into a data file.
var networkBuiltins = []string{"http.send", "net.lookup_ip_addr"}

// capabilities is OPA's builtin set for this version minus networkBuiltins.
func capabilities() *ast.Capabilities {
	caps := ast.CapabilitiesForThisVersion()
	caps.Builtins = slices.DeleteFunc(slices.Clone(caps.Builtins), func(b *ast.Builtin) bool {
		return slices.Contains(networkBuiltins, b.Name)
	})
	caps.AllowNet = []string{}
	return caps
}

// newCompiler is the one compiler configuration used by the engine and by
// Check, so that a set Check accepts is a set the engine accepts. Strict
// mode rejects unused variables and imports, shadowed input/data and
// deprecated builtins: mistakes that silently change a rule's meaning.
func newCompiler(printStatements bool) *ast.Compiler {
	return ast.NewCompiler().
		WithCapabilities(capabilities()).
		WithDefaultRegoVersion(ast.RegoV1).
		WithStrict(true).
		WithEnablePrintStatements(printStatements)
}

// Problem is one thing wrong with a policy directory, located where known.
type Problem struct {
	File    string // base name in the policy directory, "" if not about one file
	Line    int    // 1-based, 0 if unknown
	Message string
}

func (p Problem) String() string {
	switch {
	case p.File != "" && p.Line > 0:
		return p.File + ":" + strconv.Itoa(p.Line) + ": " + p.Message
	case p.File != "":
		return p.File + ": " + p.Message
	}
	return p.Message
}

// LoadError lists every problem that kept a policy set from loading.
type LoadError struct {
	Dir      string
	Problems []Problem
}

func (e *LoadError) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.String()
	}
	return fmt.Sprintf("policies in %s: %s", e.Dir, strings.Join(parts, "; "))
}

// problemsFromAST turns OPA parse/compile errors into located problems.
func problemsFromAST(err error) []Problem {
	var astErrs ast.Errors
	if !errors.As(err, &astErrs) {
		var one *ast.Error
		if errors.As(err, &one) {
			astErrs = ast.Errors{one}
		} else {
			return []Problem{{Message: err.Error()}}
		}
	}
	out := make([]Problem, 0, len(astErrs))
	for _, e := range astErrs {
		p := Problem{Message: e.Code + ": " + e.Message}
		if e.Location != nil {
			p.File, p.Line = e.Location.File, e.Location.Row
		}
		out = append(out, p)
	}
	return out
}

// parsedSet is a snapshot parsed into Rego modules and a data document.
type parsedSet struct {
	Modules map[string]*ast.Module // policy modules by file name
	Tests   map[string]*ast.Module // test modules by file name (Check only)
	Data    map[string]any
}

// parse parses every file of snap. It reports all problems, not only the first.
func parse(snap *snapshot) (*parsedSet, []Problem) { return parseReusing(snap, nil) }

// parseReusing is parse, taking the policy modules from modules when not
// nil (already parsed from the same .rego files) instead of parsing them.
func parseReusing(snap *snapshot, modules map[string]*ast.Module) (*parsedSet, []Problem) {
	set := &parsedSet{Modules: map[string]*ast.Module{}, Tests: map[string]*ast.Module{}, Data: map[string]any{}}
	if modules != nil {
		set.Modules = modules
	}
	var problems []Problem
	dataFrom := map[string]string{} // data key → file that set it
	for _, f := range snap.Files {
		switch f.Kind {
		case kindPolicy, kindTest:
			if f.Kind == kindPolicy && modules != nil {
				continue
			}
			m, err := ast.ParseModuleWithOpts(f.Name, string(f.Content), ast.ParserOptions{RegoVersion: ast.RegoV1, ProcessAnnotation: true})
			if err != nil {
				problems = append(problems, problemsFromAST(err)...)
				continue
			}
			if m == nil { // an empty or comment-only file
				problems = append(problems, Problem{File: f.Name, Message: "no package declaration (empty policy file)"})
				continue
			}
			if f.Kind == kindTest {
				set.Tests[f.Name] = m
			} else {
				set.Modules[f.Name] = m
			}
		case kindData:
			key := dataKey(f.Name)
			if prev, ok := dataFrom[key]; ok {
				problems = append(problems, Problem{File: f.Name, Message: fmt.Sprintf("data.%s is already loaded from %s", key, prev)})
				continue
			}
			v, p := parseData(f)
			if p != nil {
				problems = append(problems, *p)
				continue
			}
			dataFrom[key] = f.Name
			set.Data[key] = v
		}
	}
	// A data file must not cover a policy package: data.flakegate from a
	// flakegate.yaml would collide with the rules of data.flakegate.authz.
	for name, m := range set.Modules {
		if len(m.Package.Path) < 2 {
			continue
		}
		root, ok := m.Package.Path[1].Value.(ast.String)
		if !ok {
			continue
		}
		if file, ok := dataFrom[string(root)]; ok {
			problems = append(problems, Problem{File: file, Message: fmt.Sprintf("data.%s would overlap package %s of %s; rename the data file", string(root), m.Package.Path, name)})
		}
	}
	return set, problems
}

// dataKey is where a data file is mounted: flakes.yaml → data.flakes.
func dataKey(name string) string {
	for _, ext := range []string{".json", ".yaml", ".yml"} {
		if s, ok := strings.CutSuffix(name, ext); ok {
			return s
		}
	}
	return name
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

// ParseDataFile decodes one data file of a policy directory (name decides
// JSON or YAML) as the engine does; for checks outside the engine
// (revoke.CheckDir), so that the two never read a file differently.
func ParseDataFile(name string, raw []byte) (any, error) {
	v, p := parseData(sourceFile{Name: name, Content: raw})
	if p != nil {
		return nil, errors.New(p.String())
	}
	return v, nil
}

// parseData decodes a JSON or YAML data file into JSON-shaped Go values
// (numbers as json.Number, as OPA's store expects).
//
// Strict: a duplicated key in a hand-edited file is an error, not a silent
// "last one wins" (in JSON too), and a YAML file of several documents
// ("---" or "..." between them, as `cat a.yaml b.yaml` makes) is an error:
// the conversion keeps only the first, which would drop every rule after
// the separator (TestDataFileOfSeveralDocumentsIsRefused).
func parseData(f sourceFile) (any, *Problem) {
	raw := f.Content
	isJSON := strings.HasSuffix(f.Name, ".json")
	if !isJSON {
		if p := yamlShape(f.Name, raw); p != nil {
			return nil, p
		}
		j, err := yaml.YAMLToJSONStrict(raw)
		if err != nil {
			p := &Problem{File: f.Name, Message: "invalid YAML: " + strings.TrimPrefix(err.Error(), "error converting YAML to JSON: ")}
			if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
				p.Line, _ = strconv.Atoi(m[1])
			}
			return nil, p
		}
		raw = j
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	err := dec.Decode(&v)
	if err == nil {
		if _, extra := dec.Token(); extra != io.EOF {
			err = errors.New("data after the first JSON value")
		}
	}
	if err == nil && isJSON {
		err = duplicateKey(raw)
	}
	if err != nil {
		p := &Problem{File: f.Name, Message: "invalid JSON: " + err.Error()}
		var syn *json.SyntaxError
		if errors.As(err, &syn) {
			p.Line = 1 + bytes.Count(raw[:min(int(syn.Offset), len(raw))], []byte("\n"))
		}
		var dup *dupKeyError
		if errors.As(err, &dup) {
			p.Line = 1 + bytes.Count(raw[:min(int(dup.offset), len(raw))], []byte("\n"))
		}
		return nil, p
	}
	return v, nil
}

// dupKeyError is a key set twice in one JSON object.
type dupKeyError struct {
	key    string
	offset int64
}

func (e *dupKeyError) Error() string { return fmt.Sprintf("key %q already set in this object", e.key) }

// duplicateKey walks valid JSON and returns a *dupKeyError for the first
// key repeated within one object. encoding/json keeps the last one
// silently and has no option to refuse; the walk is a few lines of tokens,
// so no library is taken for it.
func duplicateKey(raw []byte) error {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	type frame struct {
		keys      map[string]bool
		expectKey bool
	}
	var stack []*frame
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		var top *frame
		if len(stack) > 0 {
			top = stack[len(stack)-1]
		}
		switch t := tok.(type) {
		case json.Delim:
			switch t {
			case '{', '[':
				if top != nil && top.keys != nil {
					top.expectKey = true // this value ends; next is a key
				}
				fr := &frame{}
				if t == '{' {
					fr.keys, fr.expectKey = map[string]bool{}, true
				}
				stack = append(stack, fr)
			default:
				stack = stack[:len(stack)-1]
			}
			continue
		case string:
			if top != nil && top.keys != nil && top.expectKey {
				if top.keys[t] {
					return &dupKeyError{key: t, offset: dec.InputOffset()}
				}
				top.keys[t] = true
				top.expectKey = false
				continue
			}
		}
		if top != nil && top.keys != nil {
			top.expectKey = true // a scalar value ends
		}
	}
}

// compileModules compiles modules with the shared compiler settings and
// checks that they form a flakegate policy (package flakegate.authz with an
// allow rule).
func compileModules(modules map[string]*ast.Module, printStatements bool) (*ast.Compiler, []Problem) {
	if len(modules) == 0 {
		return nil, []Problem{{Message: "no policy files (*.rego other than *_test.rego)"}}
	}
	c := newCompiler(printStatements)
	c.Compile(modules)
	if c.Failed() {
		return nil, problemsFromAST(c.Errors)
	}
	var pkgFile string
	for _, name := range slices.Sorted(maps.Keys(modules)) {
		if modules[name].Package.Path.Equal(packageRef) {
			pkgFile = name
			break
		}
	}
	if pkgFile == "" {
		return nil, []Problem{{Message: "no policy file declares package " + Package}}
	}
	if len(c.GetRulesExact(allowRef)) == 0 {
		return nil, []Problem{{File: pkgFile, Message: "package " + Package + " defines no allow rule"}}
	}
	return c, nil
}

// policySet is a compiled, ready-to-evaluate policy set. It is immutable
// once built and shared by all concurrent evaluations.
type policySet struct {
	Revision string
	Files    []string
	Data     map[string]any
	// What a reload that changes only data files reuses (compiling the
	// modules is most of a reload's cost).
	modulesRev string
	modules    map[string]*ast.Module
	compiler   *ast.Compiler
	query      rego.PreparedEvalQuery
	cache      *decisionCache // nil: this set's decisions are not cached
	noCache    string         // why, for the load log
}

// build parses, compiles and prepares snap. Errors are *LoadError.
// cacheSize bounds the set's decision cache; 0 or less disables it.
//
// When prev (the active set, or nil) was built from the same policy files,
// its parsed and compiled modules are reused: only the data is new. A
// compiled set is read-only, so both sets can share it.
func build(ctx context.Context, dir string, snap *snapshot, cacheSize int, prev *policySet) (*policySet, error) {
	var reuse *policySet
	var reusedModules map[string]*ast.Module
	if prev != nil && prev.compiler != nil && prev.modulesRev == snap.ModulesRevision {
		reuse, reusedModules = prev, prev.modules
	}
	parsed, problems := parseReusing(snap, reusedModules)
	if len(problems) > 0 {
		sortProblems(problems)
		return nil, &LoadError{Dir: dir, Problems: problems}
	}
	var c *ast.Compiler
	if reuse != nil {
		c = reuse.compiler
	} else if c, problems = compileModules(parsed.Modules, false); len(problems) > 0 {
		sortProblems(problems)
		return nil, &LoadError{Dir: dir, Problems: problems}
	}
	store := newStore(parsed.Data)
	if problems := configErrors(ctx, c, store); len(problems) > 0 {
		return nil, &LoadError{Dir: dir, Problems: problems}
	}
	pq, err := rego.New(
		rego.ParsedQuery(decisionQuery),
		rego.Compiler(c),
		rego.Store(store),
		rego.StoreReadAST(true),
		// A builtin that fails (glob.match on a malformed pattern from a
		// data file, to_number of a claim) is an error (→ 503), not an
		// undefined expression: OPA's default would make `not rule_that_errs`
		// true and allow (TestBuiltinErrorsFailClosed).
		rego.StrictBuiltinErrors(true),
	).PrepareForEval(ctx)
	if err != nil {
		return nil, &LoadError{Dir: dir, Problems: problemsFromAST(fmt.Errorf("prepare decision query: %w", err))}
	}
	set := &policySet{Revision: snap.Revision, Files: snap.Names(), Data: parsed.Data, query: pq,
		modulesRev: snap.ModulesRevision, modules: parsed.Modules, compiler: c}
	switch paths, why := inputPaths(c.Modules); {
	case cacheSize <= 0:
		set.noCache = "disabled by configuration"
	case why != "":
		set.noCache = why
	default:
		set.cache = newDecisionCache(paths, cacheSize)
	}
	return set, nil
}

func newStore(data map[string]any) storage.Store {
	return inmem.NewFromObjectWithOpts(data, inmem.OptRoundTripOnWrite(false), inmem.OptReturnASTValuesOnRead(true))
}

// configErrors evaluates the optional rule data.flakegate.authz.config_errors
// (a set of strings that must not depend on input) once, at load: a policy
// uses it to validate its data files, and a set with errors is refused like
// one that does not compile. This keeps validation off the request path.
func configErrors(ctx context.Context, c *ast.Compiler, store storage.Store) []Problem {
	rs, err := rego.New(
		rego.ParsedQuery(configErrorsQuery),
		rego.Compiler(c),
		rego.Store(store),
		rego.StoreReadAST(true),
		rego.StrictBuiltinErrors(true), // a validation that errs refuses the set
	).Eval(ctx)
	if err != nil {
		return []Problem{{Message: "evaluate " + Package + ".config_errors: " + err.Error()}}
	}
	if len(rs) == 0 {
		return nil // not defined by this policy
	}
	var out []Problem
	switch v := rs[0].Expressions[0].Value.(type) {
	case []any:
		for _, e := range v {
			if s, ok := e.(string); ok {
				out = append(out, Problem{Message: s})
			} else {
				out = append(out, Problem{Message: fmt.Sprintf("%v", e)})
			}
		}
	default:
		out = append(out, Problem{Message: fmt.Sprintf("%s.config_errors must be a set of strings, not %s", Package, jsonType(v))})
	}
	slices.SortFunc(out, func(a, b Problem) int { return strings.Compare(a.Message, b.Message) })
	return out
}

// yamlShape finds what the YAML-to-JSON conversion would silently get
// wrong in a data file, in one decoding of it: a second document that is
// not empty (the conversion keeps only the first), and keys that become
// one JSON key (keysEqualAsJSON). nil when there is none, or when raw does
// not parse (the conversion reports that).
func yamlShape(name string, raw []byte) *Problem {
	dec := yaml2.NewDecoder(bytes.NewReader(raw))
	var first any
	if err := dec.Decode(&first); err != nil {
		return nil // empty, or invalid: the conversion reports it
	}
	for {
		var next any
		err := dec.Decode(&next)
		if err == io.EOF {
			break
		}
		if err != nil || next != nil { // a second document, parsing or not
			return &Problem{File: name, Line: documentLine(raw), Message: "more than one YAML document (--- or ... between them): one mapping per data file; merge them"}
		}
	}
	if msg, ok := keysEqualAsJSON(first); ok {
		return &Problem{File: name, Message: "invalid YAML: " + msg}
	}
	return nil
}

// documentLine is the 1-based line of the first document separator
// ("---" or "...") after the first content line, 0 if none is found.
func documentLine(raw []byte) int {
	seen := false
	for i, line := range bytes.Split(raw, []byte("\n")) {
		t := bytes.TrimRight(line, " \t\r")
		if (bytes.HasPrefix(t, []byte("---")) || bytes.HasPrefix(t, []byte("..."))) && (len(t) == 3 || t[3] == ' ' || t[3] == '\t') {
			if seen {
				return i + 1
			}
			continue
		}
		if len(bytes.TrimSpace(t)) > 0 && !bytes.HasPrefix(bytes.TrimSpace(t), []byte("#")) {
			seen = true
		}
	}
	return 0
}

// keysEqualAsJSON describes a mapping of doc (a decoded YAML document)
// whose keys differ in YAML but become one JSON key (2024 and "2024", true
// and "true"): the conversion keeps one of them, chosen by Go's map order,
// so the value would change from load to load (review of the fixes,
// 2026-12-05).
func keysEqualAsJSON(doc any) (string, bool) {
	var walk func(v any) (string, bool)
	walk = func(v any) (string, bool) {
		switch v := v.(type) {
		case map[any]any:
			seen := make(map[string]bool, len(v))
			for k, val := range v {
				ks := fmt.Sprint(k)
				switch k.(type) {
				case nil:
					ks = "null"
				case float64:
					// Converted to JSON at 32-bit precision: 0.1 and
					// 0.1000000001 would be one key. No data file needs a
					// number with a fraction as a key.
					return fmt.Sprintf("the key %s is a number with a fraction: quote it", ks), true
				}
				if seen[ks] {
					return fmt.Sprintf("keys that differ only in type (such as 2024 and \"2024\") are both the key %q: write it once", ks), true
				}
				seen[ks] = true
				if msg, ok := walk(val); ok {
					return msg, true
				}
			}
		case []any:
			for _, e := range v {
				if msg, ok := walk(e); ok {
					return msg, true
				}
			}
		}
		return "", false
	}
	return walk(doc)
}
