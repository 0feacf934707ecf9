package e2e

import (
	"bytes"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/daemon"
)

// entriesLog is a reverse proxy that records the from= of every GET
// /v1/ledger/entries it forwards.
type entriesLog struct {
	mu       sync.Mutex
	froms    []uint64
	rollback uint64 // when set, entries from this seq on are not served (a rolled-back chain)
}

func (l *entriesLog) take() []uint64 {
	f := l.froms
	l.froms = nil
	return f
}

// proxy serves on loopback; the broker behind it comes later (to).
func (l *entriesLog) proxy(t *testing.T) (proxyURL string, to func(target string)) {
	var mu sync.Mutex
	var rp *httputil.ReverseProxy
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v1/ledger/entries" {
			from, _ := strconv.ParseUint(r.URL.Query().Get("from"), 10, 64)
			l.mu.Lock()
			l.froms = append(l.froms, from)
			rb := l.rollback
			l.mu.Unlock()
			if rb != 0 && from >= rb {
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprintf(w, `{"entries":[],"next":%d}`, from)
				return
			}
		}
		mu.Lock()
		p := rp
		mu.Unlock()
		p.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, func(target string) {
		u, _ := url.Parse(target)
		mu.Lock()
		rp = httputil.NewSingleHostReverseProxy(u)
		mu.Unlock()
	}
}

// TestDualVerifyViewPersisted: a one-shot daemon command (daemon oidc-token,
// what an SDK's credential process runs on every refresh) keeps the ledger
// view it verified in the daemon directory (0600) and resumes from it: the
// next call reads only the entries appended since, not the whole chain. The
// time of each call on a ledger of a few thousand entries is logged.
func TestDualVerifyViewPersisted(t *testing.T) {
	h := newHarness(t)
	var l entriesLog
	via, to := l.proxy(t)
	s := h.start(serverOpts{home: t.TempDir(), args: []string{"--public-url", via, "--oidc-audience", "sts.amazonaws.com", "--read-rate", "100000/1m"}})
	to(s.url)
	own := h.akNewOwner(s)
	// a ledger of a few thousand entries: credential reads by bench agents
	for range 20 {
		if n := len(s.allEntries()); n >= 3000 {
			break
		}
		runBench(t, h, own.home, "read", "--server", s.url, "--agents", "4", "--duration", "2s")
	}
	n := len(s.allEntries())
	if n < 3000 {
		t.Fatalf("only %d entries", n)
	}
	dh := h.pairAgentIn(t.TempDir(), &server{h: h, url: via}, own, "bot", "oidc:*")
	token := func(what string) {
		t.Helper()
		start := time.Now()
		h.akOK(dh, "daemon", "oidc-token", "--audience", "sts.amazonaws.com", "--out", filepath.Join(t.TempDir(), "token"))
		t.Logf("%s daemon oidc-token on a ledger of %d entries: %s", what, len(s.allEntries()), time.Since(start).Round(time.Millisecond))
	}
	l.take()
	token("first")
	first := l.take()
	if len(first) == 0 || first[0] != 0 {
		t.Fatalf("the first call read the chain from %v", first)
	}
	token("second")
	second := l.take()
	if fi, err := os.Stat(daemon.DirOf(dh).ViewPath()); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the verified view is not kept in the daemon dir (0600): %v", err)
	}
	for _, f := range second {
		if f < uint64(n)-1 {
			t.Fatalf("the second call read the chain again from seq %d (entries requested from %v)", f, second)
		}
	}

	// A chain rolled back behind what the daemon verified is refused, the
	// saved view kept; the fix names the file to remove if the operator did
	// restore the ledger from a backup.
	view := daemon.DirOf(dh).ViewPath()
	kept := fileBytes(t, view)
	l.mu.Lock()
	l.rollback = uint64(n) - 10
	l.mu.Unlock()
	r := h.cli(dh, "daemon", "oidc-token", "--audience", "sts.amazonaws.com", "--out", filepath.Join(t.TempDir(), "token"))
	if r.code == 0 || !strings.Contains(r.stderr, "DualVerifyRejected") || !strings.Contains(r.stderr, "rolled back or forked") || !strings.Contains(r.stderr, "remove "+view) {
		t.Fatalf("a rolled-back chain: exit %d %s", r.code, r.stderr)
	}
	if !bytes.Equal(kept, fileBytes(t, view)) {
		t.Fatal("the saved view changed after a refused chain")
	}
	l.mu.Lock()
	l.rollback = 0
	l.mu.Unlock()
	// A damaged saved view is only a cache: the next call walks from genesis
	// and saves it anew.
	if err := os.WriteFile(view, []byte("damaged"), 0o600); err != nil {
		t.Fatal(err)
	}
	l.take()
	token("after the saved view was damaged:")
	if f := l.take(); len(f) == 0 || f[0] != 0 {
		t.Fatalf("a damaged view was not rebuilt from genesis (entries requested from %v)", f)
	}
	if b := fileBytes(t, view); string(b) == "damaged" {
		t.Fatal("the rebuilt view was not saved")
	}
}
