// Package dpop makes and checks proof-of-possession proofs in the shape of RFC
// 9449 (DPoP): a compact JWS, header {typ:"dpop+jwt", alg:"ES256", jwk}, claims
// {htm, htu, iat, jti, ath}. A daemon signs one per request with its P-256 proof
// key; the broker checks it against the thumbprint bound into the agent token
// (cnf.jkt), so a stolen token without the key is useless. Only ES256 is
// accepted. It never logs, and its errors never quote a proof or a token.
package dpop

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/go-jose/go-jose/v4"
)

// Type is the typ header of a proof.
const Type = "dpop+jwt"

// Skew is how far a proof's iat may be from the verifier's clock.
const Skew = 60 * time.Second

// ReplayWindow is the longest a verifier remembers a proof's jti: until the
// proof's iat is more than Skew in the past, so at most 2×Skew (a proof dated
// Skew ahead). A proof dated now is remembered for Skew.
const ReplayWindow = 2 * Skew

// MaxProofLen bounds a proof (bytes).
const MaxProofLen = 4096

// ErrInvalid wraps every refused proof; the text says why, never what it held.
var ErrInvalid = errors.New("dpop: invalid proof")

// ErrReplayed means the proof's jti was already used.
var ErrReplayed = fmt.Errorf("%w: replayed", ErrInvalid)

// ErrBeforeStart means the proof is dated before the verifier was made: it may
// have been used with a verifier (a broker process) that no longer exists, so
// the client must make a new one.
var ErrBeforeStart = fmt.Errorf("%w: made before the broker started; make a new proof", ErrInvalid)

func invalid(why string) error { return fmt.Errorf("%w: %s", ErrInvalid, why) }

// Claims are a proof's claims.
type Claims struct {
	HTM string `json:"htm"`
	HTU string `json:"htu"`
	IAT int64  `json:"iat"`
	JTI string `json:"jti"`
	ATH string `json:"ath,omitempty"`
}

// member says where readJSON puts a member of a proof's claims.
func (c *Claims) member(name string) any {
	switch name {
	case "htm":
		return &c.HTM
	case "htu":
		return &c.HTU
	case "iat":
		return &c.IAT
	case "jti":
		return &c.JTI
	case "ath":
		return &c.ATH
	}
	return nil
}

// NewKey generates a P-256 proof key.
func NewKey() (*ecdsa.PrivateKey, error) { return ecdsa.GenerateKey(elliptic.P256(), rand.Reader) }

// PublicJWK returns the public JWK of key as JSON.
func PublicJWK(key *ecdsa.PrivateKey) ([]byte, error) {
	return json.Marshal(jose.JSONWebKey{Key: &key.PublicKey, Algorithm: string(jose.ES256), Use: "sig"})
}

// Thumbprint is the RFC 7638 SHA-256 thumbprint (unpadded base64url) of a public
// P-256 key.
func Thumbprint(pub *ecdsa.PublicKey) (string, error) {
	if pub == nil || pub.Curve != elliptic.P256() {
		return "", invalid("proof key is not a P-256 key")
	}
	b, err := pub.Bytes() // 0x04 || x || y
	if err != nil {
		return "", invalid("proof key is not a P-256 point")
	}
	enc := base64.RawURLEncoding
	return thumbprint(enc.EncodeToString(b[1:33]), enc.EncodeToString(b[33:])), nil
}

// thumbprint hashes the required members of an EC P-256 JWK in lexicographic
// order, without whitespace (RFC 7638); x and y are canonical base64url.
func thumbprint(x, y string) string {
	tp := sha256.Sum256([]byte(`{"crv":"P-256","kty":"EC","x":"` + x + `","y":"` + y + `"}`))
	return base64.RawURLEncoding.EncodeToString(tp[:])
}

// ParseJWK parses a public P-256 JWK (JSON) and returns it with its thumbprint.
func ParseJWK(raw []byte) (*ecdsa.PublicKey, string, error) {
	var k jose.JSONWebKey
	if err := k.UnmarshalJSON(raw); err != nil {
		return nil, "", invalid("proof key is not a JWK")
	}
	pub, ok := k.Key.(*ecdsa.PublicKey)
	if !ok || !k.IsPublic() || pub.Curve != elliptic.P256() {
		return nil, "", invalid("proof key is not a public P-256 key")
	}
	tp, err := Thumbprint(pub)
	return pub, tp, err
}

