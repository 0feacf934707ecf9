package ledger

import (
	"context"
	"fmt"
)

// Append signs an entry of kind with origin's key and returns once it is durable.
// payload is marshalled with encoding/json.
func (l *Ledger) Append(ctx context.Context, origin, kind string, payload any) (Entry, error) {
	return l.begin(ctx, &request{origin: origin, kind: kind}, payload)()
}

// AppendBlob is Append that also stores blob, content-addressed at
// BlobKey(hex(SHA-256(blob))), in the same transaction as the entry.
func (l *Ledger) AppendBlob(ctx context.Context, origin, kind string, payload any, blob []byte) (Entry, error) {
	return l.begin(ctx, &request{origin: origin, kind: kind, blob: blob}, payload)()
}

// Begin queues an append like Append and returns at once; wait blocks until the
// entry is durable (or refused) and returns what Append would have. A caller can
// work while its entry is committed: the OIDC mint signs its token meanwhile.
func (l *Ledger) Begin(ctx context.Context, origin, kind string, payload any) (wait func() (Entry, error)) {
	return l.begin(ctx, &request{origin: origin, kind: kind}, payload)
}

// begin marshals payload into r, queues r and returns its wait.
func (l *Ledger) begin(ctx context.Context, r *request, payload any) func() (Entry, error) {
	var err error
	if r.payload, err = MarshalPayload(payload); err != nil {
		err = fmt.Errorf("ledger: %s payload: %w", r.kind, err)
	} else if err = l.enqueue(ctx, r); err == nil {
		return func() (Entry, error) { return first(l.await(ctx, r)) }
	}
	return failed(err)
}

func first(es []Entry, err error) (Entry, error) {
	if err != nil {
		return Entry{}, err
	}
	return es[0], nil
}

// BeginEach queues several appends at once and returns a wait for each, as
// Begin would for each one: each entry is judged, signed and answered on its
// own (one refused does not refuse the others, unlike AppendAll). They reach
// the preparer together, so they share a batch and its commit instead of
// taking one each (the reads of one POST /v1/reads).
func (l *Ledger) BeginEach(ctx context.Context, reqs []Req) []func() (Entry, error) {
	waits := make([]func() (Entry, error), len(reqs))
	bundle := &request{}
	var queued []int // the indexes of the requests in the bundle
	for i, q := range reqs {
		r, err := q.request()
		if err != nil {
			waits[i] = failed(err)
			continue
		}
		r.done = make(chan result, 1)
		bundle.each, queued = append(bundle.each, r), append(queued, i)
		waits[i] = func() (Entry, error) { return first(l.await(ctx, r)) }
	}
	if len(queued) > 0 {
		if err := l.enqueue(ctx, bundle); err != nil {
			for _, i := range queued {
				waits[i] = failed(err)
			}
		}
	}
	return waits
}

func failed(err error) func() (Entry, error) { return func() (Entry, error) { return Entry{}, err } }

// Submit appends an entry signed outside the enclave (governance). An entry in
// entry form must link to the current head; if the head moved the result is
// ErrConflict and the caller re-signs against the new head. An entry in proposal
// form (IsProposal) is placed at the head by the ledger: its seq, prev_hash,
// time and salt are the ledger's.
func (l *Ledger) Submit(ctx context.Context, e Entry) (Entry, error) {
	return first(l.sendAll(ctx, &request{external: &e}))
}

// Req is one entry of an AppendAll group.
type Req struct {
	Origin, Kind string
	Payload      any
	Blob         []byte // optional, as for AppendBlob
}

// AppendAll appends entries in order and atomically: each is admitted and folded
// on top of the ones before it, and either all are durable when it returns or
// none was written.
func (l *Ledger) AppendAll(ctx context.Context, reqs []Req) ([]Entry, error) {
	if len(reqs) == 0 {
		return nil, nil
	}
	g := &request{group: make([]*request, len(reqs))}
	for i, q := range reqs {
		var err error
		if g.group[i], err = q.request(); err != nil {
			return nil, err
		}
	}
	return l.sendAll(ctx, g)
}

// request is the append q asks for, its payload marshalled.
func (q Req) request() (*request, error) {
	p, err := MarshalPayload(q.Payload)
	if err != nil {
		return nil, fmt.Errorf("ledger: %s payload: %w", q.Kind, err)
	}
	return &request{origin: q.Origin, kind: q.Kind, payload: p, blob: q.Blob}, nil
}

func (l *Ledger) sendAll(ctx context.Context, r *request) ([]Entry, error) {
	if err := l.enqueue(ctx, r); err != nil {
		return nil, err
	}
	return l.await(ctx, r)
}

// QueueDepth is how many appends are queued for the writer and not yet taken
// into a batch: a depth that stays high means appends arrive faster than the
// store commits them.
func (l *Ledger) QueueDepth() int { return len(l.reqs) }

// enqueue hands r to the preparer.
func (l *Ledger) enqueue(ctx context.Context, r *request) error {
	r.done = make(chan result, 1)
	select {
	case <-l.quit:
		return ErrClosed
	default:
	}
	select {
	case l.reqs <- r:
		return nil
	case <-l.quit:
		return ErrClosed
	case <-ctx.Done():
		return ctx.Err()
	}
}

// await waits for r's answer. An append whose batch lost the store to another
// process's commit, or was voided, wrote nothing: it is queued again, to be
// prepared on top of what the committer followed meanwhile. A submitted entry
// is not: it links to the head its signer saw (Submit).
func (l *Ledger) await(ctx context.Context, r *request) ([]Entry, error) {
	for attempt := 1; ; attempt++ {
		var res result
		select {
		case res = <-r.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
		if res.err == nil || r.external != nil || !retryable(res.err) || attempt == maxRetries {
			return res.es, res.err
		}
		if err := l.enqueue(ctx, r); err != nil {
			return nil, err
		}
	}
}
