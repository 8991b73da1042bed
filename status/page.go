package status

import (
	"bytes"
	"crypto/rand"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"html/template"
	"log/slog"
	"net/http"
	"os"
	"time"
)

//go:embed page.html
var pageHTML string

var page = template.Must(template.New("status").Funcs(template.FuncMap{
	"secs":     formatSeconds,
	"clock":    func(t time.Time) string { return t.UTC().Format("15:04:05") + " UTC" },
	"num":      formatFloat,
	"storeTTL": func() string { return formatSeconds(StoreTTL.Seconds()) },
}).Parse(pageHTML))

// Routes returns the status page's handlers by mux pattern, for asyncfnhttp.Config.Routes:
// the page at /status, its data at /status.json, and / redirecting to the page. "GET /{$}"
// matches the root only, so it does not take the functions' /{function} routes. Failures
// to render the page or to read the store are logged to logger.
func (r *Recorder) Routes(logger *slog.Logger) map[string]http.Handler {
	r.setLogger(logger)
	return map[string]http.Handler{
		"GET /status":      http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) { r.servePage(w, req, logger) }),
		"GET /status.json": http.HandlerFunc(r.serveJSON),
		"GET /{$}": http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
			http.Redirect(w, req, "status", http.StatusFound) // relative: works behind a path prefix
		}),
	}
}

// Paths are the paths Routes serves, which no function may be named after.
var Paths = []string{"status", "status.json"}

func (r *Recorder) serveJSON(w http.ResponseWriter, req *http.Request) {
	s := r.Snapshot(req.Context())
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	json.NewEncoder(w).Encode(s)
}

type pageData struct {
	Snapshot
	Host  string
	Nonce string
}

func (r *Recorder) servePage(w http.ResponseWriter, req *http.Request, logger *slog.Logger) {
	var nonce [16]byte
	_, _ = rand.Read(nonce[:])
	d := pageData{Snapshot: r.Snapshot(req.Context()), Nonce: base64.RawURLEncoding.EncodeToString(nonce[:])}
	d.Host, _ = os.Hostname()
	var buf bytes.Buffer
	if err := page.Execute(&buf, d); err != nil {
		logger.Error("rendering the status page failed", "err", err)
		http.Error(w, "the status page could not be rendered; see the log.", http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	// Only this response's own inline script and style run; data comes from this origin.
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'nonce-"+d.Nonce+"'; style-src 'nonce-"+d.Nonce+
		"'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
	w.Write(buf.Bytes())
}

// formatSeconds writes a duration for people: 850 ms, 2.35 s, 4.2 min.
func formatSeconds(s float64) string {
	switch {
	case s < 1:
		return formatFloat(s*1000) + " ms"
	case s < 60:
		return formatFloat(s) + " s"
	}
	return formatFloat(s/60) + " min"
}

func formatFloat(f float64) string {
	b, _ := json.Marshal(float64(int64(f*100+0.5)) / 100)
	return string(b)
}
