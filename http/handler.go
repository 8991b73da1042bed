// Package http speaks Snowflake's external-function protocol over net/http: it decodes
// POSTed batches, hands them to an asyncfn.Service, and answers POSTs and GET polls with
// 202, 200 and the rows, or an error status whose body is one sentence for the SQL user.
package http

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/asyncfn/asyncfn"
)

// Snowflake's request headers (Go canonicalises case; proxies send them lower-case).
const (
	HeaderBatchID        = "Sf-External-Function-Query-Batch-Id"
	HeaderCurrentQueryID = "Sf-External-Function-Current-Query-Id"
	HeaderQueryID        = "Sf-External-Function-Query-Id"
)

// maxBatchIDBytes bounds the batch id, which becomes part of a store key (DynamoDB allows
// 2,048 bytes for a partition key). Snowflake's are under 100.
const maxBatchIDBytes = 1024

// Config tunes the handler.
type Config struct {
	// MaxBodyBytes bounds a request body after decompression. Default 16 MB.
	MaxBodyBytes int64
	// Routes are extra handlers mounted beside the functions, by mux pattern (for
	// example "GET /metrics"). Function routes take the single-segment paths.
	Routes map[string]http.Handler
}

// DefaultMaxBodyBytes is the default of Config.MaxBodyBytes: Snowflake's responses are
// capped at 10 MB and requests are of the same order.
const DefaultMaxBodyBytes = 16 << 20

// NewHandler returns the service's HTTP handler: POST and GET on /{function}, /healthz,
// /readyz, and cfg.Routes.
func NewHandler(svc *asyncfn.Service, logger *slog.Logger, cfg Config) http.Handler {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	h := &handler{svc: svc, logger: logger, cfg: cfg}
	mux := http.NewServeMux()
	handleHealth(mux, svc.Store(), logger)
	mux.HandleFunc("/{function}", h.batch)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.writeError(w, r, asyncfn.ErrUnknownFunction, asyncfn.Key{Function: strings.Trim(r.URL.Path, "/")})
	})
	for pattern, route := range cfg.Routes {
		mux.Handle(pattern, route)
	}
	return Recover(logger)(mux)
}

// HealthHandler serves only /healthz and /readyz, for processes that run workers only.
func HealthHandler(store asyncfn.Store, logger *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	handleHealth(mux, store, logger)
	return Recover(logger)(mux)
}

// handleHealth mounts /healthz (the process answers) and /readyz (the store answers too).
// They take every method, so that a POST is told 405 rather than routed as a function.
func handleHealth(mux *http.ServeMux, store asyncfn.Store, logger *slog.Logger) {
	mux.HandleFunc("/healthz", getOnly(func(w http.ResponseWriter, r *http.Request) {
		writeText(w, http.StatusOK, "ok")
	}))
	mux.HandleFunc("/readyz", getOnly(func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := store.Ping(ctx); err != nil {
			logger.Warn("not ready: the store is unreachable", "err", err)
			writeText(w, http.StatusServiceUnavailable, "the store is unreachable.")
			return
		}
		writeText(w, http.StatusOK, "ok")
	}))
}

// getOnly answers methods other than GET and HEAD with 405.
func getOnly(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeText(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed here; use GET.", r.Method))
			return
		}
		h(w, r)
	}
}

type handler struct {
	svc    *asyncfn.Service
	logger *slog.Logger
	cfg    Config
}

func (h *handler) batch(w http.ResponseWriter, r *http.Request) {
	key := asyncfn.Key{Function: r.PathValue("function"), BatchID: r.Header.Get(HeaderBatchID)}
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET, POST")
		writeText(w, http.StatusMethodNotAllowed, fmt.Sprintf(
			"method %s is not allowed; Snowflake sends a batch with POST and polls for its result with GET.", r.Method))
		return
	}
	if _, ok := h.svc.Registry().Lookup(key.Function); !ok {
		h.writeError(w, r, asyncfn.ErrUnknownFunction, key)
		return
	}
	switch {
	case key.BatchID == "":
		h.writeError(w, r, badRequest("the request has no %s header; call this service from a Snowflake external function, or set the header yourself.",
			strings.ToLower(HeaderBatchID)), key)
		return
	case len(key.BatchID) > maxBatchIDBytes:
		h.writeError(w, r, badRequest("the %s header is over %d bytes.", strings.ToLower(HeaderBatchID), maxBatchIDBytes), key)
		return
	}
	if r.Method == http.MethodPost {
		h.accept(w, r, key)
	} else {
		h.poll(w, r, key)
	}
}

func (h *handler) accept(w http.ResponseWriter, r *http.Request, key asyncfn.Key) {
	if err := h.svc.Admit(r.Context(), key); err != nil {
		h.writeError(w, r, err, key)
		return
	}
	body, err := readBody(w, r, h.cfg.MaxBodyBytes)
	if err != nil {
		h.writeError(w, r, err, key)
		return
	}
	rows, err := asyncfn.ParseRows(body)
	if err != nil {
		h.writeError(w, r, badRequest("%s", asyncfn.AsError(err).Message), key)
		return
	}
	queryID := r.Header.Get(HeaderCurrentQueryID)
	if queryID == "" {
		queryID = r.Header.Get(HeaderQueryID)
	}
	b, err := h.svc.Accept(r.Context(), asyncfn.Request{Key: key, QueryID: queryID, Payload: body, Rows: rows})
	if err != nil {
		h.writeError(w, r, err, key)
		return
	}
	h.writeBatch(w, r, b)
}

