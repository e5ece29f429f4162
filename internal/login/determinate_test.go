package login

import (
	"encoding/json"
	"reflect"
	"testing"
)

func TestAddNetrcSource(t *testing.T) {
	const netrc = "/home/me/.config/nix/netrc"
	cases := []struct {
		name, in string
		want     map[string]any
		changed  bool
		wantErr  bool
	}{
		{"empty file", "", map[string]any{"authentication": map[string]any{"additionalNetrcSources": []any{netrc}}}, true, false},
		{"other settings kept", `{"garbageCollector":{"strategy":"automatic"},"authentication":{"additionalNetrcSources":["/etc/other"]}}`,
			map[string]any{"garbageCollector": map[string]any{"strategy": "automatic"}, "authentication": map[string]any{"additionalNetrcSources": []any{"/etc/other", netrc}}}, true, false},
		{"already listed", `{"authentication":{"additionalNetrcSources":["` + netrc + `"]}}`,
			map[string]any{"authentication": map[string]any{"additionalNetrcSources": []any{netrc}}}, false, false},
		{"not JSON", `{`, nil, false, true},
		{"sources not a list", `{"authentication":{"additionalNetrcSources":"x"}}`, nil, false, true},
		{"authentication not an object", `{"authentication":3}`, nil, false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			out, changed, err := AddNetrcSource([]byte(c.in), netrc)
			if (err != nil) != c.wantErr {
				t.Fatalf("err %v, want error %v", err, c.wantErr)
			}
			if err != nil {
				return
			}
			var got map[string]any
			if err := json.Unmarshal(out, &got); err != nil {
				t.Fatal(err)
			}
			if changed != c.changed || !reflect.DeepEqual(got, c.want) {
				t.Fatalf("got %v changed %v, want %v %v", got, changed, c.want, c.changed)
			}
		})
	}
}
