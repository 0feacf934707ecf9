// Package daemon is the agent side of AgentKeys (§7): it keeps the daemon's keys
// and paired session under $AGENTKEYS_HOME/daemon (0600 files, 0700 directory),
// fetches credentials over the agent session (every request with a DPoP proof,
// values boxed for the session channel) and serves them to the agent over MCP
// (stdio) or HTTP on a Unix socket: 0600, or 0660 for the agent's group when the
// daemon runs as its own user. Then a SocketClient is the agent's thin front: it
// holds no key and forwards every call to that socket. The package never logs a
// credential value, a token or a key, and its errors carry a stable code:
// BAD_REQUEST, DENIED, NOT_FOUND, RATE_LIMITED, REVOKED or UNREACHABLE. It checks
// its inputs itself, with the broker's rules, before any broker round trip.
package daemon

import (
	"context"
	"crypto/ecdsa"
	"crypto/hpke"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/audit"
	"github.com/agentkeys/agentkeys/internal/client"
	"github.com/agentkeys/agentkeys/internal/home"
	"github.com/agentkeys/agentkeys/internal/problem"
	"github.com/agentkeys/agentkeys/internal/seal"
)

// Stable error codes of the daemon's tools and socket.
const (
	CodeBadRequest  = problem.BadRequest
	CodeDenied      = problem.Denied
	CodeNotFound    = problem.NotFound
	CodeRateLimited = problem.RateLimited
	CodeRevoked     = problem.Revoked
	CodeUnreachable = problem.Unreachable
)

// Dir is the daemon's state directory ($AGENTKEYS_HOME/daemon).
type Dir string

// DirOf returns the daemon directory under an AgentKeys home.
func DirOf(home string) Dir { return Dir(filepath.Join(home, "daemon")) }

// Pending is a pair request waiting for the owner, with the keys made for it.
// ProofKey and HPKEPrivate are secret.
type Pending struct {
	Server      string   `json:"server"`
	Owner       string   `json:"owner"`
	Alias       string   `json:"alias"`
	Scope       []string `json:"scope"`
	ID          string   `json:"id"`
	VVC         string   `json:"vvc"`
	Fingerprint string   `json:"fingerprint,omitempty"` // apiv1.Fingerprint of ProofKey
	ExpiresAt   int64    `json:"expires_at"`
	ProofKey    string   `json:"proof_key"`    // base64 PKCS#8 P-256
	HPKEPrivate string   `json:"hpke_private"` // base64 serialized hybrid HPKE private key
	// Enclave is what the daemon pinned from the broker's verified quote when
	// it asked to pair: the keys dual verification checks the registry under.
	Enclave audit.Pins `json:"enclave"`
}

// Session is a paired agent session. Token, ChannelKey and ProofKey are secret.
type Session struct {
	Server      string `json:"server"`
	Owner       string `json:"owner"`
	Alias       string `json:"alias"`
	Agent       string `json:"agent"` // omni
	Wallet      string `json:"wallet"`
	Generation  int    `json:"generation"`
	SID         string `json:"sid"`
	Token       string `json:"token"`
	ChannelKey  string `json:"channel_key"` // base64
	ChannelInfo string `json:"channel_info"`
	ExpiresAt   int64  `json:"expires_at"`
	ProofKey    string `json:"proof_key"` // base64 PKCS#8 P-256
	// Enclave: the pins of the pair request (sessions paired before pinning
	// existed have none, and dual verification refuses their tokens).
	Enclave audit.Pins `json:"enclave"`
}

// ErrNotPaired means the daemon has no session yet.
var ErrNotPaired = problem.New(CodeDenied, "this daemon is not paired with an owner",
	"run agentkeys daemon pair --server URL --owner OWNER --alias NAME --scope SERVICES, and have the owner approve it")

func (d Dir) pendingPath(id string) string { return filepath.Join(string(d), "pending", id+".json") }

// SessionPath is where the paired session lives.
func (d Dir) SessionPath() string { return filepath.Join(string(d), "session.json") }

// write replaces path atomically, 0600, parents 0700.
func write(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	if err := os.Chmod(filepath.Dir(path), 0o700); err != nil { // the daemon's own dirs hold keys
		return err
	}
	return home.WriteFile(path, b)
}

func read(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s is damaged: %v", path, err)
	}
	return nil
}

// SavePending stores a pending request and its keys.
func (d Dir) SavePending(p *Pending) error { return write(d.pendingPath(p.ID), p) }

// LoadPending loads a pending request by id.
func (d Dir) LoadPending(id string) (*Pending, error) {
	if id == "" || strings.ContainsAny(id, `/\.`) {
		return nil, problem.Newf(problem.BadRequest, "pass the id that agentkeys daemon pair printed", "%q is not a pair request id", id)
	}
	var p Pending
	if err := read(d.pendingPath(id), &p); errors.Is(err, fs.ErrNotExist) {
		return nil, problem.Newf(problem.NotFound, "start a new request with agentkeys daemon pair", "no pending pair request %s on this machine", id)
	} else if err != nil {
		return nil, err
	}
	return &p, nil
}

