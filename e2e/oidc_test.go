package e2e

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	gooidc "github.com/coreos/go-oidc/v3/oidc"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/daemon"
	"github.com/agentkeys/agentkeys/internal/enclave"
	"github.com/agentkeys/agentkeys/internal/federation"
	"github.com/agentkeys/agentkeys/internal/oidc"
)

// oidcAgent is a paired daemon home and its wallet (lower-case, the S3 prefix).
type oidcAgent struct {
	home, alias, wallet string
}

func (h *harness) oidcAgent(s *server, o akOwner, alias, scope string) oidcAgent {
	h.t.Helper()
	dh := h.pairAgent(s, o, alias, scope)
	sess, err := daemon.DirOf(dh).LoadSession()
	if err != nil {
		h.t.Fatal(err)
	}
	return oidcAgent{home: dh, alias: alias, wallet: strings.ToLower(sess.Wallet)}
}

// awsCreds runs `daemon aws-credentials` and parses its credential_process JSON.
func (h *harness) awsCreds(a oidcAgent, w *weed) aws.Credentials {
	h.t.Helper()
	out := h.akOK(a.home, "daemon", "aws-credentials", "--role-arn", w.roleARN, "--sts-endpoint", w.endpoint)
	var c daemon.AWSCredentials
	if err := json.Unmarshal([]byte(out), &c); err != nil || c.Version != 1 || c.AccessKeyID == "" || c.SessionToken == "" || c.Expiration.IsZero() {
		h.t.Fatalf("credential_process JSON: %v %q", err, out)
	}
	return aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken}
}

// wantIsolated checks that c can list, get and put under own/ and nothing else.
func wantIsolated(t *testing.T, w *weed, c *s3.Client, who string, own, other string) {
	t.Helper()
	if err := w.put(t, c, own+"/"+who+".txt", "written by "+who); err != nil {
		t.Fatalf("%s put under its own prefix: %v", who, err)
	}
	if v, err := w.get(t, c, own+"/seed.txt"); err != nil || v != "seed of "+own {
		t.Fatalf("%s get under its own prefix: %q %v", who, v, err)
	}
	if keys, err := w.list(t, c, own+"/"); err != nil || !slices.Contains(keys, own+"/seed.txt") || !slices.Contains(keys, own+"/"+who+".txt") {
		t.Fatalf("%s list its own prefix: %v %v", who, keys, err)
	}
	for what, err := range map[string]error{
		"get other's object":  func() error { _, err := w.get(t, c, other+"/seed.txt"); return err }(),
		"put under other":     w.put(t, c, other+"/intruder.txt", "x"),
		"list other's prefix": func() error { _, err := w.list(t, c, other+"/"); return err }(),
		"list bucket root":    func() error { _, err := w.list(t, c, ""); return err }(),
		"get root object":     func() error { _, err := w.get(t, c, "root.txt"); return err }(),
		"put at root":         w.put(t, c, "rogue.txt", "x"),
	} {
		if errCode(err) != "AccessDenied" {
			t.Errorf("%s: %s: want AccessDenied, got %v", who, what, err)
		}
	}
}

// jws signs header.claims with sign and returns the compact token.
func jws(t *testing.T, hdr, claims map[string]any, sign func([]byte) []byte) string {
	t.Helper()
	in := seg(hdr) + "." + seg(claims)
	return in + "." + base64.RawURLEncoding.EncodeToString(sign([]byte(in)))
}

