package mail

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// TestDKIMRSAKey: one RSA key record per domain name, ever; a malformed one
// is refused.
func TestDKIMRSAKey(t *testing.T) {
	w := newWorld(t)
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&k.PublicKey)
	small, _ := rsa.GenerateKey(rand.Reader, 1024)
	smallDER, _ := x509.MarshalPKIXPublicKey(&small.PublicKey)
	rec := DKIMRSA{Owner: ownerA, Domain: "mail.example.com", Selector: SelectorRSA, Public: base64.StdEncoding.EncodeToString(der), Box: base64.StdEncoding.EncodeToString([]byte("sealed"))}
	fold := Module.Kinds[KindDKIMRSA].Fold
	apply := func(r DKIMRSA) error {
		return fold(w.st, &ledger.Entry{Kind: KindDKIMRSA, Origin: ledger.OriginEnclave, Payload: mustJSON(t, r)})
	}
	for name, bad := range map[string]func(*DKIMRSA){
		"domain":   func(r *DKIMRSA) { r.Domain = "not a domain" },
		"selector": func(r *DKIMRSA) { r.Selector = Selector },
		"owner":    func(r *DKIMRSA) { r.Owner = "" },
		"public":   func(r *DKIMRSA) { r.Public = "AAAA" },
		"1024 bit": func(r *DKIMRSA) { r.Public = base64.StdEncoding.EncodeToString(smallDER) },
		"no box":   func(r *DKIMRSA) { r.Box = "" },
		"huge box": func(r *DKIMRSA) { r.Box = base64.StdEncoding.EncodeToString(make([]byte, maxRSABox+1)) },
	} {
		r := rec
		bad(&r)
		if err := apply(r); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if err := apply(rec); err != nil {
		t.Fatal(err)
	}
	got, ok, err := GetDKIMRSA(w.st, "mail.example.com")
	if err != nil || !ok || *got != rec {
		t.Fatalf("GetDKIMRSA: %+v %v %v", got, ok, err)
	}
	if pk, err := got.RSAPublicKey(); err != nil || !pk.Equal(&k.PublicKey) {
		t.Fatalf("RSAPublicKey: %v", err)
	}
	if err := apply(rec); !isCode(err, problem.Conflict) {
		t.Fatalf("a second key for the domain: %v", err)
	}
	kind := Module.Kinds[KindDKIMRSA]
	e := &ledger.Entry{Kind: KindDKIMRSA, Origin: ledger.OriginEnclave, Payload: mustJSON(t, rec)}
	if owner, _, ok := kind.Owner(e); kind.Public || kind.Origins != ledger.FromEnclave || !ok || owner != ownerA {
		t.Fatal("mail.dkim.rsa must be the enclave's, private to the domain's first owner")
	}
}

// TestSigningAudit: the signing entries are the agent's own, name what the
// usage trail shows, and never more.
func TestSigningAudit(t *testing.T) {
	w := newWorld(t)
	agentOmni := strings.Repeat("c", 64)
	s := Signing{Owner: ownerA, Actor: agentOmni, Alias: "bot", From: "abot@mail.example.com", Domain: "mail.example.com",
		Headers: "from:to:subject:from", HeaderHash: strings.Repeat("0", 64), BodyHash: "bh"}
	w.ok(agentOmni, KindSigned, s)
	if err := w.apply(ownerA, KindSigned, s); err == nil {
		t.Error("a signing filed by another account than its actor")
	}
	partial := s
	partial.BodyHash = ""
	if err := w.apply(agentOmni, KindSigned, partial); err == nil {
		t.Error("a signing without its body hash")
	}
	denied := Signing{Owner: ownerA, Actor: agentOmni, Alias: "bot", From: "x@mail.example.com"}
	if err := w.apply(agentOmni, KindSignDenied, denied); err == nil {
		t.Error("a refusal without its reason")
	}
	denied.Reason = "no_send"
	w.ok(agentOmni, KindSignDenied, denied)
	e := &ledger.Entry{Kind: KindSignDenied, Origin: ledger.AccountOrigin(agentOmni), Payload: mustJSON(t, denied)}
	if u, ok := Module.Kinds[KindSignDenied].Usage(e); !ok || u.Result != "denied" || u.Agent != "bot" || !strings.Contains(u.Detail, "no_send") {
		t.Fatalf("usage row: %+v", u)
	}
	if owner, _, ok := Module.Kinds[KindSigned].Owner(e); !ok || owner != ownerA {
		t.Fatalf("owner of a signing: %q", owner)
	}
}

func isCode(err error, code problem.Code) bool {
	p, ok := err.(*problem.Error)
	return ok && p.Code == code
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
