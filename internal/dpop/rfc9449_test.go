package dpop

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"testing"
	"time"
)

// headerJSON is the header a daemon sends, written by hand for k.
func headerJSON(t testing.TB, x, y string) string {
	t.Helper()
	return `{"typ":"dpop+jwt","alg":"ES256","jwk":{"kty":"EC","crv":"P-256","x":"` + x + `","y":"` + y + `"}}`
}

// TestMembersAreCaseSensitive: RFC 7515/7519 member names are case-sensitive, and
// a JSON object with a member twice is not a valid JWS header or claims set. Go's
// encoding/json folds case ("HTM" fills htm) and keeps the last duplicate; the
// proof reader must do neither.
func TestMembersAreCaseSensitive(t *testing.T) {
	k, jkt, v, now := setup(t)
	point, _ := k.PublicKey.Bytes()
	enc := base64.RawURLEncoding.EncodeToString
	x, y := enc(point[1:33]), enc(point[33:])
	w := Want{Method: "GET", URLs: []string{credURL}, JKT: jkt, Token: "tok"}
	n := 0
	claims := func(format string) string { // %s is a fresh jti
		n++
		return fmt.Sprintf(format, fmt.Sprint("j", n))
	}
	ath, iat := ATH("tok"), now.Unix()
	std := `"htm":"GET","htu":"` + credURL + `","iat":` + fmt.Sprint(iat)
	good := headerJSON(t, x, y)
	// The exact members verify (the cases below differ from it in one thing only).
	if err := v.Verify(craftRaw(t, k, []byte(good), []byte(claims(`{`+std+`,"jti":"%s","ath":"`+ath+`"}`))), w); err != nil {
		t.Fatalf("hand-made proof refused: %v", err)
	}
	for name, c := range map[string]string{
		"HTM": `{"HTM":"GET","htu":"` + credURL + `","iat":` + fmt.Sprint(iat) + `,"jti":"%s","ath":"` + ath + `"}`,
		"Htu": `{"htm":"GET","Htu":"` + credURL + `","iat":` + fmt.Sprint(iat) + `,"jti":"%s","ath":"` + ath + `"}`,
		"IAT": `{"htm":"GET","htu":"` + credURL + `","IAT":` + fmt.Sprint(iat) + `,"jti":"%s","ath":"` + ath + `"}`,
		"JTI": `{` + std + `,"JTI":"%s","ath":"` + ath + `"}`,
		"ATH": `{` + std + `,"jti":"%s","ATH":"` + ath + `"}`,
		// a duplicate: a reader that keeps the first sees POST, one that keeps the last GET
		"htm twice":     `{"htm":"POST",` + std + `,"jti":"%s","ath":"` + ath + `"}`,
		"jti twice":     `{` + std + `,"jti":"%s","jti":"other","ath":"` + ath + `"}`,
		"ath twice":     `{` + std + `,"jti":"%s","ath":"x","ath":"` + ath + `"}`,
		"not an object": `["%s"]`,
	} {
		if err := v.Verify(craftRaw(t, k, []byte(good), []byte(claims(c))), w); !errors.Is(err, ErrInvalid) {
			t.Errorf("claims with %s: accepted (%v)", name, err)
		}
	}
	body := func() []byte { return []byte(claims(`{` + std + `,"jti":"%s","ath":"` + ath + `"}`)) }
	jwk := `{"kty":"EC","crv":"P-256","x":"` + x + `","y":"` + y + `"}`
	for name, h := range map[string]string{
		"TYP":          `{"TYP":"dpop+jwt","alg":"ES256","jwk":` + jwk + `}`,
		"Alg":          `{"typ":"dpop+jwt","Alg":"ES256","jwk":` + jwk + `}`,
		"JWK":          `{"typ":"dpop+jwt","alg":"ES256","JWK":` + jwk + `}`,
		"jwk KTY":      `{"typ":"dpop+jwt","alg":"ES256","jwk":{"KTY":"EC","crv":"P-256","x":"` + x + `","y":"` + y + `"}}`,
		"jwk X":        `{"typ":"dpop+jwt","alg":"ES256","jwk":{"kty":"EC","crv":"P-256","X":"` + x + `","y":"` + y + `"}}`,
		"alg twice":    `{"typ":"dpop+jwt","alg":"none","alg":"ES256","jwk":` + jwk + `}`,
		"typ twice":    `{"typ":"JWT","typ":"dpop+jwt","alg":"ES256","jwk":` + jwk + `}`,
		"jwk twice":    `{"typ":"dpop+jwt","alg":"ES256","jwk":{},"jwk":` + jwk + `}`,
		"jwk x twice":  `{"typ":"dpop+jwt","alg":"ES256","jwk":{"kty":"EC","crv":"P-256","x":"` + y + `","x":"` + x + `","y":"` + y + `"}}`,
		"jwk null":     `{"typ":"dpop+jwt","alg":"ES256","jwk":null}`,
		"header array": `[` + good + `]`,
	} {
		if err := v.Verify(craftRaw(t, k, []byte(h), body()), w); !errors.Is(err, ErrInvalid) {
			t.Errorf("header with %s: accepted (%v)", name, err)
		}
	}
	// Escaped names are the same names (RFC 8259 compares them unescaped).
	if err := v.Verify(craftRaw(t, k, []byte(good), []byte(claims(`{"ht\u006d":"GET","htu":"`+credURL+`","iat":`+fmt.Sprint(iat)+`,"jti":"%s","ath":"`+ath+`"}`))), w); err != nil {
		t.Fatalf(`"ht\u006d" is "htm": %v`, err)
	}
}

