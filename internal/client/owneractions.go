package client

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"net/url"
	"strconv"
	"time"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/attest"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/seal"
)

// The owner's actions that take more than one request or a check on the
// owner's machine: the CLI's commands and the console both call these, so a
// decision is checked and signed, and a secret sealed, the same way in both.

// AttestedShielding fetches /v1/enclave, checks the quote under the pinned
// platform key (or pins it on first contact) and that it commits to the keys,
// and returns the shielding public key and the platform key.
func AttestedShielding(ctx context.Context, c *Client, pinned string) (shielding []byte, platform string, err error) {
	info, err := c.Enclave(ctx)
	if err != nil {
		return nil, "", err
	}
	platform = info.Quote.PlatformKey
	if pinned != "" && pinned != platform {
		return nil, "", problem.Newf(problem.Denied, "if the operator really changed the platform, run agentkeys init --force to pin the new key",
			"the broker's attestation key changed (pinned %.16s…, now %.16s…): refusing to send secrets", pinned, platform)
	}
	pk, err := hex.DecodeString(platform)
	if err != nil || len(pk) != ed25519.PublicKeySize {
		return nil, "", problem.New(problem.Denied, "the broker's quote names no valid platform key", "check that --server points at an AgentKeys broker")
	}
	rd := attest.ReportData(nil, info.Keys)
	if err := attest.Verify(info.Quote, pk); err != nil || info.Quote.ReportData != hex.EncodeToString(rd[:]) {
		return nil, "", problem.New(problem.Denied, "the broker's enclave quote does not verify: refusing to send secrets", "check that --server points at an AgentKeys broker")
	}
	for _, k := range info.Keys {
		if k.Path == "shielding/v1" {
			if shielding, err = hex.DecodeString(k.Public); err == nil {
				return shielding, platform, nil
			}
		}
	}
	return nil, "", problem.New(problem.Denied, "the broker publishes no shielding key", "upgrade the broker")
}

// CheckNames checks a credential's service name and agent alias ("" for
// owner-wide).
func CheckNames(service, agent string) error {
	if !apiv1.ValidName(service) || (agent != "" && !apiv1.ValidName(agent)) {
		return problem.New(problem.BadRequest, "service and agent names use 1-63 lowercase letters, digits, '.', '_' or '-'", "e.g. agentkeys store openai")
	}
	return nil
}

// StoreSealed seals secret on this machine to the attested enclave's shielding
// key (checked under the pinned platform key), bound to the owner omni, the
// agent and the service of b, and stores the ciphertext: the broker never sees
// the secret. b.Ciphertext is set here.
func (s *Session) StoreSealed(ctx context.Context, pinned, omni string, b apiv1.StoreBody, secret []byte) (*apiv1.Credential, error) {
	if err := CheckNames(b.Service, b.Agent); err != nil {
		return nil, err
	}
	pub, _, err := AttestedShielding(ctx, s.Client, pinned)
	if err != nil {
		return nil, err
	}
	agentField := apiv1.OwnerWide
	if b.Agent != "" {
		agentField = b.Agent
	}
	if b.Ciphertext, err = seal.To(pub, seal.CredentialInfo(omni, agentField, b.Service), secret); err != nil {
		return nil, err
	}
	return s.Store(ctx, b)
}

// PendingPair finds the owner's pending pair request id and checks that the
// VVC the broker shows is the one its VVC hash (what a decision signs) commits to.
func (s *Session) PendingPair(ctx context.Context, id string) (*apiv1.PendingPair, error) {
	list, err := s.PendingPairs(ctx)
	if err != nil {
		return nil, err
	}
	for i := range list {
		if p := &list[i]; p.ID == id {
			if h, err := hex.DecodeString(p.VVCHash); err != nil || len(h) != 32 || apiv1.VVCDigits([32]byte(h)) != p.VVC {
				return nil, problem.Newf(problem.Denied, "do not approve it; report the broker's operator", "the broker's VVC for request %s does not match its VVC hash", id)
			}
			return p, nil
		}
	}
	return nil, problem.Newf(problem.NotFound, "list pending requests with agentkeys agent pending (expired and decided requests are not listed)",
		"no pending pair request %q", id)
}

