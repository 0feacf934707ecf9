package audit

// The OIDC keys the ledger vouches for (§10.2), from the chain entries
// themselves, never from a server's word: a KeyView walks the public chain
// (links, hashes, origins and signatures, private entries checked by their
// commitment), requires genesis to name the enclave ledger key pinned from a
// verified quote, and re-folds the registry. A key is vouched for when the
// enclave registered it (an enclave-origin entry, whose quote verifies under the
// pinned platform key and commits to the key), no governance entry revoked it
// and it is inside its window. The daemon's dual verification and the watchdog
// both read it.

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"time"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/attest"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/modules"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/registry"
)

// Pins are what a verifier trusts: the platform attestation key a quote
// verified under and the enclave's ledger key that quote committed to.
type Pins struct {
	PlatformKey string `json:"platform_key"` // hex Ed25519
	LedgerKey   string `json:"ledger_key"`   // hex Ed25519 (enclave key ledger/v1)
}

// Enclaver serves GET /v1/enclave (*client.Client does).
type Enclaver interface {
	Enclave(ctx context.Context) (*apiv1.EnclaveInfo, error)
}

// EntrySource serves GET /v1/ledger/entries (*client.Client does).
type EntrySource interface {
	Entries(ctx context.Context, from uint64, limit int) (*apiv1.EntriesPage, error)
}

// Attest fetches the broker's enclave info, verifies its quote under platformPin
// (hex; "" = the platform key the quote names, trusted on first use) and checks
// that the quote commits to the keys listed; it returns the pins to keep.
func Attest(ctx context.Context, c Enclaver, platformPin string) (Pins, error) {
	info, err := c.Enclave(ctx)
	if err != nil {
		return Pins{}, err
	}
	q := info.Quote
	if platformPin != "" && platformPin != q.PlatformKey {
		return Pins{}, problem.Newf(problem.Denied, "check the broker URL; if the operator moved the broker to another platform, pass its new platform key",
			"the broker's attestation key is not the pinned one (pinned %.16s…, quote names %.16s…)", platformPin, q.PlatformKey)
	}
	pk, err := hex.DecodeString(q.PlatformKey)
	if err != nil || len(pk) != ed25519.PublicKeySize {
		return Pins{}, problem.New(problem.Denied, "the broker's enclave quote names no valid platform key", "check the broker URL")
	}
	rd := attest.ReportData(nil, info.Keys)
	if err := attest.Verify(q, pk); err != nil || q.ReportData != hex.EncodeToString(rd[:]) {
		return Pins{}, problem.New(problem.Denied, "the broker's enclave quote does not verify or does not commit to the keys it lists", "check the broker URL")
	}
	for _, k := range info.Keys {
		if k.Path == "ledger/v1" {
			return Pins{PlatformKey: q.PlatformKey, LedgerKey: k.Public}, nil
		}
	}
	return Pins{}, problem.New(problem.Denied, "the broker's attested keys have no ledger key", "check the broker URL; upgrade the broker")
}

// KeyView is a verified, incrementally followed copy of the chain's public state;
// safe for concurrent use. It never goes back: a chain that does not extend
// what it verified before is refused.
type KeyView struct {
	src  EntrySource
	pins Pins
	mu   sync.Mutex
	st   ledger.State
	v    *ledger.Verifier
	next uint64
}

// NewKeyView returns a view of the chain src serves, trusted under pins.
func NewKeyView(src EntrySource, pins Pins) *KeyView {
	st := ledger.NewMemState()
	return &KeyView{src: src, pins: pins, st: st, v: ledger.NewPublicVerifier(modules.Schema(), st)}
}

// maxPagesPerSync bounds one Sync; a longer chain is followed over several
// calls, and judged only once a call reached its end.
var maxPagesPerSync = 1000

// Sync verifies and folds the entries appended since the last call.
func (v *KeyView) Sync(ctx context.Context) error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.sync(ctx)
}

