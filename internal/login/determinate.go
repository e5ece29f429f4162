package login

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
)

// DeterminateConfig is Determinate Nix's daemon configuration. Its daemon
// ignores netrc-file and reads /nix/var/determinate/netrc plus the files
// listed in authentication.additionalNetrcSources.
const DeterminateConfig = "/etc/determinate/config.json"

// AddNetrcSource returns Determinate's config.json content with netrc
// listed in authentication.additionalNetrcSources (every other setting
// kept); changed is false when it was listed already. An empty content is
// an empty configuration.
func AddNetrcSource(content []byte, netrc string) (updated []byte, changed bool, err error) {
	cfg := map[string]any{}
	if len(content) > 0 {
		if err := decodeConfig(content, &cfg); err != nil {
			return nil, false, err
		}
	}
	auth, _ := cfg["authentication"].(map[string]any)
	if auth == nil {
		if cfg["authentication"] != nil {
			return nil, false, fmt.Errorf("%s: authentication is not an object", DeterminateConfig)
		}
		auth = map[string]any{}
	}
	var sources []any
	switch v := auth["additionalNetrcSources"].(type) {
	case nil:
	case []any:
		sources = v
	default:
		return nil, false, fmt.Errorf("%s: authentication.additionalNetrcSources is not a list", DeterminateConfig)
	}
	if slices.Contains(sources, any(netrc)) {
		return content, false, nil
	}
	auth["additionalNetrcSources"] = append(sources, netrc)
	cfg["authentication"] = auth
	out, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, false, err
	}
	return append(out, '\n'), true, nil
}

// RemoveNetrcSources returns Determinate's config.json content without the
// authentication.additionalNetrcSources entries for which drop says so
// (every other setting kept); changed is false when none was dropped.
func RemoveNetrcSources(content []byte, drop func(netrc string) bool) (updated []byte, changed bool, err error) {
	if len(content) == 0 {
		return content, false, nil
	}
	cfg := map[string]any{}
	if err := decodeConfig(content, &cfg); err != nil {
		return nil, false, err
	}
	auth, _ := cfg["authentication"].(map[string]any)
	sources, _ := auth["additionalNetrcSources"].([]any)
	kept := slices.DeleteFunc(slices.Clone(sources), func(v any) bool {
		s, ok := v.(string)
		return ok && drop(s)
	})
	if len(kept) == len(sources) {
		return content, false, nil
	}
	auth["additionalNetrcSources"] = kept
	out, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, false, err
	}
	return append(out, '\n'), true, nil
}

// decodeConfig parses Determinate's config.json keeping numbers as they are
// written (json.Number): a rewrite must not change settings it does not
// touch, and a float64 rounds integers above 2^53 (review of the fixes,
// 2026-12-05).
func decodeConfig(content []byte, cfg *map[string]any) error {
	dec := json.NewDecoder(bytes.NewReader(content))
	dec.UseNumber()
	if err := dec.Decode(cfg); err != nil {
		return fmt.Errorf("parse %s: %w", DeterminateConfig, err)
	}
	return nil
}
