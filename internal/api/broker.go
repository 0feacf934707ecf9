package api

import (
	"context"
	"net/netip"

	"github.com/agentkeys/agentkeys/internal/agent"
	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/attest"
	"github.com/agentkeys/agentkeys/internal/broker"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/mail"
	"github.com/agentkeys/agentkeys/internal/vault"
)

// Broker is everything the HTTP layer asks of the broker: exactly the methods
// the handlers call, so a handler test can serve a fake. *broker.Broker is the
// one production implementation; the API never reaches past it to the enclave
// or the ledger store.
type Broker interface {
	// status and public reads
	Ready() (bool, string)
	Attest(nonce []byte) attest.Quote
	EnclaveKeys() []attest.KeyInfo
	SessionKeyList() ([]apiv1.SessionKeyInfo, error)
	Head(ctx context.Context) (h ledger.Head, ok bool, err error)
	Entries(ctx context.Context, c *broker.Caller, from uint64, limit int) ([]ledger.Entry, error)
	Successors(ctx context.Context) ([]string, error)
	Handoff(ctx context.Context, req apiv1.HandoffRequest) (*apiv1.HandoffResponse, error)
	Submit(ctx context.Context, e ledger.Entry, kind string) (ledger.Entry, error)
	Governance(ctx context.Context) (*apiv1.GovernanceInfo, error)
	SubmitProposal(ctx context.Context, p ledger.Proposal) (*apiv1.ProposalResult, error)

	// callers
	Admit(kind broker.AnonKind, source netip.Addr) error
	AuthenticateRequest(ctx context.Context, bearer string, pr broker.Proof) (*broker.Caller, error)
	CreateAccount(ctx context.Context, l apiv1.Login) (*apiv1.SessionGrant, error)
	OpenSession(ctx context.Context, l apiv1.Login) (*apiv1.SessionGrant, error)
	Logout(ctx context.Context, c *broker.Caller) error
	Whoami(c *broker.Caller) apiv1.Whoami

	// vault
	Store(ctx context.Context, c *broker.Caller, r broker.StoreRequest) (*vault.Credential, error)
	List(ctx context.Context, c *broker.Caller) ([]vault.Credential, error)
	Read(ctx context.Context, c *broker.Caller, r broker.ReadRequest) (*apiv1.ReadResult, error)
	ReadMany(ctx context.Context, c *broker.Caller, rs []broker.ReadRequest) []broker.ReadOutcome
	Delete(ctx context.Context, c *broker.Caller, service, alias string) error
	Approvals(ctx context.Context, c *broker.Caller) ([]vault.Approval, error)
	Approve(ctx context.Context, c *broker.Caller, id string) (*vault.Approval, error)
	Usage(ctx context.Context, c *broker.Caller, f vault.UsageFilter) ([]vault.Usage, error)

	// agents
	RequestPairing(ctx context.Context, r apiv1.PairRequest, source string) (*apiv1.PairCreated, error)
	PollPairing(ctx context.Context, id string, pr broker.Proof) (*apiv1.PairStatus, error)
	PendingPairs(ctx context.Context, c *broker.Caller) ([]apiv1.PendingPair, error)
	ApprovePairing(ctx context.Context, c *broker.Caller, id string, d apiv1.Decision) (*agent.Agent, error)
	DenyPairing(ctx context.Context, c *broker.Caller, id string, d apiv1.Decision) error
	Agents(ctx context.Context, c *broker.Caller) ([]agent.Agent, error)
	AgentServices(ctx context.Context, c *broker.Caller) (services, approval []string, err error)
	SetScope(ctx context.Context, c *broker.Caller, alias string, e apiv1.ScopeEdit) (*agent.Agent, error)
	RevokeAgent(ctx context.Context, c *broker.Caller, alias string) (*agent.Agent, error)
	Teardown(ctx context.Context, c *broker.Caller, alias string) (deleted int, err error)

	// OIDC
	Discovery() apiv1.Discovery
	JWKS(ctx context.Context) (apiv1.JWKS, error)
	OIDCKeys(ctx context.Context) ([]apiv1.OIDCKeyInfo, error)
	MintOIDC(ctx context.Context, c *broker.Caller, r apiv1.OIDCRequest) (*apiv1.OIDCToken, error)
	Rotate(ctx context.Context, e ledger.Entry) (*apiv1.RotateResult, error)

	// mail
	AddDomain(ctx context.Context, c *broker.Caller, name string) (*mail.Domain, error)
	RemoveDomain(ctx context.Context, c *broker.Caller, name string) (*mail.Domain, error)
	Domains(ctx context.Context, c *broker.Caller) ([]mail.Domain, error)
	CreateInbox(ctx context.Context, c *broker.Caller, alias, domain string) (*mail.Inbox, error)
	Inboxes(ctx context.Context, c *broker.Caller) ([]mail.Listed, error)
	DeleteInbox(ctx context.Context, c *broker.Caller, address string) (*mail.Inbox, error)
	GrantInbox(ctx context.Context, c *broker.Caller, address, alias string, rights []string, revoke bool) (*mail.Grant, error)
	DKIMKeys(ctx context.Context, c *broker.Caller, domain string) ([]apiv1.DKIMKey, error)
	DKIMSign(ctx context.Context, c *broker.Caller, r apiv1.DKIMSignRequest) (*apiv1.DKIMSignResult, error)
	MailLookup(ctx context.Context, address, agentOmni string) (apiv1.MailLookup, error)
	MailInboxes(ctx context.Context, agentOmni string) ([]apiv1.MailLookup, error)
}

var _ Broker = (*broker.Broker)(nil)
