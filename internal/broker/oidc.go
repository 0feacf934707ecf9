package broker

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/oidc"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/registry"
	"github.com/agentkeys/agentkeys/internal/token"
)

type oidcKeys struct {
	keys    []registry.OidcKey // by version, as the registry holds them
	current *registry.OidcKey
	signer  *oidc.Signer
}

type oidcState struct {
	mu      sync.Mutex // rotations
	load    sync.Mutex // reloads of cur
	dirty   atomic.Bool
	cur     atomic.Pointer[oidcKeys]
	enclave oidc.Enclave // what tokens say about the enclave; fixed for the process
}

const oidcV1 = "oidc/issuer/v1"

// oidcKeyRecord describes the enclave key at path, with a quote committing to it.
func (b *Broker) oidcKeyRecord(path string, version int, from int64) (registry.OidcKey, error) {
	ki, err := b.enc.PublicKey(path)
	if err != nil {
		return registry.OidcKey{}, err
	}
	jwk, err := oidc.NewJWK(ki.Kid, ki.Public)
	if err != nil {
		return registry.OidcKey{}, err
	}
	return registry.OidcKey{Kid: ki.Kid, Path: path, Version: version, JWK: jwk, Public: ki.Public,
		Quote: b.enc.Quote(registry.OidcKeyReportData(ki.Kid, ki.Public)), ActiveFrom: from}, nil
}

// oidcLoad returns the issuer keys, reloading them from state after a change.
// Reloads are serialized and clear dirty before they read, so a change that
// commits during one marks the cache stale again; a failed one leaves it stale.
func (b *Broker) oidcLoad(ctx context.Context) (*oidcKeys, error) {
	if k := b.oidc.cur.Load(); k != nil && !b.oidc.dirty.Load() {
		return k, nil
	}
	b.oidc.load.Lock()
	defer b.oidc.load.Unlock()
	if k := b.oidc.cur.Load(); k != nil && !b.oidc.dirty.Load() {
		return k, nil // reloaded while this one waited
	}
	b.oidc.dirty.Store(false)
	k, err := b.oidcRead(ctx)
	if err != nil {
		b.oidc.dirty.Store(true)
		return nil, err
	}
	b.oidc.cur.Store(k)
	return k, nil
}

