package daemon

import (
	"context"
	"encoding/base64"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/agentkeys/agentkeys/internal/problem"
)

// A session paired before the daemon pinned the enclave has nothing to check
// the registry under: its tokens are refused (fail closed) and counted, unless
// dual verification is off. The counter is served at GET /metrics.
func TestDualVerifyFailsClosedWithoutPins(t *testing.T) {
	sess := &Session{Server: "http://127.0.0.1:1"}
	before := testutil.ToFloat64(dualVerifyRejected)
	err := Source{}.DualVerify(context.Background(), sess, "a.b.c")
	if p := problem.As(err); p.Code != CodeDenied || !strings.HasPrefix(p.Message, DualVerifyRejected+":") || p.Fix == "" {
		t.Fatalf("unpinned session: %v", err)
	}
	if got := testutil.ToFloat64(dualVerifyRejected); got != before+1 {
		t.Fatalf("rejections counted %v, want %v", got, before+1)
	}
	if err := (Source{Unverified: true}).DualVerify(context.Background(), sess, "a.b.c"); err != nil {
		t.Fatalf("--chain-verified-oidc=false: %v", err)
	}
	// pinned, but the ledger cannot be read: refused as UNREACHABLE, still counted
	sess.Enclave.PlatformKey, sess.Enclave.LedgerKey = strings.Repeat("a", 64), strings.Repeat("b", 64)
	jws := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"ES256","kid":"k"}`)) + ".e30." + base64.RawURLEncoding.EncodeToString(make([]byte, 64))
	err = Source{}.DualVerify(context.Background(), sess, jws)
	if p := problem.As(err); p.Code != CodeUnreachable || !strings.HasPrefix(p.Message, DualVerifyRejected+":") {
		t.Fatalf("unreachable ledger: %v", err)
	}
	rec := httptest.NewRecorder()
	Handler(Source{Dir: Dir(t.TempDir())}, slog.New(slog.DiscardHandler)).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	if rec.Code != 200 || !strings.Contains(string(body), "agentkeys_oidc_dual_verify_rejected_total") {
		t.Fatalf("GET /metrics: %d %s", rec.Code, body)
	}
}
