// Package agent is the ledger side of pairing and the agent lifecycle (§6): pair
// requests from daemons, the owner's approvals and denials, the agent records
// (alias, generation, scope, proof-key binding, status) and their usage rows.
// It declares the kinds and folds them into state; it never mints tokens, never
// sees a plaintext token and never holds a private key.
package agent

import (
	"crypto/ecdsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/agentkeys/agentkeys/internal/account"
	"github.com/agentkeys/agentkeys/internal/dpop"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/vault"
)

// Kinds.
const (
	KindPairRequested = "pair.requested" // enclave origin: a daemon's signed request
	KindPairApproved  = "pair.approved"  // owner origin: approval, new generation, sealed session
	KindPairDenied    = "pair.denied"    // owner origin
	KindScope         = "agent.scope"    // owner origin: the agent's full new scope
	KindStatus        = "agent.status"   // owner origin: revoked or torn_down
)

// Pair request states.
const (
	Pending  = "pending"
	Approved = "approved"
	Denied   = "denied"
	Expired  = "expired" // never stored: a pending request past Expires
)

// Agent states.
const (
	Active   = "active"
	Revoked  = "revoked"
	TornDown = "torn_down"
)

// Request is what a daemon signs to ask for pairing.
type Request struct {
	Owner      string   `json:"owner"` // omni or wallet address of the owner
	Alias      string   `json:"alias"`
	Scope      []string `json:"scope"`
	TTLSeconds int64    `json:"ttl_seconds,omitempty"` // requested session TTL; 0 = default
	ProofJWK   string   `json:"proof_jwk"`             // public P-256 JWK (JSON text)
	HPKEPublic string   `json:"hpke_public"`           // base64 hybrid ML-KEM-768+X25519 public key
	ValidUntil int64    `json:"valid_until"`           // unix seconds: the daemon stops waiting then
	Sig        string   `json:"sig"`                   // base64url ES256 (r||s) by the proof key over Message
}

// Message is the canonical encoding a daemon signs.
func Message(r Request) []byte {
	return []byte("agentkeys/pair/v1\n" + r.Owner + "\n" + r.Alias + "\n" + strings.Join(r.Scope, ",") + "\n" +
		strconv.FormatInt(r.TTLSeconds, 10) + "\n" + r.ProofJWK + "\n" + r.HPKEPublic + "\n" + strconv.FormatInt(r.ValidUntil, 10))
}

// Sign fills r.Sig with key's ES256 signature over Message(r).
func Sign(r *Request, key *ecdsa.PrivateKey) error {
	h := sha256.Sum256(Message(*r))
	rr, ss, err := ecdsa.Sign(nil, key, h[:])
	if err != nil {
		return err
	}
	sig := make([]byte, 64)
	rr.FillBytes(sig[:32])
	ss.FillBytes(sig[32:])
	r.Sig = base64.RawURLEncoding.EncodeToString(sig)
	return nil
}

// Verify checks r.Sig and returns the proof key's thumbprint.
func Verify(r Request) (jkt string, err error) {
	pub, jkt, err := dpop.ParseJWK([]byte(r.ProofJWK))
	if err != nil {
		return "", err
	}
	sig, err := base64.RawURLEncoding.DecodeString(r.Sig)
	if err != nil || len(sig) != 64 {
		return "", errors.New("sig is not a base64url ES256 signature")
	}
	h := sha256.Sum256(Message(r))
	if !ecdsa.Verify(pub, h[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])) {
		return "", errors.New("sig does not verify under proof_jwk")
	}
	return jkt, nil
}

// NonceSize is the size of the broker's VVC nonce.
const NonceSize = 32

// VVCHash binds a request's VVC: SHA-256(nonce || signature bytes), where nonce
// is drawn by the broker after the signed request arrived (§6). The requester
// cannot grind it: it does not know the nonce when it signs. The owner's
// decision signs this hash, not the 6 digits, so a public decision does not
// give the digits away either.
func VVCHash(nonce []byte, sig string) [32]byte {
	raw, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil {
		raw = []byte(sig)
	}
	h := sha256.New()
	h.Write(nonce)
	h.Write(raw)
	var out [32]byte
	h.Sum(out[:0])
	return out
}

