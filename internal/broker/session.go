package broker

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"slices"
	"time"

	"github.com/agentkeys/agentkeys/internal/account"
	"github.com/agentkeys/agentkeys/internal/agent"
	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/token"
)

// LoginSkew is how far a login statement's time may be from the broker's clock.
const LoginSkew = 5 * time.Minute

// Caller is an authenticated request's session.
type Caller struct {
	Claims  *token.Claims
	Account *account.Account
	Agent   *agent.Agent // agent sessions: the agent's current record (scope, status)
}

// Omni returns the caller's account id.
func (c *Caller) Omni() string { return c.Claims.Subject }

var errNotOwner = problem.New(problem.Denied, "only the owner's own session may do this", "run it from the owner's CLI (agentkeys init)")

// checkLogin verifies a login statement and returns the identity key's omni.
func (b *Broker) checkLogin(l apiv1.Login) (omni string, loginHash string, err error) {
	bad := func(msg string) error {
		return problem.New(problem.Unauthenticated, "login refused: "+msg, "run agentkeys init again; check the machine clock and the --server URL")
	}
	pub, err := hex.DecodeString(l.PublicKey)
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return "", "", bad("public_key is not a hex Ed25519 public key")
	}
	sig, err := hex.DecodeString(l.Sig)
	if err != nil || !ed25519.Verify(pub, apiv1.LoginMessage(l), sig) {
		return "", "", bad("signature does not verify")
	}
	if l.Server != b.cfg.Issuer {
		return "", "", problem.Newf(problem.Unauthenticated, "pass --server "+b.cfg.Issuer,
			"login refused: the statement is for %q but this broker is %q", l.Server, b.cfg.Issuer)
	}
	if d := b.cfg.Now().Sub(time.Unix(l.Time, 0)); d > LoginSkew || d < -LoginSkew {
		return "", "", bad("the statement's time is more than 5 minutes from the broker's clock")
	}
	if n, err := hex.DecodeString(l.Nonce); err != nil || len(n) != 16 {
		return "", "", bad("nonce must be 16 random bytes in hex")
	}
	h := sha256.Sum256(apiv1.LoginMessage(l))
	return account.OwnerOmni(pub), hex.EncodeToString(h[:]), nil
}

// loginAccount checks a login statement and looks up its account (nil if none).
func (b *Broker) loginAccount(ctx context.Context, l apiv1.Login) (omni, loginHash string, a *account.Account, err error) {
	lg, err := b.Ledger()
	if err != nil {
		return "", "", nil, err
	}
	if omni, loginHash, err = b.checkLogin(l); err != nil {
		return "", "", nil, err
	}
	a, err = account.Get(lg.State(ctx), omni)
	if errors.Is(err, account.ErrNoAccount) {
		return omni, loginHash, nil, nil
	}
	return omni, loginHash, a, err
}

// CreateAccount registers a new owner from a signed login statement and opens
// its first session, atomically.
func (b *Broker) CreateAccount(ctx context.Context, l apiv1.Login) (*apiv1.SessionGrant, error) {
	omni, loginHash, existing, err := b.loginAccount(ctx, l)
	if err != nil {
		return nil, err
	}
	if existing != nil {
		return nil, problem.Newf(problem.Conflict, "log in with agentkeys init", "an account for this identity already exists (omni %s)", omni)
	}
	invite := ""
	if b.cfg.SignupInvite {
		lg, _ := b.Ledger()
		if invite, err = b.checkInvite(lg.State(ctx), l.Invite); err != nil {
			return nil, err
		}
	}
	if err := b.admitGlobal(AnonSignup); err != nil {
		return nil, err
	}
	wallet, err := b.enc.WalletAddress(omni)
	if err != nil {
		return nil, err
	}
	a := account.Account{Omni: omni, Wallet: wallet, Type: account.TypeKey, PublicKey: l.PublicKey, Role: token.RoleOwner, Invite: invite}
	g, err := b.openSession(ctx, &a, loginHash, l.ChannelKey, ledger.Req{Origin: ledger.OriginEnclave, Kind: account.KindCreated, Payload: a})
	if err != nil && invite != "" && problem.As(err).Code == problem.Conflict {
		// Refused although no account had this identity: a concurrent sign-up used the invite.
		lg, _ := b.Ledger()
		if _, aerr := account.Get(lg.State(ctx), omni); errors.Is(aerr, account.ErrNoAccount) {
			return nil, badInvite("it was already used")
		}
	}
	if err != nil {
		return nil, err
	}
	b.log.Info("account created", "omni", omni, "wallet", wallet)
	return g, nil
}

