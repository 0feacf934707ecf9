package client

import (
	"context"
	"errors"
	"time"

	"github.com/agentkeys/agentkeys/internal/problem"
)

// Waiting for the owner's approval of a high-value read.
const (
	DefaultApprovalWait = 2 * time.Minute // `read` and `run --env` wait this long unless told otherwise
	ApprovalPoll        = 2 * time.Second // a waiting reader asks again this often
)

// AwaitApproval calls read until it answers anything but APPROVAL_REQUIRED
// naming an open request, then returns that answer. Each call is a read like
// any other (audited, rate-limited); the broker keeps one open request per
// reader and credential however often it is asked. With wait ≤ 0 read is
// called once. When wait has passed or ctx ends first, the answer is
// APPROVAL_REQUIRED saying so; the request stays open until it lapses.
// progress, if not nil, is called about once a second while waiting, with the
// open request and the time left.
func AwaitApproval[T any](ctx context.Context, wait time.Duration, read func() (T, error), progress func(a problem.Approval, left time.Duration)) (T, error) {
	deadline := time.Now().Add(wait)
	var last *problem.Error // the answer that made it wait
	for {
		v, err := read()
		var p *problem.Error
		if err != nil && last != nil && ctx.Err() != nil {
			return v, stoppedWaiting(last, "stopped waiting for the owner's approval of request "+last.Approval.ID)
		}
		if wait <= 0 || !errors.As(err, &p) || p.Code != problem.ApprovalNeeded || p.Approval == nil {
			return v, err
		}
		last = p
		next := time.Now().Add(ApprovalPoll)
		for {
			left := time.Until(deadline)
			if left <= 0 {
				return v, stoppedWaiting(p, "the owner did not approve request "+p.Approval.ID+" within "+wait.String())
			}
			step := min(time.Second, left, time.Until(next))
			if step <= 0 {
				break
			}
			if progress != nil {
				progress(*p.Approval, left)
			}
			select {
			case <-ctx.Done():
				return v, stoppedWaiting(p, "stopped waiting for the owner's approval of request "+p.Approval.ID)
			case <-time.After(step):
			}
		}
	}
}

func stoppedWaiting(p *problem.Error, msg string) *problem.Error {
	out := problem.New(problem.ApprovalNeeded, msg,
		"the owner approves it with: agentkeys approve "+p.Approval.ID+" (open until "+
			time.Unix(p.Approval.Expires, 0).UTC().Format("15:04:05 UTC")+"); then read again")
	out.Approval = p.Approval
	return out
}
