package api_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/daemon"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/seal"
)

// batchAgent is an agent paired with scope a, b, c and gated, its credentials
// a and c stored (gated needs the owner's approval for each read), b not.
type batchAgent struct {
	agentOf
	owner   *client.Session
	dir     daemon.Dir
	session *client.AgentSession
	boxKey  []byte // the channel key, decoded
}

func (e *env) batchAgent(t *testing.T) *batchAgent {
	t.Helper()
	owner, g, idKey := e.ownerKey(t)
	e.store(t, owner, g.Omni, "a", []byte("secret-a"), "")
	e.store(t, owner, g.Omni, "c", []byte("secret-c"), "")
	e.store(t, owner, g.Omni, "gated", []byte("secret-gated"), "required")
	d := e.pairAgent(t, owner, idKey, g.Wallet, "bot", "a", "b", "c", "gated")
	ag := e.loadAgent(t, d)
	return &batchAgent{agentOf: ag, owner: owner, dir: d, session: e.c.WithAgent(ag.token, ag.key), boxKey: mustB64(t, ag.channel)}
}

// open opens a read's session box.
func (a *batchAgent) open(t *testing.T, r *apiv1.ReadResult) string {
	t.Helper()
	v, err := seal.OpenBox(a.boxKey, []byte(r.Info), r.Sealed)
	if err != nil {
		t.Fatal(err)
	}
	return string(v)
}

// reads is the owner's usage rows of the agent's reads: "service result" each.
func (a *batchAgent) reads(t *testing.T) []string {
	t.Helper()
	rows, err := a.owner.Usage(context.Background(), url.Values{})
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, r := range rows {
		if r.Action == "read" && r.ActorRole == "agent" {
			out = append(out, r.Service+" "+r.Result)
		}
	}
	return out
}

// TestReadBatch: each read of a batch is the read a single request makes,
// answered on its own: read, refused for scope, missing, or waiting for the
// owner's approval; each has its own audit entry.
func TestReadBatch(t *testing.T) {
	e := newEnv(t, broker.Config{})
	a := e.batchAgent(t)
	out, err := a.session.ReadMany(context.Background(), []string{"a", "b", "d", "c", "gated", "a"})
	if err != nil {
		t.Fatal(err)
	}
	want := []struct {
		value string
		code  problem.Code
	}{{value: "secret-a"}, {code: problem.NotFound}, {code: problem.Denied}, {value: "secret-c"}, {code: problem.ApprovalNeeded}, {value: "secret-a"}}
	for i, w := range want {
		o := out[i]
		switch {
		case w.value != "" && (o.Err != nil || a.open(t, o.Result) != w.value):
			t.Errorf("read %d: %+v %v, want %q", i+1, o.Result, o.Err, w.value)
		case w.value == "" && (o.Result != nil || code(o.Err) != w.code):
			t.Errorf("read %d: %+v %v, want %s", i+1, o.Result, o.Err, w.code)
		}
	}
	var p *problem.Error
	if !errors.As(out[4].Err, &p) || p.Approval == nil || p.Approval.ID == "" {
		t.Errorf("the gated read names no approval request: %v", out[4].Err)
	}
	got := a.reads(t)
	if n := strings.Count(strings.Join(got, "\n"), "ok"); n != 3 || len(got) != 5 {
		t.Errorf("audited reads %q: want 3 released, 2 refused", got)
	}
}

// TestReadBatchSharesCommit: the audit entries of a batch's reads, released and
// refused alike, reach the ledger together and share one commit, where reads
// sent one by one take one each.
func TestReadBatchSharesCommit(t *testing.T) {
	e := newEnv(t, broker.Config{})
	a := e.batchAgent(t)
	for round := range 3 {
		commits, entries := e.commits.Load(), e.entries.Load()
		out, err := a.session.ReadMany(context.Background(), []string{"a", "b", "d", "c", "a", "c"})
		if err != nil {
			t.Fatal(err)
		}
		if out[1].Err == nil || out[2].Err == nil || out[5].Err != nil {
			t.Fatalf("round %d: %+v", round, out)
		}
		if c, n := e.commits.Load()-commits, e.entries.Load()-entries; c != 1 || n != 6 {
			t.Errorf("round %d: the batch took %d commits of %d entries, want 1 of 6", round, c, n)
		}
	}
}