// RemovePending deletes a pending request's file (and its keys).
func (d Dir) RemovePending(id string) { os.Remove(d.pendingPath(id)) }

// SaveSession stores the paired session.
func (d Dir) SaveSession(s *Session) error { return write(d.SessionPath(), s) }

// LoadSession loads the paired session, or ErrNotPaired.
func (d Dir) LoadSession() (*Session, error) {
	var s Session
	if err := read(d.SessionPath(), &s); errors.Is(err, fs.ErrNotExist) {
		return nil, ErrNotPaired
	} else if err != nil {
		return nil, err
	}
	return &s, nil
}

// CheckPrivate refuses a daemon directory or session file that anyone but its
// owner may read or write: the keys in it are the daemon's alone, and a copy of
// them is the agent session itself.
func (d Dir) CheckPrivate() error {
	for _, p := range []string{string(d), d.SessionPath()} {
		fi, err := os.Stat(p)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return problem.Wrap(err, CodeDenied, "run the daemon as the user that owns "+string(d), "cannot check %s: %v", p, err)
		}
		if fi.Mode().Perm()&0o077 != 0 {
			return problem.Newf(CodeDenied, "chmod -R go= "+string(d),
				"%s is %v: other users may read the daemon's keys", p, fi.Mode().Perm())
		}
	}
	return nil
}

// Paired reports whether a session file exists.
func (d Dir) Paired() bool {
	_, err := os.Stat(d.SessionPath())
	return err == nil
}

// EncodeKey serializes a proof key.
func EncodeKey(k *ecdsa.PrivateKey) (string, error) {
	b, err := x509.MarshalPKCS8PrivateKey(k)
	return base64.StdEncoding.EncodeToString(b), err
}

// DecodeKey parses a proof key.
func DecodeKey(s string) (*ecdsa.PrivateKey, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, errors.New("proof key is not base64")
	}
	k, err := x509.ParsePKCS8PrivateKey(b)
	if err != nil {
		return nil, errors.New("proof key is not PKCS#8")
	}
	ek, ok := k.(*ecdsa.PrivateKey)
	if !ok {
		return nil, errors.New("proof key is not ECDSA")
	}
	return ek, nil
}

// NewHPKEKey makes the daemon's hybrid ML-KEM-768 + X25519 key.
func NewHPKEKey() (hpke.PrivateKey, error) { return seal.NewKey() }

// Complete opens an approved request's delivery with the pending keys and
// stores the session; the pending file is removed.
func (d Dir) Complete(p *Pending, dl *apiv1.Delivery) (*Session, error) {
	s, err := p.Open(dl)
	if err != nil {
		return nil, err
	}
	if err := d.SaveSession(s); err != nil {
		return nil, err
	}
	d.RemovePending(p.ID)
	return s, nil
}

// Open opens an approved request's delivery with the pending keys and returns
// the session, storing nothing.
func (p *Pending) Open(dl *apiv1.Delivery) (*Session, error) {
	raw, err := base64.StdEncoding.DecodeString(p.HPKEPrivate)
	if err != nil {
		return nil, errors.New("pending request keys are damaged")
	}
	k, err := seal.ParseKey(raw)
	if err != nil {
		return nil, errors.New("pending request keys are damaged")
	}
	open := func(b64, info string) ([]byte, error) {
		ct, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return nil, err
		}
		return seal.Open(k, []byte(info), ct)
	}
	tok, err := open(dl.SealedToken, apiv1.TokenInfo(p.ID))
	if err != nil {
		return nil, problem.New(problem.Denied, "the approved session does not open with this daemon's key", "pair again with agentkeys daemon pair")
	}
	ch, err := open(dl.SealedChannelKey, dl.ChannelInfo)
	if err != nil {
		return nil, problem.New(problem.Denied, "the approved channel key does not open with this daemon's key", "pair again with agentkeys daemon pair")
	}
	return &Session{Server: p.Server, Owner: p.Owner, Alias: p.Alias, Agent: dl.Agent, Wallet: dl.Wallet, Generation: dl.Generation,
		SID: dl.SID, Token: string(tok), ChannelKey: base64.StdEncoding.EncodeToString(ch), ChannelInfo: dl.ChannelInfo,
		ExpiresAt: dl.ExpiresAt, ProofKey: p.ProofKey, Enclave: p.Enclave}, nil
}

