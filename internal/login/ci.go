package login

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// DefaultTokenEnv is the variable a GitLab job's id_tokens entry should be
// named (id_tokens: FLAKEGATE_ID_TOKEN: aud: https://cache.example.com).
const DefaultTokenEnv = "FLAKEGATE_ID_TOKEN"

// CISource says where a CI job's OIDC token comes from.
type CISource struct {
	// TokenEnv names a variable holding the token (GitLab id_tokens). When
	// empty, GitHub Actions' token request variables are used if present,
	// then DefaultTokenEnv.
	TokenEnv string
	// Audience asked of GitHub Actions (the cache URL).
	Audience   string
	Getenv     func(string) string
	HTTPClient *http.Client
	Timeout    time.Duration
}

// Token returns the job's OIDC token and a short name of where it came from.
func (c CISource) Token(ctx context.Context) (token, from string, err error) {
	getenv := c.Getenv
	if getenv == nil {
		return "", "", errors.New("ci token: no environment")
	}
	if c.TokenEnv != "" {
		t := strings.TrimSpace(getenv(c.TokenEnv))
		if t == "" {
			return "", "", fmt.Errorf("ci token: $%s is empty or unset", c.TokenEnv)
		}
		return t, "$" + c.TokenEnv, nil
	}
	if reqURL, reqTok := getenv("ACTIONS_ID_TOKEN_REQUEST_URL"), getenv("ACTIONS_ID_TOKEN_REQUEST_TOKEN"); reqURL != "" || reqTok != "" {
		if reqURL == "" || reqTok == "" {
			return "", "", errors.New("ci token: GitHub Actions sets ACTIONS_ID_TOKEN_REQUEST_URL and _TOKEN only with `permissions: id-token: write`; one of them is missing")
		}
		t, err := githubToken(ctx, c.HTTPClient, reqURL, reqTok, c.Audience, c.Timeout)
		if err != nil {
			return "", "", err
		}
		return t, "github-actions", nil
	}
	if t := strings.TrimSpace(getenv(DefaultTokenEnv)); t != "" {
		return t, "$" + DefaultTokenEnv, nil
	}
	return "", "", fmt.Errorf("ci token: no job token found: on GitHub Actions grant `permissions: id-token: write`; on GitLab add `id_tokens: %s: aud: %s` to the job (or name the variable with --token-env)", DefaultTokenEnv, c.Audience)
}

// githubToken asks the GitHub Actions runtime for an OIDC token for audience.
func githubToken(ctx context.Context, hc *http.Client, reqURL, reqToken, audience string, timeout time.Duration) (string, error) {
	if hc == nil {
		hc = http.DefaultClient
	}
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	u, err := url.Parse(reqURL)
	if err != nil {
		return "", fmt.Errorf("ci token: ACTIONS_ID_TOKEN_REQUEST_URL: %w", err)
	}
	if audience != "" {
		q := u.Query()
		q.Set("audience", audience)
		u.RawQuery = q.Encode()
	}
	req, err := http.NewRequest(http.MethodGet, u.String(), nil)
	if err != nil {
		return "", fmt.Errorf("ci token: %w", err)
	}
	req.Header.Set("Authorization", "bearer "+reqToken)
	req.Header.Set("Accept", "application/json")
	var out struct {
		Value string `json:"value"`
	}
	var apiErr struct {
		Message string `json:"message"`
	}
	status, err := doJSONOr(ctx, hc, req, timeout, &out, &apiErr)
	if err != nil {
		return "", fmt.Errorf("ci token: request GitHub Actions OIDC token: %w", err)
	}
	if status != http.StatusOK {
		return "", fmt.Errorf("ci token: GitHub Actions token service answered %d %s", status, apiErr.Message)
	}
	if out.Value == "" {
		return "", errors.New("ci token: GitHub Actions token service returned no token")
	}
	return out.Value, nil
}