// TestReadBatchRateLimit: every read of a batch spends the session's read
// limit; the reads past it are refused, each on its own, and released nothing.
func TestReadBatchRateLimit(t *testing.T) {
	e := newEnv(t, broker.Config{ReadLimit: 3})
	a := e.batchAgent(t)
	out, err := a.session.ReadMany(context.Background(), []string{"a", "a", "a", "a", "a"})
	if err != nil {
		t.Fatal(err)
	}
	ok, limited := 0, 0
	for i, o := range out {
		switch {
		case o.Err == nil && a.open(t, o.Result) == "secret-a":
			ok++
		case code(o.Err) == problem.RateLimited && o.Result == nil:
			limited++
		default:
			t.Errorf("read %d: %+v %v", i+1, o.Result, o.Err)
		}
	}
	if ok != 3 || limited != 2 {
		t.Fatalf("a batch of 5 under a limit of 3: %d read, %d limited", ok, limited)
	}
}

// TestReadBatchRefusals: a batch that is not one is refused whole, with the
// fix, and reads nothing: no services, too many, an unknown field, no proof.
func TestReadBatchRefusals(t *testing.T) {
	e := newEnv(t, broker.Config{})
	a := e.batchAgent(t)
	ctx := context.Background()
	many := make([]string, apiv1.MaxReadBatch+1)
	for i := range many {
		many[i] = "a"
	}
	for _, services := range [][]string{nil, {}, many} {
		if _, err := a.session.ReadMany(ctx, services); code(err) != problem.BadRequest || !strings.Contains(err.(*problem.Error).Fix, fmt.Sprint(apiv1.MaxReadBatch)) {
			t.Errorf("a batch of %d: %v", len(services), err)
		}
	}
	for name, body := range map[string]string{
		"unknown field": `{"services":["a"],"agent":"other"}`,
		"trailing data": `{"services":["a"]} {}`,
	} {
		if status, text := a.post(t, e, body, true); status != http.StatusBadRequest {
			t.Errorf("%s: %d %s", name, status, text)
		}
	}
	if status, text := a.post(t, e, `{"services":["a"]}`, false); status != http.StatusUnauthorized {
		t.Errorf("without a proof: %d %s", status, text)
	}
	if got := a.reads(t); len(got) != 0 {
		t.Fatalf("refused batches audited reads: %q", got)
	}
}

// post sends body to POST /v1/reads with the agent's token, and a fresh proof
// if proven; it returns the status and the answer.
func (a *batchAgent) post(t *testing.T, e *env, body string, proven bool) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, e.srv.URL+"/v1/reads", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+a.token)
	if proven {
		req.Header.Set("DPoP", a.proof(t, e.srv.URL+"/v1/reads"))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestDaemonReadsCoalesce: the daemon's concurrent reads through one session
// go to the broker together (POST /v1/reads), and each still gets its own
// value and its own audit entry; two daemons in one process (two owners'
// agents, as a bench serves them) read at the same time without mixing.
func TestDaemonReadsCoalesce(t *testing.T) {
	e := newEnv(t, broker.Config{ReadLimit: 10000})
	agents := []*batchAgent{e.batchAgent(t), e.batchAgent(t)}
	const readers, rounds = 16, 10
	for round := 1; ; round++ {
		var wg sync.WaitGroup
		errs := make(chan error, readers)
		for i := range readers {
			a := agents[i%2]
			service, want := "a", "secret-a"
			if i%4 >= 2 {
				service, want = "c", "secret-c"
			}
			wg.Go(func() {
				v, err := e.source(a.dir).Get(context.Background(), service, daemon.Wait{})
				if err != nil || string(v) != want {
					errs <- fmt.Errorf("%s: %q %v", service, v, err)
				}
			})
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			t.Fatal(err)
		}
		for _, a := range agents {
			if got := len(a.reads(t)); got != round*readers/2 {
				t.Fatalf("after %d reads by an agent, %d audited", round*readers/2, got)
			}
		}
		if batches := e.routeCount(t, "POST /v1/reads"); batches > 0 {
			t.Logf("round %d: %d batch requests", round, batches)
			return
		}
		if round == rounds {
			t.Fatalf("%d rounds of %d concurrent reads, none sent as a batch", rounds, readers)
		}
	}
}

// routeCount is the broker's count of 200 answers on route, from its metrics.
func (e *env) routeCount(t *testing.T, route string) int {
	t.Helper()
	resp, err := http.Get(e.srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for line := range strings.Lines(string(b)) {
		if strings.HasPrefix(line, `agentkeys_http_requests_total{code="200",route="`+route+`"} `) {
			var n int
			fmt.Sscan(strings.TrimSpace(line[strings.LastIndexByte(line, ' '):]), &n)
			return n
		}
	}
	return 0
}
