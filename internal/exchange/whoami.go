package exchange

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/flakegate/flakegate/internal/authz"
	"github.com/flakegate/flakegate/internal/route"
)

// Whoami serves route.WhoamiPath: the subject the caller's token verifies
// to (authentication and revocation by checker, as for any request; no
// policy), so that `flakegate status` shows who the cache thinks the user
// is and when the token expires. Served whether the exchange is on or not.
func Whoami(checker *authz.Checker, log *slog.Logger) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Cache-Control", "no-store")
		req := authz.NewRequest(r.Method, r.URL.Path, r.Header.Get("Authorization"))
		if req.RouteErr != nil {
			writeJSON(w, route.StatusOf(req.RouteErr), errorBody{req.RouteErr.Error()})
			return
		}
		if req.Route.Action != route.ActionWhoami {
			writeJSON(w, http.StatusNotFound, errorBody{"no such endpoint"})
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 10*time.Second)
		defer cancel()
		res := checker.Authorize(ctx, req)
		if !res.Allow || res.Subject == nil {
			msg := strings.TrimSpace(res.Message)
			if msg == "" {
				msg = http.StatusText(res.Status)
			}
			if res.Status == http.StatusUnauthorized {
				w.Header().Set("WWW-Authenticate", `Bearer realm="flakegate"`)
			}
			writeJSON(w, res.Status, errorBody{msg})
			return
		}
		s := res.Subject
		writeJSON(w, http.StatusOK, route.WhoamiResponse{
			Subject: s.Summary(), Provider: s.Provider, Kind: s.Kind, Org: s.Org, Repo: s.Repo, User: s.User,
			Ref: s.Ref, Via: s.Via, Issuer: s.Issuer, ExpiresAt: s.Expiry.UTC(), TokenID: s.TokenID,
		})
	})
}