// ATH is the access-token hash claim of a proof made for token.
func ATH(token string) string {
	h := sha256.Sum256([]byte(token))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// HTU normalises an absolute http(s) URL for comparing htu claims (RFC 9449
// §4.3): query and fragment dropped, then RFC 3986 syntax- and scheme-based
// normalisation — scheme and host in lower case, the scheme's default port and
// an empty port dropped, an empty path made "/", percent-encoding of unreserved
// characters decoded and of the rest in upper case, dot segments removed. A URL
// with user information is refused: no client addresses the broker with one.
func HTU(raw string) (string, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || u.User != nil || u.Opaque != "" {
		return "", invalid("htu is not an absolute http(s) URL")
	}
	host, port := strings.ToLower(u.Hostname()), u.Port()
	if strings.Contains(host, ":") {
		host = "[" + host + "]"
	}
	if port != "" && !(u.Scheme == "https" && port == "443") && !(u.Scheme == "http" && port == "80") {
		host += ":" + port
	}
	path := u.EscapedPath()
	if strings.IndexByte(path, '%') >= 0 {
		path = normalPercents(path)
	}
	if strings.Contains(path, "/.") {
		path = removeDots(path)
	}
	if path == "" {
		path = "/"
	}
	return u.Scheme + "://" + host + path, nil
}

// normalPercents decodes the percent-encoded unreserved characters of an escaped
// path and writes the other escapes in upper case (RFC 3986 §6.2.2.1-2).
func normalPercents(p string) string {
	const hex = "0123456789ABCDEF"
	b := make([]byte, 0, len(p))
	for i := 0; i < len(p); i++ {
		if p[i] != '%' || i+2 >= len(p) {
			b = append(b, p[i])
			continue
		}
		c, ok := unhex(p[i+1], p[i+2])
		switch {
		case !ok:
			b = append(b, p[i])
			continue
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9', c == '-', c == '.', c == '_', c == '~':
			b = append(b, c)
		default:
			b = append(b, '%', hex[c>>4], hex[c&15])
		}
		i += 2
	}
	return string(b)
}

func unhex(a, b byte) (byte, bool) {
	v := func(c byte) (byte, bool) {
		switch {
		case '0' <= c && c <= '9':
			return c - '0', true
		case 'a' <= c && c <= 'f':
			return c - 'a' + 10, true
		case 'A' <= c && c <= 'F':
			return c - 'A' + 10, true
		}
		return 0, false
	}
	hi, ok1 := v(a)
	lo, ok2 := v(b)
	return hi<<4 | lo, ok1 && ok2
}

// removeDots removes the "." and ".." segments of an absolute path, as RFC
// 3986 §5.2.4 does.
func removeDots(p string) string {
	segs := strings.Split(p, "/")[1:]
	out := make([]string, 0, len(segs))
	for i, s := range segs {
		last := i == len(segs)-1
		switch s {
		case ".":
		case "..":
			if len(out) > 0 {
				out = out[:len(out)-1]
			}
		default:
			out = append(out, s)
			continue
		}
		if last {
			out = append(out, "")
		}
	}
	return "/" + strings.Join(out, "/")
}

// Sign makes a proof for method and URL; token is the access token it goes
// with ("" for a request without one, such as a pairing poll). A client that
// makes many proofs with one key keeps a Signer.
func Sign(key *ecdsa.PrivateKey, method, rawURL, token string, now time.Time) (string, error) {
	s, err := NewSigner(key, token)
	if err != nil {
		return "", err
	}
	return s.Sign(method, rawURL, now)
}

// Verifier checks proofs and remembers their jti for as long as their iat is
// accepted, in its ReplayStore (its own memory unless shared). It is safe for
// concurrent use.
//
// Its own memory of used proofs starts empty, so it refuses every proof dated
// before it was made (ErrBeforeStart): a proof used with the broker process
// before a restart cannot be used again with the next one. A shared store may
// remember them, but the rule holds for it too: it costs a client one new proof. iat has whole seconds, so a
// proof dated the second the verifier was made in is refused too (it may be
// older than the verifier); the client makes a new one.
type Verifier struct {
	replays   replayCache // the default store, in memory
	store     ReplayStore // where used proofs are remembered: &replays unless shared
	headers   headerMemo
	now       func() time.Time
	notBefore int64 // the first whole second after the verifier was made (unix)
}

// NewVerifier returns a verifier remembering at most max proofs at once (0 =
// 1,000,000: ~16,000 proofs/s for a minute each, in ~50 MB); now is its clock
// (nil = time.Now).
func NewVerifier(max int, now func() time.Time) *Verifier {
	return newVerifier(nil, max, now)
}

// NewSharedVerifier returns a verifier that remembers used proofs in store, which
// other verifiers (other broker processes) may share: a proof accepted by one
// of them is refused by all. now is its clock (nil = time.Now).
func NewSharedVerifier(store ReplayStore, now func() time.Time) *Verifier {
	return newVerifier(store, 0, now)
}

func newVerifier(store ReplayStore, max int, now func() time.Time) *Verifier {
	if max <= 0 {
		max = 1_000_000
	}
	if now == nil {
		now = time.Now
	}
	start := now()
	notBefore := start.Unix()
	if start.Nanosecond() != 0 {
		notBefore++
	}
	v := &Verifier{store: store, now: now, notBefore: notBefore}
	if store == nil {
		v.replays = replayCache{seen: map[[16]byte]int64{}, max: max}
		v.store = &v.replays
	}
	return v
}

// Want is what a proof must match.
type Want struct {
	Method string
	URLs   []string // the request's URL under each name the broker is configured with (any one matches); never one built from the request's Host
	JKT    string   // the thumbprint bound into the token (cnf.jkt) or the pair request
	Token  string   // the access token sent with it; "" = the proof must have no ath
}

// Verify checks proof against w and records its jti.
//
// The compact JWS is taken apart here rather than by a general JOSE parser: a
// proof has one fixed shape, and a strict reader for exactly that shape
// (header {typ, alg, jwk{kty, crv, x, y}}, claims {htm, htu, iat, jti, ath}; each
// member named exactly, case-sensitively, at most once, no other member; ES256
// only) is both tighter and about 3× cheaper on the agents' hot path
// (docs/benchmarks.md). Tests check it against proofs made by go-jose.
func (v *Verifier) Verify(proof string, w Want) error {
	if proof == "" {
		return invalid("no DPoP proof was sent")
	}
	if len(proof) > MaxProofLen {
		return invalid("proof is too long")
	}
	h64, rest, ok1 := strings.Cut(proof, ".")
	p64, s64, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || strings.Contains(s64, ".") {
		return invalid("not an ES256 compact JWS")
	}
	pub, tp, kept, err := v.headers.key(h64)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare([]byte(tp), []byte(w.JKT)) != 1 {
		return invalid("proof key is not the key the session is bound to")
	}
	sig, err := base64.RawURLEncoding.DecodeString(s64)
	if err != nil || len(sig) != 64 {
		return invalid("signature is not a 64-byte ES256 signature")
	}
	digest := sha256.Sum256([]byte(proof[:len(h64)+1+len(p64)]))
	if !ecdsa.Verify(pub, digest[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		return invalid("signature does not verify")
	}
	if !kept {
		v.headers.keep(h64, pub, tp)
	}
	var c Claims
	if err := readObject(p64, c.member); err != nil {
		return invalid("claims are not {htm, htu, iat, jti, ath}")
	}
	if c.HTM != w.Method {
		return invalid("proof is for another method")
	}
	if !w.addressed(c.HTU) {
		return invalid("proof is for another URL")
	}
	if w.Token == "" {
		if c.ATH != "" {
			return invalid("unexpected ath")
		}
	} else if subtle.ConstantTimeCompare([]byte(c.ATH), []byte(ATH(w.Token))) != 1 {
		return invalid("ath does not match the access token")
	}
	now := v.now()
	if d := now.Sub(time.Unix(c.IAT, 0)); d > Skew || d < -Skew {
		return invalid("iat is more than 60 s from the broker's clock")
	}
	if c.IAT < v.notBefore {
		return ErrBeforeStart
	}
	if c.JTI == "" || len(c.JTI) > 128 {
		return invalid("jti is missing or too long")
	}
	id := sha256.Sum256([]byte(w.JKT + "|" + c.JTI))
	first, err := v.store.First(context.Background(), ProofID(id[:16]), now, time.Unix(c.IAT+int64(Skew/time.Second)+1, 0))
	switch {
	case errors.Is(err, ErrInvalid): // the memory store is full
		return err
	case err != nil:
		return storeError{err}
	case !first:
		return ErrReplayed
	}
	return nil
}

// addressed reports whether htu names one of w.URLs (RFC 9449 §4.3). A daemon
// signs the normalised URL and the broker's URLs are normalised, so the first
// comparison is usually enough.
func (w *Want) addressed(htu string) bool {
	for _, u := range w.URLs {
		if u == htu {
			return true
		}
	}
	got, err := HTU(htu)
	if err != nil {
		return false
	}
	for _, u := range w.URLs {
		if want, err := HTU(u); err == nil && want == got {
			return true
		}
	}
	return false
}

// header is the protected header of a proof.
type header struct {
	Typ, Alg string
	JWK      *jwk // nil if absent
}

// jwk is a public P-256 JWK; any other member (a private "d" among them) is refused.
type jwk struct {
	Kty, Crv, X, Y string
}

// member says where readJSON puts a member of a jwk.
func (k *jwk) member(name string) any {
	switch name {
	case "kty":
		return &k.Kty
	case "crv":
		return &k.Crv
	case "x":
		return &k.X
	case "y":
		return &k.Y
	}
	return nil
}

// headerMemo keeps proof headers by their exact encoding: a daemon sends the
// same header with every proof, so it is decoded, checked and its key parsed (and
// checked to be on the curve) once, and crypto/ecdsa finds the same *PublicKey
// (and its own per-key cache) on every request. A header is kept only once a
// proof carrying it has verified (signature, and the key a session or pair
// request is bound to), so strangers cannot fill it; and only if it is at most
// maxMemoHeader long (a daemon's is ~220 characters; whitespace could pad one to
// MaxProofLen). At most maxHeaders are kept; when full it starts over. Lookups
// share a read lock: every request makes one, and under an exclusive lock they
// queued behind each other (the mutex profile under 16 concurrent agents).
type headerMemo struct {
	mu sync.RWMutex
	m  map[string]memoKey
}

type memoKey struct {
	pub *ecdsa.PublicKey
	tp  string
}

const (
	maxHeaders    = 100_000
	maxMemoHeader = 512
)

// key returns the key and thumbprint of the encoded protected header h64, and
// whether it was kept; a header not kept is checked here.
func (hm *headerMemo) key(h64 string) (*ecdsa.PublicKey, string, bool, error) {
	hm.mu.RLock()
	got, ok := hm.m[h64]
	hm.mu.RUnlock()
	if ok {
		return got.pub, got.tp, true, nil
	}
	var h header
	var k jwk
	if err := readObject(h64, func(name string) any {
		switch name {
		case "typ":
			return &h.Typ
		case "alg":
			return &h.Alg
		case "jwk":
			h.JWK = &k
			return k.member
		}
		return nil
	}); err != nil {
		return nil, "", false, invalid("header is not {typ, alg, jwk{kty, crv, x, y}}")
	}
	if h.Alg != "ES256" {
		return nil, "", false, invalid("alg is not ES256")
	}
	if h.Typ != Type {
		return nil, "", false, invalid(`typ is not "dpop+jwt"`)
	}
	if h.JWK == nil {
		return nil, "", false, invalid("header has no public jwk")
	}
	pub, tp, err := h.JWK.public()
	return pub, tp, false, err
}

// keep remembers a header checked by key, once a proof carrying it verified.
func (hm *headerMemo) keep(h64 string, pub *ecdsa.PublicKey, tp string) {
	if len(h64) > maxMemoHeader {
		return
	}
	hm.mu.Lock()
	defer hm.mu.Unlock()
	if hm.m == nil || len(hm.m) >= maxHeaders {
		hm.m = make(map[string]memoKey)
	}
	hm.m[h64] = memoKey{pub, tp}
}

// public returns the key and its RFC 7638 thumbprint. The coordinates must be
// canonical (32 bytes, unpadded base64url), so one key has one thumbprint.
func (k *jwk) public() (*ecdsa.PublicKey, string, error) {
	if k.Kty != "EC" || k.Crv != "P-256" {
		return nil, "", invalid("jwk is not a P-256 key")
	}
	x, errX := base64.RawURLEncoding.Strict().DecodeString(k.X)
	y, errY := base64.RawURLEncoding.Strict().DecodeString(k.Y)
	if errX != nil || errY != nil || len(x) != 32 || len(y) != 32 {
		return nil, "", invalid("jwk coordinates are not 32-byte base64url values")
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), append(append([]byte{4}, x...), y...))
	if err != nil {
		return nil, "", invalid("jwk is not a point on P-256")
	}
	return pub, thumbprint(k.X, k.Y), nil
}

// readObject decodes the base64url JSON object b64 with readJSON.
func readObject(b64 string, member func(name string) any) error {
	raw, err := base64.RawURLEncoding.DecodeString(b64)
	if err != nil {
		return err
	}
	return readJSON(raw, member)
}

// readJSON reads one JSON object (RFC 8259) member by member: member(name) says
// where a member's value goes — a *string, an *int64 (a number, whole seconds:
// a fraction is dropped) or, for a nested object, another member function — or
// nil for a member that is not allowed. Names are compared exactly, after
// unescaping (encoding/json would fold case: "HTM" would fill htm); a member
// twice, an unknown member, a value of another type and anything after the
// object are refused.
func readJSON(raw []byte, member func(name string) any) error {
	r := jsonReader{b: raw}
	if err := r.object(member, 0); err != nil {
		return err
	}
	if r.ws(); r.i != len(r.b) {
		return errors.New("trailing data")
	}
	return nil
}

// jsonReader reads the few JSON shapes a proof has; it is not a general parser.
type jsonReader struct {
	b []byte
	i int
}

var errJSON = errors.New("not the expected JSON")

func (r *jsonReader) ws() {
	for r.i < len(r.b) && (r.b[r.i] == ' ' || r.b[r.i] == '\t' || r.b[r.i] == '\n' || r.b[r.i] == '\r') {
		r.i++
	}
}

// next skips whitespace and consumes c if it comes next.
func (r *jsonReader) next(c byte) bool {
	r.ws()
	if r.i < len(r.b) && r.b[r.i] == c {
		r.i++
		return true
	}
	return false
}

func (r *jsonReader) object(member func(string) any, depth int) error {
	if depth > 1 || !r.next('{') {
		return errJSON
	}
	if r.next('}') {
		return nil
	}
	var seen [8]string
	for n := 0; ; n++ {
		name, err := r.str()
		if err != nil || !r.next(':') {
			return errJSON
		}
		dst := member(name)
		switch {
		case dst == nil:
			return errors.New("unknown member")
		case slices.Contains(seen[:n], name):
			return errors.New("duplicate member")
		case n == len(seen):
			return errors.New("too many members")
		}
		seen[n] = name
		switch d := dst.(type) {
		case *string:
			*d, err = r.str()
		case *int64:
			*d, err = r.number()
		case func(string) any:
			err = r.object(d, depth+1)
		default:
			err = errJSON
		}
		if err != nil {
			return err
		}
		if r.next('}') {
			return nil
		}
		if !r.next(',') {
			return errJSON
		}
	}
}

// str reads a string; one with escapes is unescaped by encoding/json.
func (r *jsonReader) str() (string, error) {
	if !r.next('"') {
		return "", errJSON
	}
	start, escaped := r.i, false
	for r.i < len(r.b) {
		switch c := r.b[r.i]; {
		case c == '"':
			r.i++
			if escaped {
				var s string
				err := json.Unmarshal(r.b[start-1:r.i], &s)
				return s, err
			}
			if !utf8.Valid(r.b[start : r.i-1]) {
				return "", errJSON
			}
			return string(r.b[start : r.i-1]), nil
		case c == '\\':
			escaped = true
			r.i += 2
		case c < 0x20:
			return "", errJSON
		default:
			r.i++
		}
	}
	return "", errJSON
}

// number reads a JSON number and returns its whole part.
func (r *jsonReader) number() (int64, error) {
	r.ws()
	start := r.i
	if r.i < len(r.b) && r.b[r.i] == '-' {
		r.i++
	}
	digits := func() int {
		from := r.i
		for r.i < len(r.b) && '0' <= r.b[r.i] && r.b[r.i] <= '9' {
			r.i++
		}
		return r.i - from
	}
	if n := digits(); n == 0 || (n > 1 && r.b[r.i-n] == '0') {
		return 0, errJSON
	}
	whole := r.i
	if r.i < len(r.b) && r.b[r.i] == '.' {
		if r.i++; digits() == 0 {
			return 0, errJSON
		}
	}
	if r.i < len(r.b) && (r.b[r.i] == 'e' || r.b[r.i] == 'E') {
		r.i++
		if r.i < len(r.b) && (r.b[r.i] == '+' || r.b[r.i] == '-') {
			r.i++
		}
		if digits() == 0 {
			return 0, errJSON
		}
	}
	if r.i == whole {
		return strconv.ParseInt(string(r.b[start:r.i]), 10, 64)
	}
	f, err := strconv.ParseFloat(string(r.b[start:r.i]), 64)
	if err != nil || f != f || f < math.MinInt64 || f >= math.MaxInt64 {
		return 0, errJSON
	}
	return int64(math.Floor(f)), nil
}

// ProofID names a used proof in a ReplayStore: the first 16 bytes of
// SHA-256(jkt "|" jti). It has a fixed size whatever a client sends, and
// proofs of different keys never share one.
type ProofID [16]byte

// ReplayStore remembers used proofs until they expire: the seam that lets
// several broker processes refuse a proof any of them accepted (§3). The
// verifier calls it once per proof, after every other check passed. The
// default is this process's memory (NewVerifier, NewMemoryReplays); a shared
// implementation must pass replaytest.Run.
type ReplayStore interface {
	// First records id as used until expiry and reports whether this is its
	// first use: false if id is recorded and has not expired. now is the
	// verifier's clock; a record whose expiry is at or before now has expired.
	// Of concurrent calls with one id, exactly one returns true. An error
	// refuses the proof (fail closed); it bounds its own wait, since the
	// request's context does not reach it.
	First(ctx context.Context, id ProofID, now, expiry time.Time) (bool, error)
}

// NewMemoryReplays returns the in-memory ReplayStore: at most max live proofs
// (0 = 1,000,000); when that many are live it refuses new ones (an error)
// rather than forget any. Share one between verifiers in one process only.
func NewMemoryReplays(max int) ReplayStore {
	if max <= 0 {
		max = 1_000_000
	}
	return &replayCache{seen: map[[16]byte]int64{}, max: max}
}

// ErrReplayStore means the replay store could not answer, so the proof was
// refused. Its text never carries the store's own error, which is wrapped for
// the log (errors.Unwrap).
var ErrReplayStore = fmt.Errorf("%w: the replay store did not answer; retry shortly", ErrInvalid)

type storeError struct{ cause error }

func (e storeError) Error() string   { return ErrReplayStore.Error() }
func (e storeError) Unwrap() []error { return []error{ErrReplayStore, e.cause} }

// First implements ReplayStore.
func (c *replayCache) First(_ context.Context, id ProofID, now, expiry time.Time) (bool, error) {
	switch err := c.remember(id, expiry.Unix(), now.Unix()); {
	case errors.Is(err, ErrReplayed):
		return false, nil
	case err != nil:
		return false, err
	}
	return true, nil
}

// replayCache remembers proofs by a digest of jkt|jti until they expire (a unix
// second after which their iat is no longer accepted). Expired ones are swept
// second by second from a wheel of the seconds they expire in, so its size is
// the proofs in flight and no request pays for a scan. When max live proofs are
// remembered it refuses new ones rather than forget any (fail closed).
type replayCache struct {
	mu    sync.Mutex
	seen  map[[16]byte]int64 // digest → expiry (unix seconds)
	wheel [wheelSlots][][16]byte
	swept int64 // the last second swept
	max   int
}

// wheelSlots covers every expiry second a new proof can have: now+1 … now+2×Skew+1.
const wheelSlots = 2*int64(Skew/time.Second) + 2

func (c *replayCache) remember(id [16]byte, expiry, now int64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.sweep(now)
	if _, ok := c.seen[id]; ok {
		return ErrReplayed
	}
	if len(c.seen) >= c.max {
		return invalid("too many proofs in flight; retry shortly")
	}
	c.seen[id] = expiry
	slot := &c.wheel[expiry%wheelSlots]
	*slot = append(*slot, id)
	return nil
}

// sweep forgets every proof that expired at or before now.
func (c *replayCache) sweep(now int64) {
	from := max(c.swept+1, now-wheelSlots+1) // wheelSlots seconds visit every slot
	for sec := from; sec <= now; sec++ {
		slot := &c.wheel[sec%wheelSlots]
		live := (*slot)[:0]
		for _, id := range *slot {
			if exp, ok := c.seen[id]; ok && exp <= now {
				delete(c.seen, id)
			} else if ok {
				live = append(live, id)
			}
		}
		*slot = live
	}
	c.swept = max(c.swept, now)
}
