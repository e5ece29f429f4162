package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/flakegate/flakegate/internal/fsutil"
	"github.com/flakegate/flakegate/internal/identity/identitytest"
)

// Files written by `benchdata authz` into its directory.
const (
	keyFile        = "issuer-key.pem" // RS256 private key (PKCS#8), reused on later runs
	jwksFile       = "jwks.json"      // the issuer's public JWKS
	issuersFile    = "issuers.yaml"   // flakegate authz -issuers
	tokensFile     = "tokens.txt"     // one token per line
	ghzFile        = "ghz-read.json"  // ghz request array: narinfo reads of the flake
	opaDataFile    = "opa-data.json"  // data document of the reference (JWKS string, flakes)
	narinfoPaths   = "narinfo-paths.txt"
	benchKeyID     = "bench-rs256-1"
	benchIssuerKey = "github"
)

func runAuthz(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("authz", flag.ContinueOnError)
	dir := fs.String("dir", "", "output directory")
	iss := fs.String("iss", "https://token.actions.githubusercontent.com", "iss of the tokens")
	aud := fs.String("aud", "https://cache.bench.local", "aud of the tokens")
	repo := fs.String("repo", "omnicorp/app", "GitHub repository the CI tokens are for (owner/name)")
	ntokens := fs.Int("tokens", 100, "distinct tokens (same subject, distinct jti)")
	nreq := fs.Int("requests", 1000, "distinct CheckRequests in the ghz file (round-robin over tokens)")
	lifetime := fs.Duration("lifetime", 3*time.Hour, "token lifetime")
	policies := fs.String("policies", "policies", "flakegate policy directory (its flakes.yaml is copied into the reference's data)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" || *ntokens < 1 || *nreq < 1 {
		return errors.New("authz needs -dir, -tokens ≥ 1 and -requests ≥ 1")
	}
	if err := os.MkdirAll(*dir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", *dir, err)
	}
	key, err := loadOrCreateRSA(filepath.Join(*dir, keyFile))
	if err != nil {
		return err
	}
	jwk, err := identitytest.PublicJWK(&key.PublicKey)
	if err != nil {
		return err
	}
	jwk["kid"], jwk["alg"], jwk["use"] = benchKeyID, "RS256", "sig"
	jwks, err := json.Marshal(map[string]any{"keys": []any{jwk}})
	if err != nil {
		return fmt.Errorf("render JWKS: %w", err)
	}
	absDir, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	issuers := fmt.Sprintf("issuers:\n  - name: %s\n    issuer: %s\n    jwks_file: %s\n    audience: [%s]\n    claims: github-actions\n",
		benchIssuerKey, *iss, filepath.Join(absDir, jwksFile), *aud)

	tokens := make([]string, *ntokens)
	now := time.Now()
	for i := range tokens {
		if tokens[i], err = mintRS256(key, *iss, *aud, *repo, now, *lifetime); err != nil {
			return err
		}
	}
	org, _, _ := strings.Cut(*repo, "/")
	hashes := fakeStoreHashes(*nreq)
	reqs := make([]any, *nreq)
	paths := make([]string, *nreq)
	for i := range reqs {
		paths[i] = "/" + *repo + "/" + hashes[i] + ".narinfo"
		reqs[i] = checkRequest("GET", paths[i], "Bearer "+tokens[i%len(tokens)], i)
	}
	ghz, err := json.Marshal(reqs)
	if err != nil {
		return fmt.Errorf("render ghz data: %w", err)
	}
	opaData, err := referenceData(*policies, string(jwks), *iss, *aud)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
	}{
		{jwksFile, jwks},
		{issuersFile, []byte(issuers)},
		{tokensFile, []byte(strings.Join(tokens, "\n") + "\n")},
		{ghzFile, ghz},
		{opaDataFile, opaData},
		{narinfoPaths, []byte(strings.Join(paths, "\n") + "\n")},
	} {
		if err := fsutil.WriteFileAtomic(filepath.Join(*dir, f.name), f.data, 0o644); err != nil {
			return err
		}
	}
	fmt.Fprintf(stdout, "authz data in %s: %d tokens (RS256, kid %s) for %s (org %s), %d requests\n",
		*dir, len(tokens), benchKeyID, *repo, org, len(reqs))
	return nil
}

