package opentelemetry_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"testing"

	collectortrace "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"

	"github.com/asyncfn/asyncfn"
	"github.com/asyncfn/asyncfn/opentelemetry"
)

// TestSetupSwitch: tracing is off unless the standard variables ask for it, and an
// exporter or protocol it cannot serve is an error naming the variable.
func TestSetupSwitch(t *testing.T) {
	t.Parallel()
	const endpoint = "http://127.0.0.1:1"
	for _, c := range []struct {
		env     map[string]string
		on      bool
		errWith string
	}{
		{env: nil},
		{env: map[string]string{"OTEL_SERVICE_NAME": "x"}},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp"}, on: true},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}, on: true},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": endpoint + "/v1/traces"}, on: true},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"}, on: true},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_SDK_DISABLED": "true"}},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "TRUE"}},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_TRACES_EXPORTER": "none"}},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "zipkin"}, errWith: "OTEL_TRACES_EXPORTER"},
		{env: map[string]string{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}, errWith: "OTEL_EXPORTER_OTLP_PROTOCOL"},
		{env: map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint, "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/json"}, errWith: "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"},
	} {
		tr, err := opentelemetry.Setup(context.Background(), func(k string) string { return c.env[k] })
		switch {
		case c.errWith != "":
			if err == nil || !strings.Contains(err.Error(), c.errWith) {
				t.Errorf("%v: error %v, want one naming %s", c.env, err, c.errWith)
			}
		case err != nil:
			t.Errorf("%v: %v", c.env, err)
		case (tr != nil) != c.on:
			t.Errorf("%v: tracing on %v, want %v", c.env, tr != nil, c.on)
		}
		if err := tr.Shutdown(context.Background()); err != nil {
			t.Errorf("%v: Shutdown: %v", c.env, err)
		}
	}
}

// TestSetupExportsOverOTLP: with OTEL_EXPORTER_OTLP_ENDPOINT set, the spans reach an
// OTLP/HTTP receiver by Shutdown, under the service name of OTEL_SERVICE_NAME. Not
// parallel: the exporter reads the process environment.
func TestSetupExportsOverOTLP(t *testing.T) {
	var (
		mu    sync.Mutex
		posts int
		names []string
	)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(r.Body)
		var req collectortrace.ExportTraceServiceRequest
		if err == nil {
			err = proto.Unmarshal(body, &req)
		}
		if r.Method != http.MethodPost || r.URL.Path != "/v1/traces" || err != nil {
			t.Errorf("receiver got %s %s: %v", r.Method, r.URL.Path, err)
			w.WriteHeader(http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		posts++
		for _, rs := range req.ResourceSpans {
			for _, a := range rs.Resource.Attributes {
				if a.Key == "service.name" {
					names = append(names, "service "+a.Value.GetStringValue())
				}
			}
			for _, ss := range rs.ScopeSpans {
				for _, s := range ss.Spans {
					names = append(names, "span "+s.Name)
				}
			}
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer receiver.Close()
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.URL)
	t.Setenv("OTEL_SERVICE_NAME", "front")

	tr, err := opentelemetry.Setup(context.Background(), os.Getenv)
	if err != nil || tr == nil {
		t.Fatalf("Setup: %v, %v; want tracing on", tr, err)
	}
	h := tr.HTTP()(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusAccepted) }))
	if status, _ := send(t, h, http.MethodPost, "/echo", "", map[string]string{asyncfn.HeaderBatchID: "b"}); status != http.StatusAccepted {
		t.Fatalf("POST: %d", status)
	}
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if got := strings.Join(names, ", "); posts != 1 || got != "service front, span accept" {
		t.Errorf("receiver got %d POSTs of %s; want 1 of service front, span accept", posts, got)
	}
}
