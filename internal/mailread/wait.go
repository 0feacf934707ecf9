package mailread

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/agentkeys/agentkeys/internal/problem"
)

// Query is what email_wait_for_code waits for.
type Query struct {
	From    string        // a substring of the sender's address ("" = anyone)
	Subject string        // a substring of the subject ("" = any)
	Timeout time.Duration // 1 s to MaxWait
	// Since: only messages received at or after it count (zero = Lookback
	// before the call), e.g. the moment the agent submitted the form.
	Since time.Time
}

// Poller is a Source that says how often a wait may list it (an IMAP
// server is asked less often than an object store).
type Poller interface{ PollEvery() time.Duration }

// Bounds of a wait.
const (
	MaxWait = 10 * time.Minute
	// Lookback is how long before the call a message may have arrived and
	// still count: the agent asks for the code after submitting a form, and
	// the mail may be faster than the call.
	Lookback = 15 * time.Minute
	// MaxLookback bounds how far back a Query's Since may reach.
	MaxLookback = 24 * time.Hour
	// Poll is how often the inbox is listed while waiting.
	Poll = 250 * time.Millisecond
	// maxScan bounds the messages one wait reads.
	maxScan = 500
)

// CodeResult is what WaitForCode found, and in which message.
type CodeResult struct {
	Found
	ID       string    `json:"id"`
	From     string    `json:"from"`
	Subject  string    `json:"subject"`
	Received time.Time `json:"received"`
}

// CheckQuery refuses a query WaitForCode would not run.
func CheckQuery(q Query) error {
	if q.Timeout < time.Second || q.Timeout > MaxWait {
		return problem.Newf(problem.BadRequest, "pass timeout_seconds from 1 to 600", "the timeout must be 1 s to %s", MaxWait)
	}
	if len(q.From) > 254 || len(q.Subject) > 998 {
		return problem.New(problem.BadRequest, "from or subject is too long", "pass a part of the address (at most 254 bytes) or of the subject (at most 998)")
	}
	return nil
}

// WaitForCode waits until an unseen message that matches q and carries a
// one-time code or magic link is in the inbox, marks it seen (so the next
// wait does not return the same code) and returns what it found. Messages
// from q.Since (default: Lookback before now) on count, newest first. now is the daemon's clock;
// the wait itself runs on timers (synctest-friendly).
func WaitForCode(ctx context.Context, src Source, now time.Time, q Query) (*CodeResult, error) {
	if err := CheckQuery(q); err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, q.Timeout)
	defer cancel()
	since := q.Since
	if since.IsZero() {
		since = now.Add(-Lookback)
	}
	if since.Before(now.Add(-MaxLookback)) {
		return nil, problem.Newf(problem.BadRequest, "pass a later since (or none: 15 minutes back); read older mail with email_list",
			"since may reach at most %s back", MaxLookback)
	}
	every := Poll
	if p, ok := src.(Poller); ok {
		every = p.PollEvery()
	}
	tried := map[string]bool{} // read and without a code: not again
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		r, err := scan(ctx, src, since, q, tried)
		if err != nil && ctx.Err() == nil {
			return nil, err
		}
		if r != nil {
			if err := src.SetMark(ctx, r.ID, Mark{Seen: true}); err != nil && ctx.Err() == nil {
				return nil, err
			}
			return r, nil
		}
		select {
		case <-ctx.Done():
			if errors.Is(context.Cause(ctx), context.DeadlineExceeded) || errors.Is(ctx.Err(), context.DeadlineExceeded) {
				what := "a message with a one-time code or link"
				if q.From != "" || q.Subject != "" {
					what = fmt.Sprintf("%s (from ~ %q, subject ~ %q)", what, q.From, q.Subject)
				}
				return nil, problem.Newf(problem.NotFound, "trigger the mail again (resend the code), check from/subject, or wait longer with a larger timeout_seconds",
					"no new %s arrived within %s", what, q.Timeout)
			}
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}

// scan looks once through the newest maxScan messages since since, newest
// first (since is at most MaxLookback back, which bounds the listing).
func scan(ctx context.Context, src Source, since time.Time, q Query, tried map[string]bool) (*CodeResult, error) {
	var refs []Ref // the newest maxScan since since
	for from := since; ; {
		page, more, err := src.List(ctx, from, MaxList)
		if err != nil {
			return nil, err
		}
		refs = append(refs, page...)
		if len(refs) > maxScan {
			refs = refs[len(refs)-maxScan:]
		}
		if !more || len(page) == 0 {
			break
		}
		from = page[len(page)-1].Received.Add(time.Nanosecond)
	}
	var fresh []string
	for _, r := range refs {
		if !tried[r.ID] {
			fresh = append(fresh, r.ID)
		}
	}
	if len(fresh) == 0 {
		return nil, nil
	}
	marks, err := src.Marks(ctx, fresh)
	if err != nil {
		return nil, err
	}
	for i := len(refs) - 1; i >= 0; i-- {
		r := refs[i]
		if tried[r.ID] {
			continue
		}
		tried[r.ID] = true
		if marks[r.ID].Seen {
			continue
		}
		raw, err := src.Get(ctx, r.ID)
		if problem.As(err).Code == problem.NotFound {
			continue // deleted meanwhile
		}
		if err != nil {
			delete(tried, r.ID)
			return nil, err
		}
		m := Parse(r.ID, raw)
		if !contains(m.From, q.From) || !contains(m.Subject, q.Subject) {
			continue
		}
		if f := FindCode(m); !f.Empty() {
			return &CodeResult{Found: f, ID: r.ID, From: m.From, Subject: m.Subject, Received: r.Received}, nil
		}
	}
	return nil, nil
}

func contains(s, sub string) bool {
	return sub == "" || strings.Contains(strings.ToLower(s), strings.ToLower(sub))
}
