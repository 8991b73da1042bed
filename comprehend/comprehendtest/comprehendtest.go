// Package comprehendtest is a fake Amazon Comprehend for tests: an HTTP server on loopback
// that speaks Comprehend's JSON 1.1 protocol for BatchDetectSentiment, records the requests
// it gets and answers what the test says. Point the real SDK client at it with
// comprehend.Config.Endpoint and credentials of access key id AccessKeyID.
package comprehendtest

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
)

// AccessKeyID is the access key id the fake expects requests to be signed with.
const AccessKeyID = "AKIDTEST"

// Request is a BatchDetectSentiment request as the fake received it.
type Request struct {
	LanguageCode string
	TextList     []string
}

// Reply is what the fake answers: a status and a JSON body.
type Reply struct {
	Status int
	Body   string
}

// Answer decides the reply to the nth request (from 0); h is the HTTP request, whose
// context ends when the client gives up.
type Answer func(n int, r Request, h *http.Request) Reply

// Server is the fake.
type Server struct {
	URL string

	t      testing.TB
	answer Answer

	mu       sync.Mutex
	requests []Request
}

// New starts a fake that answers with answer (OK for every request if nil) and stops it
// when the test ends. A request that is not a signed BatchDetectSentiment call fails the
// test.
func New(t testing.TB, answer Answer) *Server {
	s := &Server{t: t, answer: answer}
	if s.answer == nil {
		s.answer = func(_ int, r Request, _ *http.Request) Reply { return OK(r) }
	}
	srv := httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(srv.Close)
	s.URL = srv.URL
	return s
}

func (s *Server) serve(w http.ResponseWriter, h *http.Request) {
	bad := func(format string, args ...any) {
		s.t.Errorf("fake Comprehend: "+format, args...)
		reply(w, APIError(http.StatusBadRequest, "InvalidRequestException", "the test's fake refused the request"), 0)
	}
	switch {
	case h.Method != http.MethodPost || h.URL.Path != "/":
		bad("%s %s", h.Method, h.URL.Path)
		return
	case h.Header.Get("X-Amz-Target") != "Comprehend_20171127.BatchDetectSentiment":
		bad("X-Amz-Target %q", h.Header.Get("X-Amz-Target"))
		return
	case h.Header.Get("Content-Type") != "application/x-amz-json-1.1":
		bad("Content-Type %q", h.Header.Get("Content-Type"))
		return
	case !strings.HasPrefix(h.Header.Get("Authorization"), "AWS4-HMAC-SHA256 Credential="+AccessKeyID+"/"):
		bad("Authorization %q", h.Header.Get("Authorization"))
		return
	}
	var r Request
	dec := json.NewDecoder(h.Body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&r); err != nil {
		bad("body: %v", err)
		return
	}
	s.mu.Lock()
	n := len(s.requests)
	s.requests = append(s.requests, r)
	s.mu.Unlock()
	reply(w, s.answer(n, r, h), n)
}

func reply(w http.ResponseWriter, r Reply, n int) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-RequestId", fmt.Sprintf("req-%d", n))
	w.WriteHeader(r.Status)
	io.WriteString(w, r.Body)
}

// Requests returns the requests received so far, in order.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Request(nil), s.requests...)
}

// Score is the SentimentScore OK answers, as Comprehend sends scores: float32 values in
// the digits of their float64 widening. ScoreRow is how a row answers it by default: the
// original sample's json.dumps(SentimentScore).
const (
	Score    = `{"Mixed":0.0033542951568961143,"Negative":0.0010949420975521207,"Neutral":0.008563132025301456,"Positive":0.9869875907897949}`
	ScoreRow = `{"Positive":0.9869875907897949,"Negative":0.0010949420975521207,"Neutral":0.008563132025301456,"Mixed":0.0033542951568961143}`
)

// OK answers every text of r as POSITIVE with Score.
func OK(r Request) Reply {
	return WithErrors(r, nil)
}

// WithErrors answers r as OK does, except the texts at the indexes in failed, which are in
// the ErrorList.
func WithErrors(r Request, failed map[int]bool) Reply {
	var results, errs []string
	for i := range r.TextList {
		if failed[i] {
			errs = append(errs, fmt.Sprintf(`{"Index":%d,"ErrorCode":"INTERNAL_SERVER_ERROR","ErrorMessage":"Internal server error"}`, i))
			continue
		}
		results = append(results, fmt.Sprintf(`{"Index":%d,"Sentiment":"POSITIVE","SentimentScore":%s}`, i, Score))
	}
	return Reply{http.StatusOK, `{"ResultList":[` + strings.Join(results, ",") + `],"ErrorList":[` + strings.Join(errs, ",") + `]}`}
}

// APIError is an error answer of the JSON 1.1 protocol.
func APIError(status int, typ, message string) Reply {
	return Reply{status, fmt.Sprintf(`{"__type":%q,"message":%q}`, typ, message)}
}
