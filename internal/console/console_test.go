package console

import (
	"context"
	"crypto/ed25519"
	"crypto/hpke"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/api"
	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/dpop"
)

const addr = "127.0.0.1:41999" // the console's listen address in these tests (never bound)

// fixture is a console of a real owner on a real broker (in process, behind
// the real API handler), with one pending pair request.
type fixture struct {
	t       *testing.T
	con     *Console
	owner   *client.Session
	pending string // a pending pair request's id
	vvc     string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	base := t.TempDir()
	var h http.Handler
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { h.ServeHTTP(w, r) }))
	t.Cleanup(srv.Close)
	b, err := broker.Open(broker.Config{DataDir: filepath.Join(base, "server"), PlatformKeyFile: filepath.Join(base, "platform.key"), Issuer: srv.URL})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(b.Close)
	if err := b.Start(context.Background()); err != nil {
		t.Fatal(err)
	}
	h = api.New(b, api.Config{})
	c, err := client.New(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	_, id, _ := ed25519.GenerateKey(rand.Reader)
	l := apiv1.Login{PublicKey: hex.EncodeToString(id.Public().(ed25519.PublicKey)), Server: srv.URL, Time: time.Now().Unix(), Nonce: hex.EncodeToString(id[:16])}
	apiv1.SignLogin(&l, id)
	g, err := c.CreateAccount(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := dpop.NewKey()
	jwk, _ := dpop.PublicJWK(key)
	hk, _ := hpke.MLKEM768X25519().GenerateKey()
	r := apiv1.PairRequest{Owner: g.Wallet, Alias: "bot", Scope: []string{"openai"}, ProofJWK: string(jwk),
		HPKEPublic: base64.StdEncoding.EncodeToString(hk.PublicKey().Bytes()), ValidUntil: time.Now().Add(time.Minute).Unix()}
	if err := apiv1.SignPairRequest(&r, key); err != nil {
		t.Fatal(err)
	}
	created, err := c.RequestPairing(ctx, r)
	if err != nil {
		t.Fatal(err)
	}
	owner := c.WithToken(g.Token)
	con, err := New(Config{Session: owner, Server: srv.URL, Omni: g.Omni, Identity: id, Addr: addr})
	if err != nil {
		t.Fatal(err)
	}
	p, err := owner.PendingPair(ctx, created.ID)
	if err != nil {
		t.Fatal(err)
	}
	return &fixture{t: t, con: con, owner: owner, pending: created.ID, vvc: p.VVC}
}

// do sends a request to the console as a browser at addr would, with extra
// changes made by edit.
func (f *fixture) do(method, target string, form url.Values, edit func(*http.Request)) *httptest.ResponseRecorder {
	f.t.Helper()
	var req *http.Request
	if form != nil {
		req = httptest.NewRequest(method, target, strings.NewReader(form.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	} else {
		req = httptest.NewRequest(method, target, nil)
	}
	req.Host = addr
	if method == http.MethodPost {
		req.Header.Set("Origin", "http://"+addr)
	}
	if edit != nil {
		edit(req)
	}
	w := httptest.NewRecorder()
	f.con.ServeHTTP(w, req)
	return w
}

// path is the URL path of a page under the console's secret prefix.
func (f *fixture) path(p string) string { return f.con.base + strings.TrimPrefix(p, "/") }

var csrfField = regexp.MustCompile(`name="csrf" value="([0-9a-f]{64})"`)

// login spends the login token and returns the session cookie and the CSRF
// token of the pages.
func (f *fixture) login() (*http.Cookie, string) {
	f.t.Helper()
	u, _ := url.Parse(f.con.LoginURL())
	w := f.do(http.MethodGet, u.RequestURI(), nil, nil)
	if w.Code != http.StatusSeeOther || len(w.Result().Cookies()) != 1 {
		f.t.Fatalf("login: %d %q", w.Code, w.Body.String())
	}
	ck := w.Result().Cookies()[0]
	if !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != f.con.base || len(f.con.base) < 34 {
		f.t.Fatalf("session cookie %+v is not HttpOnly, SameSite=Strict, Path=the secret prefix", ck)
	}
	page := f.do(http.MethodGet, f.path("/pairing"), nil, func(r *http.Request) { r.AddCookie(ck) })
	m := csrfField.FindStringSubmatch(page.Body.String())
	if page.Code != http.StatusOK || m == nil {
		f.t.Fatalf("pairing page: %d, no CSRF field: %s", page.Code, page.Body.String())
	}
	return ck, m[1]
}

func (f *fixture) stillPending() bool {
	f.t.Helper()
	_, err := f.owner.PendingPair(context.Background(), f.pending)
	return err == nil
}

// TestRequestsRefused: every check in front of the pages refuses its request
// and changes nothing; the same request with everything right does act.
func TestRequestsRefused(t *testing.T) {
	f := newFixture(t)
	if w := f.do(http.MethodGet, f.path("/agents"), nil, nil); w.Code != http.StatusUnauthorized {
		t.Fatalf("before login: %d", w.Code)
	}
	ck, csrf := f.login()
	withCookie := func(r *http.Request) { r.AddCookie(ck) }
	deny := url.Values{"csrf": {csrf}, "id": {f.pending}}
	wrongCSRF := url.Values{"csrf": {strings.Repeat("0", 64)}, "id": {f.pending}}
	cases := []struct {
		name   string
		form   url.Values
		edit   func(*http.Request)
		status int
	}{
		{"no cookie", deny, nil, http.StatusUnauthorized},
		{"a wrong cookie", deny, func(r *http.Request) { r.AddCookie(&http.Cookie{Name: cookieName, Value: strings.Repeat("a", 64)}) }, http.StatusUnauthorized},
		{"a wrong CSRF token", wrongCSRF, withCookie, http.StatusForbidden},
		{"no CSRF token", url.Values{"id": {f.pending}}, withCookie, http.StatusForbidden},
		{"a foreign Host", deny, func(r *http.Request) { withCookie(r); r.Host = "evil.example:41999" }, http.StatusMisdirectedRequest},
		{"the Host without the port", deny, func(r *http.Request) { withCookie(r); r.Host = "127.0.0.1" }, http.StatusMisdirectedRequest},
		{"a foreign Origin", deny, func(r *http.Request) { withCookie(r); r.Header.Set("Origin", "http://evil.example") }, http.StatusForbidden},
		{"no Origin", deny, func(r *http.Request) { withCookie(r); r.Header.Del("Origin") }, http.StatusForbidden},
		{"a null Origin", deny, func(r *http.Request) { withCookie(r); r.Header.Set("Origin", "null") }, http.StatusForbidden},
	}
	for _, tc := range cases {
		if w := f.do(http.MethodPost, f.path("/pairing/deny"), tc.form, tc.edit); w.Code != tc.status {
			t.Errorf("%s: %d %q, want %d", tc.name, w.Code, w.Body.String(), tc.status)
		}
		if !f.stillPending() {
			t.Fatalf("%s: the request was decided", tc.name)
		}
	}
	// Reading pages is refused the same way without the cookie, from a foreign
	// Host or Origin.
	for name, edit := range map[string]func(*http.Request){
		"no cookie":      nil,
		"foreign Host":   func(r *http.Request) { withCookie(r); r.Host = "rebound.example:41999" },
		"foreign Origin": func(r *http.Request) { withCookie(r); r.Header.Set("Origin", "http://evil.example") },
	} {
		for _, page := range []string{"/agents", "/pairing/rows", "/activity"} {
			if w := f.do(http.MethodGet, f.path(page), nil, edit); w.Code < 400 || strings.Contains(w.Body.String(), f.pending) {
				t.Errorf("GET %s with %s: %d", page, name, w.Code)
			}
		}
	}
	// Outside the secret prefix nothing is served, with the cookie or not.
	for _, p := range []string{"/agents", "/pairing/rows", "/", "/static/console.js"} {
		if w := f.do(http.MethodGet, p, nil, withCookie); w.Code != http.StatusNotFound {
			t.Errorf("GET %s outside the prefix: %d", p, w.Code)
		}
	}
	if w := f.do(http.MethodPost, "/pairing/deny", deny, withCookie); w.Code != http.StatusNotFound || !f.stillPending() {
		t.Errorf("POST outside the prefix: %d", w.Code)
	}
	// Everything right: the denial acts.
	if w := f.do(http.MethodPost, f.path("/pairing/deny"), deny, withCookie); w.Code != http.StatusSeeOther {
		t.Fatalf("the right request: %d %q", w.Code, w.Body.String())
	}
	if f.stillPending() {
		t.Fatal("the right request did not deny the pair request")
	}
}

// TestLoginTokenOnce: the login URL works once; replayed, or with another
// token, it is refused and sets no cookie; the first browser's session stays.
func TestLoginTokenOnce(t *testing.T) {
	f := newFixture(t)
	u, _ := url.Parse(f.con.LoginURL())
	if w := f.do(http.MethodGet, f.path("/login?token=")+strings.Repeat("0", 64), nil, nil); w.Code != http.StatusForbidden || len(w.Result().Cookies()) != 0 {
		t.Fatalf("a wrong token: %d", w.Code)
	}
	if w := f.do(http.MethodGet, f.path("/login"), nil, nil); w.Code != http.StatusForbidden || len(w.Result().Cookies()) != 0 {
		t.Fatalf("no token: %d", w.Code)
	}
	ck, _ := f.login()
	if w := f.do(http.MethodGet, u.RequestURI(), nil, nil); w.Code != http.StatusForbidden || len(w.Result().Cookies()) != 0 {
		t.Fatalf("the replayed login URL: %d, cookies %v", w.Code, w.Result().Cookies())
	}
	if w := f.do(http.MethodGet, u.RequestURI(), nil, func(r *http.Request) { r.Host = "evil.example" }); w.Code != http.StatusMisdirectedRequest {
		t.Fatalf("the login URL at another Host: %d", w.Code)
	}
	if w := f.do(http.MethodGet, f.path("/agents"), nil, func(r *http.Request) { r.AddCookie(ck) }); w.Code != http.StatusOK {
		t.Fatalf("the first session after a replay: %d", w.Code)
	}
}

// TestLoginTokenHostBound: the login URL spent at a foreign Host is not spent.
func TestLoginTokenHostBound(t *testing.T) {
	f := newFixture(t)
	u, _ := url.Parse(f.con.LoginURL())
	if w := f.do(http.MethodGet, u.RequestURI(), nil, func(r *http.Request) { r.Host = "evil.example:41999" }); w.Code != http.StatusMisdirectedRequest {
		t.Fatalf("login at a foreign Host: %d", w.Code)
	}
	f.login() // still good
}

// TestHeaders: every answer carries the CSP and framing headers; the page
// loads no script or style but the embedded ones.
func TestHeaders(t *testing.T) {
	f := newFixture(t)
	ck, _ := f.login()
	w := f.do(http.MethodGet, f.path("/agents"), nil, func(r *http.Request) { r.AddCookie(ck) })
	csp := w.Header().Get("Content-Security-Policy")
	for _, want := range []string{"default-src 'none'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "form-action 'self'"} {
		if !strings.Contains(csp, want) {
			t.Errorf("CSP %q lacks %q", csp, want)
		}
	}
	if strings.Contains(csp, "unsafe-inline") || w.Header().Get("X-Frame-Options") != "DENY" || w.Header().Get("Cache-Control") != "no-store" {
		t.Errorf("headers: %v", w.Header())
	}
	body := w.Body.String()
	if strings.Contains(body, "<script>") || strings.Contains(body, "style=") || strings.Contains(body, "http://") || strings.Contains(body, "https://") {
		t.Errorf("the page inlines a script or style, or links off the console:\n%s", body)
	}
	for _, asset := range []string{"/static/console.js", "/static/console.css"} {
		if w := f.do(http.MethodGet, f.path(asset), nil, nil); w.Code != http.StatusOK || w.Body.Len() == 0 {
			t.Errorf("%s: %d", asset, w.Code)
		}
	}
	if w := f.do(http.MethodPut, f.path("/agents"), nil, func(r *http.Request) { r.AddCookie(ck) }); w.Code != http.StatusMethodNotAllowed {
		t.Errorf("PUT: %d", w.Code)
	}
}

// TestApproveNeedsTypedVVC: an approval with no or another VVC is refused and
// leaves the request pending; the daemon's VVC approves it (signed with the
// owner's key: the broker accepts it).
func TestApproveNeedsTypedVVC(t *testing.T) {
	f := newFixture(t)
	ck, csrf := f.login()
	withCookie := func(r *http.Request) { r.AddCookie(ck) }
	other := "000000"
	if f.vvc == other {
		other = "111111"
	}
	for _, typed := range []string{"", other, f.vvc[:5]} {
		f.do(http.MethodPost, f.path("/pairing/approve"), url.Values{"csrf": {csrf}, "id": {f.pending}, "vvc": {typed}}, withCookie)
		if !f.stillPending() {
			t.Fatalf("VVC %q approved the request", typed)
		}
		page := f.do(http.MethodGet, f.path("/pairing"), nil, withCookie).Body.String()
		if !strings.Contains(page, "does not match") {
			t.Fatalf("VVC %q: the page does not say why: %s", typed, page)
		}
	}
	f.do(http.MethodPost, f.path("/pairing/approve"), url.Values{"csrf": {csrf}, "id": {f.pending}, "vvc": {" " + f.vvc + " "}}, withCookie)
	if f.stillPending() {
		t.Fatal("the right VVC did not approve the request")
	}
	agents := f.do(http.MethodGet, f.path("/agents"), nil, withCookie).Body.String()
	if !strings.Contains(agents, "Approved: agent bot") || !strings.Contains(agents, `id="agent-bot"`) {
		t.Fatalf("the agents page after approval: %s", agents)
	}
}

// TestCheckListen: loopback is served; another address only when --listen
// names it; a wildcard or host name never.
func TestCheckListen(t *testing.T) {
	for _, tc := range []struct {
		addr     string
		explicit bool
		ok       bool
	}{
		{"127.0.0.1:0", false, true},
		{"[::1]:8091", true, true},
		{"127.0.0.1:8091", true, true},
		{"192.168.1.10:8091", false, false},
		{"192.168.1.10:8091", true, true},
		{"0.0.0.0:8091", true, false},
		{"[::]:8091", true, false},
		{":8091", true, false},
		{"localhost:8091", true, false},
		{"127.0.0.1", true, false},
	} {
		if err := CheckListen(tc.addr, tc.explicit); (err == nil) != tc.ok {
			t.Errorf("CheckListen(%q, explicit %v) = %v, want ok %v", tc.addr, tc.explicit, err, tc.ok)
		}
	}
}

// TestTeardownNamesWhatIsDeleted: the teardown confirmation lists the agent's
// own credentials by name and version, and the confirmed teardown deletes
// exactly those; an owner-wide credential stays.
func TestTeardownNamesWhatIsDeleted(t *testing.T) {
	f := newFixture(t)
	ck, csrf := f.login()
	withCookie := func(r *http.Request) { r.AddCookie(ck) }
	f.do(http.MethodPost, f.path("/pairing/approve"), url.Values{"csrf": {csrf}, "id": {f.pending}, "vvc": {f.vvc}}, withCookie)
	for _, st := range []url.Values{
		{"csrf": {csrf}, "service": {"github"}, "agent": {"bot"}, "secret": {"gh-secret-value-1234"}},
		{"csrf": {csrf}, "service": {"openai"}, "secret": {"sk-secret-value-5678"}},
	} {
		if w := f.do(http.MethodPost, f.path("/credentials/store"), st, withCookie); w.Code != http.StatusSeeOther {
			t.Fatalf("store: %d", w.Code)
		}
	}
	creds := f.do(http.MethodGet, f.path("/credentials"), nil, withCookie).Body.String()
	if !strings.Contains(creds, "Stored openai for all agents in scope (version 1)") || strings.Contains(creds, "secret-value") {
		t.Fatalf("the credentials page after storing: %s", creds)
	}
	page := f.do(http.MethodGet, f.path("/agents/teardown?alias=bot"), nil, withCookie).Body.String()
	if !strings.Contains(page, "delete its 1 credential(s)") || !strings.Contains(page, "credential github for agent bot (version 1)") || strings.Contains(page, "credential openai") {
		t.Fatalf("the teardown confirmation: %s", page)
	}
	if w := f.do(http.MethodPost, f.path("/agents/teardown"), url.Values{"csrf": {csrf}, "alias": {"bot"}}, withCookie); w.Code != http.StatusSeeOther {
		t.Fatalf("teardown: %d", w.Code)
	}
	left, err := f.owner.List(context.Background())
	if err != nil || len(left) != 1 || left[0].Service != "openai" {
		t.Fatalf("after the teardown: %+v %v", left, err)
	}
	if agents := f.do(http.MethodGet, f.path("/agents"), nil, withCookie).Body.String(); !strings.Contains(agents, "Tore down agent bot: 1 credential(s) deleted") {
		t.Fatalf("the agents page after the teardown: %s", agents)
	}
	// Deleting a credential asks first, naming it; then it is gone.
	confirm := f.do(http.MethodGet, f.path("/credentials/delete?service=openai"), nil, withCookie).Body.String()
	if !strings.Contains(confirm, "Delete credential openai (version 1)?") {
		t.Fatalf("the delete confirmation: %s", confirm)
	}
	if left, _ := f.owner.List(context.Background()); len(left) != 1 {
		t.Fatal("asking to delete deleted")
	}
	f.do(http.MethodPost, f.path("/credentials/delete"), url.Values{"csrf": {csrf}, "service": {"openai"}, "agent": {""}}, withCookie)
	if left, err := f.owner.List(context.Background()); err != nil || len(left) != 0 {
		t.Fatalf("after deleting openai: %+v %v", left, err)
	}
}

// TestStoreRefusesBadInput: a store with an empty secret or a bad name
// changes nothing and says why.
func TestStoreRefusesBadInput(t *testing.T) {
	f := newFixture(t)
	ck, csrf := f.login()
	withCookie := func(r *http.Request) { r.AddCookie(ck) }
	for _, tc := range []struct {
		form url.Values
		want string
	}{
		{url.Values{"csrf": {csrf}, "service": {"openai"}, "secret": {""}}, "the secret is empty"},
		{url.Values{"csrf": {csrf}, "service": {"Open AI"}, "secret": {"sk-1"}}, "service and agent names"},
		{url.Values{"csrf": {csrf}, "service": {"openai"}, "agent": {"../x"}, "secret": {"sk-1"}}, "service and agent names"},
	} {
		f.do(http.MethodPost, f.path("/credentials/store"), tc.form, withCookie)
		page := f.do(http.MethodGet, f.path("/credentials"), nil, withCookie).Body.String()
		if !strings.Contains(page, tc.want) || !strings.Contains(page, "BAD_REQUEST") {
			t.Errorf("store %v: the page does not say %q", tc.form, tc.want)
		}
	}
	// A body over the bound is not read; a secret over 1 MiB is refused.
	huge := url.Values{"csrf": {csrf}, "service": {"big"}, "secret": {strings.Repeat("%", 2<<20)}}
	if w := f.do(http.MethodPost, f.path("/credentials/store"), huge, withCookie); w.Code != http.StatusBadRequest {
		t.Errorf("a 6 MiB form: %d", w.Code)
	}
	f.do(http.MethodPost, f.path("/credentials/store"), url.Values{"csrf": {csrf}, "service": {"big"}, "secret": {strings.Repeat("x", 1<<20+1)}}, withCookie)
	if page := f.do(http.MethodGet, f.path("/credentials"), nil, withCookie).Body.String(); !strings.Contains(page, "TOO_LARGE") {
		t.Errorf("a secret over 1 MiB: the page does not say TOO_LARGE")
	}
	if list, err := f.owner.List(context.Background()); err != nil || len(list) != 0 {
		t.Fatalf("bad stores stored %v (%v)", list, err)
	}
}

// TestPagesSayWhatWentWrong: a page whose data cannot load, or whose filter is
// wrong, says what happened and how to fix it.
func TestPagesSayWhatWentWrong(t *testing.T) {
	f := newFixture(t)
	ck, _ := f.login()
	withCookie := func(r *http.Request) { r.AddCookie(ck) }
	if w := f.do(http.MethodGet, f.path("/activity?since=yesterday"), nil, withCookie); w.Code != http.StatusBadRequest ||
		!strings.Contains(w.Body.String(), "BAD_REQUEST") || !strings.Contains(w.Body.String(), "pick a time window") {
		t.Errorf("a bad time window: %d %s", w.Code, w.Body.String())
	}
	if w := f.do(http.MethodGet, f.path("/agents/revoke?alias=nobody"), nil, withCookie); w.Code != http.StatusNotFound || !strings.Contains(w.Body.String(), "no agent") {
		t.Errorf("revoking an unknown agent: %d %s", w.Code, w.Body.String())
	}
	// The broker stops answering.
	gone := httptest.NewServer(http.NotFoundHandler())
	gone.Close()
	c, _ := client.New(gone.URL)
	f.con.cfg.Session = c.WithToken("t")
	for _, page := range []string{"/agents", "/pairing", "/approvals", "/credentials", "/activity"} {
		w := f.do(http.MethodGet, f.path(page), nil, withCookie)
		if body := w.Body.String(); w.Code != http.StatusServiceUnavailable || !strings.Contains(body, "UNREACHABLE") || !strings.Contains(body, "Fix:") {
			t.Errorf("%s with the broker gone: %d %s", page, w.Code, body)
		}
	}
}
