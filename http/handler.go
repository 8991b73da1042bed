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
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/internal/budget"
)

// maxBatchIDBytes bounds the batch id, which becomes part of a store key (DynamoDB allows
// 2,048 bytes for a partition key). Snowflake's are under 100.
const maxBatchIDBytes = 1024

// Config tunes the handler.
type Config struct {
	// MaxBodyBytes bounds a request body after decompression. Default 16 MB.
	MaxBodyBytes int64
	// MaxInflightBytes bounds the bytes of request bodies being read and decoded at once,
	// across all requests, so that many large or compressed bodies arriving together
	// cannot exhaust memory: past it a POST is answered 429 (Snowflake retries it) instead
	// of allocating. Default DefaultMaxInflightBytes(0).
	MaxInflightBytes int64
	// RetryAfter is the Retry-After of 429 and 503 answers. Default 1s.
	RetryAfter time.Duration
	// Routes are extra handlers mounted beside the functions, by mux pattern (for
	// example "GET /metrics"). Function routes take the single-segment paths.
	Routes map[string]http.Handler
}

// DefaultMaxInflightBytes is the default of Config.MaxInflightBytes for a machine (or
// container) with memory bytes of memory: a thirty-second of it, from 64 MB to 256 MB.
// Bodies refused past the budget are garbage until the next collection, so the heap can
// reach about three times the budget under a flood (measured with gzip bombs); the rest
// of memory is left to parsed rows, results and the store. 0 (unknown memory) gives 256 MB.
func DefaultMaxInflightBytes(memory int64) int64 {
	if memory <= 0 {
		return 256 << 20
	}
	return min(max(memory/32, 64<<20), 256<<20)
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
	if cfg.MaxInflightBytes <= 0 {
		cfg.MaxInflightBytes = DefaultMaxInflightBytes(0)
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = time.Second
	}
	h := &handler{svc: svc, logger: logger, cfg: cfg, inflight: budget.New(cfg.MaxInflightBytes)}
	mux := http.NewServeMux()
	handleHealth(mux, svc.Store(), logger)
	mux.HandleFunc("/{function}", h.batch)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h.writeError(w, r, asyncfn.ErrUnknownFunction, asyncfn.Key{})
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
			msg := "the store is unreachable."
			if errors.Is(err, asyncfn.ErrNoWrites) {
				msg = noWrites + "."
			}
			logger.Warn("not ready: "+msg, "err", err)
			writeText(w, http.StatusServiceUnavailable, msg)
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
	svc      *asyncfn.Service
	logger   *slog.Logger
	cfg      Config
	inflight *budget.Budget // bytes of request bodies held by requests being answered
}

func (h *handler) batch(w http.ResponseWriter, r *http.Request) {
	key := asyncfn.Key{Function: r.PathValue("function"), BatchID: r.Header.Get(asyncfn.HeaderBatchID)}
	if r.Method != http.MethodPost && r.Method != http.MethodGet {
		w.Header().Set("Allow", "GET, POST")
		writeText(w, http.StatusMethodNotAllowed, fmt.Sprintf(
			"method %s is not allowed; Snowflake sends a batch with POST and polls for its result with GET.", r.Method))
		return
	}
	fn, err := h.svc.Function(key.Function)
	if err != nil {
		h.writeError(w, r, err, key)
		return
	}
	switch {
	case key.BatchID == "":
		h.writeError(w, r, badRequest("the request has no %s header; call this service from a Snowflake external function, or set the header yourself.",
			asyncfn.HeaderBatchID), key)
		return
	case len(key.BatchID) > maxBatchIDBytes:
		h.writeError(w, r, badRequest("the %s header is over %d bytes.", asyncfn.HeaderBatchID, maxBatchIDBytes), key)
		return
	}
	if r.Method == http.MethodPost {
		h.accept(w, r, fn, key)
	} else {
		h.poll(w, r, key)
	}
}