// TestProofsBeforeStartRefused: the replay cache lives in memory, so a proof
// captured before a restart would be new to the next process. A verifier refuses
// every proof dated before it was made; the daemon makes a new proof.
func TestProofsBeforeStartRefused(t *testing.T) {
	k, jkt, _, now := setup(t)
	clock := func() time.Time { return *now }
	w := Want{Method: "GET", URLs: []string{credURL}, JKT: jkt, Token: "tok"}
	first := NewVerifier(0, clock)
	p, _ := Sign(k, "GET", credURL, "tok", *now)
	if err := first.Verify(p, w); err != nil {
		t.Fatal(err)
	}
	*now = now.Add(10 * time.Second) // the broker restarts: a new process, a new verifier
	second := NewVerifier(0, clock)
	if err := second.Verify(p, w); !errors.Is(err, ErrBeforeStart) {
		t.Fatalf("a proof from before the restart: %v, want ErrBeforeStart", err)
	}
	fresh, _ := Sign(k, "GET", credURL, "tok", *now)
	if err := second.Verify(fresh, w); err != nil {
		t.Fatalf("a proof made after the restart: %v", err)
	}
	// Within the start second: iat has whole seconds, so a proof dated the second
	// the verifier started in may have been made before it and is refused.
	*now = now.Add(10*time.Second + 500*time.Millisecond)
	third := NewVerifier(0, clock)
	sameSecond, _ := Sign(k, "GET", credURL, "tok", *now)
	if err := third.Verify(sameSecond, w); !errors.Is(err, ErrBeforeStart) {
		t.Fatalf("a proof dated the start second: %v, want ErrBeforeStart", err)
	}
	*now = now.Add(500 * time.Millisecond)
	next, _ := Sign(k, "GET", credURL, "tok", *now)
	if err := third.Verify(next, w); err != nil {
		t.Fatalf("a proof dated the next second: %v", err)
	}
}

