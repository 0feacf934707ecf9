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
// revoked grant acts on the next message.
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