// OpenSession opens a new session for an existing owner.
func (b *Broker) OpenSession(ctx context.Context, l apiv1.Login) (*apiv1.SessionGrant, error) {
	_, loginHash, a, err := b.loginAccount(ctx, l)
	if err != nil {
		return nil, err
	}
	if a == nil {
		return nil, problem.New(problem.NotFound, "no account for this identity", "create one with agentkeys init")
	}
	if err := b.admitGlobal(AnonLogin); err != nil {
		return nil, err
	}
	return b.openSession(ctx, a, loginHash, l.ChannelKey)
}

// openSession appends session.issued — after the entries in first, all in one
// atomic group — and mints the session's token. Everything that can refuse the
// request (the channel key included) is checked before anything is appended.
func (b *Broker) openSession(ctx context.Context, a *account.Account, loginHash, channelKey string, first ...ledger.Req) (*apiv1.SessionGrant, error) {
	lg, _ := b.Ledger()
	sid := randomID()
	g := &apiv1.SessionGrant{Omni: a.Omni, Wallet: a.Wallet, SID: sid}
	if channelKey != "" {
		recipient, err := base64.StdEncoding.DecodeString(channelKey)
		if err != nil {
			return nil, problem.New(problem.BadRequest, "channel_key is not base64", "send the hybrid HPKE public key in standard base64")
		}
		g.ChannelInfo = "agentkeys/channel/v1|" + sid
		sealed, err := b.enc.SessionKeyTo(sid, recipient, []byte(g.ChannelInfo))
		if err != nil {
			return nil, problem.New(problem.BadRequest, "channel_key is not a hybrid ML-KEM-768+X25519 HPKE public key", "send the key your client generated")
		}
		g.ChannelKey = base64.StdEncoding.EncodeToString(sealed)
	}
	exp := b.cfg.Now().Add(b.cfg.SessionTTL).Unix()
	s := account.Session{SID: sid, Omni: a.Omni, Role: a.Role, Expires: exp, LoginHash: loginHash}
	group := append(first, ledger.Req{Origin: ledger.AccountOrigin(a.Omni), Kind: account.KindSessionIssued, Payload: s})
	if _, err := lg.AppendAll(ctx, group); err != nil {
		if errors.Is(err, ledger.ErrRejected) && len(first) > 0 {
			return nil, problem.Newf(problem.Conflict, "log in with agentkeys init", "an account for this identity already exists (omni %s)", a.Omni)
		}
		if errors.Is(err, ledger.ErrRejected) {
			return nil, problem.New(problem.Unauthenticated, "login refused: this signed statement was already used", "run agentkeys init again")
		}
		return nil, ledgerProblem(err)
	}
	tok, _, err := b.tokens.Mint(token.Claims{Subject: a.Omni, SessionID: sid, Role: a.Role, Expiry: exp, Parent: a.Parent})
	if err != nil {
		return nil, err
	}
	g.Token, g.ExpiresAt = tok, exp
	return g, nil
}

// Authenticate checks a bearer token without a proof of possession: it admits
// owner sessions only (agent sessions need AuthenticateRequest and a DPoP proof).
func (b *Broker) Authenticate(ctx context.Context, bearer string) (*Caller, error) {
	return b.AuthenticateRequest(ctx, bearer, Proof{})
}

