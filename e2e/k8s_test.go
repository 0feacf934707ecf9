package e2e

import (
	"context"
	"encoding/json"
	"encoding/pem"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	apiserver "k8s.io/apiserver/pkg/apis/apiserver"
	apiserverv1 "k8s.io/apiserver/pkg/apis/apiserver/v1"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	k8soidc "k8s.io/apiserver/plugin/pkg/authenticator/token/oidc"
)

// TestKubernetesJWTAuthenticator: the API server's own JWT authenticator,
// configured from the AuthenticationConfiguration `oidc register k8s` prints,
// fetches the broker's discovery document and keys over https (a TLS front on
// loopback: the API server takes only https issuers), authenticates agent A
// as the printed username and group, and refuses a token for another
// audience, an expired one, one of an unknown key and one from another issuer.
func TestKubernetesJWTAuthenticator(t *testing.T) {
	h := newHarness(t)
	var target atomic.Pointer[url.URL]
	front := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httputil.NewSingleHostReverseProxy(target.Load()).ServeHTTP(w, r)
	}))
	defer front.Close()
	s := h.start(serverOpts{home: t.TempDir(), args: []string{"--issuer", front.URL, "--oidc-audience", "my-cluster", "--oidc-audience", gcpAudience}})
	u, _ := url.Parse(s.url)
	target.Store(u)
	// With an https issuer every CLI step uses that URL (the login statement
	// names it); the CLI trusts the front's private CA as a system root.
	trustCert(t, front)
	sf := *s
	sf.url = front.URL
	o := h.akNewOwner(&sf)
	c := &cloudEnv{h: h, s: &sf, o: o, A: h.oidcAgent(&sf, o, "alice", "oidc:*")}

	var cfg apiserverv1.AuthenticationConfiguration
	out := h.akOK(o.home, "oidc", "register", "k8s", "--issuer", front.URL, "--audience", "my-cluster")
	if err := json.Unmarshal([]byte(out), &cfg); err != nil || len(cfg.JWT) != 1 {
		t.Fatalf("AuthenticationConfiguration: %v %s", err, out)
	}
	var jwt apiserver.JWTAuthenticator
	if err := apiserverv1.Convert_v1_JWTAuthenticator_To_apiserver_JWTAuthenticator(&cfg.JWT[0], &jwt, nil); err != nil {
		t.Fatal(err)
	}
	ca, err := dynamiccertificates.NewStaticCAContent("front", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: front.Certificate().Raw}))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	authn, err := k8soidc.New(ctx, k8soidc.Options{JWTAuthenticator: jwt, CAContentProvider: ca, SupportedSigningAlgs: []string{"ES256"}})
	if err != nil {
		t.Fatalf("the API server's authenticator refused the printed configuration: %v", err)
	}
	if !waitFor(agentTimeout, func() bool { return authn.HealthCheck() == nil }) {
		t.Fatalf("the authenticator never fetched the issuer's keys: %v", authn.HealthCheck())
	}
	tok := c.token(c.A, "my-cluster")
	resp, ok, err := authn.AuthenticateToken(ctx, tok)
	if err != nil || !ok {
		t.Fatalf("agent A's token refused: %v", err)
	}
	if resp.User.GetName() != "agentkeys:"+c.A.wallet || strings.Join(resp.User.GetGroups(), ",") != "agentkeys:owner:"+strings.ToLower(o.wallet) {
		t.Fatalf("authenticated as %q groups %v", resp.User.GetName(), resp.User.GetGroups())
	}
	refuse := func(what, tok string) {
		t.Helper()
		// refused: not ok (an error, or for another issuer's token no answer,
		// leaving it to the API server's other authenticators)
		if resp, ok, _ := authn.AuthenticateToken(ctx, tok); ok || resp != nil {
			t.Errorf("%s accepted", what)
		}
	}
	refuse("a token for another audience", c.token(c.A, gcpAudience))
	refuse("a token of an unknown key", c.foreignToken(t, "my-cluster"))
	c.s = s // foreignToken names the broker's plain-http URL as iss: another issuer
	refuse("a token of another issuer", c.foreignToken(t, "my-cluster"))
	short := strings.TrimSpace(h.akOK(c.A.home, "daemon", "oidc-token", "--audience", "my-cluster", "--ttl", "1s"))
	time.Sleep(2 * time.Second) // the authenticator reads the wall clock
	refuse("an expired token", short)
}