// VVCDigits is the 6-digit code of a VVC hash: its first 8 bytes as a
// big-endian integer, mod 10^6.
func VVCDigits(h [32]byte) string {
	return fmt.Sprintf("%06d", binary.BigEndian.Uint64(h[:8])%1_000_000)
}

// VVC is the 6-digit visual verification code of a request signature under the
// broker's nonce.
func VVC(nonce []byte, sig string) string { return VVCDigits(VVCHash(nonce, sig)) }

// Fingerprint is the short form of a daemon key's JWK thumbprint (jkt) that the
// daemon prints and the owner compares: its first 8 bytes in hex, in groups of
// four (64 bits: a look-alike key costs ~2^64 key generations).
func Fingerprint(jkt string) string {
	raw, err := base64.RawURLEncoding.DecodeString(jkt)
	if err != nil || len(raw) < 8 {
		return jkt
	}
	x := hex.EncodeToString(raw[:8])
	return x[:4] + "-" + x[4:8] + "-" + x[8:12] + "-" + x[12:]
}

// PairPrivate is what a pair request keeps off the public ledger: the broker's
// VVC nonce, the request's signature and the address it came from. The broker
// stores it in Pair.Sealed, sealed by the enclave for PrivateContext.
type PairPrivate struct {
	Nonce  string `json:"nonce"`  // hex, NonceSize bytes
	Sig    string `json:"sig"`    // the request's signature (base64url)
	Source string `json:"source"` // the requester's address as the broker saw it
}

// PrivateContext is the enclave context of a pair request's sealed fields: a
// box cannot be moved to another request or owner.
func PrivateContext(id, owner string) string { return "pair.requested|" + id + "|" + owner }

// ValidScopeEntry reports whether s may appear in a scope: a service name,
// "oidc:*" or "oidc:<audience>".
func ValidScopeEntry(s string) bool {
	if aud, ok := strings.CutPrefix(s, "oidc:"); ok {
		return aud == "*" || vault.ValidName(aud)
	}
	return vault.ValidName(s)
}

// MaxScope bounds the entries of a scope.
const MaxScope = 64

// CheckScope validates a scope list: valid entries, no duplicates, bounded.
func CheckScope(scope []string) error {
	if len(scope) > MaxScope {
		return fmt.Errorf("at most %d scope entries", MaxScope)
	}
	seen := map[string]bool{}
	for _, s := range scope {
		if !ValidScopeEntry(s) {
			return fmt.Errorf("%q is not a service name, oidc:* or oidc:<audience>", s)
		}
		if seen[s] {
			return fmt.Errorf("%q is listed twice", s)
		}
		seen[s] = true
	}
	return nil
}

// Pair is the state record of a pair request (payload of pair.requested).
type Pair struct {
	ID         string   `json:"id"`
	Owner      string   `json:"owner"` // omni
	Alias      string   `json:"alias"`
	Scope      []string `json:"scope"`
	TTLSeconds int64    `json:"ttl_seconds,omitempty"`
	ProofJWK   string   `json:"proof_jwk"`
	JKT        string   `json:"jkt"`
	HPKEPublic string   `json:"hpke_public"`
	VVC        string   `json:"vvc,omitempty"`    // only in entries of brokers before the VVC nonce; never written now
	Sealed     string   `json:"sealed,omitempty"` // base64 enclave box of PairPrivate (see PrivateContext)
	Expires    int64    `json:"expires"`          // unix seconds
	Status     string   `json:"status,omitempty"`
	Created    int64    `json:"created,omitempty"` // unix nanos, from the entry
	// Set by pair.approved: what the daemon will be handed.
	Delivery *DeliveryRecord `json:"delivery,omitempty"`
}

// DeliveryRecord is the ledger's view of a delivery: public facts and the hash of
// the sealed bundle, which lives as a blob beside the entry (ciphertext is never
// in entries, §3.4).
type DeliveryRecord struct {
	Agent       string `json:"agent"`
	Wallet      string `json:"wallet"`
	SID         string `json:"sid"`
	Generation  int    `json:"generation"`
	ExpiresAt   int64  `json:"expires_at"`
	ChannelInfo string `json:"channel_info"`
	Sealed      string `json:"sealed"` // hex SHA-256 of the SealedBundle blob
}

