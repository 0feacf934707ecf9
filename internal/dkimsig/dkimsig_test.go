package dkimsig_test

import (
	"bytes"
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/emersion/go-msgauth/dkim"

	"github.com/agentkeys/agentkeys/internal/dkimsig"
)

// sign signs msg's header (fields given raw, in order) and body with both
// algorithms the way the broker does, and returns the signed message.
func sign(t *testing.T, fields []string, body string, edKey ed25519.PrivateKey, rsaKey *rsa.PrivateKey) []byte {
	t.Helper()
	var raw strings.Builder
	for _, f := range fields {
		raw.WriteString(dkimsig.RelaxedHeader(f) + "\r\n")
	}
	block, err := dkimsig.ParseBlock(raw.String())
	if err != nil {
		t.Fatal(err)
	}
	bh := dkimsig.BodyHash([]byte(body))
	var out bytes.Buffer
	for _, alg := range []string{dkimsig.AlgEd25519, dkimsig.AlgRSA} {
		sel := map[string]string{dkimsig.AlgEd25519: "ak1", dkimsig.AlgRSA: "ak1rsa"}[alg]
		u := dkimsig.Unsigned(dkimsig.Params{Alg: alg, Domain: "example.com", Selector: sel, BodyHash: bh, Time: 1700000000}, block)
		d := dkimsig.Digest(block, u)
		var sig []byte
		if alg == dkimsig.AlgEd25519 {
			sig = ed25519.Sign(edKey, d[:])
		} else if sig, err = rsa.SignPKCS1v15(nil, rsaKey, crypto.SHA256, d[:]); err != nil {
			t.Fatal(err)
		}
		out.WriteString("DKIM-Signature: " + dkimsig.Signed(u, sig) + "\r\n")
		for _, l := range strings.Split(dkimsig.Signed(u, sig), "\r\n") {
			if len(l) > 80 {
				t.Fatalf("a DKIM-Signature line is %d bytes: %q", len(l), l)
			}
		}
	}
	for _, f := range fields {
		out.WriteString(f + "\r\n")
	}
	out.WriteString("\r\n" + body)
	return out.Bytes()
}

func verify(t *testing.T, msg []byte, txt map[string]string) []*dkim.Verification {
	t.Helper()
	vs, err := dkim.VerifyWithOptions(bytes.NewReader(msg), &dkim.VerifyOptions{LookupTXT: func(name string) ([]string, error) {
		return []string{txt[name]}, nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

// TestSplitSigning: signatures built from the canonical block and body hash
// alone verify with an independent DKIM implementation (go-msgauth), for both
// algorithms; a changed body, a changed signed field and a second From fail.
func TestSplitSigning(t *testing.T) {
	edPub, edKey, _ := ed25519.GenerateKey(rand.Reader)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, _ := x509.MarshalPKIXPublicKey(&rsaKey.PublicKey)
	txt := map[string]string{
		"ak1._domainkey.example.com":    "v=DKIM1; k=ed25519; p=" + base64.StdEncoding.EncodeToString(edPub),
		"ak1rsa._domainkey.example.com": "v=DKIM1; k=rsa; p=" + base64.StdEncoding.EncodeToString(der),
	}
	fields := []string{"From: Agent <a1b2c3d4e5f6@example.com>", "To: someone@example.net",
		"X-A-Rather-Long-Header-Name-Number-One: 1", "X-A-Rather-Long-Header-Name-Number-Two: 2", "X-A-Rather-Long-Header-Name-Number-Three: 3",
		"Subject:   a  folded\r\n\tsubject  ", "Date: Mon, 1 Jan 2026 00:00:00 +0000", "Message-ID: <x@example.com>"}
	body := "Hello  there \r\n\r\nline two\t\r\n\r\n\r\n"
	msg := sign(t, fields, body, edKey, rsaKey)
	vs := verify(t, msg, txt)
	if len(vs) != 2 {
		t.Fatalf("%d signatures", len(vs))
	}
	for _, v := range vs {
		if v.Err != nil || v.Domain != "example.com" {
			t.Fatalf("signature does not verify: %+v", v)
		}
	}
	// Relaxed canonicalisation: whitespace changes in transit keep it valid.
	relaxed := bytes.Replace(msg, []byte("line two\t\r\n"), []byte("line  two \r\n"), 1)
	for _, v := range verify(t, relaxed, txt) {
		if v.Err != nil {
			t.Fatalf("relaxed body change broke the signature: %v", v.Err)
		}
	}
	for name, tampered := range map[string][]byte{
		"body":    bytes.Replace(msg, []byte("Hello"), []byte("Jello"), 1),
		"subject": bytes.Replace(msg, []byte("subject  "), []byte("subjekt  "), 1),
		// Above the signed one, where a verifier that picks the bottom-most
		// instance would not look without the extra "from" in h=.
		"second From": append([]byte("From: ceo@example.com\r\n"), msg...),
	} {
		for _, v := range verify(t, tampered, txt) {
			if v.Err == nil {
				t.Errorf("tampered %s still verifies (%s)", name, v.Domain)
			}
		}
	}
}

func TestParseBlock(t *testing.T) {
	good := "from:a@example.com\r\nsubject:hi there\r\n"
	b, err := dkimsig.ParseBlock(good)
	if err != nil {
		t.Fatal(err)
	}
	if from, err := b.From(); err != nil || from != "a@example.com" {
		t.Fatalf("From: %q %v", from, err)
	}
	if b.Names() != "from:subject:from" {
		t.Fatalf("h= %q", b.Names())
	}
	for name, raw := range map[string]string{
		"empty":         "",
		"no final CRLF": "from:a@example.com",
		"not canonical": "From: a@example.com\r\n",
		"double space":  "subject:a  b\r\nfrom:a@example.com\r\n",
		"bare LF":       "from:a@example.com\nsubject:x\r\n",
		"no colon":      "from a@example.com\r\n",
		"control char":  "from:a@example.com\r\nsubject:a\x00b\r\n",
		"too big":       "from:a@example.com\r\nsubject:" + strings.Repeat("x", dkimsig.MaxBlock) + "\r\n",
		"too many":      "from:a@example.com\r\n" + strings.Repeat("x:y\r\n", dkimsig.MaxFields),
	} {
		if _, err := dkimsig.ParseBlock(raw); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	for name, raw := range map[string]string{
		"no From":    "subject:x\r\n",
		"two From":   "from:a@example.com\r\nfrom:b@example.com\r\n",
		"two boxes":  "from:a@example.com, b@example.com\r\n",
		"not a mail": "from:nobody\r\n",
	} {
		b, err := dkimsig.ParseBlock(raw)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if _, err := b.From(); err == nil {
			t.Errorf("%s: From accepted", name)
		}
	}
	if dkimsig.ValidBodyHash("abc") || !dkimsig.ValidBodyHash(dkimsig.BodyHash(nil)) {
		t.Fatal("ValidBodyHash")
	}
}
