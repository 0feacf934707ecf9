package daemon

import (
	"context"
	"slices"
	"sync"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/coalesce"
)

// readers coalesces each daemon directory's credential reads, group-commit
// style: a read asked while two are on their way to the broker waits for one
// of them to land, and the reads that waited together go as one request (POST
// /v1/reads) with one proof. The broker still makes each read on its own
// (scope, rate limit, approval, a durable audit entry before the answer) and
// answers each on its own; what the reads share is the HTTP round trip and its
// proof. A read on an idle daemon goes at once, alone, as before. Nothing is
// cached: every read is its own read at the broker. Each directory has its own
// coalescer, so the daemons one process serves (a bench serves one per agent,
// maybe on several brokers) never wait for each other.
var readers = struct {
	mu sync.Mutex
	m  map[Dir]*coalesce.Coalescer[readCall, client.ReadOutcome]
}{m: map[Dir]*coalesce.Coalescer[readCall, client.ReadOutcome]{}}

// readCall is one read: of service, through the agent session a.
type readCall struct {
	a       *client.AgentSession
	service string
}

// readCredential reads service through a, the session of d, in one request
// with the reads asked at the same time. If ctx ends first, it returns at
// once; a read already sent is still made (and audited) by the broker, as when
// a caller gives up on a single read in flight.
func readCredential(ctx context.Context, d Dir, a *client.AgentSession, service string) (*apiv1.ReadResult, error) {
	readers.mu.Lock()
	c := readers.m[d]
	if c == nil {
		if len(readers.m) >= maxMemoSessions { // start over, as the session memo does; calls in flight keep theirs
			clear(readers.m)
		}
		c = &coalesce.Coalescer[readCall, client.ReadOutcome]{Run: readBatch, Max: apiv1.MaxReadBatch, Flights: 2, Timeout: brokerHTTP.Timeout}
		readers.m[d] = c
	}
	readers.mu.Unlock()
	o, err := c.Do(ctx, readCall{a, service})
	if err != nil {
		return nil, err
	}
	return o.Result, o.Err
}

// readBatch sends the reads of one batch: one request per agent session among
// them (a directory paired again while reads were queued has two),
// concurrently; a session with one read sends the plain single read.
func readBatch(ctx context.Context, in []readCall) ([]client.ReadOutcome, error) {
	out := make([]client.ReadOutcome, len(in))
	var groups [][]int // indexes into in, by session
	for i, c := range in {
		g := slices.IndexFunc(groups, func(g []int) bool { return in[g[0]].a.SameSession(c.a) })
		if g < 0 {
			groups = append(groups, []int{i})
		} else {
			groups[g] = append(groups[g], i)
		}
	}
	var wg sync.WaitGroup
	for _, idx := range groups {
		a := in[idx[0]].a
		wg.Go(func() {
			if len(idx) == 1 {
				out[idx[0]].Result, out[idx[0]].Err = a.Read(ctx, in[idx[0]].service)
				return
			}
			services := make([]string, len(idx))
			for j, i := range idx {
				services[j] = in[i].service
			}
			res, err := a.ReadMany(ctx, services)
			for j, i := range idx {
				if err != nil {
					out[i].Err = err
				} else {
					out[i] = res[j]
				}
			}
		})
	}
	wg.Wait()
	return out, nil
}