// SealedBundle is the blob of a delivery: the token and channel key, each
// HPKE-sealed to the daemon's key.
type SealedBundle struct {
	SealedToken      string `json:"sealed_token"`
	SealedChannelKey string `json:"sealed_channel_key"`
}

// Delivery is what an approved request hands its daemon: only sealed material.
type Delivery struct {
	Agent            string `json:"agent"` // agent omni
	Wallet           string `json:"wallet"`
	SID              string `json:"sid"`
	Generation       int    `json:"generation"`
	ExpiresAt        int64  `json:"expires_at"`         // session expiry, unix seconds
	SealedToken      string `json:"sealed_token"`       // base64, HPKE to hpke_public with TokenInfo
	SealedChannelKey string `json:"sealed_channel_key"` // base64, HPKE to hpke_public with ChannelInfo
	ChannelInfo      string `json:"channel_info"`
}

// TokenInfo is the HPKE info of a sealed agent token.
func TokenInfo(pairID string) string { return "agentkeys/agent-token/v1|" + pairID }

// Approval is the payload of pair.approved.
type Approval struct {
	ID        string         `json:"id"`
	Owner     string         `json:"owner"`
	Alias     string         `json:"alias"`
	Scope     []string       `json:"scope"`
	Statement string         `json:"statement"` // hex Ed25519 signature of the owner's identity key
	Time      int64          `json:"time"`      // the statement's time
	Delivery  DeliveryRecord `json:"delivery"`
}

// Denial is the payload of pair.denied.
type Denial struct {
	ID        string `json:"id"`
	Owner     string `json:"owner"`
	Statement string `json:"statement"`
	Time      int64  `json:"time"`
}

// Agent is the state record of an agent (one per owner and alias; re-pairing
// replaces it with the next generation).
type Agent struct {
	Owner      string   `json:"owner"`
	Alias      string   `json:"alias"`
	Omni       string   `json:"omni"`
	Wallet     string   `json:"wallet"`
	Generation int      `json:"generation"`
	Scope      []string `json:"scope"`
	JKT        string   `json:"jkt"`
	SID        string   `json:"sid"`
	Status     string   `json:"status"`
	PairID     string   `json:"pair_id"`
	Created    int64    `json:"created"` // unix nanos
	Expires    int64    `json:"expires"` // session expiry, unix seconds
}

// ScopeChange is the payload of agent.scope.
type ScopeChange struct {
	Owner  string   `json:"owner"`
	Alias  string   `json:"alias"`
	Scope  []string `json:"scope"`  // the full new scope
	Change string   `json:"change"` // what the owner asked, e.g. "add openai"
}

// StatusChange is the payload of agent.status.
type StatusChange struct {
	Owner  string `json:"owner"`
	Alias  string `json:"alias"`
	Agent  string `json:"agent"` // omni of the generation it applies to
	Status string `json:"status"`
	Reason string `json:"reason,omitempty"`
}

// Kinds returns the ledger kinds of pairing and agents.
func Kinds() map[string]ledger.Kind {
	return map[string]ledger.Kind{
		KindPairRequested: {Origins: ledger.FromEnclave, Fold: foldRequested},
		KindPairApproved:  {Origins: ledger.FromAccount, Fold: foldApproved},
		KindPairDenied:    {Origins: ledger.FromAccount, Fold: foldDenied},
		KindScope:         {Origins: ledger.FromAccount, Fold: foldScope},
		KindStatus:        {Origins: ledger.FromAccount, Fold: foldStatus},
	}
}

func pairKey(owner, id string) string { return "pair/" + owner + "/" + id }
func pairIDKey(id string) string      { return "pairid/" + id }
func pairAliasKey(owner, alias string) string {
	return "pairalias/" + owner + "/" + alias
}
func agentKey(owner, alias string) string { return "agent/" + owner + "/" + alias }

// OmniOf derives an agent's omni (§4.1).
func OmniOf(owner, alias string, generation int) string {
	return account.AgentOmni(owner, alias, generation)
}