// TestHTUComparison: RFC 9449 §4.3 compares htu with the request's URI ignoring
// query and fragment, after RFC 3986 syntax- and scheme-based normalisation.
func TestHTUComparison(t *testing.T) {
	k, jkt, v, now := setup(t)
	point, _ := k.PublicKey.Bytes()
	enc := base64.RawURLEncoding.EncodeToString
	good := headerJSON(t, enc(point[1:33]), enc(point[33:]))
	w := Want{Method: "GET", URLs: []string{"https://other.example.net/v1/agent/credentials", credURL}, JKT: jkt}
	n := 0
	proof := func(htu string) string {
		n++
		return craftRaw(t, k, []byte(good), fmt.Appendf(nil, `{"htm":"GET","htu":%q,"iat":%d,"jti":"j%d"}`, htu, now.Unix(), n))
	}
	for _, htu := range []string{
		credURL,
		"https://other.example.net/v1/agent/credentials",
		"HTTPS://Keys.Example.COM/v1/agent/credentials",
		"https://keys.example.com:443/v1/agent/credentials",
		"https://keys.example.com:/v1/agent/credentials",
		"https://keys.example.com/v1/agent/credentials?q=1#frag",
		"https://keys.example.com/v1/%61gent/cr%65dentials",
		"https://keys.example.com/v1/x/../agent/./credentials",
	} {
		if err := v.Verify(proof(htu), w); err != nil {
			t.Errorf("htu %q: %v", htu, err)
		}
	}
	for _, htu := range []string{
		"http://keys.example.com/v1/agent/credentials",
		"https://keys.example.com:8443/v1/agent/credentials",
		"https://keys.example.com.evil.example/v1/agent/credentials",
		"https://evil@keys.example.com/v1/agent/credentials",
		"https://keys.example.com/V1/agent/credentials",
		"https://keys.example.com/v1/agent/credentials/",
		"https://keys.example.com/v1/agent%2Fcredentials",
		"https://keys.example.com/v1/agent/credentials/..",
		"/v1/agent/credentials",
		"keys.example.com/v1/agent/credentials",
		"",
	} {
		if err := v.Verify(proof(htu), w); !errors.Is(err, ErrInvalid) {
			t.Errorf("htu %q: accepted (%v)", htu, err)
		}
	}
	if got, err := HTU("HTTP://Host:80"); err != nil || got != "http://host/" {
		t.Errorf(`HTU("HTTP://Host:80") = %q, %v; want "http://host/"`, got, err)
	}
}

// FuzzReadClaims: what the strict reader accepts is valid JSON with the same
// members and values encoding/json sees, named exactly and once.
func FuzzReadClaims(f *testing.F) {
	for _, s := range []string{
		`{"htm":"GET","htu":"https://a/b","iat":1800000000,"jti":"j","ath":"x"}`,
		` { "htm" : "G\u0045T" , "iat" : 1.8e9 } `,
		`{"iat":-0.5}`, `{"iat":01}`, `{"htm":"a","htm":"b"}`, `{"HTM":"GET"}`, `{"jti":"\ud800"}`,
		`{"htu":"a\"b\\c"}`, `{}`, `{"iat":1e400}`, "{\"jti\":\"\xff\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		var c Claims
		if readJSON(raw, c.member) != nil {
			return
		}
		if !json.Valid(raw) {
			t.Fatalf("accepted invalid JSON %q", raw)
		}
		var m map[string]any
		if err := json.Unmarshal(raw, &m); err != nil {
			t.Fatal(err)
		}
		got := map[string]any{"htm": c.HTM, "htu": c.HTU, "jti": c.JTI, "ath": c.ATH}
		for k, v := range m {
			switch k {
			case "htm", "htu", "jti", "ath":
				if v != got[k] {
					t.Fatalf("%q: %s = %q, encoding/json reads %q", raw, k, got[k], v)
				}
			case "iat":
				if f, ok := v.(float64); !ok || int64(math.Floor(f)) != c.IAT {
					t.Fatalf("%q: iat = %d, encoding/json reads %v", raw, c.IAT, v)
				}
			default:
				t.Fatalf("%q: accepted member %q", raw, k)
			}
		}
		// encoding/json keeps the last of a duplicate: count the names themselves
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.Token() // {
		names := 0
		for ; dec.More(); names++ {
			dec.Token()
			var v any
			dec.Decode(&v)
		}
		if names != len(m) {
			t.Fatalf("%q: %d members, %d names (a duplicate accepted)", raw, names, len(m))
		}
	})
}