// DecidePair signs decision ("approve" or "deny") on pair request p with the
// owner's identity key, for the broker at server, and sends it. It returns the
// paired agent on approval, nil on denial.
func (s *Session) DecidePair(ctx context.Context, key ed25519.PrivateKey, server string, p *apiv1.PendingPair, decision string, now time.Time) (*apiv1.Agent, error) {
	stmt := apiv1.SignDecision(key, server, p.ID, p.VVCHash, decision, now.Unix())
	if decision == "deny" {
		return nil, s.DenyPairing(ctx, p.ID, stmt)
	}
	return s.ApprovePairing(ctx, p.ID, stmt)
}

// ActiveAgent finds the owner's agent alias that is not torn down.
func (s *Session) ActiveAgent(ctx context.Context, alias string) (*apiv1.Agent, error) {
	list, err := s.Agents(ctx)
	if err != nil {
		return nil, err
	}
	for i := range list {
		if list[i].Alias == alias && list[i].Status != apiv1.AgentTornDown {
			return &list[i], nil
		}
	}
	return nil, problem.Newf(problem.NotFound, "list your agents with agentkeys agent list", "no agent %q", alias)
}

// AgentCredentials lists the credentials stored for agent alias alone: what
// its teardown deletes.
func (s *Session) AgentCredentials(ctx context.Context, alias string) ([]apiv1.Credential, error) {
	creds, err := s.List(ctx)
	if err != nil {
		return nil, err
	}
	var out []apiv1.Credential
	for _, cr := range creds {
		if cr.Agent == alias {
			out = append(out, cr)
		}
	}
	return out, nil
}

// Credential finds the stored credential of service for agent alias ("" for
// the owner-wide one).
func (s *Session) Credential(ctx context.Context, service, alias string) (*apiv1.Credential, error) {
	list, err := s.List(ctx)
	if err != nil {
		return nil, err
	}
	want := alias
	if want == "" {
		want = apiv1.OwnerWide
	}
	for i := range list {
		if list[i].Service == service && list[i].Agent == want {
			return &list[i], nil
		}
	}
	what := ""
	if alias != "" {
		what = " for agent " + alias
	}
	return nil, problem.Newf(problem.NotFound, "agentkeys list shows what is stored", "no credential %s%s", service, what)
}

// ApprovalReader names who asks for an approved read: the agent's alias, or
// the role and omni prefix of another reader.
func ApprovalReader(a apiv1.Approval) string {
	if a.Alias != "" {
		return "agent " + a.Alias
	}
	return a.ActorRole + " " + a.Actor[:min(12, len(a.Actor))]
}

// PendingApprovals lists the approval requests still open at now.
func (s *Session) PendingApprovals(ctx context.Context, now time.Time) ([]apiv1.Approval, error) {
	all, err := s.Approvals(ctx)
	if err != nil {
		return nil, err
	}
	pending := []apiv1.Approval{}
	for _, a := range all {
		if a.Status == "pending" && now.Unix() <= a.Expires {
			pending = append(pending, a)
		}
	}
	return pending, nil
}

// PendingApproval finds approval request id, which must be pending.
func (s *Session) PendingApproval(ctx context.Context, id string) (*apiv1.Approval, error) {
	all, err := s.Approvals(ctx)
	if err != nil {
		return nil, err
	}
	for i := range all {
		if all[i].ID == id && all[i].Status == "pending" {
			return &all[i], nil
		}
	}
	return nil, problem.Newf(problem.NotFound, "see pending requests with agentkeys approve --list", "no pending approval request %q", id)
}

// UsageFrom fetches the audit trail matching q (agent, service, since, limit)
// from ledger seq from: with onePage one page, else every page, each of at
// most q's limit rows.
func (s *Session) UsageFrom(ctx context.Context, q url.Values, from uint64, onePage bool) (*apiv1.UsageList, error) {
	page := &apiv1.UsageList{Usage: []apiv1.Usage{}, Next: &from}
	for page.Next != nil {
		q.Set("from", strconv.FormatUint(*page.Next, 10))
		p, err := s.UsagePage(ctx, q)
		if err != nil {
			return nil, err
		}
		page.Usage, page.Next = append(page.Usage, p.Usage...), p.Next
		if onePage {
			break
		}
	}
	return page, nil
}
