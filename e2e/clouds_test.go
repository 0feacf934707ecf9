package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"cel.dev/cel-go/cel"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azcore/policy"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/aliyun/credentials-go/credentials/providers"
	gooidc "github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2/google"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/daemon"
	"github.com/agentkeys/agentkeys/internal/federation"
	"github.com/agentkeys/agentkeys/internal/oidc"
)

// The audiences of the cloud tests: each as the cloud's setup names it.
const (
	gcpProjectNumber = "123456789012"
	gcpAudience      = "//iam.googleapis.com/projects/" + gcpProjectNumber + "/locations/global/workloadIdentityPools/agentkeys/providers/agentkeys-oidc"
)

// cloudEnv is a broker allowing every cloud's audience, an owner and two
// agents (alice and bob) whose scope allows them.
type cloudEnv struct {
	h    *harness
	s    *server
	o    akOwner
	A, B oidcAgent
	prov *gooidc.Provider
}

func newCloudEnv(t *testing.T) *cloudEnv {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir(), args: []string{"--oidc-audience", gcpAudience, "--oidc-audience", apiv1.AzureAudience,
		"--oidc-audience", federation.AliAudience}})
	o := h.akNewOwner(s)
	prov, err := gooidc.NewProvider(context.Background(), s.url)
	if err != nil {
		t.Fatalf("go-oidc discovery: %v", err)
	}
	return &cloudEnv{h: h, s: s, o: o, A: h.oidcAgent(s, o, "alice", "oidc:*"), B: h.oidcAgent(s, o, "bob", "oidc:*"), prov: prov}
}

// token mints a token for audience through a's daemon, as `daemon oidc-token` prints it.
func (c *cloudEnv) token(a oidcAgent, audience string) string {
	return strings.TrimSpace(c.h.akOK(a.home, "daemon", "oidc-token", "--audience", audience))
}

// serveTokenFile runs `daemon serve --oidc-token-file audience=path` for a
// and waits for the first token.
func (c *cloudEnv) serveTokenFile(t *testing.T, a oidcAgent, audience, path string) string {
	srv := exec.Command(bin, "daemon", "serve", "--socket", filepath.Join(t.TempDir(), "d.sock"), "--oidc-token-file", audience+"="+path)
	srv.Env = childEnv("AGENTKEYS_HOME=" + a.home)
	srv.Stdout, srv.Stderr = c.h.newOutput(), c.h.newOutput()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	return waitFileChange(t, path, "")
}

// claimsOf returns a token's claims as a relying party's expression language
// sees them (JSON values), without verifying it.
func claimsOf(t *testing.T, tok string) map[string]any {
	t.Helper()
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		t.Fatalf("not a compact JWS: %d parts", len(parts))
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

// verifyFor verifies tok as a relying party does: signature against the
// issuer's JWKS, issuer, audience and expiry (now: the relying party's clock).
func (c *cloudEnv) verifyFor(tok, audience string, now func() time.Time) error {
	_, err := c.prov.Verifier(&gooidc.Config{ClientID: audience, Now: now}).Verify(context.Background(), tok)
	return err
}

// foreignToken is a well-formed token for audience signed by a key the
// issuer never published.
func (c *cloudEnv) foreignToken(t *testing.T, audience string) string {
	k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now().Unix()
	return jws(t, map[string]any{"alg": "ES256", "kid": "not-ours", "typ": "JWT"},
		map[string]any{"iss": c.s.url, "sub": "enclave:x:y:agent:" + c.A.wallet, "aud": audience, "iat": now, "nbf": now, "exp": now + 300,
			apiv1.TagUserWallet: c.A.wallet}, func(in []byte) []byte {
			d := sha256.Sum256(in)
			r, s, _ := ecdsa.Sign(rand.Reader, k, d[:])
			sig := make([]byte, 64)
			r.FillBytes(sig[:32])
			s.FillBytes(sig[32:])
			return sig
		})
}

// wantVerifyRefusals checks that a relying party checking audience refuses a
// token for another audience, an expired one and one of an unknown key.
func (c *cloudEnv) wantVerifyRefusals(t *testing.T, audience, otherAudience string) {
	t.Helper()
	if err := c.verifyFor(c.token(c.A, otherAudience), audience, nil); err == nil {
		t.Errorf("a token for %s verified for %s", otherAudience, audience)
	}
	if err := c.verifyFor(c.token(c.A, audience), audience, func() time.Time { return time.Now().Add(2 * time.Hour) }); err == nil {
		t.Error("an expired token verified")
	}
	if err := c.verifyFor(c.foreignToken(t, audience), audience, nil); err == nil {
		t.Error("a token of an unknown key verified")
	}
}

// recorder is a cloud token endpoint on loopback: it records each request's
// form and answers with answer.
type recorder struct {
	mu     sync.Mutex
	forms  []url.Values
	paths  []string
	answer func(r *http.Request, form url.Values) (int, any)
}

func newRecorder(t *testing.T, answer func(r *http.Request, form url.Values) (int, any)) (*recorder, *httptest.Server) {
	rec := &recorder{answer: answer}
	srv := httptest.NewServer(rec)
	t.Cleanup(srv.Close)
	return rec, srv
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	form, _ := url.ParseQuery(string(body))
	for k, v := range r.URL.Query() {
		form[k] = v
	}
	rec.mu.Lock()
	rec.forms = append(rec.forms, form)
	rec.paths = append(rec.paths, r.URL.Path)
	rec.mu.Unlock()
	code, v := rec.answer(r, form)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// exchanges counts the requests that carried an identity token: GCP's
// subject_token, Entra ID's client_assertion, Alibaba Cloud's OIDCToken.
func (r *recorder) exchanges() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, f := range r.forms {
		if f.Get("subject_token") != "" || f.Get("client_assertion") != "" || f.Get("OIDCToken") != "" {
			n++
		}
	}
	return n
}

func (r *recorder) last(t *testing.T) (string, url.Values) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.forms) == 0 {
		t.Fatal("the recording endpoint got no request")
	}
	return r.paths[len(r.paths)-1], maps.Clone(r.forms[len(r.forms)-1])
}