func originIs(e *ledger.Entry, omni string) error {
	if o, _ := ledger.AccountOf(e.Origin); o != omni {
		return errors.New("the owner must sign this entry")
	}
	return nil
}

func foldRequested(st ledger.State, e *ledger.Entry) error {
	var p Pair
	if err := ledger.DecodeStrict(e.Payload, &p); err != nil {
		return err
	}
	if p.ID == "" || strings.Contains(p.ID, "/") || !ledger.ValidOmni(p.Owner) || !vault.ValidName(p.Alias) || p.JKT == "" || (p.VVC == "" && p.Sealed == "") {
		return errors.New("a pair request needs an id, an owner, an alias, a proof key and its sealed VVC nonce")
	}
	if p.VVC != "" && p.Sealed != "" {
		return errors.New("a pair request's VVC is never in the clear")
	}
	if err := CheckScope(p.Scope); err != nil {
		return err
	}
	if p.Status != "" || p.Delivery != nil {
		return errors.New("a new pair request has no status")
	}
	if _, ok, err := st.Get(pairIDKey(p.ID)); err != nil {
		return err
	} else if ok {
		return errors.New("pair request id already used")
	}
	if p.Sealed != "" { // entries from before the rule (with a clear VVC) fold as they did
		if _, ok, err := PendingAlias(st, p.Owner, p.Alias, e.Time/1e9); err != nil {
			return err
		} else if ok {
			return ErrAliasPending
		}
		if err := st.Put(pairAliasKey(p.Owner, p.Alias), []byte(strconv.Quote(p.ID))); err != nil {
			return err
		}
	}
	p.Status, p.Created = Pending, e.Time
	if err := st.Put(pairIDKey(p.ID), []byte(strconv.Quote(p.Owner))); err != nil {
		return err
	}
	return ledger.PutJSON(st, pairKey(p.Owner, p.ID), p)
}

// ErrAliasPending refuses a second pending request for one owner and alias
// (§6): the owner could not tell the two apart.
var ErrAliasPending = errors.New("the owner already has a pending pair request for this alias")

// PendingAlias returns the owner's pending request for alias that is not
// expired at now (unix seconds), if there is one.
func PendingAlias(st ledger.State, owner, alias string, now int64) (*Pair, bool, error) {
	var id string
	if ok, err := ledger.GetJSON(st, pairAliasKey(owner, alias), &id); err != nil || !ok {
		return nil, false, err
	}
	p, ok, err := GetPair(st, owner, id)
	if err != nil || !ok || p.Status != Pending || now > p.Expires {
		return nil, false, err
	}
	return p, true, nil
}

func pendingPair(st ledger.State, owner, id string, now int64) (*Pair, error) {
	p, ok, err := GetPair(st, owner, id)
	if err != nil {
		return nil, err
	}
	if !ok || p.Status != Pending {
		return nil, errors.New("no pending pair request with that id for this owner")
	}
	if now > p.Expires {
		return nil, errors.New("the pair request has expired")
	}
	return p, nil
}

func foldApproved(st ledger.State, e *ledger.Entry) error {
	var a Approval
	if err := ledger.DecodeStrict(e.Payload, &a); err != nil {
		return err
	}
	if err := originIs(e, a.Owner); err != nil {
		return err
	}
	p, err := pendingPair(st, a.Owner, a.ID, e.Time/1e9)
	if err != nil {
		return err
	}
	if a.Alias != p.Alias || !slices.Equal(a.Scope, p.Scope) {
		return errors.New("the approval does not match the request")
	}
	d := a.Delivery
	prev, had, err := Get(st, a.Owner, a.Alias)
	if err != nil {
		return err
	}
	want := 1
	if had {
		want = prev.Generation + 1
	}
	if d.Generation != want || d.Agent != OmniOf(a.Owner, a.Alias, d.Generation) || d.SID == "" || len(d.Sealed) != 64 {
		return fmt.Errorf("the approval must deliver generation %d of the agent with a sealed session", want)
	}
	p.Status, p.Delivery = Approved, &d
	if err := ledger.PutJSON(st, pairKey(p.Owner, p.ID), p); err != nil {
		return err
	}
	ag := Agent{Owner: a.Owner, Alias: a.Alias, Omni: d.Agent, Wallet: d.Wallet, Generation: d.Generation, Scope: p.Scope,
		JKT: p.JKT, SID: d.SID, Status: Active, PairID: p.ID, Created: e.Time, Expires: d.ExpiresAt}
	return ledger.PutJSON(st, agentKey(a.Owner, a.Alias), ag)
}

