package http

import (
	"crypto/sha256"
	"crypto/subtle"
	"log/slog"
	"net/http"
	"strings"

	"github.com/asyncfn/asyncfn"
)

// unauthorized is the whole 401 body: it does not say whether the key was missing, wrong,
// or sent in the wrong header, which would help a guesser more than a user.
const unauthorized = "the request does not carry a valid API key for this service."

// RequireKey returns middleware that lets a request through only if it carries one of
// keys, as the sf-custom-api-key header (the function's HEADERS = ('api-key' = '...')),
// as "Authorization: Bearer KEY", or as the password of HTTP Basic authentication (so
// that a browser can open the status page; the user name is ignored). Several keys allow
// rotation: add the new key, move callers over, remove the old one. Anything else is
// answered 401 with one sentence. /healthz and /readyz stay open for load balancers.
//
// Keys are compared in constant time: each presented value and each key are hashed to
// the same length and every key is compared, whichever matched, so that neither the
// timing nor the length of a key leaks. With no keys the middleware lets everything
// through.
func RequireKey(keys []string, logger *slog.Logger) func(http.Handler) http.Handler {
	var sums [][sha256.Size]byte
	for _, k := range keys {
		if k != "" {
			sums = append(sums, sha256.Sum256([]byte(k)))
		}
	}
	return func(next http.Handler) http.Handler {
		if len(sums) == 0 {
			return next
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/healthz" || r.URL.Path == "/readyz" || validKey(r, sums) {
				next.ServeHTTP(w, r)
				return
			}
			logger.Info("request refused: no valid API key", "method", r.Method, "path", r.URL.Path, "remote", r.RemoteAddr)
			w.Header().Add("WWW-Authenticate", `Bearer realm="asyncfn"`)
			w.Header().Add("WWW-Authenticate", `Basic realm="asyncfn", charset="UTF-8"`)
			writeText(w, http.StatusUnauthorized, unauthorized)
		})
	}
}

// validKey reports whether any credential the request carries equals any key.
func validKey(r *http.Request, sums [][sha256.Size]byte) bool {
	var candidates [3]string
	n := 0
	if v := r.Header.Get(asyncfn.HeaderAPIKey); v != "" {
		candidates[n] = v
		n++
	}
	if auth := r.Header.Get("Authorization"); auth != "" {
		scheme, cred, _ := strings.Cut(auth, " ")
		cred = strings.TrimSpace(cred)
		switch {
		case strings.EqualFold(scheme, "Bearer") && cred != "":
			candidates[n] = cred
			n++
		case strings.EqualFold(scheme, "Basic"):
			if _, password, ok := r.BasicAuth(); ok && password != "" {
				candidates[n] = password
				n++
			}
		}
	}
	match := 0
	for _, c := range candidates[:n] {
		sum := sha256.Sum256([]byte(c))
		for i := range sums {
			match |= subtle.ConstantTimeCompare(sum[:], sums[i][:])
		}
	}
	return match == 1
}