// TestGCPWorkloadIdentity: Google's own external_account loader, configured
// by the credential configuration `oidc register gcp` writes (its token_url
// pointed at a recording STS on loopback), reads the token file the daemon
// keeps and makes an RFC 8693 exchange whose subject_token verifies against
// our JWKS with the provider's audience; the printed attribute condition,
// evaluated with CEL as GCP does, admits that agent and no other.
func TestGCPWorkloadIdentity(t *testing.T) {
	c := newCloudEnv(t)
	dir := t.TempDir()
	tokenFile := filepath.Join(t.TempDir(), "gcp-token")
	var doc federation.GCP
	if err := json.Unmarshal([]byte(c.h.akOK(c.o.home, "oidc", "register", "gcp", "--issuer", c.s.url, "--project", "proj",
		"--project-number", gcpProjectNumber, "--agent-wallet", c.A.wallet, "--token-file", tokenFile, "--json")), &doc); err != nil {
		t.Fatal(err)
	}
	if doc.Audience != gcpAudience {
		t.Fatalf("audience %s, want %s", doc.Audience, gcpAudience)
	}
	// every mapped claim is one we emit
	for target, src := range doc.AttributeMapping {
		claim := strings.TrimPrefix(src, "assertion.")
		if !strings.HasPrefix(src, "assertion.") || !slices.Contains(oidc.ClaimsSupported, claim) {
			t.Errorf("mapping %s=%s reads a claim we do not emit", target, src)
		}
	}
	c.h.akOK(c.o.home, "oidc", "register", "gcp", "--issuer", c.s.url, "--project", "proj", "--project-number", gcpProjectNumber,
		"--agent-wallet", c.A.wallet, "--token-file", tokenFile, "--out", dir)
	credFile := filepath.Join(dir, federation.GCPCredentialFile)

	sts := map[string]any{"access_token": "ya29.recorded", "issued_token_type": "urn:ietf:params:oauth:token-type:access_token",
		"token_type": "Bearer", "expires_in": 3600}
	// the attribute condition, as GCP evaluates it (CEL over the assertion)
	env, err := cel.NewEnv(cel.Variable("assertion", cel.MapType(cel.StringType, cel.DynType)))
	if err != nil {
		t.Fatal(err)
	}
	ast, iss := env.Compile(doc.Condition)
	if iss.Err() != nil {
		t.Fatalf("the printed condition is not CEL: %v", iss.Err())
	}
	prg, err := env.Program(ast)
	if err != nil {
		t.Fatal(err)
	}
	admits := func(tok string) bool {
		out, _, err := prg.Eval(map[string]any{"assertion": claimsOf(t, tok)})
		if err != nil {
			t.Fatalf("condition: %v", err)
		}
		return out.Value() == true
	}
	// GCP STS on loopback: it answers as GCP does, verifying the subject token
	// for the provider's audience and applying the attribute condition
	rec, stsSrv := newRecorder(t, func(_ *http.Request, f url.Values) (int, any) {
		if c.verifyFor(f.Get("subject_token"), gcpAudience, nil) != nil || !admits(f.Get("subject_token")) {
			return 400, map[string]any{"error": "invalid_grant", "error_description": "The given credential is rejected by the attribute condition."}
		}
		return 200, sts
	})
	var cfg map[string]any
	b, _ := os.ReadFile(credFile)
	if err := json.Unmarshal(b, &cfg); err != nil || cfg["token_url"] != federation.GCPTokenURL {
		t.Fatalf("credential configuration: %v %s", err, b)
	}
	cfg["token_url"] = stsSrv.URL + "/v1/token" // the one change: GCP's STS stands on loopback
	b, _ = json.Marshal(cfg)
	os.WriteFile(credFile, b, 0o644)

	first := c.serveTokenFile(t, c.A, doc.Audience, tokenFile)
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", credFile)
	creds, err := google.FindDefaultCredentials(context.Background(), "https://www.googleapis.com/auth/cloud-platform")
	if err != nil {
		t.Fatalf("Google's loader refused the printed configuration: %v", err)
	}
	tok, err := creds.TokenSource.Token()
	if err != nil || tok.AccessToken != "ya29.recorded" {
		t.Fatalf("Google's external_account token source: %v %+v", err, tok)
	}
	path, form := rec.last(t)
	if path != "/v1/token" {
		t.Fatalf("exchange at %s", path)
	}
	for k, want := range map[string]string{"grant_type": "urn:ietf:params:oauth:grant-type:token-exchange",
		"requested_token_type": "urn:ietf:params:oauth:token-type:access_token", "subject_token_type": federation.GCPSubjectTokenType,
		"audience": gcpAudience, "scope": "https://www.googleapis.com/auth/cloud-platform"} {
		if form.Get(k) != want {
			t.Errorf("exchange %s = %q, want %q", k, form.Get(k), want)
		}
	}
	subject := form.Get("subject_token")
	if subject != strings.TrimSpace(first) {
		t.Error("the subject_token is not the daemon's token file")
	}
	if err := c.verifyFor(subject, gcpAudience, nil); err != nil {
		t.Fatalf("subject_token does not verify for the provider's audience: %v", err)
	}

	if !admits(subject) {
		t.Fatalf("the condition %s refuses agent A's token", doc.Condition)
	}
	if admits(c.token(c.B, gcpAudience)) {
		t.Fatalf("the condition %s admits agent B", doc.Condition)
	}
	// the mapped google.subject fits GCP's 127-byte limit (sub does not)
	if w := claimsOf(t, subject)[apiv1.TagUserWallet].(string); len(w) > 127 || w != c.A.wallet {
		t.Fatalf("google.subject source %q", w)
	}
	c.wantVerifyRefusals(t, gcpAudience, apiv1.AzureAudience)

	// cloud_credentials provider gcp: the daemon exchanges itself (Google's library)
	flags := []string{"--gcp-sts-url", stsSrv.URL + "/v1/token"}
	args := map[string]any{"provider": "gcp", "audience": gcpAudience}
	var ct daemon.CloudToken
	if text, isErr := c.mcpCloudCached(t, rec, c.A, args, flags...); isErr || json.Unmarshal([]byte(text), &ct) != nil || ct.AccessToken != "ya29.recorded" || ct.Expiration.IsZero() {
		t.Fatalf("cloud_credentials gcp: %s", text)
	}
	if _, form := rec.last(t); form.Get("audience") != gcpAudience || c.verifyFor(form.Get("subject_token"), gcpAudience, nil) != nil {
		t.Fatalf("the daemon's exchange: %v", form)
	}
	if text, isErr := c.mcpCloud(t, c.B, args, flags...); !isErr || !strings.HasPrefix(text, "DENIED") {
		t.Fatalf("cloud_credentials gcp for agent B, whom the condition refuses: %s", text)
	}
	if text, isErr := c.mcpCloud(t, c.A, map[string]any{"provider": "gcp", "audience": "sts.amazonaws.com"}, flags...); !isErr || !strings.HasPrefix(text, "BAD_REQUEST") {
		t.Fatalf("cloud_credentials gcp with another audience: %s", text)
	}
}

