package enclave

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/attest"
	"github.com/agentkeys/agentkeys/internal/clock"
)

func TestQuoteVerifies(t *testing.T) {
	cfg := testConfig(t)
	at := clock.NewFake(time.Unix(1_800_000_000, 0)) // the quote's date is the configured clock's
	cfg.Now = at.Now
	e := mustOpen(t, cfg)
	var rd [64]byte
	rand.Read(rd[:])
	q := e.Quote(rd)
	if err := attest.Verify(q, e.PlatformPublicKey()); err != nil {
		t.Fatalf("VerifyQuote: %v", err)
	}
	m := e.Measurements()
	if q.MrEnclave != hex.EncodeToString(m.MrEnclave[:]) || q.MrSigner != hex.EncodeToString(m.MrSigner[:]) ||
		q.ReportData != hex.EncodeToString(rd[:]) || q.Tier != attest.TierDev ||
		q.PlatformKey != hex.EncodeToString(e.PlatformPublicKey()) || q.Timestamp != 1_800_000_000 {
		t.Fatalf("quote fields = %+v", q)
	}
	at.Advance(90 * time.Second)
	if q2 := e.Quote(rd); q2.Timestamp != 1_800_000_090 || attest.Verify(q2, e.PlatformPublicKey()) != nil {
		t.Fatalf("a quote 90 s later: ts %d (want 1800000090), verifies: %v", q2.Timestamp, attest.Verify(q2, e.PlatformPublicKey()))
	}
	// A JSON round trip keeps it valid, and the JSON uses the documented names.
	b, err := json.Marshal(q)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{`"mrenclave"`, `"mrsigner"`, `"report_data"`, `"tier"`, `"ts"`, `"platform_key"`, `"sig"`} {
		if !bytes.Contains(b, []byte(name)) {
			t.Errorf("quote JSON lacks %s: %s", name, b)
		}
	}
	var q2 attest.Quote
	if err := json.Unmarshal(b, &q2); err != nil {
		t.Fatal(err)
	}
	if err := attest.Verify(q2, e.PlatformPublicKey()); err != nil {
		t.Fatalf("VerifyQuote after JSON: %v", err)
	}
}

func flipHexDigit(s string) string {
	b := []byte(s)
	if b[0] == '0' {
		b[0] = '1'
	} else {
		b[0] = '0'
	}
	return string(b)
}

func TestQuoteTampering(t *testing.T) {
	e := mustOpen(t, testConfig(t))
	q := e.Quote([64]byte{1, 2, 3})
	pub := e.PlatformPublicKey()
	otherPub, _, _ := ed25519.GenerateKey(rand.Reader)

	cases := map[string]func(q *attest.Quote){
		"mrenclave":           func(q *attest.Quote) { q.MrEnclave = flipHexDigit(q.MrEnclave) },
		"mrsigner":            func(q *attest.Quote) { q.MrSigner = flipHexDigit(q.MrSigner) },
		"report_data":         func(q *attest.Quote) { q.ReportData = flipHexDigit(q.ReportData) },
		"tier":                func(q *attest.Quote) { q.Tier = attest.TierProduction },
		"tier unknown":        func(q *attest.Quote) { q.Tier = "staging" },
		"ts":                  func(q *attest.Quote) { q.Timestamp++ },
		"ts zero":             func(q *attest.Quote) { q.Timestamp = 0 },
		"platform_key":        func(q *attest.Quote) { q.PlatformKey = hex.EncodeToString(otherPub) },
		"sig":                 func(q *attest.Quote) { q.Signature = flipHexDigit(q.Signature) },
		"sig empty":           func(q *attest.Quote) { q.Signature = "" },
		"sig short":           func(q *attest.Quote) { q.Signature = q.Signature[:126] },
		"mrenclave uppercase": func(q *attest.Quote) { q.MrEnclave = strings.ToUpper(q.MrEnclave) },
		"report_data short":   func(q *attest.Quote) { q.ReportData = q.ReportData[:64] },
		"mrsigner not hex":    func(q *attest.Quote) { q.MrSigner = "zz" + q.MrSigner[2:] },
	}
	for name, tamper := range cases {
		t.Run(name, func(t *testing.T) {
			tq := q
			tamper(&tq)
			if tq == q {
				t.Fatal("tampering changed nothing")
			}
			if err := attest.Verify(tq, pub); err == nil {
				t.Fatal("VerifyQuote accepted a tampered quote")
			}
		})
	}

	// The quote names another key than the pinned one.
	if err := attest.Verify(q, otherPub); !errors.Is(err, attest.ErrWrongPlatformKey) {
		t.Fatalf("VerifyQuote with another pinned key: %v, want ErrWrongPlatformKey", err)
	}
	// A forger who also rewrites platform_key still fails the signature.
	forged := q
	forged.PlatformKey = hex.EncodeToString(otherPub)
	if err := attest.Verify(forged, otherPub); !errors.Is(err, attest.ErrInvalidQuote) {
		t.Fatalf("VerifyQuote of a re-labelled quote: %v, want attest.ErrInvalidQuote", err)
	}
	if err := attest.Verify(q, pub[:31]); err == nil {
		t.Fatal("VerifyQuote accepted a 31-byte pinned key")
	}
	// A quote from another platform does not verify under ours.
	e2 := mustOpen(t, testConfig(t))
	if err := attest.Verify(e2.Quote([64]byte{1, 2, 3}), pub); err == nil {
		t.Fatal("quote of another platform verified under ours")
	}
}

func TestAttest(t *testing.T) {
	e := mustOpen(t, testConfig(t))
	nonce := []byte("client nonce 8f3a")
	q := e.Attest(nonce)
	if err := attest.Verify(q, e.PlatformPublicKey()); err != nil {
		t.Fatal(err)
	}
	want := attest.ReportData(nonce, e.Keys())
	if q.ReportData != hex.EncodeToString(want[:]) {
		t.Fatalf("report_data = %s, want %x", q.ReportData, want)
	}
	other := attest.ReportData([]byte("other nonce"), e.Keys())
	if bytes.Equal(other[:32], want[:32]) || !bytes.Equal(other[32:], want[32:]) {
		t.Fatal("nonce half / keys half of report data mixed up")
	}
}

func TestKeysHash(t *testing.T) {
	keys := []attest.KeyInfo{
		{Path: "ledger/v1", Alg: "EdDSA", Kid: "abc", Public: "00ff"},
		{Path: "oidc/issuer/v1", Alg: "ES256", Kid: "def", Public: "04aa"},
	}
	base := attest.KeysHash(keys)
	if base != attest.KeysHash([]attest.KeyInfo{keys[0], keys[1]}) {
		t.Fatal("KeysHash is not deterministic")
	}
	variants := [][]attest.KeyInfo{
		nil,
		{keys[0]},
		{keys[1], keys[0]},
		{{Path: "ledger/v2", Alg: "EdDSA", Kid: "abc", Public: "00ff"}, keys[1]},
		{{Path: "ledger/v1", Alg: "ES256", Kid: "abc", Public: "00ff"}, keys[1]},
		{{Path: "ledger/v1", Alg: "EdDSA", Kid: "abd", Public: "00ff"}, keys[1]},
		{{Path: "ledger/v1", Alg: "EdDSA", Kid: "abc", Public: "00fe"}, keys[1]},
		// Moving bytes across a field boundary must change the hash.
		{{Path: "ledger/v1E", Alg: "dDSA", Kid: "abc", Public: "00ff"}, keys[1]},
	}
	for i, v := range variants {
		if attest.KeysHash(v) == base {
			t.Errorf("variant %d hashes like the original", i)
		}
	}
}