func (h *handler) accept(w http.ResponseWriter, r *http.Request, fn asyncfn.Function, key asyncfn.Key) {
	// A body declared too large is refused as such whatever the queue holds: a retry
	// could never succeed.
	if r.ContentLength > h.cfg.MaxBodyBytes {
		h.writeError(w, r, tooLarge(h.cfg.MaxBodyBytes), key)
		return
	}
	if err := h.svc.Admit(r.Context(), key); err != nil {
		h.writeError(w, r, err, key)
		return
	}
	body, held, err := readBody(w, r, h.cfg.MaxBodyBytes, h.inflight)
	defer h.inflight.Give(held)
	if err != nil {
		h.writeError(w, r, err, key)
		return
	}
	rows, err := asyncfn.ParseRows(body)
	if err != nil {
		h.writeError(w, r, badRequest("%s", asyncfn.AsError(err).Message), key)
		return
	}
	queryID := r.Header.Get(asyncfn.HeaderCurrentQueryID)
	if queryID == "" {
		queryID = r.Header.Get(asyncfn.HeaderQueryID)
	}
	headers, dropped := keptHeaders(r.Header)
	if len(dropped) > 0 {
		h.logger.Warn("headers over the size kept with a batch were left out; the function will not see them",
			asyncfn.LogFunction, key.Function, asyncfn.LogBatchID, key.BatchID, "headers", dropped, "limit_bytes", maxKeptHeaderBytes)
	}
	b, err := h.svc.Accept(r.Context(), asyncfn.Request{Key: key, QueryID: queryID, Payload: body, Rows: rows, Headers: headers, Function: fn})
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

// maxKeptHeaderBytes bounds each header kept with a batch: they are stored with it. A
// longer one (CONTEXT_HEADERS = (CURRENT_STATEMENT) of a long statement) is left out
// rather than refused: the request is Snowflake's, and the function may not need it.
const maxKeptHeaderBytes = 8 << 10

// keptHeaders returns the request's headers kept for the function (asyncfn.KeepHeader),
// by lower-case name, the first value of each, and the names of those left out for their
// size; nil if none.
func keptHeaders(header http.Header) (kept map[string]string, dropped []string) {
	for name, values := range header {
		name = strings.ToLower(name)
		if !asyncfn.KeepHeader(name) || len(values) == 0 {
			continue
		}
		if len(values[0]) > maxKeptHeaderBytes {
			dropped = append(dropped, name)
			continue
		}
		if kept == nil {
			kept = map[string]string{}
		}
		kept[name] = values[0]
	}
	return kept, dropped
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

// errorAnswer is how an error is answered: its status, the reason a refused POST is
// counted under (Observer.BatchRejected), and its one sentence.
type errorAnswer struct {
	status int
	reason string
	msg    func(h *handler, r *http.Request, key asyncfn.Key) string
}

func fixed(msg string) func(*handler, *http.Request, asyncfn.Key) string {
	return func(*handler, *http.Request, asyncfn.Key) string { return msg }
}

// errorTable maps the domain's errors to their answers: the one table of them. The first
// match wins, so a more specific error comes before the one it wraps. Anything else is
// a 500.
var errorTable = []struct {
	err error
	errorAnswer
}{
	{asyncfn.ErrUnknownFunction, errorAnswer{http.StatusNotFound, "unknown_function", func(h *handler, r *http.Request, _ asyncfn.Key) string {
		return fmt.Sprintf("no function is served at %s; this service serves %s.", r.URL.Path, Routes(h.svc.Registry()))
	}}},
	{asyncfn.ErrNotFound, errorAnswer{http.StatusNotFound, "unknown_function", func(_ *handler, _ *http.Request, key asyncfn.Key) string {
		return fmt.Sprintf("batch %s of function %s is unknown or has expired: it was never sent here, or its result was collected or kept past the retention period.", key.BatchID, key.Function)
	}}},
	{asyncfn.ErrConflict, errorAnswer{http.StatusConflict, "conflict", func(_ *handler, _ *http.Request, key asyncfn.Key) string {
		return fmt.Sprintf("batch %s was already sent to function %s with a different body; a batch id may be reused only to retry the same rows.", key.BatchID, key.Function)
	}}},
	{asyncfn.ErrOverloaded, errorAnswer{http.StatusTooManyRequests, "overloaded", fixed("the service has too many batches queued; Snowflake will retry.")}},
	{asyncfn.ErrDispatch, errorAnswer{http.StatusServiceUnavailable, "unavailable", fixed("the service could not start a worker for the batch; Snowflake will retry.")}},
	{asyncfn.ErrNoWrites, errorAnswer{http.StatusServiceUnavailable, "unavailable", fixed(noWrites + "; Snowflake will retry.")}},
	{asyncfn.ErrUnavailable, errorAnswer{http.StatusServiceUnavailable, "unavailable", fixed("the service's store is unavailable; Snowflake will retry.")}},
	{asyncfn.ErrClosed, errorAnswer{http.StatusServiceUnavailable, "unavailable", fixed("the service's store is unavailable; Snowflake will retry.")}},
	// The client went away (or the server is shutting down): nobody reads the answer.
	{context.Canceled, errorAnswer{http.StatusServiceUnavailable, "unavailable", fixed("the service is shutting down; Snowflake will retry.")}},
}

var internalError = errorAnswer{http.StatusInternalServerError, "internal", fixed("the service failed with an internal error; see its log.")}

// noWrites says why a store that takes no writes fails a request or readiness.
const noWrites = "the service's store cannot take writes now (its disk may be full, read-only or failing)"

// answerFor returns how err is answered.
func answerFor(err error) errorAnswer {
	var reqErr *requestError
	if errors.As(err, &reqErr) {
		return errorAnswer{reqErr.status, reqErr.reason, fixed(reqErr.msg)}
	}
	for _, e := range errorTable {
		if errors.Is(err, e.err) {
			return e.errorAnswer
		}
	}
	return internalError
}

// writeError answers err with its status and one sentence.
func (h *handler) writeError(w http.ResponseWriter, r *http.Request, err error, key asyncfn.Key) {
	a := answerFor(err)
	if a.status == http.StatusTooManyRequests || a.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", strconv.Itoa(int(h.cfg.RetryAfter.Round(time.Second).Seconds())))
	}
	if a.status >= 500 && !errors.Is(err, context.Canceled) {
		h.logger.Error("request failed", "method", r.Method, asyncfn.LogFunction, key.Function, asyncfn.LogBatchID, key.BatchID, "status", a.status, "err", err)
	}
	if r.Method == http.MethodPost {
		h.svc.Observer().BatchRejected(key.Function, a.reason)
	}
	writeText(w, a.status, a.msg(h, r, key))
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