// TestGCPServiceAccountImpersonation: with --service-account, Google's own
// library (the printed credential configuration) and the daemon's exchange
// both trade the STS access token for the service account's at the IAM
// credentials endpoint. A recording IAM on loopback decides as GCP does: the
// bearer must be an access token its STS issued, and the agent's principal
// must hold roles/iam.workloadIdentityUser on the service account, granted by
// the printed add-iam-policy-binding commands.
func TestGCPServiceAccountImpersonation(t *testing.T) {
	c := newCloudEnv(t)
	const sa, otherSA = "agents@proj.iam.gserviceaccount.com", "admins@proj.iam.gserviceaccount.com"
	tokenFile := filepath.Join(t.TempDir(), "gcp-token")
	reg := []string{"oidc", "register", "gcp", "--issuer", c.s.url, "--project", "proj", "--project-number", gcpProjectNumber,
		"--agent-wallet", c.A.wallet, "--service-account", sa, "--token-file", tokenFile}
	var doc federation.GCP
	if err := json.Unmarshal([]byte(c.h.akOK(c.o.home, append(reg, "--json")...)), &doc); err != nil {
		t.Fatal(err)
	}
	// the bindings the printed commands make: service account → members
	bound := map[string][]string{}
	for _, cmd := range doc.Commands {
		if f := strings.Fields(cmd); len(f) > 4 && strings.HasPrefix(cmd, "gcloud iam service-accounts add-iam-policy-binding ") &&
			slices.Contains(f, "--role=roles/iam.workloadIdentityUser") {
			for _, a := range f {
				if m, ok := strings.CutPrefix(a, "--member="); ok {
					bound[f[4]] = append(bound[f[4]], m)
				}
			}
		}
	}
	if len(bound[sa]) != 1 {
		t.Fatalf("the printed commands bind %v, want agent A's principal on %s", bound, sa)
	}
	// STS: a federated token per verified subject token, naming its wallet
	issued := map[string]string{} // STS access token → the wallet it stands for
	var mu sync.Mutex
	stsRec, stsSrv := newRecorder(t, func(_ *http.Request, f url.Values) (int, any) {
		tok := f.Get("subject_token")
		if c.verifyFor(tok, gcpAudience, nil) != nil {
			return 400, map[string]any{"error": "invalid_grant"}
		}
		at := "ya29.sts." + randomHex(8)
		mu.Lock()
		issued[at] = claimsOf(t, tok)[apiv1.TagUserWallet].(string)
		mu.Unlock()
		return 200, map[string]any{"access_token": at, "issued_token_type": "urn:ietf:params:oauth:token-type:access_token", "token_type": "Bearer", "expires_in": 3600}
	})
	pool := "projects/" + gcpProjectNumber + "/locations/global/workloadIdentityPools/agentkeys"
	var iamCalls []string
	iam := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		acct, ok := strings.CutPrefix(r.URL.Path, "/v1/projects/-/serviceAccounts/")
		acct, ok2 := strings.CutSuffix(acct, ":generateAccessToken")
		var body struct {
			Scope []string `json:"scope"`
		}
		json.NewDecoder(io.LimitReader(r.Body, 1<<16)).Decode(&body)
		mu.Lock()
		wallet, known := issued[strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")]
		iamCalls = append(iamCalls, acct)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		switch {
		case r.Method != http.MethodPost || !ok || !ok2 || len(body.Scope) == 0:
			w.WriteHeader(400)
			json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": 400, "status": "INVALID_ARGUMENT"}})
		case !known:
			w.WriteHeader(401)
			json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": 401, "status": "UNAUTHENTICATED"}})
		case !slices.Contains(bound[acct], "principalSet://iam.googleapis.com/"+pool+"/attribute."+apiv1.TagUserWallet+"/"+wallet):
			w.WriteHeader(403)
			json.NewEncoder(w).Encode(map[string]any{"error": map[string]any{"code": 403, "status": "PERMISSION_DENIED"}})
		default:
			json.NewEncoder(w).Encode(map[string]any{"accessToken": "ya29.sa." + acct, "expireTime": time.Now().Add(time.Hour).UTC().Format(time.RFC3339)})
		}
	}))
	t.Cleanup(iam.Close)

	// Google's library with the printed configuration, its endpoints on loopback
	dir := t.TempDir()
	c.h.akOK(c.o.home, append(reg, "--out", dir)...)
	credFile := filepath.Join(dir, federation.GCPCredentialFile)
	var cfg map[string]any
	if err := json.Unmarshal(fileBytes(t, credFile), &cfg); err != nil ||
		cfg["service_account_impersonation_url"] != federation.GCPIAMCredentialsURL+"/v1/projects/-/serviceAccounts/"+sa+":generateAccessToken" {
		t.Fatalf("credential configuration: %v %v", err, cfg)
	}
	cfg["token_url"] = stsSrv.URL + "/v1/token"
	cfg["service_account_impersonation_url"] = strings.Replace(cfg["service_account_impersonation_url"].(string), federation.GCPIAMCredentialsURL, iam.URL, 1)
	b, _ := json.Marshal(cfg)
	os.WriteFile(credFile, b, 0o644)
	c.serveTokenFile(t, c.A, doc.Audience, tokenFile)
	t.Setenv("GOOGLE_APPLICATION_CREDENTIALS", credFile)
	creds, err := google.FindDefaultCredentials(context.Background(), "https://www.googleapis.com/auth/devstorage.read_only")
	if err != nil {
		t.Fatalf("Google's loader refused the printed configuration: %v", err)
	}
	if tok, err := creds.TokenSource.Token(); err != nil || tok.AccessToken != "ya29.sa."+sa {
		t.Fatalf("Google's library with impersonation: %v %+v", err, tok)
	}

	// the daemon's exchange: STS, then IAM; cached like the rest
	flags := []string{"--gcp-sts-url", stsSrv.URL + "/v1/token", "--gcp-iam-url", iam.URL}
	var ct daemon.CloudToken
	text, isErr := c.mcpCloudCached(t, stsRec, c.A, map[string]any{"provider": "gcp", "audience": gcpAudience, "service_account": sa}, flags...)
	if isErr || json.Unmarshal([]byte(text), &ct) != nil || ct.AccessToken != "ya29.sa."+sa || ct.Expiration.IsZero() {
		t.Fatalf("cloud_credentials gcp with service_account: %s", text)
	}
	// a service account the agent is not bound to: IAM's refusal, passed on
	if text, isErr := c.mcpCloud(t, c.A, map[string]any{"provider": "gcp", "audience": gcpAudience, "service_account": otherSA}, flags...); !isErr || !strings.HasPrefix(text, "DENIED") {
		t.Fatalf("cloud_credentials gcp for an unbound service account: %s", text)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := []string{sa, sa, otherSA}; !slices.Equal(iamCalls, want) {
		t.Fatalf("IAM saw impersonations of %v, want %v (Google's library, the daemon once, the refused one)", iamCalls, want)
	}
}

