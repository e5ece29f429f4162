package nixcache

import (
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// Test key from go-nix's test suite (not a secret).
const (
	test1SecretKey = "test1:jbX9NxZp8WB/coK8k7yLf0gNYmBbIbCrOFwgJgI7OV+0sASf4R5oFQlioSlN3bJ56uvshzr7S9Z75pcv+9hSkQ=="
	test1PublicKey = "test1:tLAEn+EeaBUJYqEpTd2yeerr7Ic6+0vWe+aXL/vYUpE="
)

func TestParseSecretKey(t *testing.T) {
	k, err := ParseSecretKey(test1SecretKey + "\n")
	if err != nil {
		t.Fatal(err)
	}
	if k.Name() != "test1" || k.PublicKey() != test1PublicKey {
		t.Fatalf("got %s %s", k.Name(), k.PublicKey())
	}
	for _, bad := range []string{"", "test1", ":abc", "test1:notbase64!", "test1:" + test1PublicKey[6:]} {
		_, err := ParseSecretKey(bad)
		if err == nil {
			t.Fatalf("accepted %q", bad)
		}
		if i := strings.Index(bad, ":"); i >= 0 && len(bad) > i+4 && strings.Contains(err.Error(), bad[i+1:]) {
			t.Fatalf("error %q leaks key material", err)
		}
	}
}

func TestGenerateKeyAndSign(t *testing.T) {
	sec, pub, err := GenerateKey("cache-a-1")
	if err != nil {
		t.Fatal(err)
	}
	k, err := ParseSecretKey(sec)
	if err != nil {
		t.Fatal(err)
	}
	if k.PublicKey() != pub {
		t.Fatalf("public key %s, want %s", k.PublicKey(), pub)
	}
	old, err := ParseSecretKey(test1SecretKey)
	if err != nil {
		t.Fatal(err)
	}
	ks, err := NewKeySet(k, old)
	if err != nil {
		t.Fatal(err)
	}
	n, err := ParseNarInfo([]byte(nixosNarInfo))
	if err != nil {
		t.Fatal(err)
	}
	text := ks.SignedNarInfo(n)
	if strings.Count(string(text), "\nSig: ") != 2 {
		t.Fatalf("want two signatures:\n%s", text)
	}
	for _, trusted := range [][]string{{pub}, {test1PublicKey}, {nixosPublicKey, pub}} {
		ok, err := VerifyNarInfo(text, trusted)
		if err != nil || !ok {
			t.Fatalf("trusting %v: verified=%v err=%v", trusted, ok, err)
		}
	}
	if ok, _ := VerifyNarInfo(text, []string{nixosPublicKey}); ok {
		t.Fatal("verified with a key that did not sign")
	}
	if _, _, err := GenerateKey("bad:name"); err == nil {
		t.Fatal("accepted key name with ':'")
	}
}

func TestKeySetRotation(t *testing.T) {
	a, _ := ParseSecretKey(test1SecretKey)
	secB, pubB, _ := GenerateKey("b")
	b, _ := ParseSecretKey(secB)
	ksA, _ := NewKeySet(a)
	ksAB, _ := NewKeySet(a, b)
	if ksA.ID() == ksAB.ID() {
		t.Fatal("key sets with different keys share an ID")
	}
	if _, err := NewKeySet(a, a); err == nil {
		t.Fatal("accepted two keys with one name")
	}
	if _, err := NewKeySet(); err == nil {
		t.Fatal("accepted empty key set")
	}
	n, _ := ParseNarInfo([]byte(nixosNarInfo))
	resigned, err := ksAB.Resign(ksA.SignedNarInfo(n))
	if err != nil {
		t.Fatal(err)
	}
	if ok, _ := VerifyNarInfo(resigned, []string{pubB}); !ok {
		t.Fatal("re-signed narinfo does not verify with the new key")
	}
	if got := ksAB.PublicKeys(); len(got) != 2 || got[0] != test1PublicKey || got[1] != pubB {
		t.Fatalf("public keys %v", got)
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "signing-key.sec")
	k1, created, err := LoadOrCreateKey(path, "srv-1")
	if err != nil || !created {
		t.Fatalf("created=%v err=%v", created, err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v, want 0600", st.Mode().Perm())
	}
	k2, created, err := LoadOrCreateKey(path, "other")
	if err != nil || created {
		t.Fatalf("second load: created=%v err=%v", created, err)
	}
	if k1.PublicKey() != k2.PublicKey() || k2.Name() != "srv-1" {
		t.Fatal("second load returned a different key")
	}
	entries, _ := os.ReadDir(filepath.Dir(path))
	if len(entries) != 1 {
		t.Fatalf("stray files: %v", entries)
	}

	// Concurrent first starts agree on one key.
	path2 := filepath.Join(t.TempDir(), "k.sec")
	var wg sync.WaitGroup
	keys := make([]string, 8)
	for i := range keys {
		wg.Add(1)
		go func() {
			defer wg.Done()
			k, _, err := LoadOrCreateKey(path2, "x")
			if err != nil {
				t.Error(err)
				return
			}
			keys[i] = k.PublicKey()
		}()
	}
	wg.Wait()
	for _, k := range keys {
		if k != keys[0] {
			t.Fatalf("concurrent creation produced different keys: %v", keys)
		}
	}

	if err := os.WriteFile(path2, []byte("corrupt"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := LoadOrCreateKey(path2, "x"); err == nil {
		t.Fatal("corrupt key file accepted (or silently replaced)")
	}
}