// TestOIDCFederationSeaweedFS is the cloud path end to end on a real S3 + STS
// server: SeaweedFS trusts our issuer through its discovery document; agents'
// daemons mint tokens and exchange them at STS themselves; the policies are the
// ones `agentkeys oidc register aws --json` prints.
func TestOIDCFederationSeaweedFS(t *testing.T) {
	h := newHarness(t)
	s := h.start(serverOpts{home: t.TempDir(), args: []string{"--oidc-audience", weedAudience, "--oidc-audience", "agentkeys-test",
		"--oidc-max-ttl", "20s", "--oidc-skew", "2s"}})
	if l, err := s.waitLog("http issuer warning", startTimeout, func(l logLine) bool {
		return l.str("level") == "WARN" && strings.Contains(l.str("msg"), "plain http")
	}); err != nil {
		t.Fatalf("the server does not warn about a plain-http issuer: %v", err)
	} else if l.str("issuer") != s.url {
		t.Fatalf("warning names issuer %q", l.str("issuer"))
	}
	ctx := context.Background()

	// discovery, read by a relying-party library
	prov, err := gooidc.NewProvider(ctx, s.url)
	if err != nil {
		t.Fatalf("go-oidc discovery: %v", err)
	}

	o := h.akNewOwner(s)
	A := h.oidcAgent(s, o, "alice", "oidc:"+weedAudience)
	B := h.oidcAgent(s, o, "bob", "oidc:*")
	C := h.oidcAgent(s, o, "carol", "openai")

	doc := h.registerAWS(o.home, s.url)
	w := h.startWeed(&doc, s.url)
	literal := federation.WalletVar
	for _, k := range []string{A.wallet + "/seed.txt", B.wallet + "/seed.txt", "root.txt", literal + "/seed.txt"} {
		if err := w.put(t, w.admin, k, "seed of "+strings.TrimSuffix(k, "/seed.txt")); err != nil {
			t.Fatalf("admin seeding %s: %v", k, err)
		}
	}

	// A through credential_process output, B through the MCP tool
	credsA := h.awsCreds(A, w)
	wantIsolated(t, w, w.s3(credsA), "alice", A.wallet, B.wallet)
	cs, _ := h.mcpSession(B.home, "--sts-endpoint", w.endpoint)
	text, isErr := mcpCall(t, cs, "cloud_credentials", map[string]any{"provider": "aws", "role_arn": w.roleARN})
	if isErr {
		t.Fatalf("cloud_credentials: %s", text)
	}
	var cb daemon.AWSCredentials
	if err := json.Unmarshal([]byte(text), &cb); err != nil {
		t.Fatalf("cloud_credentials result %q: %v", text, err)
	}
	credsB := aws.Credentials{AccessKeyID: cb.AccessKeyID, SecretAccessKey: cb.SecretAccessKey, SessionToken: cb.SessionToken}
	wantIsolated(t, w, w.s3(credsB), "bob", B.wallet, A.wallet)
	// the daemon caches: a second call returns the same credentials without a new mint
	if again := h.awsCreds(A, w); again.AccessKeyID != credsA.AccessKeyID {
		t.Fatalf("aws-credentials minted again instead of using its cache")
	}
	// …and refreshes them on its own once they are close to expiry
	cached, _ := filepath.Glob(filepath.Join(A.home, "daemon", "cloud", "*.json"))
	if len(cached) != 1 || fileMode(t, cached[0]) != 0o600 {
		t.Fatalf("credential cache files: %v", cached)
	}
	var entry map[string]any
	json.Unmarshal(fileBytes(t, cached[0]), &entry)
	entry["Expiration"] = time.Now().Add(10 * time.Second).UTC().Format(time.RFC3339)
	entry["issued_at"] = time.Now().Add(-time.Hour).UTC().Format(time.RFC3339)
	b, _ := json.Marshal(entry)
	os.WriteFile(cached[0], b, 0o600)
	if fresh := h.awsCreds(A, w); fresh.AccessKeyID == credsA.AccessKeyID {
		t.Fatal("credentials 10 s from expiry were served from the cache instead of refreshed")
	} else {
		wantIsolated(t, w, w.s3(fresh), "alice-refreshed", A.wallet, B.wallet)
	}
	if text, isErr := mcpCall(t, cs, "cloud_credentials", map[string]any{"provider": "gcp", "role_arn": "x"}); !isErr || !strings.HasPrefix(text, "BAD_REQUEST:") {
		t.Fatalf("unsupported provider: %q", text)
	}

	// the AWS SDK's own credential chain, unmodified, with credential_process
	cfgPath := filepath.Join(t.TempDir(), "config")
	os.WriteFile(cfgPath, []byte("[profile agent]\nregion = us-east-1\ncredential_process = /usr/bin/env AGENTKEYS_HOME="+A.home+" "+bin+
		" daemon aws-credentials --role-arn "+w.roleARN+" --sts-endpoint "+w.endpoint+"\n"), 0o600)
	for _, k := range []string{"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	t.Setenv("AWS_CONFIG_FILE", cfgPath)
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", filepath.Join(t.TempDir(), "none"))
	t.Setenv("AWS_PROFILE", "agent")
	sdkCfg, err := config.LoadDefaultConfig(ctx)
	if err != nil {
		t.Fatal(err)
	}
	sdk := s3.NewFromConfig(sdkCfg, func(o *s3.Options) { o.BaseEndpoint = aws.String(w.endpoint); o.UsePathStyle = true })
	if keys, err := w.list(t, sdk, A.wallet+"/"); err != nil || len(keys) == 0 {
		t.Fatalf("AWS SDK with credential_process: %v %v", keys, err)
	}
	if _, err := w.get(t, sdk, B.wallet+"/seed.txt"); errCode(err) != "AccessDenied" {
		t.Fatalf("AWS SDK with credential_process read B's object: %v", err)
	}

	// tokens the relying party must refuse, and one without the tag claims
	enc, err := enclave.Open(enclave.Config{Dir: s.opts.effectiveDataDir(), PlatformKeyFile: s.opts.platformKeyFile()})
	if err != nil {
		t.Fatal(err)
	}
	defer enc.Close()
	v1, _ := enc.PublicKey("oidc/issuer/v1")
	m := enc.Measurements()
	sub := apiv1.Subject(enclaveHex(m.MrEnclave[:]), enclaveHex(m.MrSigner[:]), "agent", A.wallet)
	now := time.Now().Unix()
	base := func() map[string]any {
		return map[string]any{"iss": s.url, "sub": sub, "aud": weedAudience, "iat": now, "nbf": now, "exp": now + 60,
			"jti": randomHex(8), "agentkeys_user_wallet": A.wallet}
	}
	withTags := func(c map[string]any) map[string]any {
		tags := map[string][]string{apiv1.TagUserWallet: {A.wallet}}
		c[oidc.ClaimFlatTags] = tags
		c[oidc.ClaimAWSTags] = map[string]any{"principal_tags": tags, "transitive_tag_keys": []string{apiv1.TagUserWallet}}
		return c
	}
	encSign := func(path string) func([]byte) []byte {
		return func(in []byte) []byte {
			sig, err := enc.SignES256(path, in)
			if err != nil {
				t.Fatal(err)
			}
			return sig
		}
	}
	hdr := map[string]any{"alg": "ES256", "kid": v1.Kid, "typ": "JWT"}
	req := daemon.AWSRequest{RoleARN: w.roleARN, SessionName: "e2e", STSEndpoint: w.endpoint, Region: "us-east-1"}
	// control: a forged-but-correct token is accepted, so the refusals below are about the one change each
	if _, err := daemon.AssumeRole(ctx, req, jws(t, hdr, withTags(base()), encSign("oidc/issuer/v1"))); err != nil {
		t.Fatalf("control token refused at STS: %v", err)
	}
	stranger, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	strangerSign := func(in []byte) []byte {
		hsh := sha256.Sum256(in)
		r, s, _ := ecdsa.Sign(rand.Reader, stranger, hsh[:])
		out := make([]byte, 64)
		r.FillBytes(out[:32])
		s.FillBytes(out[32:])
		return out
	}
	expired := withTags(base())
	expired["exp"], expired["iat"], expired["nbf"] = now-5, now-65, now-65
	wrongAud := withTags(base())
	wrongAud["aud"] = "agentkeys-test"
	refuse := map[string]string{
		"expired":                jws(t, hdr, expired, encSign("oidc/issuer/v1")),
		"unknown kid":            jws(t, map[string]any{"alg": "ES256", "kid": "AAAAAAAAAAAAAAAA", "typ": "JWT"}, withTags(base()), strangerSign),
		"other key, same kid":    jws(t, hdr, withTags(base()), encSign("oidc/issuer/v9")),
		"wrong audience":         jws(t, hdr, wrongAud, encSign("oidc/issuer/v1")),
		"no wallet claim at all": jws(t, hdr, map[string]any{"iss": s.url, "sub": sub, "aud": weedAudience, "iat": now, "nbf": now, "exp": now + 60}, encSign("oidc/issuer/v1")),
	}
	for name, tok := range refuse {
		if _, err := daemon.AssumeRole(ctx, req, tok); err == nil {
			t.Errorf("STS accepted a token with %s", name)
		}
	}
	// a token whose wallet tag claims are missing gets nothing, the literal prefix included
	if c, err := daemon.AssumeRole(ctx, req, jws(t, hdr, base(), encSign("oidc/issuer/v1"))); err == nil {
		untagged := w.s3(aws.Credentials{AccessKeyID: c.AccessKeyID, SecretAccessKey: c.SecretAccessKey, SessionToken: c.SessionToken})
		for what, err := range map[string]error{
			"get literal prefix": func() error { _, err := w.get(t, untagged, literal+"/seed.txt"); return err }(),
			"put literal prefix": w.put(t, untagged, literal+"/x.txt", "x"),
			"list literal":       func() error { _, err := w.list(t, untagged, literal+"/"); return err }(),
			"get A's object":     func() error { _, err := w.get(t, untagged, A.wallet+"/seed.txt"); return err }(),
			"list root":          func() error { _, err := w.list(t, untagged, ""); return err }(),
		} {
			if errCode(err) != "AccessDenied" {
				t.Errorf("token without tag claims: %s: want AccessDenied, got %v", what, err)
			}
		}
		t.Log("STS issued credentials for a token without tag claims; S3 denied them everything")
	} else {
		t.Logf("STS refused the token without tag claims outright: %v", err)
	}
	// a wrong-audience token minted by the broker itself
	tokB := strings.TrimSpace(h.akOK(B.home, "daemon", "oidc-token", "--audience", "agentkeys-test"))
	if _, err := daemon.AssumeRole(ctx, req, tokB); err == nil {
		t.Fatal("STS accepted a token for another audience")
	}

	// coreos/go-oidc verifies a minted token from discovery alone
	tokA := strings.TrimSpace(h.akOK(A.home, "daemon", "oidc-token", "--audience", weedAudience))
	idt, err := prov.Verifier(&gooidc.Config{ClientID: weedAudience}).Verify(ctx, tokA)
	if err != nil {
		t.Fatalf("go-oidc: %v", err)
	}
	var cl oidc.Claims
	info := s.enclaveInfo()
	if err := idt.Claims(&cl); err != nil || cl.UserWallet != A.wallet || cl.Subject != apiv1.Subject(info.MrEnclave, info.MrSigner, "agent", A.wallet) || len(cl.FlatTags.UserWallet) != 1 || cl.FlatTags.UserWallet[0] != A.wallet {
		t.Fatalf("go-oidc claims: %+v %v", cl, err)
	}

	// token file for AWS_WEB_IDENTITY_TOKEN_FILE consumers: 0600, refreshed by daemon serve
	tf := filepath.Join(t.TempDir(), "token")
	h.akOK(A.home, "daemon", "oidc-token", "--audience", weedAudience, "--out", tf)
	if fileMode(t, tf) != 0o600 {
		t.Fatalf("token file mode %o", fileMode(t, tf))
	}
	serveTF := filepath.Join(t.TempDir(), "served-token")
	srv := exec.Command(bin, "daemon", "serve", "--socket", filepath.Join(t.TempDir(), "d.sock"), "--oidc-token-file", weedAudience+"="+serveTF, "--oidc-token-ttl", "4s")
	srv.Env = childEnv("AGENTKEYS_HOME=" + A.home)
	srv.Stdout, srv.Stderr = h.newOutput(), h.newOutput()
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	first := waitFileChange(t, serveTF, "")
	if fileMode(t, serveTF) != 0o600 {
		t.Fatalf("served token file mode %o", fileMode(t, serveTF))
	}
	second := waitFileChange(t, serveTF, first)
	for _, tok := range []string{first, second} {
		if _, err := daemon.AssumeRole(ctx, req, tok); err != nil && !strings.Contains(err.Error(), "Expired") {
			t.Fatalf("served token refused at STS: %v", err)
		}
	}
	srv.Process.Kill()

	// refusals: no oidc scope, unknown audience, owner without --self; each audited
	if r := h.cli(C.home, "daemon", "oidc-token", "--audience", weedAudience); r.code != 3 || !strings.Contains(r.stderr, "DENIED") {
		t.Fatalf("agent without oidc scope: %d %s", r.code, r.stderr)
	}
	if r := h.cli(B.home, "daemon", "oidc-token", "--audience", "unknown.example"); r.code != 3 {
		t.Fatalf("unknown audience: %d %s", r.code, r.stderr)
	}
	if r := h.cli(o.home, "oidc", "token", "--audience", weedAudience); r.code != 3 {
		t.Fatalf("owner without --self: %d %s", r.code, r.stderr)
	}
	if tok := strings.TrimSpace(h.akOK(o.home, "oidc", "token", "--audience", weedAudience, "--self")); strings.Count(tok, ".") != 2 {
		t.Fatalf("owner --self: %q", tok)
	}
	var usage struct {
		Usage []struct{ Action, Result, Detail, Agent string }
	}
	json.Unmarshal([]byte(h.akOK(o.home, "usage", "--json")), &usage)
	seen := map[string]bool{}
	for _, u := range usage.Usage {
		if u.Action == "oidc.mint" {
			seen[u.Result+" "+strings.Fields(u.Detail + " x")[0]] = true
			if strings.Contains(u.Detail, tokA) {
				t.Fatal("usage shows a token")
			}
		}
	}
	for _, want := range []string{"ok kid", "denied no_scope", "denied unknown_audience", "denied owner_without_flag"} {
		if !seen[want] {
			t.Errorf("usage lacks an oidc.mint %q row: %v", want, seen)
		}
	}
	if out := h.akOK(o.home, "usage", "--agent", "carol"); !strings.Contains(out, "no_scope") {
		t.Errorf("usage --agent carol lacks the refused mint:\n%s", out)
	}

	// rotation: old-key tokens keep working at the relying party during the window
	oldTok := strings.TrimSpace(h.akOK(B.home, "daemon", "oidc-token", "--audience", weedAudience))
	opKey := filepath.Join(s.opts.effectiveDataDir(), "operator.key")
	h.akOK(o.home, "oidc", "rotate", "--server", s.url, "--operator-key", opKey, "--window", "25s")
	jwks, err := s.client.JWKS(ctx)
	if err != nil || len(jwks.Keys) != 2 {
		t.Fatalf("JWKS during the window: %+v %v", jwks, err)
	}
	newTok := strings.TrimSpace(h.akOK(B.home, "daemon", "oidc-token", "--audience", weedAudience))
	if kidOf(t, newTok) == kidOf(t, oldTok) || kidOf(t, newTok) == v1.Kid {
		t.Fatal("the token minted after the rotation carries the old kid")
	}
	reqB := req
	reqB.SessionName = "rotation"
	for name, tok := range map[string]string{"old-key": oldTok, "new-key": newTok} {
		if _, err := daemon.AssumeRole(ctx, reqB, tok); err != nil {
			t.Fatalf("%s token refused at STS during the window: %v", name, err)
		}
		if _, err := prov.Verifier(&gooidc.Config{ClientID: weedAudience}).Verify(ctx, tok); err != nil {
			t.Fatalf("go-oidc: %s token during the window: %v", name, err)
		}
	}
	var keys struct {
		Keys []struct {
			Version int
			State   string
		}
	}
	json.Unmarshal([]byte(h.akOK(o.home, "oidc", "keys", "--server", s.url, "--json")), &keys)
	if len(keys.Keys) != 2 || keys.Keys[0].State != "retiring" || keys.Keys[1].State != "current" {
		t.Fatalf("oidc keys during the window: %+v", keys)
	}
	// The real binary runs on the wall clock: the window passes in real time.
	if !waitFor(60*time.Second, func() bool { jwks, err = s.client.JWKS(ctx); return err == nil && len(jwks.Keys) == 1 }) {
		t.Fatalf("the old key is still published after the window: %+v %v", jwks, err)
	}
	if jwks.Keys[0].Kid != kidOf(t, newTok) {
		t.Fatalf("JWKS after the window: %+v", jwks)
	}

	// revoke: A can mint nothing new
	h.akOK(o.home, "agent", "revoke", "alice", "--yes")
	if r := h.cli(A.home, "daemon", "oidc-token", "--audience", weedAudience); r.code == 0 || !strings.Contains(r.stderr, "REVOKED") {
		t.Fatalf("revoked agent minted: %d %s", r.code, r.stderr)
	}
	h.auditOK(o.home, "--data-dir", s.opts.effectiveDataDir())
}

func enclaveHex(b []byte) string { return hex.EncodeToString(b) }

func kidOf(t *testing.T, tok string) string {
	t.Helper()
	b, err := base64.RawURLEncoding.DecodeString(strings.SplitN(tok, ".", 2)[0])
	if err != nil {
		t.Fatalf("token header: %v", err)
	}
	var hdr struct{ Kid string }
	json.Unmarshal(b, &hdr)
	return hdr.Kid
}

// waitFileChange waits until path exists with content other than prev.
func waitFileChange(t *testing.T, path, prev string) string {
	t.Helper()
	var now string
	if !waitFor(agentTimeout, func() bool {
		b, err := os.ReadFile(path)
		now = string(b)
		return err == nil && len(b) > 0 && now != prev
	}) {
		t.Fatalf("%s did not change within %s", path, agentTimeout)
	}
	return now
}

// TestIssuerPlainHTTP: a plain-http issuer on a non-loopback host is refused
// unless --dev; with --dev the server starts and warns, and the discovery
// document names the issuer byte for byte.
func TestIssuerPlainHTTP(t *testing.T) {
	h := newHarness(t)
	home := t.TempDir()
	r := h.cli(home, "server", "--listen", "127.0.0.1:0", "--issuer", "http://keys.example.com")
	if r.code != 2 || !strings.Contains(r.stderr, "https") {
		t.Fatalf("plain-http public issuer: exit %d, stderr %q", r.code, r.stderr)
	}
	if _, err := os.Stat(filepath.Join(home, "server", "seed.sealed")); err == nil {
		t.Fatal("the refused start created a seed")
	}
	s := h.start(serverOpts{home: home, args: []string{"--issuer", "http://keys.example.com/", "--dev"}})
	if _, err := s.waitLog("http issuer warning", startTimeout, func(l logLine) bool {
		return l.str("level") == "WARN" && l.str("issuer") == "http://keys.example.com"
	}); err != nil {
		t.Fatal(err)
	}
	d, err := s.client.Discovery(context.Background())
	if err != nil || d.Issuer != "http://keys.example.com" || d.JWKSURI != "http://keys.example.com/.well-known/jwks.json" {
		t.Fatalf("discovery: %+v %v", d, err)
	}
}
