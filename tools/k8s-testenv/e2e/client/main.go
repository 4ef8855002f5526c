// Command e2e-client sends chat turns to a Colloquy chat API from inside the cluster (the e2e
// suite runs it as a pod, so the Service is reached by its DNS name as users write it). It prints
// one JSON line with what it did and exits 1 when any turn failed.
//
//	e2e-client -url http://demo.colloquy-e2e.svc.cluster.local:8000 -key KEY -user UUID -turns 3
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"time"
)

type result struct {
	Resolved       []string `json:"resolved"`
	ConversationID string   `json:"conversation_id"`
	Answers        []string `json:"answers"`
	Failed         int      `json:"failed"`
	Errors         []string `json:"errors,omitempty"`
}

func main() {
	base := flag.String("url", "", "base URL of the chat API (http://<service>.<namespace>.svc.cluster.local:8000)")
	key := flag.String("key", "", "X-API-Key")
	user := flag.String("user", "", "client_user_id (UUID)")
	turns := flag.Int("turns", 3, "chat turns in one conversation")
	flag.Parse()
	var res result
	u, err := url.Parse(*base)
	if err != nil || u.Hostname() == "" {
		fmt.Fprintf(os.Stderr, "bad -url %q\n", *base)
		os.Exit(2)
	}
	// Resolve through the pod's resolv.conf (cluster DNS), as any client would.
	addrs, err := net.LookupHost(u.Hostname())
	if err != nil {
		res.Failed++
		res.Errors = append(res.Errors, "lookup: "+err.Error())
	}
	res.Resolved = addrs
	client := &http.Client{Timeout: 30 * time.Second}
	for i := 0; i < *turns && res.Failed == 0; i++ {
		body := map[string]any{"user_message": fmt.Sprintf("in-cluster turn %d", i+1), "client_user_id": *user}
		if res.ConversationID != "" {
			body["conversation_id"] = res.ConversationID
		}
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(http.MethodPost, *base+"/api/ai/chat", bytes.NewReader(b))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-API-Key", *key)
		resp, err := client.Do(req)
		if err != nil {
			res.Failed++
			res.Errors = append(res.Errors, err.Error())
			break
		}
		data, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var out struct {
			ConversationID string `json:"conversation_id"`
			AIResponse     string `json:"ai_response"`
		}
		if resp.StatusCode != http.StatusOK || json.Unmarshal(data, &out) != nil {
			res.Failed++
			res.Errors = append(res.Errors, fmt.Sprintf("HTTP %d: %s", resp.StatusCode, data))
			break
		}
		res.ConversationID = out.ConversationID
		res.Answers = append(res.Answers, out.AIResponse)
	}
	_ = json.NewEncoder(os.Stdout).Encode(res)
	if res.Failed > 0 {
		os.Exit(1)
	}
}
