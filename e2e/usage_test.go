package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

type usagePage struct {
	Usage []struct {
		Seq                    uint64
		Action, Service, Agent string
	}
	Next *uint64
}

func (h *harness) usage(home string, args ...string) usagePage {
	h.t.Helper()
	var p usagePage
	out := h.akOK(home, append([]string{"usage", "--json"}, args...)...)
	if err := json.Unmarshal([]byte(out), &p); err != nil {
		h.t.Fatalf("usage --json %v: %q", args, out)
	}
	return p
}

// TestUsageFiltersAndPaging: `usage --service --agent --since --limit` and
// paging with --from (the seq the previous page's "next" named).
func TestUsageFiltersAndPaging(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir()})
	o := h.akNewOwner(s)
	h.akStore(o, "openai", "sk-openai-"+randomHex(16))
	h.akStore(o, "github", "ghp-"+randomHex(16))
	h.akStore(o, "openai", "sk-openai-"+randomHex(16))
	h.akStore(o, "slack", "xoxb-"+randomHex(16), "--agent", "bot")
	h.mustOK(h.cliIn(o.home, "", true, "read", "openai"), "read") // prints the secret: kept out of the searched output

	all := h.usage(o.home, "--limit", "1000")
	if len(all.Usage) < 5 || all.Next != nil {
		t.Fatalf("usage --limit 1000: %d rows, next %v", len(all.Usage), all.Next)
	}
	// page through two at a time: the same rows, in order, each once
	var paged []uint64
	from := "0"
	for range 20 {
		p := h.usage(o.home, "--limit", "2", "--from", from)
		if len(p.Usage) > 2 {
			t.Fatalf("--limit 2 returned %d rows", len(p.Usage))
		}
		for _, u := range p.Usage {
			paged = append(paged, u.Seq)
		}
		if p.Next == nil {
			break
		}
		from = fmt.Sprint(*p.Next)
	}
	var want []uint64
	for _, u := range all.Usage {
		want = append(want, u.Seq)
	}
	if fmt.Sprint(paged) != fmt.Sprint(want) {
		t.Errorf("paged seqs %v, all %v", paged, want)
	}

	for _, u := range h.usage(o.home, "--service", "openai").Usage {
		if u.Service != "openai" {
			t.Errorf("--service openai has %+v", u)
		}
	}
	if p := h.usage(o.home, "--service", "openai"); len(p.Usage) != 3 { // two stores, one read
		t.Errorf("--service openai: %d rows", len(p.Usage))
	}
	if p := h.usage(o.home, "--agent", "bot"); len(p.Usage) != 1 || p.Usage[0].Service != "slack" {
		t.Errorf("--agent bot: %+v", p.Usage)
	}
	if p := h.usage(o.home, "--since", "1h"); len(p.Usage) != len(all.Usage) {
		t.Errorf("--since 1h: %d rows of %d", len(p.Usage), len(all.Usage))
	}
	if p := h.usage(o.home, "--since", time.Now().Add(48*time.Hour).Format("2006-01-02")); len(p.Usage) != 0 {
		t.Errorf("--since the day after tomorrow: %d rows", len(p.Usage))
	}
	// text: a hint names the next page
	if r := h.cli(o.home, "usage", "--limit", "1"); r.code != 0 || !strings.Contains(r.stderr, "--from") || strings.Count(r.stdout, "\n") != 2 {
		t.Errorf("usage --limit 1: exit %d stdout %q stderr %q", r.code, r.stdout, r.stderr)
	}
	for _, bad := range [][]string{{"--limit", "0"}, {"--limit", "1001"}, {"--from", "-1"}, {"--since", "yesterday"}} {
		if r := h.cli(o.home, append([]string{"usage"}, bad...)...); r.code != 2 || !strings.Contains(r.stderr, "Fix:") {
			t.Errorf("usage %v: exit %d %q", bad, r.code, r.stderr)
		}
	}
}