func (h *handler) poll(w http.ResponseWriter, r *http.Request, key asyncfn.Key) {
	b, err := h.svc.Poll(r.Context(), key)
	if err != nil {
		h.writeError(w, r, err, key)
		return
	}
	h.writeBatch(w, r, b)
}

// writeBatch answers with a batch's state: 202 while unfinished, 200 with the rows, or
// the stored error with the status its kind is given in failureStatus.
func (h *handler) writeBatch(w http.ResponseWriter, r *http.Request, b *asyncfn.Batch) {
	switch b.State {
	case asyncfn.Succeeded:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.Write(b.Result)
	case asyncfn.Failed:
		writeText(w, failureStatus(b.Error.Kind), b.Error.Message)
	default:
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprintf(w, `{"state":%q}`, b.State)
	}
}

// failureStatus is the status of a failed batch. Every failure is a 4xx: Snowflake fails
// the query at once and shows the message, whereas a 5xx would make it retry a batch
// whose answer cannot change.
func failureStatus(kind asyncfn.ErrorKind) int {
	if kind == asyncfn.InvalidInput {
		return http.StatusBadRequest
	}
	return http.StatusUnprocessableEntity
}

// errorStatus maps the domain's errors to statuses: the one table of them.
var errorStatus = []struct {
	err    error
	status int
}{
	{asyncfn.ErrUnknownFunction, http.StatusNotFound},
	{asyncfn.ErrNotFound, http.StatusNotFound},
	{asyncfn.ErrConflict, http.StatusConflict},
	{asyncfn.ErrOverloaded, http.StatusTooManyRequests},
	{asyncfn.ErrUnavailable, http.StatusServiceUnavailable},
	{asyncfn.ErrDispatch, http.StatusServiceUnavailable},
	{asyncfn.ErrClosed, http.StatusServiceUnavailable},
	// The client went away (or the server is shutting down): nobody reads the answer.
	{context.Canceled, http.StatusServiceUnavailable},
}

// writeError answers err with its status and one sentence.
func (h *handler) writeError(w http.ResponseWriter, r *http.Request, err error, key asyncfn.Key) {
	var reqErr *requestError
	if errors.As(err, &reqErr) {
		h.rejected(r, key, reqErr.status)
		writeText(w, reqErr.status, reqErr.msg)
		return
	}
	status := http.StatusInternalServerError
	for _, e := range errorStatus {
		if errors.Is(err, e.err) {
			status = e.status
			break
		}
	}
	var msg string
	switch status {
	case http.StatusNotFound:
		if errors.Is(err, asyncfn.ErrUnknownFunction) {
			msg = fmt.Sprintf("no function is served at /%s; this service serves %s.", key.Function, Routes(h.svc.Registry()))
		} else {
			msg = fmt.Sprintf("batch %s of function %s is unknown or has expired: it was never sent here, or its result was collected or kept past the retention period.", key.BatchID, key.Function)
		}
	case http.StatusConflict:
		msg = fmt.Sprintf("batch %s was already sent to function %s with a different body; a batch id may be reused only to retry the same rows.", key.BatchID, key.Function)
	case http.StatusTooManyRequests:
		w.Header().Set("Retry-After", "1")
		msg = "the service has too many batches queued; Snowflake will retry."
	case http.StatusServiceUnavailable:
		msg = "the service's store is unavailable; Snowflake will retry."
		if errors.Is(err, asyncfn.ErrDispatch) {
			msg = "the service could not start a worker for the batch; Snowflake will retry."
		}
	default:
		msg = "the service failed with an internal error; see its log."
	}
	if status >= 500 && !errors.Is(err, context.Canceled) {
		h.logger.Error("request failed", "method", r.Method, "function", key.Function, "batch_id", key.BatchID, "status", status, "err", err)
	}
	h.rejected(r, key, status)
	writeText(w, status, msg)
}

// Routes lists the paths of the registry's functions: "/echo, /sentiment".
func Routes(reg *asyncfn.Registry) string {
	names := reg.Names()
	for i, n := range names {
		names[i] = "/" + n
	}
	return strings.Join(names, ", ")
}

// writeText answers with a plain-text body; an error's body is made one sentence on one
// line, because Snowflake puts it into the SQL error the user reads.
func writeText(w http.ResponseWriter, status int, msg string) {
	if status >= 400 {
		msg = sentence(msg)
	}
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	fmt.Fprint(w, msg)
}

// maxMessage bounds an error body: a function's error may quote a whole response.
const maxMessage = 1000

// sentence folds msg onto one line (control characters and runs of space become one
// space), cuts it to maxMessage bytes on a character boundary, and ends it with a full stop.
func sentence(msg string) string {
	msg = strings.Join(strings.FieldsFunc(msg, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }), " ")
	if len(msg) > maxMessage {
		cut := maxMessage
		for cut > 0 && !utf8.RuneStart(msg[cut]) {
			cut--
		}
		msg = msg[:cut] + "..."
	}
	if msg == "" || !strings.ContainsAny(msg[len(msg)-1:], ".!?") {
		msg += "."
	}
	return msg
}

// Recover turns a panic in a handler into a 500 and a log line, so that one bad request
// never takes the process down.
func Recover(logger *slog.Logger) func(http.Handler) http.Handler {
	return func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			defer func() {
				if v := recover(); v != nil {
					if v == http.ErrAbortHandler {
						panic(v)
					}
					logger.Error("handler panicked", "method", r.Method, "path", r.URL.Path, "panic", v)
					writeText(w, http.StatusInternalServerError, "the service failed with an internal error; see its log.")
				}
			}()
			next.ServeHTTP(w, r)
		})
	}
}
