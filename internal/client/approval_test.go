package client

import (
	"context"
	"errors"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/agentkeys/agentkeys/internal/problem"
)

// pendingUntil answers APPROVAL_REQUIRED (request r1) until approved is
// reached, then "ok"; it counts its calls.
func pendingUntil(approved time.Time, calls *int) func() (string, error) {
	return func() (string, error) {
		*calls++
		if time.Now().Before(approved) {
			p := problem.New(problem.ApprovalNeeded, "needs approval", "agentkeys approve r1")
			p.Approval = &problem.Approval{ID: "r1", Expires: time.Now().Add(10 * time.Minute).Unix()}
			return "", p
		}
		return "ok", nil
	}
}

func TestAwaitApproval(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx := context.Background()
		// Approved after 7 s: polled every 2 s, told the time left each second.
		calls, ticks := 0, 0
		start := time.Now()
		v, err := AwaitApproval(ctx, time.Minute, pendingUntil(start.Add(7*time.Second), &calls), func(a problem.Approval, left time.Duration) {
			ticks++
			if a.ID != "r1" || left <= 0 || left > time.Minute {
				t.Errorf("progress(%+v, %s)", a, left)
			}
		})
		if v != "ok" || err != nil || calls != 5 || ticks != 8 || time.Since(start) != 8*time.Second {
			t.Fatalf("approved after 7s: %q %v after %d calls, %d ticks, %s", v, err, calls, ticks, time.Since(start))
		}
		// Never approved: gives up when wait has passed, naming the request.
		calls = 0
		start = time.Now()
		_, err = AwaitApproval(ctx, 5*time.Second, pendingUntil(start.Add(time.Hour), &calls), nil)
		if p := problem.As(err); p.Code != problem.ApprovalNeeded || p.Approval == nil || !strings.Contains(p.Message, "within 5s") ||
			!strings.Contains(p.Fix, "agentkeys approve r1") || time.Since(start) != 5*time.Second || calls != 3 {
			t.Fatalf("never approved: %v (fix %q) after %s, %d calls", err, p.Fix, time.Since(start), calls)
		}
		// No wait: one call, the broker's answer as is.
		calls = 0
		if _, err := AwaitApproval(ctx, 0, pendingUntil(time.Now().Add(time.Hour), &calls), nil); calls != 1 || problem.As(err).Message != "needs approval" {
			t.Fatalf("wait 0: %v after %d calls", err, calls)
		}
		// Another error ends the wait at once.
		calls = 0
		denied := func() (string, error) { calls++; return "", problem.New(problem.Denied, "no", "") }
		if _, err := AwaitApproval(ctx, time.Minute, denied, nil); calls != 1 || problem.As(err).Code != problem.Denied {
			t.Fatalf("denied: %v after %d calls", err, calls)
		}
		// The caller stops waiting.
		cctx, cancel := context.WithCancel(ctx)
		time.AfterFunc(3*time.Second, cancel)
		start = time.Now()
		_, err = AwaitApproval(cctx, time.Minute, pendingUntil(time.Now().Add(time.Hour), &calls), nil)
		if p := problem.As(err); p.Code != problem.ApprovalNeeded || !strings.Contains(p.Message, "stopped waiting") || time.Since(start) != 3*time.Second {
			t.Fatalf("cancelled: %v after %s", err, time.Since(start))
		}
		if errors.Is(err, context.Canceled) {
			t.Fatal("the cancellation leaks as context.Canceled")
		}
	})
}
