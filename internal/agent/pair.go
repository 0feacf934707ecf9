package agent

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/ledger"
)

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

func pairKey(owner, id string) string { return "pair/" + owner + "/" + id }
func pairIDKey(id string) string      { return "pairid/" + id }
func pairAliasKey(owner, alias string) string {
	return "pairalias/" + owner + "/" + alias
}
func foldRequested(st ledger.State, e *ledger.Entry) error {
	var p Pair
	if err := ledger.DecodeStrict(e.Payload, &p); err != nil {
		return err
	}
	if p.ID == "" || strings.Contains(p.ID, "/") || !ledger.ValidOmni(p.Owner) || !apiv1.ValidName(p.Alias) || p.JKT == "" || (p.VVC == "" && p.Sealed == "") {
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
	p.Status, p.Created = apiv1.PairPending, e.Time
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
	if err != nil || !ok || p.Status != apiv1.PairPending || now > p.Expires {
		return nil, false, err
	}
	return p, true, nil
}

func pendingPair(st ledger.State, owner, id string, now int64) (*Pair, error) {
	p, ok, err := GetPair(st, owner, id)
	if err != nil {
		return nil, err
	}
	if !ok || p.Status != apiv1.PairPending {
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
	p.Status, p.Delivery = apiv1.PairApproved, &d
	if err := ledger.PutJSON(st, pairKey(p.Owner, p.ID), p); err != nil {
		return err
	}
	ag := Agent{Owner: a.Owner, Alias: a.Alias, Omni: d.Agent, Wallet: d.Wallet, Generation: d.Generation, Scope: p.Scope,
		JKT: p.JKT, SID: d.SID, Status: apiv1.AgentActive, PairID: p.ID, Created: e.Time, Expires: d.ExpiresAt}
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
	if !ok || p.Status != apiv1.PairPending {
		return errors.New("no pending pair request with that id for this owner")
	}
	p.Status = apiv1.PairDenied
	return ledger.PutJSON(st, pairKey(p.Owner, p.ID), p)
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
