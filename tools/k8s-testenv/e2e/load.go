package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"sync"
	"sync/atomic"
	"time"
)

// load sends chat turns from a few workers, each on its own keep-alive connection and its own
// conversation, until stopped (or its bounds are hit). Every failure counts: connection errors
// (refused, reset, closed without response), timeouts and any status but 200. Requests carry no
// GetBody, so Go's transport never silently re-sends one on a fresh connection.
type load struct {
	url, key string
	workers  int
	pause    time.Duration // between two turns of one worker (a steady, bounded rate)
	maxTurns int64         // bound on the total number of turns

	sent, ok, failed atomic.Int64
	mu               sync.Mutex
	errors           map[string]int
	firstErrors      []string
	answered         map[string][]string // conversation id -> user messages answered (in order)
	cancel           context.CancelFunc
	done             chan struct{}
}

func newLoad(url, key string, workers int) *load {
	return &load{url: url, key: key, workers: workers, pause: 15 * time.Millisecond, maxTurns: 200000,
		errors: map[string]int{}, answered: map[string][]string{}}
}

func (l *load) start(users []string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	l.cancel = cancel
	l.done = make(chan struct{})
	var wg sync.WaitGroup
	for w := 0; w < l.workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			l.worker(ctx, w, users[w%len(users)])
		}(w)
	}
	go func() { wg.Wait(); close(l.done) }()
}

func (l *load) stop() {
	l.cancel()
	<-l.done
}

func (l *load) fail(kind string) {
	l.failed.Add(1)
	l.mu.Lock()
	l.errors[kind]++
	if len(l.firstErrors) < 20 {
		l.firstErrors = append(l.firstErrors, time.Now().Format("15:04:05.000")+" "+kind)
	}
	l.mu.Unlock()
}

func (l *load) worker(ctx context.Context, w int, user string) {
	// One connection per worker, kept alive between turns.
	tr := &http.Transport{MaxIdleConnsPerHost: 1, MaxConnsPerHost: 1, IdleConnTimeout: 90 * time.Second}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	conv := ""
	for n := 1; ctx.Err() == nil && l.sent.Load() < l.maxTurns; n++ {
		msg := fmt.Sprintf("load w%d turn %d", w, n)
		body := map[string]any{"user_message": msg, "client_user_id": user}
		if conv != "" {
			body["conversation_id"] = conv
		}
		b, _ := json.Marshal(body)
		req, _ := http.NewRequest(http.MethodPost, l.url+"/api/ai/chat", bytes.NewReader(b))
		req.GetBody = nil // never replayed by the transport: a lost request is a failure
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("X-API-Key", l.key)
		l.sent.Add(1)
		resp, err := client.Do(req)
		if err != nil {
			l.fail("transport: " + err.Error())
		} else {
			data, rerr := io.ReadAll(resp.Body)
			resp.Body.Close()
			var out struct {
				ConversationID string `json:"conversation_id"`
			}
			switch {
			case rerr != nil:
				l.fail("reading body: " + rerr.Error())
			case resp.StatusCode != http.StatusOK:
				l.fail(fmt.Sprintf("HTTP %d: %.200s", resp.StatusCode, data))
			case json.Unmarshal(data, &out) != nil || out.ConversationID == "":
				l.fail(fmt.Sprintf("bad body: %.200s", data))
			default:
				l.ok.Add(1)
				conv = out.ConversationID
				l.mu.Lock()
				l.answered[conv] = append(l.answered[conv], msg)
				l.mu.Unlock()
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(l.pause):
		}
	}
}

func (l *load) summary() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	kinds := make([]string, 0, len(l.errors))
	for k, n := range l.errors {
		kinds = append(kinds, fmt.Sprintf("%dx %s", n, k))
	}
	sort.Strings(kinds)
	return fmt.Sprintf("sent %d, answered %d, failed %d %v; first failures: %v",
		l.sent.Load(), l.ok.Load(), l.failed.Load(), kinds, l.firstErrors)
}