// mcpCloud calls cloud_credentials through a's `daemon mcp` started with flags.
func (c *cloudEnv) mcpCloud(t *testing.T, a oidcAgent, args map[string]any, flags ...string) (string, bool) {
	t.Helper()
	cs, _ := c.h.mcpSession(a.home, flags...)
	return mcpCall(t, cs, "cloud_credentials", args)
}

// mcpCloudCached calls cloud_credentials twice through one `daemon mcp` of a
// and returns the first answer; the second must be the same credential, served
// from the daemon's cache: rec (the cloud's endpoint) saw one exchange.
func (c *cloudEnv) mcpCloudCached(t *testing.T, rec *recorder, a oidcAgent, args map[string]any, flags ...string) (string, bool) {
	t.Helper()
	cs, _ := c.h.mcpSession(a.home, flags...)
	before := rec.exchanges()
	text, isErr := mcpCall(t, cs, "cloud_credentials", args)
	if isErr {
		return text, isErr
	}
	if again, isErr := mcpCall(t, cs, "cloud_credentials", args); isErr || again != text {
		t.Fatalf("a second cloud_credentials call: %v, a different answer from the first (not the cached credential)", isErr)
	}
	if n := rec.exchanges() - before; n != 1 {
		t.Fatalf("two cloud_credentials calls made %d exchanges, want 1 (the second from the daemon's cache)", n)
	}
	return text, isErr
}

