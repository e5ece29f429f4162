package testoidc

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"
)

func TestDiscoveryAndVerificationPage(t *testing.T) {
	p := Start(t, Options{})
	resp, err := http.Get(p.Issuer + "/.well-known/openid-configuration")
	if err != nil {
		t.Fatal(err)
	}
	var d map[string]any
	err = json.NewDecoder(resp.Body).Decode(&d)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	if d["issuer"] != p.Issuer || d["device_authorization_endpoint"] == nil || d["jwks_uri"] == nil {
		t.Errorf("discovery: %v", d)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	tests := []struct {
		query string
		want  bool
	}{
		{"", false},
		{"?user_code=NOPE-NOPE", false},
	}
	for _, tt := range tests {
		if err := p.Visit(ctx, p.Issuer+DevicePath+tt.query); (err == nil) != tt.want {
			t.Errorf("visit %q: err = %v", tt.query, err)
		}
	}
	if err := p.Deny("NOPE-NOPE"); err == nil {
		t.Error("denying an unknown code succeeded")
	}
	if p.DeviceRequests() != 0 {
		t.Errorf("device requests = %d", p.DeviceRequests())
	}
}

func TestUnknownApprover(t *testing.T) {
	if _, err := New(Options{ApproveAs: "mallory"}); err == nil {
		t.Fatal("ApproveAs outside Users accepted")
	}
}