func foldDenied(st ledger.State, e *ledger.Entry) error {
	var d Denial
	if err := ledger.DecodeStrict(e.Payload, &d); err != nil {
		return err
	}
	if err := originIs(e, d.Owner); err != nil {
		return err
	}
	p, ok, err := GetPair(st, d.Owner, d.ID)
	if err != nil {
		return err
	}
	if !ok || p.Status != Pending {
		return errors.New("no pending pair request with that id for this owner")
	}
	p.Status = Denied
	return ledger.PutJSON(st, pairKey(p.Owner, p.ID), p)
}

func foldScope(st ledger.State, e *ledger.Entry) error {
	var s ScopeChange
	if err := ledger.DecodeStrict(e.Payload, &s); err != nil {
		return err
	}
	if err := originIs(e, s.Owner); err != nil {
		return err
	}
	if err := CheckScope(s.Scope); err != nil {
		return err
	}
	a, ok, err := Get(st, s.Owner, s.Alias)
	if err != nil {
		return err
	}
	if !ok || a.Status == TornDown {
		return errors.New("no such agent")
	}
	a.Scope = s.Scope
	return ledger.PutJSON(st, agentKey(a.Owner, a.Alias), a)
}

func foldStatus(st ledger.State, e *ledger.Entry) error {
	var s StatusChange
	if err := ledger.DecodeStrict(e.Payload, &s); err != nil {
		return err
	}
	if err := originIs(e, s.Owner); err != nil {
		return err
	}
	if s.Status != Revoked && s.Status != TornDown {
		return errors.New("status must be revoked or torn_down")
	}
	a, ok, err := Get(st, s.Owner, s.Alias)
	if err != nil {
		return err
	}
	if !ok || a.Omni != s.Agent {
		return errors.New("no such agent generation")
	}
	if a.Status == TornDown || (a.Status == Revoked && s.Status == Revoked) {
		return fmt.Errorf("the agent is already %s", a.Status)
	}
	a.Status = s.Status
	return ledger.PutJSON(st, agentKey(a.Owner, a.Alias), a)
}

// Get reads an agent record.
func Get(st ledger.State, owner, alias string) (*Agent, bool, error) {
	var a Agent
	ok, err := ledger.GetJSON(st, agentKey(owner, alias), &a)
	return &a, ok, err
}

// Memo serves agent records decoded once per stored version: an agent's record
// is read on every request it makes and changes only on scope edits, revocation
// and re-pairing, while decoding it costs more than comparing its bytes. Safe for
// concurrent use; it holds one entry per agent ever looked up.
type Memo struct{ m sync.Map } // key → *memoized

type memoized struct {
	raw string
	a   Agent
}

// Get is Get through the memo. The result is the caller's own copy, except that
// its Scope shares the memo's array: callers may append to it (Scope is clipped)
// but must not write into it.
func (m *Memo) Get(st ledger.State, owner, alias string) (*Agent, bool, error) {
	key := agentKey(owner, alias)
	raw, ok, err := st.Get(key)
	if err != nil || !ok {
		return &Agent{}, false, err
	}
	if v, hit := m.m.Load(key); hit && v.(*memoized).raw == string(raw) {
		a := v.(*memoized).a
		return &a, true, nil
	}
	var a Agent
	if err := json.Unmarshal(raw, &a); err != nil {
		return &Agent{}, false, err
	}
	a.Scope = slices.Clip(a.Scope) // a caller's append never writes into the memo
	m.m.Store(key, &memoized{raw: string(raw), a: a})
	return &a, true, nil
}

// List returns an owner's agents, by alias.
func List(st ledger.State, owner string) ([]Agent, error) {
	return ledger.ListJSON[Agent](st, "agent/"+owner+"/")
}

