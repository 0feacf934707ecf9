package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
	"time"
)

func TestFromBuildInfo(t *testing.T) {
	stamped := fromBuildInfo(&debug.BuildInfo{
		Main: debug.Module{Path: "github.com/agentkeys/agentkeys", Version: "v0.0.0-20261204235655-88cae74265d0+dirty"},
		Settings: []debug.BuildSetting{{Key: "vcs", Value: "git"}, {Key: "vcs.revision", Value: "88cae74265d0792de5c956f0dd7d9d1512cebc15"},
			{Key: "vcs.time", Value: "2026-12-04T23:56:55Z"}, {Key: "vcs.modified", Value: "true"}},
	})
	if stamped.Version != "v0.0.0-20261204235655-88cae74265d0+dirty" || stamped.Revision != "88cae74265d0792de5c956f0dd7d9d1512cebc15" ||
		stamped.RevisionTime != "2026-12-04T23:56:55Z" || stamped.Modified == nil || !*stamped.Modified {
		t.Errorf("stamped build: %+v", stamped)
	}
	if l := stamped.line(); !strings.HasPrefix(l, "agentkeys v0.0.0-20261204235655-88cae74265d0+dirty (revision 88cae74265d0792de5c956f0dd7d9d1512cebc15, modified) go") {
		t.Errorf("line = %q", l)
	}
	clean := fromBuildInfo(&debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}, Settings: []debug.BuildSetting{
		{Key: "vcs.revision", Value: "abc"}, {Key: "vcs.modified", Value: "false"}}})
	if l := clean.line(); !strings.HasPrefix(l, "agentkeys v1.2.3 (revision abc) go") {
		t.Errorf("line = %q", l)
	}
	b, _ := json.Marshal(clean)
	if !strings.Contains(string(b), `"modified":false`) {
		t.Errorf("a clean tree must say modified false, not leave it out: %s", b)
	}
	for _, bi := range []*debug.BuildInfo{nil, {}} {
		b := fromBuildInfo(bi)
		if b.Version != "(devel)" || b.Revision != "" || b.Modified != nil || !strings.Contains(b.line(), "revision unknown") {
			t.Errorf("unstamped build: %+v %q", b, b.line())
		}
	}
}

func TestCheckInstalled(t *testing.T) {
	ctx := context.Background()
	cache := "/srv/agentkeys-gocache" // not under the temp dir: this case is the GOCACHE rule alone
	env := func(k string) string {
		if k == "GOCACHE" {
			return cache
		}
		return ""
	}
	for _, p := range []string{
		filepath.Join(cache, "ab", "abcd-d", "agentkeys"),                      // go run since Go 1.24
		filepath.Join(os.TempDir(), "go-build123", "b001", "exe", "agentkeys"), // go run before
		filepath.Join(os.TempDir(), "agentkeys"),                               // a download to /tmp
		"/home/u/.cache/go-build/ab/abcd-d/agentkeys",                          // another user's default cache
	} {
		if err := checkInstalled(ctx, p, env); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("checkInstalled(%s) = %v, want a refusal naming it", p, err)
		}
	}
	for _, p := range []string{"/usr/local/bin/agentkeys", "/home/u/go/bin/agentkeys", cache + "-other/agentkeys", "/opt/tmpfiles/agentkeys"} {
		if err := checkInstalled(ctx, p, env); err != nil {
			t.Errorf("checkInstalled(%s) = %v, want nil", p, err)
		}
	}
}

func TestLogHandler(t *testing.T) {
	var buf bytes.Buffer
	for format, wantJSON := range map[string]bool{"auto": true, "": true, "json": true, "text": false} {
		buf.Reset()
		h, err := logHandler(&buf, format, 0) // a buffer is not a terminal
		if err != nil {
			t.Fatal(err)
		}
		h.Handle(context.Background(), slog.NewRecord(time.Time{}, slog.LevelInfo, "hello", 0))
		if got := json.Valid(bytes.TrimSpace(buf.Bytes())); got != wantJSON {
			t.Errorf("--log-format %q to a buffer: JSON %v, want %v: %s", format, got, wantJSON, buf.String())
		}
	}
	if _, err := logHandler(&buf, "yaml", 0); err == nil || !strings.Contains(err.Error(), "yaml") {
		t.Errorf("--log-format yaml: %v", err)
	}
}
