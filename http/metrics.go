package http

import (
	"net/http"
	"time"
)

// ObserveRequests returns middleware that calls record after each request with its final
// status and how long it took, for metrics. It keeps this package free of any metrics
// library: package metrics supplies record.
func ObserveRequests(record func(r *http.Request, status int, d time.Duration)) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			began := time.Now()
			sw := &statusWriter{ResponseWriter: w}
			defer func() { record(r, sw.status(), time.Since(began)) }()
			next.ServeHTTP(sw, r)
		})
	}
}

// statusWriter remembers the status written through it. Unwrap lets
// http.ResponseController reach the connection's Flush and deadlines.
type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *statusWriter) status() int {
	if w.code == 0 {
		return http.StatusOK
	}
	return w.code
}