// trustCert makes child processes (the daemon) trust srv's certificate.
func trustCert(t *testing.T, srv *httptest.Server) {
	path := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)
	t.Setenv("SSL_CERT_FILE", path)
}

// TestAzureWorkloadIdentity: azidentity's WorkloadIdentityCredential, with
// exactly the environment `oidc register azure` prints (and the authority
// host on loopback), reads the token file the daemon keeps and sends it as
// the client_assertion to a recording Entra ID token endpoint; the assertion
// verifies for api://AzureADTokenExchange, its sub is the federated
// credential's subject, it carries iat and lives 1 h (so the SDK's 10-minute
// cache of the file never sends it expired).
func TestAzureWorkloadIdentity(t *testing.T) {
	c := newCloudEnv(t)
	info := c.s.enclaveInfo()
	tokenFile := filepath.Join(t.TempDir(), "azure-token")
	var doc federation.Azure
	if err := json.Unmarshal([]byte(c.h.akOK(c.o.home, "oidc", "register", "azure", "--issuer", c.s.url, "--app-id", "11111111-2222-3333-4444-555555555555",
		"--tenant-id", "tenant-a", "--agent-wallet", c.A.wallet, "--mrenclave", info.MrEnclave, "--mrsigner", info.MrSigner,
		"--token-file", tokenFile, "--json")), &doc); err != nil {
		t.Fatal(err)
	}
	subject, _ := doc.Credential["subject"].(string)
	if subject != apiv1.Subject(info.MrEnclave, info.MrSigner, "agent", c.A.wallet) {
		t.Fatalf("federated credential subject %q", subject)
	}

	var tokenURL string
	// Entra ID on loopback: it answers as Entra ID does for a federated
	// credential, verifying the assertion's audience and matching sub exactly
	rec, entra := newTLSRecorder(t, func(r *http.Request, f url.Values) (int, any) {
		if strings.HasSuffix(r.URL.Path, "/.well-known/openid-configuration") {
			base := "https://" + r.Host + "/tenant-a"
			return 200, map[string]any{"token_endpoint": base + "/oauth2/v2.0/token", "authorization_endpoint": base + "/oauth2/v2.0/authorize",
				"issuer": base + "/v2.0"}
		}
		a := f.Get("client_assertion")
		if c.verifyFor(a, apiv1.AzureAudience, nil) != nil || claimsOf(t, a)["sub"] != subject {
			return 400, map[string]any{"error": "invalid_client", "error_description": "AADSTS70021: No matching federated identity record found for presented assertion."}
		}
		return 200, map[string]any{"access_token": "eyJ.recorded", "token_type": "Bearer", "expires_in": 3600}
	})
	tokenURL = "/tenant-a/oauth2/v2.0/token"

	first := c.serveTokenFile(t, c.A, apiv1.AzureAudience, tokenFile)
	for k, v := range doc.Env {
		t.Setenv(k, v)
	}
	t.Setenv("AZURE_AUTHORITY_HOST", entra.URL+"/") // the one change: Entra ID stands on loopback
	cred, err := azidentity.NewWorkloadIdentityCredential(&azidentity.WorkloadIdentityCredentialOptions{
		ClientOptions: azcore.ClientOptions{Transport: entra.Client()}, DisableInstanceDiscovery: true})
	if err != nil {
		t.Fatalf("azidentity refused the printed environment: %v", err)
	}
	tok, err := cred.GetToken(context.Background(), policy.TokenRequestOptions{Scopes: []string{"https://storage.azure.com/.default"}})
	if err != nil || tok.Token != "eyJ.recorded" {
		t.Fatalf("WorkloadIdentityCredential: %v", err)
	}
	path, form := rec.last(t)
	if path != tokenURL {
		t.Fatalf("token request at %s", path)
	}
	for k, want := range map[string]string{"grant_type": "client_credentials", "client_id": doc.Env["AZURE_CLIENT_ID"],
		"client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"} {
		if form.Get(k) != want {
			t.Errorf("token request %s = %q, want %q", k, form.Get(k), want)
		}
	}
	assertion := form.Get("client_assertion")
	if assertion != strings.TrimSpace(first) {
		t.Fatal("the client_assertion is not the daemon's token file")
	}
	if err := c.verifyFor(assertion, apiv1.AzureAudience, nil); err != nil {
		t.Fatalf("client_assertion does not verify for %s: %v", apiv1.AzureAudience, err)
	}
	cl := claimsOf(t, assertion)
	iat, _ := cl["iat"].(float64)
	exp, _ := cl["exp"].(float64)
	if cl["sub"] != subject || cl["iss"] != doc.Credential["issuer"] || iat == 0 || exp-iat != oidc.AzureTTL {
		t.Fatalf("client_assertion claims sub=%v iss=%v iat=%v lifetime=%v", cl["sub"], cl["iss"], iat, exp-iat)
	}
	// agent B's token names another subject: Entra ID's exact match refuses it
	if b := claimsOf(t, c.token(c.B, apiv1.AzureAudience)); b["sub"] == subject {
		t.Fatal("agent B's token has agent A's subject")
	}
	c.wantVerifyRefusals(t, apiv1.AzureAudience, gcpAudience)

	// cloud_credentials provider azure: the daemon exchanges itself (azidentity)
	trustCert(t, entra)
	flags := []string{"--azure-authority-host", entra.URL + "/"}
	args := map[string]any{"provider": "azure", "client_id": doc.Env["AZURE_CLIENT_ID"], "tenant_id": doc.Env["AZURE_TENANT_ID"]}
	var ct daemon.CloudToken
	if text, isErr := c.mcpCloudCached(t, rec, c.A, args, flags...); isErr || json.Unmarshal([]byte(text), &ct) != nil || ct.AccessToken != "eyJ.recorded" || ct.Expiration.IsZero() {
		t.Fatalf("cloud_credentials azure: %s", text)
	}
	if _, form := rec.last(t); claimsOf(t, form.Get("client_assertion"))["sub"] != subject || !strings.HasPrefix(form.Get("scope"), daemon.DefaultAzureScope) {
		form.Del("client_assertion")
		t.Fatalf("the daemon's exchange: %v", form)
	}
	if text, isErr := c.mcpCloud(t, c.B, args, flags...); !isErr || !strings.HasPrefix(text, "DENIED") {
		t.Fatalf("cloud_credentials azure for agent B, whose sub has no federated credential: %s", text)
	}
}

