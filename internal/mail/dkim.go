package mail

import (
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"

	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// DKIM keys and signing (§9). A domain signs its agents' mail twice: with the
// enclave's Ed25519 key dkim/<domain>/v1 (RFC 8463; selector Selector) and, as
// many receivers verify only RSA, with an RSA-2048 key the enclave generated
// for the domain (selector SelectorRSA). The RSA key cannot be derived from the
// seed, so it lives on the ledger as a key box: sealed by the enclave under a
// seed-derived key (RSABoxPath, context RSAContext), opened only inside the
// enclave to sign. Seed and ledger recover it, like every other key.
const (
	// KindDKIMRSA records a domain's RSA key: enclave-origin, private to the
	// owner that first added the domain (its payload is the public key and the
	// sealed box, ciphertext; anonymous readers do not learn the domain). One
	// per domain name, ever: the domain added again (by anyone) signs with the
	// same key, as with the derived Ed25519 key.
	KindDKIMRSA = "mail.dkim.rsa"
	// KindSigned and KindSignDenied audit the broker's DKIM signatures for an
	// agent's mail, and the refusals: signed by the agent's wallet, in its
	// owner's trail. They name the header block's digest and the body hash,
	// never content.
	KindSigned     = "mail.dkim.signed"
	KindSignDenied = "mail.dkim.denied"
)

// SelectorRSA is the DKIM selector of a domain's RSA key.
const SelectorRSA = "ak1rsa"

// RSABoxPath is the enclave key (keybox/*) that seals the domains' RSA keys.
const RSABoxPath = "keybox/dkim/v1"

// RSAContext binds a domain's RSA key box to the domain: it opens for no other.
func RSAContext(domain string) string { return "mail.dkim.rsa|" + domain + "|" + SelectorRSA }

// DKIMRSA is the payload of mail.dkim.rsa and its state record.
type DKIMRSA struct {
	Owner    string `json:"owner"` // the account the domain was the first time: whose trail the entry is in
	Domain   string `json:"domain"`
	Selector string `json:"selector"`
	Public   string `json:"public"` // base64 PKIX DER: the p= of the DNS record
	Box      string `json:"box"`    // base64 key box (enclave.NewRSAKey)
}

// maxRSABox bounds a box on the ledger (the enclave makes ~1.2 KiB ones).
const maxRSABox = 4096

func dkimRSAKey(domain string) string { return "mail/dkimrsa/" + domain }

// GetDKIMRSA reads the RSA key record of domain.
func GetDKIMRSA(st ledger.State, domain string) (*DKIMRSA, bool, error) {
	var k DKIMRSA
	if !ValidDomain(domain) {
		return &k, false, nil
	}
	ok, err := ledger.GetJSON(st, dkimRSAKey(domain), &k)
	return &k, ok, err
}

// RSAPublicKey parses the record's public key.
func (k *DKIMRSA) RSAPublicKey() (*rsa.PublicKey, error) {
	der, err := base64.StdEncoding.DecodeString(k.Public)
	if err != nil {
		return nil, err
	}
	pk, err := x509.ParsePKIXPublicKey(der)
	if err != nil {
		return nil, err
	}
	rk, ok := pk.(*rsa.PublicKey)
	if !ok {
		return nil, errors.New("not an RSA key")
	}
	return rk, nil
}

func foldDKIMRSA(st ledger.State, e *ledger.Entry) error {
	var k DKIMRSA
	if err := ledger.DecodeStrict(e.Payload, &k); err != nil {
		return err
	}
	if !ValidDomain(k.Domain) || k.Selector != SelectorRSA || !ledger.ValidOmni(k.Owner) {
		return badInput("a DKIM RSA key names its owner, a domain and selector %q", SelectorRSA)
	}
	if pk, err := k.RSAPublicKey(); err != nil || pk.N.BitLen() < 2048 {
		return badInput("the DKIM RSA public key must be an RSA key of at least 2048 bits (PKIX DER, base64)")
	}
	if box, err := base64.StdEncoding.DecodeString(k.Box); err != nil || len(box) == 0 || len(box) > maxRSABox {
		return badInput("the DKIM RSA key box must be base64 of 1 to %d bytes", maxRSABox)
	}
	if _, ok, err := GetDKIMRSA(st, k.Domain); err != nil || ok {
		if err != nil {
			return err
		}
		return problem.Newf(problem.Conflict, "use the key it has (agentkeys mail dns prints it)", "mail domain %q already has a DKIM RSA key", k.Domain)
	}
	return ledger.PutJSON(st, dkimRSAKey(k.Domain), k)
}

// Signing is the payload of mail.dkim.signed and mail.dkim.denied.
type Signing struct {
	Owner      string `json:"owner"` // the trail it is filed in
	Actor      string `json:"actor"` // omni of the agent that signs the entry
	Alias      string `json:"alias"`
	From       string `json:"from"`                  // the From address
	Domain     string `json:"domain,omitempty"`      // d= (signed only)
	Headers    string `json:"headers,omitempty"`     // h= (signed only)
	HeaderHash string `json:"header_hash,omitempty"` // hex SHA-256 of the canonical header block
	BodyHash   string `json:"body_hash,omitempty"`   // bh=
	Reason     string `json:"reason,omitempty"`      // denied: no_send or rate_limited
}

func foldSigning(_ ledger.State, e *ledger.Entry) error {
	var s Signing
	if err := ledger.DecodeStrict(e.Payload, &s); err != nil {
		return err
	}
	if omni, _ := ledger.AccountOf(e.Origin); omni != s.Actor || !ledger.ValidOmni(s.Owner) {
		return errors.New("the actor must be the account that signs the entry, and the owner an account")
	}
	if s.From == "" || len(s.From) > 254 {
		return errors.New("a signing names its From address (at most 254 bytes)")
	}
	if e.Kind == KindSigned && (s.Domain == "" || s.Headers == "" || s.HeaderHash == "" || s.BodyHash == "" || s.Reason != "") {
		return errors.New("a signing records domain, headers, header_hash and body_hash")
	}
	if e.Kind == KindSignDenied && s.Reason == "" {
		return errors.New("a refusal records its reason")
	}
	return nil
}

func usageSigning(e *ledger.Entry) (ledger.Usage, bool) {
	s, u, ok := ledger.UsageRow[Signing](e)
	u.Actor, u.ActorRole, u.Alias, u.Agent, u.Service, u.Action = s.Actor, "agent", s.Alias, s.Alias, "mail", "mail.dkim.sign"
	u.Detail = fmt.Sprintf("from %s h=%s bh=%s", s.From, s.Headers, s.BodyHash)
	if e.Kind == KindSignDenied {
		u.Result, u.Detail = "denied", fmt.Sprintf("from %s: %s", s.From, s.Reason)
	}
	return u, ok
}
