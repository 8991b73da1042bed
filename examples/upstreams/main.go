// Command upstreams serves local stand-ins for the services the README's functions file
// puts asyncfn in front of, so that its examples run without an account anywhere:
//
//   - POST /classify: a synchronous external-function service, Snowflake's format in
//     and out, which labels each text positive or negative by a few words (the kind of
//     service a gateway cuts off after 29 s when its batches grow);
//   - POST /v1/chat/completions: an API shaped as OpenAI's chat completions, which
//     answers each request with a made-up reply, and refuses one without a bearer token.
//
// It listens on 127.0.0.1:9000, or the address given as its argument.
package main

import (
	"encoding/json"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"strings"
)

func main() {
	addr := "127.0.0.1:9000"
	if len(os.Args) > 1 {
		addr = os.Args[1]
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("asyncfn: example upstreams on http://%s (/classify, /v1/chat/completions)\n", ln.Addr())
	log.Fatal(http.Serve(ln, routes()))
}

func routes() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /classify", classify)
	mux.HandleFunc("POST /v1/chat/completions", chat)
	return mux
}

// classify answers a batch of texts with a label each, synchronously.
func classify(w http.ResponseWriter, r *http.Request) {
	var req struct{ Data [][]any }
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		http.Error(w, "the body is not a batch of rows", http.StatusBadRequest)
		return
	}
	out := make([][2]any, len(req.Data))
	for i, row := range req.Data {
		label := "neutral"
		if len(row) > 1 {
			text, _ := row[1].(string)
			switch text = strings.ToLower(text); {
			case strings.Contains(text, "good"), strings.Contains(text, "happy"):
				label = "positive"
			case strings.Contains(text, "bad"), strings.Contains(text, "sad"):
				label = "negative"
			}
		}
		out[i] = [2]any{row[0], label}
	}
	json.NewEncoder(w).Encode(map[string]any{"data": out})
}

// chat answers a chat completion with a made-up reply to its last message.
func chat(w http.ResponseWriter, r *http.Request) {
	if !strings.HasPrefix(r.Header.Get("Authorization"), "Bearer ") {
		http.Error(w, `{"error": {"message": "You didn't provide an API key."}}`, http.StatusUnauthorized)
		return
	}
	var req struct {
		Model    string
		Messages []struct{ Role, Content string }
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil || len(req.Messages) == 0 {
		http.Error(w, `{"error": {"message": "messages is required."}}`, http.StatusBadRequest)
		return
	}
	last := req.Messages[len(req.Messages)-1].Content
	json.NewEncoder(w).Encode(map[string]any{
		"object":  "chat.completion",
		"model":   req.Model,
		"choices": []any{map[string]any{"index": 0, "message": map[string]string{"role": "assistant", "content": "(fake reply) " + last}}},
		"usage":   map[string]int{"prompt_tokens": len(strings.Fields(last)), "completion_tokens": 3},
	})
}