func (v *KeyView) sync(ctx context.Context) error {
	for range maxPagesPerSync {
		from := v.next
		if from > 0 {
			from-- // the last entry verified: the chain served must still hold it
		}
		page, err := v.src.Entries(ctx, from, apiv1.MaxEntriesPage)
		if err != nil {
			return err
		}
		es := page.Entries
		if v.next > 0 {
			if len(es) == 0 || es[0].Seq != v.next-1 || es[0].Hash() != v.v.Position().Prev {
				return problem.Newf(problem.LedgerInvalid,
					"the broker serves a chain that is not the one verified before (check the broker URL and the network path); if its operator restored the ledger from a backup, start this view afresh",
					"the ledger served no longer holds entry %d as it was verified: it was rolled back or forked", v.next-1)
			}
			es = es[1:]
		}
		if len(es) == 0 {
			return nil
		}
		for i := range es {
			e := &es[i]
			if err := v.v.Check(e); err != nil {
				return problem.New(problem.LedgerInvalid, "the ledger served does not verify: "+err.Error(),
					"the broker (or something between it and here) serves a chain that is not the ledger: check the broker URL and the network path")
			}
			if e.Seq == 0 {
				if g, _ := ledger.LoadGenesis(v.st); g == nil || g.LedgerKey != v.pins.LedgerKey {
					return problem.New(problem.LedgerInvalid, "the ledger's genesis does not name the pinned enclave ledger key",
						"the broker is not the one this was paired or pinned with: check the broker URL")
				}
			}
			v.next = e.Seq + 1
		}
	}
	// Not at the head yet: a later entry may revoke a key, so nothing is
	// judged on this state; the next call goes on from here.
	return problem.Newf(problem.Unreachable, "retry: the next call follows the chain further",
		"still following the ledger: %d entries verified so far", v.next)
}

// Keys syncs and returns every registered OIDC key.
func (v *KeyView) Keys(ctx context.Context) ([]registry.OidcKey, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if err := v.sync(ctx); err != nil {
		return nil, err
	}
	return registry.OidcKeys(v.st)
}

// Active syncs and returns the keys the ledger vouches for at now: registered
// by the enclave under the pinned platform key, not revoked, inside their window.
func (v *KeyView) Active(ctx context.Context, now time.Time) (map[string]registry.OidcKey, error) {
	all, err := v.Keys(ctx)
	if err != nil {
		return nil, err
	}
	out := map[string]registry.OidcKey{}
	for _, k := range all {
		if k.Active(now.Unix()) && k.Quote.PlatformKey == v.pins.PlatformKey {
			out[k.Kid] = k
		}
	}
	return out, nil
}

// Revoked reports whether governance revoked kid on the ledger (as synced last).
func (v *KeyView) Revoked(kid string) (bool, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return registry.OidcRevoked(v.st, kid)
}

// Rejection says why a token's key is not vouched for by the ledger.
type Rejection struct{ Reason string }

func (r *Rejection) Error() string { return r.Reason }

// VerifyToken checks that tok (a compact ES256 JWS) is signed by a key the
// ledger vouches for at now; it returns the kid. A *Rejection means the token
// is not; other errors mean the ledger could not be read or verified. It never
// puts the token in an error.
func (v *KeyView) VerifyToken(ctx context.Context, tok string, now time.Time) (string, error) {
	kid, input, sig, err := parseJWS(tok)
	if err != nil {
		return "", &Rejection{Reason: err.Error()}
	}
	active, err := v.Active(ctx, now)
	if err != nil {
		return kid, err
	}
	k, ok := active[kid]
	if !ok {
		return kid, &Rejection{Reason: fmt.Sprintf("key %q is not active on the ledger", short(kid))}
	}
	if !verifyES256(k.Public, input, sig) {
		return kid, &Rejection{Reason: fmt.Sprintf("the token's signature does not verify with the ledger's key %q", short(kid))}
	}
	return kid, nil
}

// short is a kid as it may be logged: bounded, printable.
func short(kid string) string {
	if len(kid) > 64 {
		kid = kid[:64] + "…"
	}
	return strings.ToValidUTF8(kid, "?")
}

// parseJWS splits a compact ES256 JWS into its kid, signing input and signature.
func parseJWS(tok string) (kid string, input, sig []byte, err error) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return "", nil, nil, errors.New("the token is not a compact JWS")
	}
	hb, err := base64.RawURLEncoding.DecodeString(parts[0])
	if err != nil {
		return "", nil, nil, errors.New("the token's header is not base64url")
	}
	var h struct {
		Alg string `json:"alg"`
		Kid string `json:"kid"`
	}
	if json.Unmarshal(hb, &h) != nil || h.Alg != "ES256" || h.Kid == "" {
		return "", nil, nil, errors.New("the token's header is not ES256 with a kid")
	}
	sig, err = base64.RawURLEncoding.DecodeString(parts[2])
	if err != nil || len(sig) != 64 {
		return h.Kid, nil, nil, errors.New("the token's signature is not a 64-byte ES256 signature")
	}
	return h.Kid, []byte(parts[0] + "." + parts[1]), sig, nil
}

// verifyES256 verifies sig (r||s) over input with a P-256 key (hex uncompressed point).
func verifyES256(publicHex string, input, sig []byte) bool {
	b, err := hex.DecodeString(publicHex)
	if err != nil || len(sig) != 64 {
		return false
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), b)
	if err != nil {
		return false
	}
	d := sha256.Sum256(input)
	return ecdsa.Verify(pub, d[:], new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:]))
}
