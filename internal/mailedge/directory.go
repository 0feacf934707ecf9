package mailedge

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/agentkeys/agentkeys/internal/apiv1"
)

// Directory is what the edge asks its broker: for an inbox address
// (lowercase), whether it takes mail and under which object-store prefix, and
// which rights an agent (its omni, from an identity token the edge verified;
// "" asks for none) holds on it. An error is the broker not answering (the
// edge answers 451, try later); an unknown or deleted inbox is Live false.
//
// Two implementations: LookupFunc(b.MailLookup) in the broker's process
// (server --mail-domain), and Remote for agentkeys mail-edge, which asks over
// POST /v1/mail/edge/lookup. Both end in the same broker method.
type Directory interface {
	Lookup(ctx context.Context, address, agent string) (apiv1.MailLookup, error)
}

// LookupFunc is a Directory that calls a function in this process: the
// embedded edge passes the broker's MailLookup.
type LookupFunc func(ctx context.Context, address, agent string) (apiv1.MailLookup, error)

// Lookup implements Directory.
func (f LookupFunc) Lookup(ctx context.Context, address, agent string) (apiv1.MailLookup, error) {
	return f(ctx, address, agent)
}

// Holds reports whether agent (omni) holds right (mail.Read, mail.Send) on
// the live inbox at address.
func Holds(ctx context.Context, d Directory, agent, address, right string) (bool, error) {
	if agent == "" {
		return false, nil
	}
	l, err := d.Lookup(ctx, strings.ToLower(address), agent)
	return err == nil && l.Live && slices.Contains(l.Rights, right), err
}

// Remote is the Directory of a separate edge process: it asks the broker at
// its URL, presenting the edge secret (server --mail-edge-secret) in the
// apiv1.MailEdgeSecretHeader header. It never caches: a deleted inbox or a
// revoked grant acts on the next message (the edge puts a Cache in front of
// it for inbound recipients).
type Remote struct {
	url    string
	secret string
	hc     *http.Client
}

// NewRemote returns the Directory of the broker at server (its base URL).
func NewRemote(server string, secret []byte, hc *http.Client) *Remote {
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	return &Remote{url: strings.TrimRight(server, "/") + "/v1/mail/edge/", secret: string(secret), hc: hc}
}

// Lookup implements Directory.
func (r *Remote) Lookup(ctx context.Context, address, agent string) (apiv1.MailLookup, error) {
	var out apiv1.MailLookup
	err := r.post(ctx, "lookup", apiv1.MailLookupBody{Address: address, Agent: agent}, &out)
	return out, err
}

// Inboxes asks the broker which live inboxes the agent (omni) holds rights
// on (POST /v1/mail/edge/inboxes).
func (r *Remote) Inboxes(ctx context.Context, agent string) ([]apiv1.MailLookup, error) {
	var out apiv1.MailInboxes
	if err := r.post(ctx, "inboxes", apiv1.MailInboxesBody{Agent: agent}, &out); err != nil {
		return nil, err
	}
	return out.Inboxes, nil
}

// LookupTTL is how long a Cache keeps an inbox's answer: the bound on how
// long a separate edge still takes mail for an inbox after it was deleted.
const LookupTTL = 2 * time.Second

// maxCached bounds the answers a Cache holds; when full it starts afresh.
const maxCached = 10_000

// Cache is a Directory that remembers, for LookupTTL, the answers to inbound
// recipient lookups (agent "") that found a live inbox, so that a separate
// edge does not ask the broker once per message for the same recipient. What
// it never keeps: an unknown or deleted inbox (a new inbox takes mail at
// once; guessing addresses costs a lookup each, and the sender's rate), an
// error, and any lookup for an agent's rights (submission and IMAP ask the
// broker every time, so a revoked grant acts on the next message). An inbox
// deleted at the broker is refused here within LookupTTL. Safe for
// concurrent use.
type Cache struct {
	next Directory
	now  func() time.Time
	mu   sync.Mutex
	live map[string]cached
}

type cached struct {
	l       apiv1.MailLookup
	expires time.Time
}

// NewCache puts a Cache in front of next; now is the clock (nil: time.Now).
func NewCache(next Directory, now func() time.Time) *Cache {
	if now == nil {
		now = time.Now
	}
	return &Cache{next: next, now: now, live: map[string]cached{}}
}

// Lookup implements Directory.
func (c *Cache) Lookup(ctx context.Context, address, agent string) (apiv1.MailLookup, error) {
	if agent != "" {
		return c.next.Lookup(ctx, address, agent)
	}
	now := c.now()
	c.mu.Lock()
	e, ok := c.live[address]
	c.mu.Unlock()
	if ok && now.Before(e.expires) && !now.Before(e.expires.Add(-LookupTTL)) {
		e.l.Rights = slices.Clone(e.l.Rights)
		return e.l, nil
	}
	l, err := c.next.Lookup(ctx, address, agent)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil || !l.Live {
		delete(c.live, address)
		return l, err
	}
	if len(c.live) >= maxCached {
		clear(c.live)
	}
	c.live[address] = cached{l: l, expires: now.Add(LookupTTL)}
	return l, nil
}

func (r *Remote) post(ctx context.Context, route string, in, out any) error {
	body, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.url+route, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(apiv1.MailEdgeSecretHeader, r.secret)
	res, err := r.hc.Do(req)
	if err != nil {
		return fmt.Errorf("mail edge: asking the broker: %w", err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(io.LimitReader(res.Body, 4<<20))
	if err != nil {
		return fmt.Errorf("mail edge: reading the broker's answer: %w", err)
	}
	if res.StatusCode != http.StatusOK {
		var p struct {
			Error struct{ Code, Message, Fix string }
		}
		json.Unmarshal(b, &p)
		return fmt.Errorf("mail edge: the broker answered %d %s: %s (%s)", res.StatusCode, p.Error.Code, p.Error.Message, p.Error.Fix)
	}
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("mail edge: the broker's answer to %s is malformed: %w", route, err)
	}
	return nil
}
