package client

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/agentkeys/agentkeys/internal/problem"
)

// A 429 without the broker's error body (a reverse proxy's limit in front of
// the broker) is still RATE_LIMITED, with the pause its Retry-After asks for:
// a load generator counts it as the limit it is, a daemon waits.
func TestBare429IsRateLimited(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "7")
		http.Error(w, "slow down", http.StatusTooManyRequests)
	}))
	t.Cleanup(srv.Close)
	c, err := New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Head(t.Context())
	p := problem.As(err)
	if p.Code != problem.RateLimited || p.RetryAfter != 7 || p.Fix == "" {
		t.Fatalf("got %+v, want RATE_LIMITED with retry_after 7 and a fix", p)
	}
}