// newTLSRecorder is newRecorder over TLS on loopback (MSAL takes only https
// authorities); its server's Client trusts it.
func newTLSRecorder(t *testing.T, answer func(r *http.Request, form url.Values) (int, any)) (*recorder, *httptest.Server) {
	rec := &recorder{answer: answer}
	srv := httptest.NewTLSServer(rec)
	t.Cleanup(srv.Close)
	return rec, srv
}

// TestAlibabaCloudOIDC: Alibaba Cloud's credentials library's OIDC provider,
// with exactly the environment `oidc register alicloud` prints (and the STS
// endpoint on loopback), reads the token file the daemon keeps and calls a
// recording AssumeRoleWithOIDC with our token and the printed ARNs; the
// printed trust policy's conditions admit agent A's token and not agent B's.
// A plain-http issuer gets a clear refusal instead of a fingerprint.
func TestAlibabaCloudOIDC(t *testing.T) {
	c := newCloudEnv(t)
	if r := c.h.cli(c.o.home, "oidc", "register", "alicloud", "--issuer", c.s.url, "--account", "1234567890123456",
		"--agent-wallet", c.A.wallet); r.code == 0 || !strings.Contains(r.stderr, "only https issuers") {
		t.Fatalf("plain-http issuer without --fingerprint: %d %s", r.code, r.stderr)
	}
	tokenFile := filepath.Join(t.TempDir(), "alicloud-token")
	fp := strings.Repeat("ab", 20) // the issuer here is plain http; the fetch is TestFingerprint's
	var doc federation.Ali
	if err := json.Unmarshal([]byte(c.h.akOK(c.o.home, "oidc", "register", "alicloud", "--issuer", c.s.url, "--account", "1234567890123456",
		"--agent-wallet", "0x"+strings.ToUpper(c.A.wallet[2:]), "--fingerprint", fp, "--token-file", tokenFile, "--json")), &doc); err != nil {
		t.Fatal(err)
	}
	// Alibaba Cloud STS on loopback: it verifies the token for the provider's
	// client id and applies the role's trust policy, as RAM does
	rec, sts := newTLSRecorder(t, func(_ *http.Request, f url.Values) (int, any) {
		tok := f.Get("OIDCToken")
		if c.verifyFor(tok, federation.AliAudience, nil) != nil || !aliAdmits(t, doc.TrustPolicy, claimsOf(t, tok)) {
			return 400, map[string]any{"Code": "AuthenticationFail.NoPermission", "Message": "no permission to assume the role"}
		}
		return 200, map[string]any{"RequestId": "r1", "Credentials": map[string]any{"AccessKeyId": "STS.recorded", "AccessKeySecret": "s",
			"SecurityToken": "t", "Expiration": time.Now().Add(time.Hour).UTC().Format("2006-01-02T15:04:05Z")}}
	})
	// the library speaks https to its STS with the default transport: trust the loopback STS there
	tr := http.DefaultTransport.(*http.Transport)
	prev := tr.TLSClientConfig
	tr.TLSClientConfig = sts.Client().Transport.(*http.Transport).TLSClientConfig
	t.Cleanup(func() { tr.TLSClientConfig = prev })

	first := c.serveTokenFile(t, c.A, federation.AliAudience, tokenFile)
	for k, v := range doc.Env {
		t.Setenv(k, v)
	}
	p, err := providers.NewOIDCCredentialsProviderBuilder().WithSTSEndpoint(strings.TrimPrefix(sts.URL, "https://")).Build()
	if err != nil {
		t.Fatalf("the credentials library refused the printed environment: %v", err)
	}
	cr, err := p.GetCredentials()
	if err != nil || cr.AccessKeyId != "STS.recorded" {
		t.Fatalf("OIDC provider: %v", err)
	}
	_, form := rec.last(t)
	for k, want := range map[string]string{"Action": "AssumeRoleWithOIDC", "RoleArn": doc.RoleARN, "OIDCProviderArn": doc.ProviderARN} {
		if form.Get(k) != want {
			t.Errorf("AssumeRoleWithOIDC %s = %q, want %q", k, form.Get(k), want)
		}
	}
	tok := form.Get("OIDCToken")
	if tok != strings.TrimSpace(first) {
		t.Fatal("the OIDCToken is not the daemon's token file")
	}
	if err := c.verifyFor(tok, federation.AliAudience, nil); err != nil {
		t.Fatalf("OIDCToken does not verify for %s: %v", federation.AliAudience, err)
	}
	if !aliAdmits(t, doc.TrustPolicy, claimsOf(t, tok)) {
		t.Fatalf("the trust policy refuses agent A: %v", doc.TrustPolicy)
	}
	if aliAdmits(t, doc.TrustPolicy, claimsOf(t, c.token(c.B, federation.AliAudience))) {
		t.Fatal("the trust policy admits agent B")
	}
	if aliAdmits(t, doc.TrustPolicy, claimsOf(t, c.token(c.A, gcpAudience))) {
		t.Fatal("the trust policy admits a token for another audience")
	}
	c.wantVerifyRefusals(t, federation.AliAudience, apiv1.AzureAudience)

	// cloud_credentials provider alicloud: the daemon exchanges itself (credentials-go)
	trustCert(t, sts)
	flags := []string{"--alicloud-sts-endpoint", strings.TrimPrefix(sts.URL, "https://")}
	args := map[string]any{"provider": "alicloud", "role_arn": doc.RoleARN, "oidc_provider_arn": doc.ProviderARN}
	var ct daemon.CloudToken
	start := time.Now()
	if text, isErr := c.mcpCloudCached(t, rec, c.A, args, flags...); isErr || json.Unmarshal([]byte(text), &ct) != nil || ct.AccessKeyID != "STS.recorded" || ct.SecurityToken == "" ||
		ct.Expiration.Before(start.Add(time.Hour).Truncate(time.Second)) || ct.Expiration.After(time.Now().Add(time.Hour)) {
		t.Fatalf("cloud_credentials alicloud: %s", text)
	}
	if _, form := rec.last(t); form.Get("RoleSessionName") != "agentkeys-alice" || form.Get("RoleArn") != doc.RoleARN {
		t.Fatalf("the daemon's exchange: %v", form)
	}
	if text, isErr := c.mcpCloud(t, c.B, args, flags...); !isErr || !strings.HasPrefix(text, "DENIED") {
		t.Fatalf("cloud_credentials alicloud for agent B, whom the trust policy refuses: %s", text)
	}
}

