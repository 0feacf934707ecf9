package api

import (
	"context"
	"net/netip"

	"github.com/agentkeys/agentkeys/internal/agent"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/enclave"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/mail"
	"github.com/agentkeys/agentkeys/internal/oidc"
	"github.com/agentkeys/agentkeys/internal/vault"
)

// Broker is everything the HTTP layer asks of the broker: exactly the methods
// the handlers call, so a handler test can serve a fake. *broker.Broker is the
// one production implementation; the API never reaches past it to the enclave
// or the ledger store.
type Broker interface {
	// status and public reads
	Ready() (bool, string)
	Attest(nonce []byte) enclave.Quote
	EnclaveKeys() []enclave.KeyInfo
	Head(ctx context.Context) (h ledger.Head, ok bool, err error)
	Entries(ctx context.Context, c *broker.Caller, from uint64, limit int) ([]ledger.Entry, error)
	Successors(ctx context.Context) ([]string, error)
	Submit(ctx context.Context, e ledger.Entry, kind string) (ledger.Entry, error)

	// callers
	Admit(kind broker.AnonKind, source netip.Addr) error
	AuthenticateRequest(ctx context.Context, bearer string, pr broker.Proof) (*broker.Caller, error)
	CreateAccount(ctx context.Context, l broker.Login) (*broker.SessionGrant, error)
	OpenSession(ctx context.Context, l broker.Login) (*broker.SessionGrant, error)
	Logout(ctx context.Context, c *broker.Caller) error
	Whoami(c *broker.Caller) broker.Whoami

	// vault
	Store(ctx context.Context, c *broker.Caller, r broker.StoreRequest) (*vault.Credential, error)
	List(ctx context.Context, c *broker.Caller) ([]vault.Credential, error)
	Read(ctx context.Context, c *broker.Caller, r broker.ReadRequest) (*broker.ReadResult, error)
	Delete(ctx context.Context, c *broker.Caller, service, alias string) error
	Approvals(ctx context.Context, c *broker.Caller) ([]vault.Approval, error)
	Approve(ctx context.Context, c *broker.Caller, id string) (*vault.Approval, error)
	Usage(ctx context.Context, c *broker.Caller, f vault.UsageFilter) ([]vault.Usage, error)

	// agents
	RequestPairing(ctx context.Context, r agent.Request, source string) (*broker.PairCreated, error)
	PollPairing(ctx context.Context, id string, pr broker.Proof) (*broker.PairStatus, error)
	PendingPairs(ctx context.Context, c *broker.Caller) ([]broker.PendingPair, error)
	ApprovePairing(ctx context.Context, c *broker.Caller, id string, d broker.Decision) (*agent.Agent, error)
	DenyPairing(ctx context.Context, c *broker.Caller, id string, d broker.Decision) error
	Agents(ctx context.Context, c *broker.Caller) ([]agent.Agent, error)
	AgentServices(ctx context.Context, c *broker.Caller) (services, approval []string, err error)
	SetScope(ctx context.Context, c *broker.Caller, alias string, e broker.ScopeEdit) (*agent.Agent, error)
	RevokeAgent(ctx context.Context, c *broker.Caller, alias string) (*agent.Agent, error)
	Teardown(ctx context.Context, c *broker.Caller, alias string) (deleted int, err error)

	// OIDC
	Discovery() oidc.Discovery
	JWKS(ctx context.Context) (oidc.JWKS, error)
	OIDCKeys(ctx context.Context) ([]broker.OIDCKeyInfo, error)
	MintOIDC(ctx context.Context, c *broker.Caller, r broker.OIDCRequest) (*broker.OIDCToken, error)
	Rotate(ctx context.Context, e ledger.Entry) (*broker.RotateResult, error)

	// mail
	AddDomain(ctx context.Context, c *broker.Caller, name string) (*mail.Domain, error)
	RemoveDomain(ctx context.Context, c *broker.Caller, name string) (*mail.Domain, error)
	Domains(ctx context.Context, c *broker.Caller) ([]mail.Domain, error)
	CreateInbox(ctx context.Context, c *broker.Caller, alias, domain string) (*mail.Inbox, error)
	Inboxes(ctx context.Context, c *broker.Caller) ([]mail.Listed, error)
	DeleteInbox(ctx context.Context, c *broker.Caller, address string) (*mail.Inbox, error)
	GrantInbox(ctx context.Context, c *broker.Caller, address, alias string, rights []string, revoke bool) (*mail.Grant, error)
	DKIMKeys(ctx context.Context, c *broker.Caller, domain string) ([]mail.DKIMKey, error)
}

var _ Broker = (*broker.Broker)(nil)