// GetPair reads a pair request of owner.
func GetPair(st ledger.State, owner, id string) (*Pair, bool, error) {
	var p Pair
	if id == "" || strings.Contains(id, "/") {
		return &p, false, nil
	}
	ok, err := ledger.GetJSON(st, pairKey(owner, id), &p)
	return &p, ok, err
}

// FindPair reads a pair request by id alone (the daemon's poll).
func FindPair(st ledger.State, id string) (*Pair, bool, error) {
	if id == "" || strings.Contains(id, "/") {
		return nil, false, nil
	}
	var owner string
	ok, err := ledger.GetJSON(st, pairIDKey(id), &owner)
	if err != nil || !ok {
		return nil, false, err
	}
	return GetPair(st, owner, id)
}

// Pairs lists an owner's pair requests.
func Pairs(st ledger.State, owner string) ([]Pair, error) {
	return ledger.ListJSON[Pair](st, "pair/"+owner+"/")
}

// InScope reports whether scope allows service.
func InScope(scope []string, service string) bool { return slices.Contains(scope, service) }

// AllowsOIDC reports whether scope allows identity tokens for audience:
// oidc:* or oidc:<audience>.
func AllowsOIDC(scope []string, audience string) bool {
	return slices.Contains(scope, "oidc:*") || slices.Contains(scope, "oidc:"+audience)
}

// UsageOf derives the usage row of a pairing or agent entry (see vault.UsageOf).
func UsageOf(e *ledger.Entry) (owner string, u vault.Usage, ok bool) {
	u = vault.Usage{Seq: e.Seq, Time: e.Time, Result: "ok"}
	switch e.Kind {
	case KindPairRequested:
		var p Pair
		if json.Unmarshal(e.Payload, &p) != nil {
			return "", u, false
		}
		owner, u.Actor, u.ActorRole, u.Alias, u.Agent, u.Action = p.Owner, "daemon", "daemon", p.Alias, p.Alias, "pair.request"
		u.Result, u.Detail = Pending, "id "+p.ID+" key "+Fingerprint(p.JKT)+" scope "+strings.Join(p.Scope, ",")
	case KindPairApproved:
		var a Approval
		if json.Unmarshal(e.Payload, &a) != nil {
			return "", u, false
		}
		owner, u.Actor, u.ActorRole, u.Agent, u.Action = a.Owner, a.Owner, "owner", a.Alias, "pair.approve"
		u.Detail = fmt.Sprintf("id %s generation %d scope %s", a.ID, a.Delivery.Generation, strings.Join(a.Scope, ","))
	case KindPairDenied:
		var d Denial
		if json.Unmarshal(e.Payload, &d) != nil {
			return "", u, false
		}
		owner, u.Actor, u.ActorRole, u.Action, u.Detail = d.Owner, d.Owner, "owner", "pair.deny", "id "+d.ID
	case KindScope:
		var s ScopeChange
		if json.Unmarshal(e.Payload, &s) != nil {
			return "", u, false
		}
		owner, u.Actor, u.ActorRole, u.Agent, u.Action = s.Owner, s.Owner, "owner", s.Alias, "agent.scope"
		u.Detail = s.Change + " → " + strings.Join(s.Scope, ",")
	case KindStatus:
		var s StatusChange
		if json.Unmarshal(e.Payload, &s) != nil {
			return "", u, false
		}
		action := "agent.revoke"
		if s.Status == TornDown {
			action = "agent.teardown"
		}
		owner, u.Actor, u.ActorRole, u.Agent, u.Action, u.Detail = s.Owner, s.Owner, "owner", s.Alias, action, s.Reason
	case "account.created":
		var a struct {
			Omni, Role, Parent, Alias string
			Generation                int
		}
		if json.Unmarshal(e.Payload, &a) != nil || a.Role != "agent" {
			return "", u, false
		}
		owner, u.Actor, u.ActorRole, u.Agent, u.Alias, u.Action = a.Parent, "enclave", "enclave", a.Alias, a.Alias, "agent.create"
		u.Detail = fmt.Sprintf("omni %s generation %d", a.Omni, a.Generation)
	default:
		return "", u, false
	}
	return owner, u, true
}