// aliAdmits evaluates a RAM trust policy's conditions (StringEquals and
// StringLike over oidc:iss, oidc:aud and oidc:sub, each key matching any of
// its values) on a token's claims, as RAM documents them.
func aliAdmits(t *testing.T, policy map[string]any, claims map[string]any) bool {
	t.Helper()
	b, _ := json.Marshal(policy)
	var p struct {
		Statement []struct {
			Effect    string
			Condition map[string]map[string][]string
		}
	}
	if err := json.Unmarshal(b, &p); err != nil || len(p.Statement) != 1 || p.Statement[0].Effect != "Allow" {
		t.Fatalf("trust policy: %v %s", err, b)
	}
	for op, keys := range p.Statement[0].Condition {
		for key, values := range keys {
			claim, _ := claims[strings.TrimPrefix(key, "oidc:")].(string)
			match := false
			for _, v := range values {
				switch op {
				case "StringEquals":
					match = match || claim == v
				case "StringLike":
					re := "^" + strings.ReplaceAll(strings.ReplaceAll(regexp.QuoteMeta(v), `\*`, ".*"), `\?`, ".") + "$"
					match = match || regexp.MustCompile(re).MatchString(claim)
				default:
					t.Fatalf("condition operator %s", op)
				}
			}
			if !match {
				return false
			}
		}
	}
	return true
}