// checkRequest is an Envoy CheckRequest in protobuf JSON, as Envoy's
// ext_authz filter sends it for a plain HTTP/1.1 request.
func checkRequest(method, path, authorization string, id int) map[string]any {
	headers := map[string]any{
		":authority":   "cache.bench.local",
		":method":      method,
		":path":        path,
		":scheme":      "http",
		"user-agent":   "curl/8.5.0 Nix/2.8.0",
		"accept":       "*/*",
		"x-request-id": fmt.Sprintf("00000000-0000-4000-8000-%012d", id),
	}
	if authorization != "" {
		headers["authorization"] = authorization
	}
	return map[string]any{
		"attributes": map[string]any{
			"source": map[string]any{"address": map[string]any{"socketAddress": map[string]any{
				"address": "127.0.0.1", "portValue": 40000 + id%20000}}},
			"destination": map[string]any{"address": map[string]any{"socketAddress": map[string]any{
				"address": "127.0.0.1", "portValue": 8080}}},
			"request": map[string]any{"http": map[string]any{
				"id":       fmt.Sprint(id),
				"method":   method,
				"path":     path,
				"host":     "cache.bench.local",
				"scheme":   "http",
				"headers":  headers,
				"protocol": "HTTP/1.1",
			}},
		},
	}
}

// referenceData is the data document of the reference authorizer: the
// issuer's JWKS as the string io.jwt.decode_verify takes, the expected iss
// and aud, and flakegate's flakes.yaml (so both decide from the same
// per-flake settings).
func referenceData(policies, jwks, iss, aud string) ([]byte, error) {
	flakes := map[string]any{}
	raw, err := os.ReadFile(filepath.Join(policies, "flakes.yaml"))
	switch {
	case errors.Is(err, fs.ErrNotExist):
	case err != nil:
		return nil, fmt.Errorf("read flakes.yaml: %w", err)
	default:
		if err := yaml.Unmarshal(raw, &flakes); err != nil {
			return nil, fmt.Errorf("parse flakes.yaml: %w", err)
		}
	}
	b, err := json.MarshalIndent(map[string]any{
		"bench":  map[string]any{"jwks": jwks, "issuer": iss, "audience": aud},
		"flakes": flakes,
	}, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("render reference data: %w", err)
	}
	return b, nil
}

func loadOrCreateRSA(path string) (*rsa.PrivateKey, error) {
	raw, err := os.ReadFile(path)
	if err == nil {
		block, _ := pem.Decode(raw)
		if block == nil {
			return nil, fmt.Errorf("%s: no PEM block", path)
		}
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse %s: %w", path, err)
		}
		rk, ok := k.(*rsa.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("%s: not an RSA key", path)
		}
		return rk, nil
	}
	if !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("read issuer key: %w", err)
	}
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return nil, fmt.Errorf("generate RSA key: %w", err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		return nil, fmt.Errorf("encode RSA key: %w", err)
	}
	if err := fsutil.WriteFileAtomic(path, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, err
	}
	return k, nil
}

// mintRS256 signs a GitHub-Actions-shaped token for repo (ref main,
// protected) with a fresh jti.
func mintRS256(key *rsa.PrivateKey, iss, aud, repo string, now time.Time, lifetime time.Duration) (string, error) {
	claims := identitytest.GitHubActionsClaims(repo, "refs/heads/main")
	jti := make([]byte, 16)
	if _, err := rand.Read(jti); err != nil {
		return "", err
	}
	claims["iss"], claims["aud"] = iss, aud
	claims["iat"], claims["nbf"], claims["exp"] = now.Unix(), now.Unix(), now.Add(lifetime).Unix()
	claims["jti"] = fmt.Sprintf("%x", jti)
	hb, err := json.Marshal(map[string]any{"alg": "RS256", "typ": "JWT", "kid": benchKeyID})
	if err != nil {
		return "", err
	}
	cb, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	input := b64(hb) + "." + b64(cb)
	sig, err := identitytest.Sign("RS256", key, []byte(input))
	if err != nil {
		return "", err
	}
	return input + "." + b64(sig), nil
}