// oidcRead reads the issuer keys from the registry: a key is published and
// signs only once its oidc.key.register entry is durable (Start registers the
// genesis key before the broker is ready).
func (b *Broker) oidcRead(ctx context.Context) (*oidcKeys, error) {
	lg, err := b.Ledger()
	if err != nil {
		return nil, err
	}
	keys, err := registry.OidcKeys(lg.State(ctx))
	if err != nil {
		return nil, err
	}
	out := &oidcKeys{keys: keys}
	for i := len(keys) - 1; i >= 0; i-- {
		if keys[i].RevokedReason == "" && keys[i].ActiveUntil == 0 {
			out.current = &keys[i]
			break
		}
	}
	if out.current != nil {
		if out.signer, err = oidc.NewSigner(oidc.Key{Path: out.current.Path, Kid: out.current.Kid}, b.enc.SignES256); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// registerGenesisOidcKey puts the genesis issuer key oidc/issuer/v1 on the
// registry (enclave origin, with a quote committing to it) unless the registry
// holds a key already: at the first start, and once on a ledger written before
// the genesis key was registered. Its active_from is the genesis time, since it
// has been the issuer key from then on. The fold refuses a second registration
// of a kid, so this writes at most one entry whatever happens.
func (b *Broker) registerGenesisOidcKey(ctx context.Context, l *ledger.Ledger) error {
	keys, err := registry.OidcKeys(l.State(ctx))
	if err != nil || len(keys) > 0 {
		return err
	}
	genesis, err := l.Entries(ctx, 0, 1)
	if err != nil || len(genesis) != 1 {
		return fmt.Errorf("reading the genesis entry: %v", err)
	}
	rec, err := b.oidcKeyRecord(oidcV1, 1, time.Unix(0, genesis[0].Time).Unix())
	if err != nil {
		return err
	}
	if _, err := l.Append(ctx, ledger.OriginEnclave, registry.KindOidcKeyRegister, registry.OidcRegister{Key: rec}); err != nil {
		// Another broker starting on the same store may have registered it
		// first: the fold refused ours on top of theirs.
		if keys, kerr := registry.OidcKeys(l.State(ctx)); kerr == nil && len(keys) > 0 {
			return nil
		}
		return fmt.Errorf("registering the genesis OIDC key %s on the ledger: %w", rec.Kid, err)
	}
	b.log.Info("registered the genesis OIDC key on the ledger", "kid", rec.Kid, "path", rec.Path)
	return nil
}

// oidcObserve marks the key cache stale when a registry entry commits.
func (b *Broker) oidcObserve(es []ledger.Entry) {
	for i := range es {
		if strings.HasPrefix(es[i].Kind, "oidc.key.") {
			b.oidc.dirty.Store(true)
		}
	}
}

// Discovery is the issuer's OpenID discovery document.
func (b *Broker) Discovery() apiv1.Discovery { return oidc.NewDiscovery(b.cfg.Issuer) }

// JWKS returns every key that is current or inside its retirement window.
func (b *Broker) JWKS(ctx context.Context) (apiv1.JWKS, error) {
	k, err := b.oidcLoad(ctx)
	if err != nil {
		return apiv1.JWKS{}, err
	}
	now := b.cfg.Now().Unix()
	out := apiv1.JWKS{Keys: []apiv1.JWK{}}
	for _, key := range k.keys {
		if key.Active(now) {
			out.Keys = append(out.Keys, key.JWK)
		}
	}
	return out, nil
}

// OIDCKeys lists every issuer key version and its state.
func (b *Broker) OIDCKeys(ctx context.Context) ([]apiv1.OIDCKeyInfo, error) {
	k, err := b.oidcLoad(ctx)
	if err != nil {
		return nil, err
	}
	now := b.cfg.Now().Unix()
	out := make([]apiv1.OIDCKeyInfo, 0, len(k.keys))
	for _, key := range k.keys {
		out = append(out, apiv1.OIDCKeyInfo{OIDCKey: apiv1.OIDCKey(key), State: key.State(now)})
	}
	return out, nil
}

func validAudience(a string) bool {
	if a == "" || len(a) > 256 {
		return false
	}
	for _, r := range a {
		if r < 0x21 || r == 0x7f {
			return false
		}
	}
	return true
}

// MintOIDC mints an identity token for the caller: an agent whose scope allows
// oidc:<audience> or oidc:*, or that holds a right on a live inbox whose domain
// is the audience (the mail edge's, mailDomainOf), or an owner that asked for itself explicitly. The
// audience must be one the server is configured for. Mints, refused ones
// included, are limited per account (MintLimit per MintWindow). Every mint and
// every refusal is a durable audit entry signed by the caller's wallet (of
// refusals for the rate, the first in each window); no token is returned unless
// its audit entry is durable.
func (b *Broker) MintOIDC(ctx context.Context, c *Caller, r apiv1.OIDCRequest) (*apiv1.OIDCToken, error) {
	lg, err := b.Ledger()
	if err != nil {
		return nil, err
	}
	if !validAudience(r.Audience) {
		return nil, problem.New(problem.BadRequest, "audience must be 1-256 printable characters", "pass the relying party's audience, e.g. sts.amazonaws.com")
	}
	ttl := r.TTL
	maxTTL := int64(b.cfg.OIDCMaxTTL / time.Second)
	if ttl == 0 {
		ttl = min(oidc.DefaultTTLFor(r.Audience), maxTTL)
	}
	if ttl < 1 || ttl > maxTTL {
		return nil, problem.Newf(problem.BadRequest, "ask for a ttl of 1 to "+fmt.Sprint(maxTTL)+" seconds, or omit it for the default",
			"ttl %d is out of range", r.TTL)
	}
	audit := oidc.Mint{Actor: c.Omni(), ActorRole: c.Claims.Role, SID: c.Claims.SessionID, Audience: r.Audience}
	id := oidc.Identity{Role: c.Claims.Role, Omni: c.Omni(), Wallet: c.Account.Wallet}
	switch {
	case c.Agent != nil:
		audit.Owner, audit.Alias = c.Agent.Owner, c.Agent.Alias
	case c.Claims.Role == token.RoleOwner:
		audit.Owner = c.Omni()
	default:
		return nil, errNotOwner
	}
	if err := b.limit(b.mints, c.Omni(), "this account may mint %d identity tokens per %s",
		func(p error) error { return b.oidcDeny(ctx, audit, "rate_limited", p) }); err != nil {
		return nil, err
	}
	if c.Agent != nil {
		if !apiv1.AllowsOIDC(c.Agent.Scope, r.Audience) && !b.mailDomainOf(lg.State(ctx), c.Omni(), r.Audience) {
			return nil, b.oidcDeny(ctx, audit, "no_scope", problem.Newf(problem.Denied,
				"the owner allows it with: agentkeys agent scope "+c.Agent.Alias+" --add oidc:"+r.Audience,
				"this agent's scope does not allow identity tokens for %q", r.Audience))
		}
	} else {
		if !r.OwnerSelf {
			return nil, b.oidcDeny(ctx, audit, "owner_without_flag", problem.New(problem.Denied,
				"identity tokens are for agents; an owner mints one for itself only when it asks explicitly",
				"send {\"owner_self\": true} (agentkeys oidc token --self), or mint from a paired agent's daemon"))
		}
		audit.OwnerSelf = true
	}
	if !slices.Contains(b.cfg.OIDCAudiences, r.Audience) {
		return nil, b.oidcDeny(ctx, audit, "unknown_audience", problem.Newf(problem.Denied,
			"the operator adds it with: agentkeys server --oidc-audience "+r.Audience,
			"audience %q is not configured on this broker", r.Audience))
	}
	if audit.Owner == c.Omni() {
		id.OwnerWallet = c.Account.Wallet
	} else {
		o, err := b.account(lg.State(ctx), audit.Owner)
		if err != nil {
			return nil, err
		}
		id.OwnerWallet = o.Wallet
	}
	k, err := b.oidcLoad(ctx)
	if err != nil {
		return nil, err
	}
	if k.signer == nil {
		return nil, problem.New(problem.NotReady, "no OIDC issuer key may sign: governance revoked the current one",
			"governance rotates in a new key: agentkeys oidc rotate --window DURATION")
	}
	claims := oidc.NewClaims(b.cfg.Issuer, r.Audience, id, b.oidc.enclave, b.cfg.Now().Unix(), ttl)
	// The audit entry names the token (kid, jti, exp) without holding it, so it is
	// appended while the enclave signs; the token is released only once the entry
	// is durable. If signing then fails, the entry records a mint nobody received:
	// the trail may over-report, never under-report.
	audit.Kid, audit.JTI, audit.Exp = k.signer.Kid(), claims.ID, claims.Expiry
	audited := lg.Begin(ctx, ledger.AccountOrigin(c.Omni()), oidc.KindMinted, audit)
	tok, err := k.signer.Sign(claims)
	if _, aerr := audited(); aerr != nil {
		return nil, problem.New(problem.Internal, "the mint could not be audited, so no token was released", "retry; the operator should check the server log")
	}
	if err != nil {
		return nil, err
	}
	return &apiv1.OIDCToken{Token: tok, Kid: audit.Kid, JTI: claims.ID, Audience: r.Audience, Subject: claims.Subject, ExpiresAt: claims.Expiry}, nil
}

// mailDomainOf reports whether audience is the domain of a live inbox the
// agent holds a right on: its tokens for the mail edge of that domain need no
// scope entry (§9: nothing to set up beyond inbox create). The audience must
// still be one the broker is configured for.
func (b *Broker) mailDomainOf(st ledger.State, agentOmni, audience string) bool {
	ins, err := b.mailInboxes(st, agentOmni)
	if err != nil {
		return false
	}
	for _, in := range ins {
		if _, d, _ := strings.Cut(in.Address, "@"); d == audience {
			return true
		}
	}
	return false
}

func (b *Broker) oidcDeny(ctx context.Context, audit oidc.Mint, reason string, p error) error {
	audit.Reason = reason
	return b.auditRefusal(ctx, audit.Actor, oidc.KindDenied, audit, "mint", p)
}

// MinRotationWindow is the shortest window a rotation may keep the old key
// published: the longest token lifetime plus clock skew.
func (b *Broker) MinRotationWindow() time.Duration { return b.cfg.OIDCMaxTTL + b.cfg.OIDCSkew }

// Rotate carries out a governance-signed oidc.rotate request: it appends the
// request, derives the next oidc/issuer/vN, registers it on the ledger (enclave
// origin, with a quote) together with the old key's retirement time, and from
// then on signs new tokens with it. The old key stays in the JWKS for the window.
func (b *Broker) Rotate(ctx context.Context, e ledger.Entry) (*apiv1.RotateResult, error) {
	_, res, err := b.rotate(ctx, e)
	return res, err
}

// rotate is Rotate, also returning the request's entry as stored.
func (b *Broker) rotate(ctx context.Context, e ledger.Entry) (ledger.Entry, *apiv1.RotateResult, error) {
	lg, err := b.Ledger()
	if err != nil {
		return ledger.Entry{}, nil, err
	}
	var req apiv1.OIDCRotate
	if e.Kind != registry.KindOidcRotate || ledger.DecodeStrict(e.Payload, &req) != nil {
		return ledger.Entry{}, nil, problem.New(problem.BadRequest, "send a governance-signed oidc.rotate entry with {window_seconds, nonce}", "use agentkeys oidc rotate")
	}
	if w := time.Duration(req.WindowSeconds) * time.Second; w < b.MinRotationWindow() {
		return ledger.Entry{}, nil, problem.Newf(problem.BadRequest, fmt.Sprintf("pass --window %s or longer", b.MinRotationWindow()),
			"a window of %s would withdraw the old key while tokens it signed are still valid (max token lifetime %s + skew %s)",
			w, b.cfg.OIDCMaxTTL, b.cfg.OIDCSkew)
	}
	b.oidc.mu.Lock()
	defer b.oidc.mu.Unlock()
	stored, err := b.Submit(ctx, e, registry.KindOidcRotate)
	if err != nil {
		return ledger.Entry{}, nil, err
	}
	k, err := b.oidcLoad(ctx)
	if err != nil {
		return ledger.Entry{}, nil, err
	}
	next := k.keys[len(k.keys)-1].Version + 1
	now := b.cfg.Now().Unix()
	rec, err := b.oidcKeyRecord(fmt.Sprintf("oidc/issuer/v%d", next), next, now)
	if err != nil {
		return ledger.Entry{}, nil, err
	}
	reg := registry.OidcRegister{Key: rec}
	res := &apiv1.RotateResult{Key: apiv1.OIDCKey(rec)}
	if k.current != nil { // none after governance revoked every key (full compromise)
		prev := *k.current
		prev.ActiveUntil = now + req.WindowSeconds
		reg.Previous, res.Previous = &prev, apiv1.OIDCKey(prev)
	}
	if _, err := lg.Append(ctx, ledger.OriginEnclave, registry.KindOidcKeyRegister, reg); err != nil {
		return ledger.Entry{}, nil, ledgerProblem(err)
	}
	// Committed, the entry has marked the key cache stale (oidcObserve): new
	// tokens are signed with the new key.
	b.log.Info("oidc key rotated", "kid", rec.Kid, "path", rec.Path, "previous_kid", res.Previous.Kid,
		"previous_until", time.Unix(res.Previous.ActiveUntil, 0).UTC().Format(time.RFC3339))
	return stored, res, nil
}