// Source fetches credentials for the agent: it loads the session on every call
// (so a re-pairing is picked up without a restart).
type Source struct {
	Dir Dir
	// Cloud defaults of cloud_credentials (flags of daemon mcp/serve).
	STSEndpoint string // "" = AWS
	AWSAudience string // "" = sts.amazonaws.com
	AWSRegion   string // "" = us-east-1
	// Endpoints of the other clouds ("" = the cloud's own).
	GCPTokenURL        string // GCP STS token endpoint
	GCPIAMURL          string // GCP IAM credentials endpoint (service-account impersonation)
	AzureAuthorityHost string // Entra ID authority host
	AliSTSEndpoint     string // Alibaba Cloud STS host[:port] (https)
	// Tokens caches GCP, Azure and Alibaba Cloud credentials in memory for a
	// long-running daemon; nil exchanges on every call.
	Tokens *CloudTokens
	// Checks caches the broker's answer about the session for a few seconds
	// before cached cloud credentials are served; nil asks every time.
	Checks *Checks
	// Unverified turns dual verification off (--chain-verified-oidc=false, for
	// bring-your-own issuers): by default every identity token is checked
	// against the ledger's registry before it is used (DualVerify).
	Unverified bool
	// Keys caches the verified registry between tokens for a long-running
	// daemon; nil walks the chain afresh for each token.
	Keys *KeyViews
	// Now is the daemon's clock: it dates DPoP proofs and decides when the
	// session and cached cloud credentials expire. nil = time.Now.
	Now func() time.Time
	// Mail is where email_send submits (mailsend.go).
	Mail MailSend
}

// now is the time by s's clock.
func (s Source) now() time.Time {
	if s.Now == nil {
		return time.Now()
	}
	return s.Now()
}

// agent loads the session (see sessions) and returns it with a client of the
// agent session, dated by s's clock.
func (s Source) agent() (*Session, *client.AgentSession, error) {
	sess, a, err := sessions.load(s.Dir)
	if err != nil {
		return nil, nil, err
	}
	if s.Now != nil {
		a = a.WithClock(s.Now)
	}
	return sess, a, nil
}

func damagedSession() error {
	return problem.New(CodeRevoked, "the daemon's session file is damaged", "pair again with agentkeys daemon pair")
}

// errBadService answers a service name the broker would refuse; it does not
// repeat the name, which may be huge.
var errBadService = problem.New(CodeBadRequest, "the service name is not valid",
	"use the service's name: 1-63 lowercase letters, digits, '.', '_' or '-', e.g. openai (list_credentials shows them)")

// Loggable is s if it is a valid service name, else a short stand-in: the
// daemon never logs an input it refused in full.
func Loggable(s string) string {
	if apiv1.ValidName(s) {
		return s
	}
	return fmt.Sprintf("(invalid, %d bytes)", len(s))
}

// Get returns the value of a credential the agent may read; one that needs the
// owner's approval it waits for as w says (polling, see client.AwaitApproval).
// The caller must not log it.
func (s Source) Get(ctx context.Context, service string, w Wait) ([]byte, error) {
	if !apiv1.ValidName(service) {
		return nil, errBadService
	}
	if w.For < 0 || w.For > MaxWaitSeconds*time.Second {
		return nil, errBadWait
	}
	sess, c, err := s.agent()
	if err != nil {
		return nil, Stable(err)
	}
	ch, err := base64.StdEncoding.DecodeString(sess.ChannelKey)
	if err != nil {
		return nil, Stable(damagedSession())
	}
	defer clear(ch)
	res, err := client.AwaitApproval(ctx, w.For, func() (*apiv1.ReadResult, error) { return c.ReadCoalesced(ctx, service) }, w.Progress)
	if err != nil {
		return nil, Stable(err)
	}
	v, err := seal.OpenBox(ch, []byte(res.Info), res.Sealed)
	if err != nil {
		return nil, problem.New(CodeRevoked, "the credential does not open with this daemon's channel key", "pair again with agentkeys daemon pair")
	}
	return v, nil
}

// List returns the services the agent may read now, and which of them need
// the owner's approval.
func (s Source) List(ctx context.Context) (*ServiceList, error) {
	_, c, err := s.agent()
	if err != nil {
		return nil, Stable(err)
	}
	l, err := c.Services(ctx)
	if err != nil {
		return nil, Stable(err)
	}
	return &ServiceList{Services: l.Services, ApprovalRequired: l.ApprovalRequired}, nil
}

// Stable maps any error to a problem with one of the daemon's six codes.
func Stable(err error) *problem.Error {
	p := problem.As(err)
	out := *p
	switch p.Code {
	case CodeBadRequest, CodeDenied, CodeNotFound, CodeRateLimited, CodeRevoked, CodeUnreachable:
	case problem.Unauthenticated:
		out.Code = CodeRevoked
		if out.Fix == "" || strings.Contains(out.Fix, "agentkeys init") {
			out.Fix = "ask the owner to pair this daemon again (agentkeys daemon pair)"
		}
	case problem.ApprovalNeeded:
		out.Code = CodeDenied
	default:
		out.Code = CodeUnreachable
	}
	return &out
}

// Text renders a stable error for a tool result or log line.
func Text(p *problem.Error) string {
	s := string(p.Code) + ": " + p.Message
	if p.Fix != "" {
		s += " Fix: " + p.Fix
	}
	return s
}
