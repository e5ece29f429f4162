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
// token when there is none: better caught before deploying.
func CheckDir(dir string) error {
	for _, name := range []string{DataKey + ".yaml", DataKey + ".yml", DataKey + ".json"} {
		path := filepath.Join(dir, name)
		data, err := os.ReadFile(path)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read denylist: %w", err)
		}
		doc, err := policy.ParseDataFile(name, data) // as the engine reads it
		if err != nil {
			return fmt.Errorf("%s: %w", dir, err)
		}
		if _, err := Parse(doc); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
	}
	return nil
}
