package api_test

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/daemon"
	"github.com/agentkeys/agentkeys/internal/dpop"
	"github.com/agentkeys/agentkeys/internal/ledger"
)

// anon sends an anonymous request to the handler, in process, from a fixed
// documentation address.
func (e *env) anon(method, target string, body []byte) *httptest.ResponseRecorder {
	req := httptest.NewRequest(method, "/", bytes.NewReader(body))
	req.URL.Path, req.URL.RawQuery, _ = strings.Cut(target, "?")
	req.RemoteAddr = "192.0.2.7:4321"
	rec := httptest.NewRecorder()
	e.handler.ServeHTTP(rec, req)
	return rec
}

// appended returns the entries after seq h, without the ledger's own checkpoints.
func (e *env) appended(t *testing.T, h uint64) []ledger.Entry {
	t.Helper()
	es, err := e.b.Storage().Entries(context.Background(), h+1, 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []ledger.Entry
	for _, en := range es {
		if en.Kind != ledger.KindCheckpoint {
			out = append(out, en)
		}
	}
	return out
}

func (e *env) headSeq(t *testing.T) uint64 {
	t.Helper()
	h, _, err := e.b.Storage().Head(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return h.Seq
}

func kinds(es []ledger.Entry) []string {
	var out []string
	for _, en := range es {
		out = append(out, en.Kind)
	}
	return out
}

// FuzzAnonymousBodies sends arbitrary bodies to the routes anyone may call
// without a session (sign-up, login, pair request, ledger submission): never a
// 500, never a panic, and a refused request appends nothing.
func FuzzAnonymousBodies(f *testing.F) {
	e := newEnv(f, broker.Config{Anon: unlimited()})
	routes := []string{"/v1/accounts", "/v1/sessions", "/v1/pair/requests", "/v1/ledger/entries"}
	for i := range routes {
		f.Add(uint8(i), []byte(`{}`))
		f.Add(uint8(i), []byte(`[]`))
		f.Add(uint8(i), []byte(`{"a":`))
	}
	f.Add(uint8(0), []byte(`{"public_key":"00","server":"http://x","time":1,"nonce":"00","sig":"00"}`))
	f.Add(uint8(1), []byte(`{"public_key":"`+strings.Repeat("ab", 32)+`","time":-9223372036854775808,"nonce":"zz","channel_key":"!","sig":""}`))
	f.Add(uint8(2), []byte(`{"owner":"0x0000000000000000000000000000000000000000","alias":"bot","scope":["openai"],"proof_jwk":"{\"kty\":\"EC\"}","hpke_public":"AAAA","sig":"AA"}`))
	f.Add(uint8(2), []byte(`{"owner":"","alias":"Bad Alias","scope":null,"ttl_seconds":-1}`))
	f.Add(uint8(3), []byte(`{"seq":1,"prev_hash":"00","time":0,"kind":"successor.authorize","origin":"governance","payload":{},"sigs":[]}`))
	f.Fuzz(func(t *testing.T, route uint8, body []byte) {
		path := routes[int(route)%len(routes)]
		h := e.headSeq(t)
		rec := e.anon(http.MethodPost, path, body)
		if rec.Code >= 500 {
			t.Fatalf("POST %s %q: %d %s", path, body, rec.Code, rec.Body)
		}
		if got := e.appended(t, h); rec.Code >= 300 && len(got) > 0 {
			t.Fatalf("POST %s refused with %d, yet appended %v", path, rec.Code, kinds(got))
		}
	})
}

// FuzzSignedLogin signs login statements built from fuzzed fields with a real
// identity key, so that the fuzzer reaches past the signature into sign-up and
// login: never a 500, a refused statement appends nothing, and an accepted one
// appends exactly its entries and returns a token the broker accepts.
func FuzzSignedLogin(f *testing.F) {
	e := newEnv(f, broker.Config{})
	hk, err := daemon.NewHPKEKey()
	if err != nil {
		f.Fatal(err)
	}
	channel := base64.StdEncoding.EncodeToString(hk.PublicKey().Bytes())
	nonce := strings.Repeat("0f", 16)
	f.Add(true, []byte("identity-1"), "", int64(0), nonce, "")
	f.Add(true, []byte("identity-2"), "", int64(30), nonce, channel)
	f.Add(false, []byte("identity-1"), "", int64(0), "1f"+nonce[2:], channel)
	f.Add(false, []byte("no-account"), "", int64(0), nonce, "")
	f.Add(true, []byte("identity-3"), "/", int64(0), nonce, "")
	f.Add(true, []byte("identity-3"), "", int64(301), nonce, "")
	f.Add(true, []byte("identity-3"), "", int64(-301), nonce, "")
	f.Add(true, []byte("identity-3"), "", int64(math.MinInt64), nonce, "")
	f.Add(true, []byte("identity-3"), "", int64(0), nonce[:30], "")
	f.Add(true, []byte("identity-3"), "", int64(0), "not hex", "")
	f.Add(false, []byte("identity-1"), "", int64(0), "2f"+nonce[2:], "%%%")
	f.Fuzz(func(t *testing.T, create bool, identity []byte, serverSuffix string, skew int64, nonce, channelKey string) {
		seed := sha256.Sum256(identity)
		key := ed25519.NewKeyFromSeed(seed[:])
		l := apiv1.Login{PublicKey: hex.EncodeToString(key.Public().(ed25519.PublicKey)), Server: e.srv.URL + serverSuffix,
			Time: e.now().Unix() + skew, Nonce: nonce, ChannelKey: channelKey}
		apiv1.SignLogin(&l, key)
		body, err := json.Marshal(l)
		if err != nil {
			t.Fatal(err)
		}
		path, want := "/v1/sessions", []string{"session.issued"}
		if create {
			path, want = "/v1/accounts", []string{"account.created", "session.issued"}
		}
		h := e.headSeq(t)
		rec := e.anon(http.MethodPost, path, body)
		got := e.appended(t, h)
		switch {
		case rec.Code >= 500:
			t.Fatalf("POST %s: %d %s", path, rec.Code, rec.Body)
		case rec.Code >= 300:
			if len(got) > 0 {
				t.Fatalf("POST %s refused with %d (%s), yet appended %v", path, rec.Code, rec.Body, kinds(got))
			}
		default:
			if strings.Join(kinds(got), ",") != strings.Join(want, ",") {
				t.Fatalf("POST %s accepted, appended %v, want %v", path, kinds(got), want)
			}
			var g apiv1.SessionGrant
			if err := json.Unmarshal(rec.Body.Bytes(), &g); err != nil {
				t.Fatalf("grant: %v", err)
			}
			if _, err := e.b.Authenticate(context.Background(), g.Token); err != nil {
				t.Fatalf("the granted token is refused: %v", err)
			}
			if (channelKey != "") != (g.ChannelKey != "") {
				t.Fatalf("channel key asked %v, granted %v", channelKey != "", g.ChannelKey != "")
			}
		}
	})
}

// FuzzSignedPairRequest signs pair requests built from fuzzed fields with a real
// proof key (or sends the fuzzed signature), so the fuzzer reaches every check
// of a pair request: never a 500, a refused request appends nothing, an accepted
// one appends its pair request and asks for a session TTL the broker allows.
func FuzzSignedPairRequest(f *testing.F) {
	const sessionTTL = 24 * time.Hour
	e := newEnv(f, broker.Config{Anon: unlimited(), SessionTTL: sessionTTL})
	_, g := e.owner(f)
	k, err := dpop.NewKey()
	if err != nil {
		f.Fatal(err)
	}
	jwk, _ := dpop.PublicJWK(k)
	hk, err := daemon.NewHPKEKey()
	if err != nil {
		f.Fatal(err)
	}
	hpub := base64.StdEncoding.EncodeToString(hk.PublicKey().Bytes())
	// owner: 0 the owner's wallet, 1 its omni, 2 the wallet in upper case, else the fuzzed text.
	// jwk, hpke: empty = the real key. sig: empty = sign; "flip" = sign, then change one byte.
	f.Add(uint8(0), "", "bot", "openai", int64(0), int64(60), "", "", "")
	f.Add(uint8(1), "", "bot-2", "openai,oidc:sts.amazonaws.com", int64(3600), int64(0), "", "", "")
	f.Add(uint8(2), "", "bot", "", int64(0), int64(60), "", "", "")
	f.Add(uint8(3), "0x0000000000000000000000000000000000000000", "bot", "openai", int64(0), int64(60), "", "", "")
	f.Add(uint8(3), strings.Repeat("f", 64), "bot", "openai", int64(0), int64(60), "", "", "")
	f.Add(uint8(0), "", "Bad Alias", "openai", int64(0), int64(60), "", "", "")
	f.Add(uint8(0), "", "bot", "openai,openai", int64(0), int64(60), "", "", "")
	f.Add(uint8(0), "", "bot", "*", int64(0), int64(60), "", "", "")
	f.Add(uint8(0), "", "bot", "openai", int64(-1), int64(60), "", "", "")
	f.Add(uint8(0), "", "bot", "openai", int64(math.MaxInt64), int64(60), "", "", "")
	f.Add(uint8(0), "", "bot", "openai", int64(86400), int64(60), "", "", "")
	f.Add(uint8(0), "", "bot", "openai", int64(86401), int64(60), "", "", "")
	f.Add(uint8(0), "", "bot", "openai", int64(math.MaxInt64/int64(time.Second)+1), int64(60), "", "", "")
	f.Add(uint8(0), "", "bot", "openai", int64(0), int64(-60), "", "", "")
	f.Add(uint8(0), "", "bot", "openai", int64(0), int64(math.MaxInt64/2), "", "", "")
	f.Add(uint8(0), "", "bot", "openai", int64(0), int64(60), `{"kty":"EC","crv":"P-256","x":"AA","y":"AA"}`, "", "")
	f.Add(uint8(0), "", "bot", "openai", int64(0), int64(60), "", "AAAA", "")
	f.Add(uint8(0), "", "bot", "openai", int64(0), int64(60), "", "not base64!", "")
	f.Add(uint8(0), "", "bot", "openai", int64(0), int64(60), "", "", "flip")
	f.Add(uint8(0), "", "bot", "openai", int64(0), int64(60), "", "", "AAAA")
	f.Fuzz(func(t *testing.T, ownerMode uint8, owner, alias, scope string, ttl, validFor int64, jwkText, hpke, sig string) {
		switch ownerMode {
		case 0:
			owner = g.Wallet
		case 1:
			owner = g.Omni
		case 2:
			owner = strings.ToUpper(g.Wallet)
		}
		r := apiv1.PairRequest{Owner: owner, Alias: alias, TTLSeconds: ttl, ProofJWK: string(jwk), HPKEPublic: hpub}
		if scope != "" {
			r.Scope = strings.Split(scope, ",")
		}
		if validFor != 0 {
			r.ValidUntil = e.now().Unix() + validFor
		}
		if jwkText != "" {
			r.ProofJWK = jwkText
		}
		if hpke != "" {
			r.HPKEPublic = hpke
		}
		if sig == "" || sig == "flip" {
			if err := apiv1.SignPairRequest(&r, k); err != nil {
				t.Fatal(err)
			}
			if sig == "flip" {
				b := []byte(r.Sig)
				b[len(b)/2] ^= 1
				r.Sig = string(b)
			}
		} else {
			r.Sig = sig
		}
		body, err := json.Marshal(r)
		if err != nil {
			return // invalid UTF-8 is replaced, not refused, by the encoder: nothing new to send
		}
		h := e.headSeq(t)
		rec := e.anon(http.MethodPost, "/v1/pair/requests", body)
		got := e.appended(t, h)
		switch {
		case rec.Code >= 500:
			t.Fatalf("pair request: %d %s", rec.Code, rec.Body)
		case rec.Code >= 300:
			if len(got) > 0 {
				t.Fatalf("pair request refused with %d (%s), yet appended %v", rec.Code, rec.Body, kinds(got))
			}
		default:
			if len(got) == 0 {
				t.Fatalf("pair request accepted (%s) but nothing was appended", rec.Body)
			}
			if ttl < 0 || ttl > int64(sessionTTL/time.Second) {
				t.Fatalf("pair request with ttl_seconds %d accepted; the broker allows 0 to %d", ttl, int64(sessionTTL/time.Second))
			}
			var pc apiv1.PairCreated
			if err := json.Unmarshal(rec.Body.Bytes(), &pc); err != nil || pc.ID == "" {
				t.Fatalf("accepted pair request: %v %s", err, rec.Body)
			}
		}
	})
}

// FuzzLedgerEntriesQuery sends arbitrary query strings to the public entries
// route: never a 500; an answered page holds at most limit entries, in order,
// none before from, and next follows the last one.
func FuzzLedgerEntriesQuery(f *testing.F) {
	e := newEnv(f, broker.Config{})
	e.owner(f)
	e.owner(f)
	for _, q := range []string{
		"", "from=0", "from=1&limit=1", "from=3&limit=2", "limit=1000", "limit=1001", "limit=0", "from=-1",
		"from=18446744073709551615", "from=18446744073709551616", "from=9223372036854775807", "from=1e3",
		"from=1&from=2", "limit=+5", "from=0x10", "from=%31", "from=1;limit=1", "from=%zz", "limit=2&from=",
	} {
		f.Add(q)
	}
	f.Fuzz(func(t *testing.T, query string) {
		rec := e.anon(http.MethodGet, "/v1/ledger/entries?"+query, nil)
		if rec.Code >= 500 {
			t.Fatalf("?%s: %d %s", query, rec.Code, rec.Body)
		}
		if rec.Code != http.StatusOK {
			if rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), `"fix"`) {
				t.Fatalf("?%s: %d %s, want 200 or a 400 with a fix", query, rec.Code, rec.Body)
			}
			return
		}
		var p apiv1.EntriesPage
		if err := json.Unmarshal(rec.Body.Bytes(), &p); err != nil {
			t.Fatalf("?%s: page does not decode: %v", query, err)
		}
		v, _ := url.ParseQuery(query) // what the handler sees, malformed pairs dropped
		from, limit := uint64(0), uint64(100)
		if s := v.Get("from"); s != "" {
			n, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				t.Fatalf("?%s: from=%q is not a number, yet a page was served", query, s)
			}
			if n > math.MaxInt64 {
				t.Fatalf("?%s: from=%d is beyond the seq range, yet a page was served", query, n)
			}
			from = n
		}
		if s := v.Get("limit"); s != "" {
			n, err := strconv.ParseUint(s, 10, 64)
			if err != nil {
				t.Fatalf("?%s: limit=%q is not a number, yet a page was served", query, s)
			}
			limit = n
		}
		if uint64(len(p.Entries)) > limit || len(p.Entries) > apiv1.MaxEntriesPage {
			t.Fatalf("?%s: %d entries, limit %d", query, len(p.Entries), limit)
		}
		for i, en := range p.Entries {
			if en.Seq < from || (i > 0 && en.Seq != p.Entries[i-1].Seq+1) {
				t.Fatalf("?%s: entry %d has seq %d (from %d)", query, i, en.Seq, from)
			}
		}
		if n := len(p.Entries); (n == 0 && p.Next != from) || (n > 0 && p.Next != p.Entries[n-1].Seq+1) {
			t.Fatalf("?%s: next %d after %d entries from %d", query, p.Next, n, from)
		}
	})
}
