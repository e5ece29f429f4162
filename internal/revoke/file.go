package revoke

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/flakegate/flakegate/internal/policy"
)

// CheckDir validates the denylist file of a policy directory, if there is
// one (denylist.yaml, .yml or .json), for `authz -check`. At run time a
// malformed denylist keeps the previous one in force, or refuses every
// token when there is none: better caught before deploying. With issuers
// (the issuers file's iss values), each issuer rule naming none of them is
// a warning.
func CheckDir(dir string, issuers []string) (warnings []string, err error) {
	for _, name := range []string{DataKey + ".yaml", DataKey + ".yml", DataKey + ".json"} {
		path := filepath.Join(dir, name)
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("read denylist: %w", err)
		}
		doc, err := policy.ParseDataFile(name, data) // as the engine reads it
		if err != nil {
			return nil, fmt.Errorf("%s: %w", dir, err)
		}
		l, err := Parse(doc)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		if issuers != nil {
			for _, iss := range l.UnknownIssuers(issuers) {
				warnings = append(warnings, fmt.Sprintf("%s: the rule for issuer %q revokes nothing: no identity provider in the issuers file has that iss (a cache token carries its IdP's iss, not the cache's URL; spelling and trailing slash count)", path, iss))
			}
		}
	}
	return warnings, nil
}
