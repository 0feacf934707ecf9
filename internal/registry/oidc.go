package registry

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/attest"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/oidc"
)

// OIDC key registry kinds (§10.1): register is enclave-only, revoke and the
// rotation request are governance-only.
const (
	KindOidcKeyRegister = "oidc.key.register"
	KindOidcKeyRevoke   = "oidc.key.revoke"
	KindOidcRotate      = apiv1.OIDCRotateKind
)

const (
	oidcKeyPrefix = "registry/oidckey/"
	// oidcRevokedPrefix holds revocations of kids never registered: a key served
	// by a hijacked issuer URL (§10.2), revoked so that no one registers it later.
	oidcRevokedPrefix = "registry/oidcrevoked/"
	maxKid            = 128
)

// OidcKey is one OIDC issuer key on the ledger.
type OidcKey struct {
	Kid           string       `json:"kid"`
	Path          string       `json:"path"` // oidc/issuer/vN
	Version       int          `json:"version"`
	JWK           apiv1.JWK    `json:"jwk"`
	Public        string       `json:"public"` // hex uncompressed point
	Quote         attest.Quote `json:"quote"`  // report_data = OidcKeyReportData(kid, public)
	ActiveFrom    int64        `json:"active_from"`
	ActiveUntil   int64        `json:"active_until,omitempty"` // 0 = open-ended; else withdrawn from JWKS at this time
	RevokedReason string       `json:"revoked_reason,omitempty"`
}

// Active reports whether k is published at unix time now (current or retiring).
func (k OidcKey) Active(now int64) bool {
	s := k.State(now)
	return s == "current" || s == "retiring"
}

// State names a key's state for listings.
func (k OidcKey) State(now int64) string {
	switch {
	case k.RevokedReason != "":
		return "revoked"
	case k.ActiveUntil == 0:
		return "current"
	case now < k.ActiveUntil:
		return "retiring"
	}
	return "retired"
}

// OidcRegister is the payload of oidc.key.register: the new key and, on a
// rotation, the previous key with its retirement time set.
type OidcRegister struct {
	Key      OidcKey  `json:"key"`
	Previous *OidcKey `json:"previous,omitempty"`
}

// OidcRevoke is the payload of oidc.key.revoke.
type OidcRevoke struct {
	Kid    string `json:"kid"`
	Reason string `json:"reason"`
}

// OidcKeyReportData is the report data a registered key's quote commits to.
func OidcKeyReportData(kid, public string) [64]byte {
	var rd [64]byte
	h := sha256.Sum256([]byte("agentkeys/oidc-key/v1|" + kid + "|" + public))
	copy(rd[:], h[:])
	return rd
}

// checkOidcKey checks a key record's internal consistency: path, kid, JWK and a
// quote that verifies under the platform key it names and commits to this key.
// Provenance comes from the entry's origin: only the enclave signs
// oidc.key.register; verifiers that pin the platform key (watchdog, audit)
// compare quote.platform_key with theirs.
func checkOidcKey(k OidcKey) error {
	if k.Version < 1 || k.Path != fmt.Sprintf("oidc/issuer/v%d", k.Version) {
		return errors.New("path must be oidc/issuer/v<version>")
	}
	pub, err := hex.DecodeString(k.Public)
	if err != nil || attest.Kid(k.Path, pub) != k.Kid {
		return errors.New("kid does not match path and public key")
	}
	jwk, err := oidc.NewJWK(k.Kid, k.Public)
	if err != nil || jwk != k.JWK {
		return errors.New("jwk does not match the public key")
	}
	pk, err := hex.DecodeString(k.Quote.PlatformKey)
	if err != nil || len(pk) != ed25519.PublicKeySize {
		return errors.New("quote has no platform key")
	}
	if err := attest.Verify(k.Quote, pk); err != nil {
		return fmt.Errorf("quote: %w", err)
	}
	rd := OidcKeyReportData(k.Kid, k.Public)
	if k.Quote.ReportData != hex.EncodeToString(rd[:]) {
		return errors.New("quote does not commit to this key")
	}
	return nil
}

func foldOidcRegister(st ledger.State, e *ledger.Entry) error {
	var r OidcRegister
	if err := ledger.DecodeStrict(e.Payload, &r); err != nil {
		return err
	}
	if err := checkOidcKey(r.Key); err != nil {
		return err
	}
	if _, ok, err := st.Get(oidcKeyPrefix + r.Key.Kid); err != nil {
		return err
	} else if ok {
		return fmt.Errorf("kid %s is already registered", r.Key.Kid)
	}
	if _, ok, err := st.Get(oidcRevokedPrefix + r.Key.Kid); err != nil {
		return err
	} else if ok {
		return fmt.Errorf("kid %s was revoked before it was registered", r.Key.Kid)
	}
	if r.Previous != nil {
		if r.Previous.ActiveUntil == 0 {
			return errors.New("the previous key needs its retirement time")
		}
		if err := ledger.PutJSON(st, oidcKeyPrefix+r.Previous.Kid, r.Previous); err != nil {
			return err
		}
	}
	return ledger.PutJSON(st, oidcKeyPrefix+r.Key.Kid, r.Key)
}

func foldOidcRevoke(st ledger.State, e *ledger.Entry) error {
	var r OidcRevoke
	if err := ledger.DecodeStrict(e.Payload, &r); err != nil {
		return err
	}
	if r.Reason == "" {
		return errors.New("a revocation needs a reason")
	}
	if len(r.Kid) == 0 || len(r.Kid) > maxKid || strings.ContainsFunc(r.Kid, func(c rune) bool { return c <= ' ' || c > '~' }) {
		return fmt.Errorf("kid must be 1-%d printable ASCII characters", maxKid)
	}
	var k OidcKey
	if ok, err := ledger.GetJSON(st, oidcKeyPrefix+r.Kid, &k); err != nil {
		return err
	} else if !ok { // a kid the enclave never registered: remember it is revoked
		if _, dup, err := st.Get(oidcRevokedPrefix + r.Kid); err != nil {
			return err
		} else if dup {
			return fmt.Errorf("kid %s is already revoked", r.Kid)
		}
		return st.Put(oidcRevokedPrefix+r.Kid, e.Payload)
	}
	k.RevokedReason = r.Reason
	return ledger.PutJSON(st, oidcKeyPrefix+r.Kid, k)
}

func foldOidcRotate(_ ledger.State, e *ledger.Entry) error {
	var r apiv1.OIDCRotate
	if err := ledger.DecodeStrict(e.Payload, &r); err != nil {
		return err
	}
	if r.WindowSeconds <= 0 {
		return errors.New("window_seconds must be positive")
	}
	return nil
}

// OidcKeys lists the registered OIDC keys by version.
func OidcKeys(st ledger.State) ([]OidcKey, error) {
	out, err := ledger.ListJSON[OidcKey](st, oidcKeyPrefix)
	sort.Slice(out, func(i, j int) bool { return out[i].Version < out[j].Version })
	return out, err
}

// OidcRevoked reports whether governance revoked kid: a registered key with a
// revocation reason, or a kid revoked without ever being registered.
func OidcRevoked(st ledger.State, kid string) (bool, error) {
	var k OidcKey
	if ok, err := ledger.GetJSON(st, oidcKeyPrefix+kid, &k); err != nil || ok {
		return ok && k.RevokedReason != "", err
	}
	_, ok, err := st.Get(oidcRevokedPrefix + kid)
	return ok, err
}