// AuthenticateRequest checks a bearer token on every request: signature and
// claims (package token); for agent sessions the DPoP proof (bound key, method,
// URL, time, fresh jti, token hash); then the revocation index and the account,
// and for agents their current record (generation, status) from state.
func (b *Broker) AuthenticateRequest(ctx context.Context, bearer string, pr Proof) (*Caller, error) {
	if bearer == "" {
		return nil, problem.New(problem.Unauthenticated, "no session token was sent", "run agentkeys init (owner) or pair the daemon first")
	}
	lg, err := b.Ledger()
	if err != nil {
		return nil, err
	}
	c, err := b.tokens.Verify(bearer)
	if err != nil {
		if errors.Is(err, token.ErrExpired) {
			return nil, problem.New(problem.Unauthenticated, "the session has expired", "log in again with agentkeys init")
		}
		return nil, problem.New(problem.Unauthenticated, "the session token is not valid", "log in again with agentkeys init")
	}
	if c.Role == token.RoleAgent {
		if err := b.checkProof(pr, c.Cnf.JKT, bearer); err != nil {
			return nil, err
		}
	}
	if b.index.Revoked(c.SessionID) {
		if c.Role == token.RoleAgent {
			return nil, problem.New(problem.Revoked, "the agent's session was revoked by its owner", "ask the owner to pair this daemon again (agentkeys daemon pair)")
		}
		return nil, problem.New(problem.Revoked, "the session was revoked", "log in again with agentkeys init")
	}
	st := lg.State(ctx)
	a, err := b.account(st, c.Subject)
	if err != nil {
		return nil, problem.New(problem.Unauthenticated, "the session's account does not exist", "log in again with agentkeys init")
	}
	caller := &Caller{Claims: c, Account: a}
	if c.Role == token.RoleAgent {
		ag, ok, err := b.agents.Get(st, c.Parent, a.Alias)
		if err != nil {
			return nil, err
		}
		if !ok || ag.Omni != c.Subject || ag.SID != c.SessionID || ag.Status != apiv1.AgentActive {
			return nil, problem.New(problem.Revoked, "the agent's session was revoked by its owner",
				"ask the owner to pair this daemon again (agentkeys daemon pair)")
		}
		caller.Agent = ag
	}
	return caller, nil
}

// Logout revokes the caller's session on the ledger.
func (b *Broker) Logout(ctx context.Context, c *Caller) error {
	lg, err := b.Ledger()
	if err != nil {
		return err
	}
	_, err = lg.Append(ctx, ledger.AccountOrigin(c.Omni()), account.KindSessionRevoke,
		account.Revocation{SID: c.Claims.SessionID, Reason: "logout"})
	return ledgerProblem(err)
}

// Whoami returns the caller's identity.
func (b *Broker) Whoami(c *Caller) apiv1.Whoami {
	w := apiv1.Whoami{Omni: c.Omni(), Wallet: c.Account.Wallet, Role: c.Claims.Role, SID: c.Claims.SessionID,
		ExpiresAt: c.Claims.Expiry, Parent: c.Claims.Parent}
	if c.Agent != nil {
		w.Alias, w.Generation, w.Scope = c.Agent.Alias, c.Agent.Generation, slices.Clone(c.Agent.Scope)
	}
	return w
}

func randomID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// ownerLedger is the ledger for a request that only an owner may make.
func (b *Broker) ownerLedger(c *Caller) (*ledger.Ledger, error) {
	lg, err := b.Ledger()
	if err != nil {
		return nil, err
	}
	if c.Claims.Role != token.RoleOwner {
		return nil, errNotOwner
	}
	return lg, nil
}

// account reads an account from committed state st, memoized: account records are
// written once and never change, so a record read from committed state stays true.
func (b *Broker) account(st ledger.State, omni string) (*account.Account, error) {
	if v, ok := b.accounts.Load(omni); ok {
		return v.(*account.Account), nil
	}
	a, err := account.Get(st, omni)
	if err != nil {
		return nil, err
	}
	b.accounts.Store(omni, a)
	return a, nil
}

// schema is Schema with wallet lookups served from the account memo first; a miss
// reads the state it is given (which may hold the batch's own new accounts).
func (b *Broker) schema() ledger.Schema {
	s := Schema()
	s.Wallet = func(st ledger.State, omni string) (string, error) {
		if v, ok := b.accounts.Load(omni); ok {
			return v.(*account.Account).Wallet, nil
		}
		return account.Wallet(st, omni)
	}
	return s
}
