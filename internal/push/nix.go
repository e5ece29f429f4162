package push

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
)

// PathInfo is what Nix says about a store path (`nix path-info --json`).
type PathInfo struct {
	Path       string   `json:"path"`
	NarHash    string   `json:"narHash"`
	NarSize    int64    `json:"narSize"`
	References []string `json:"references"` // store paths
	Deriver    string   `json:"deriver"`    // store path of the .drv, or ""
	CA         string   `json:"ca"`
}

// nixArgs are the arguments every nix call starts with.
func nixArgs(store string, args ...string) []string {
	out := []string{"--extra-experimental-features", "nix-command"}
	out = append(out, args...)
	if store != "" {
		out = append(out, "--store", store)
	}
	return out
}

// QueryClosure asks Nix for the closure of paths (store paths or links to
// them) in store ("" for the default store).
func QueryClosure(ctx context.Context, nix, store string, paths []string) ([]PathInfo, error) {
	args := nixArgs(store, "path-info", "--json", "-r")
	args = append(args, "--")
	args = append(args, paths...)
	cmd := exec.CommandContext(ctx, nix, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("query the closure with nix path-info: %w: %s", err, strings.TrimSpace(stderr.String()))
	}
	infos, err := parsePathInfo(stdout.Bytes())
	if err != nil {
		return nil, fmt.Errorf("read nix path-info output: %w", err)
	}
	return infos, nil
}

// parsePathInfo reads `nix path-info --json` output: a list of objects
// (Nix ≤ 2.18) or an object keyed by store path (Nix ≥ 2.19).
func parsePathInfo(out []byte) ([]PathInfo, error) {
	var infos []PathInfo
	if err := json.Unmarshal(out, &infos); err != nil {
		var byPath map[string]*PathInfo
		if err2 := json.Unmarshal(out, &byPath); err2 != nil {
			return nil, err
		}
		for p, pi := range byPath {
			if pi == nil {
				return nil, fmt.Errorf("%s is not valid in the store", p)
			}
			pi.Path = p
			infos = append(infos, *pi)
		}
	}
	for i := range infos {
		pi := &infos[i]
		if pi.Path == "" || pi.NarHash == "" || pi.NarSize <= 0 {
			return nil, fmt.Errorf("path info %q lacks path, narHash or narSize", pi.Path)
		}
		slices.Sort(pi.References)
	}
	if len(infos) == 0 {
		return nil, errors.New("no paths")
	}
	slices.SortFunc(infos, func(a, b PathInfo) int { return strings.Compare(a.Path, b.Path) })
	return infos, nil
}
