package apiv1

import "encoding/json"

// StoreBody is the body of POST /v1/credentials.
type StoreBody struct {
	Service    string `json:"service"`
	Agent      string `json:"agent,omitempty"`
	Ciphertext []byte `json:"ciphertext"` // base64: HPKE to shielding/v1 with seal.CredentialInfo
	Approval   string `json:"approval,omitempty"`
}

// ReadBody is the body of POST /v1/credentials/{service}/read.
type ReadBody struct {
	Agent     string `json:"agent,omitempty"`
	Recipient []byte `json:"recipient,omitempty"` // base64 hybrid HPKE public key; omit to use the session channel
}

// MaxReadBatch bounds the services of one POST /v1/reads.
const MaxReadBatch = 32

// ReadBatch is the body of POST /v1/reads: reads of several services, each
// boxed for the session channel, in one request. The broker makes each the
// read POST /v1/credentials/{service}/read makes (scope, rate limit, approval,
// its own durable audit entry) and answers each on its own.
type ReadBatch struct {
	Services []string `json:"services"`
}

// ReadBatchResult answers a ReadBatch: one outcome per service, in order.
type ReadBatchResult struct {
	Results []ReadOutcome `json:"results"`
}

// ReadOutcome is one read of a batch: its Result, or its Error, the problem
// object a refused single read has under "error" ({"code", "message", "fix",
// ...}).
type ReadOutcome struct {
	Result *ReadResult     `json:"result,omitempty"`
	Error  json.RawMessage `json:"error,omitempty"`
}

// ReadResult is a credential re-encrypted for the caller.
type ReadResult struct {
	Service string `json:"service"`
	Agent   string `json:"agent"`
	Version int    `json:"version"`
	Mode    string `json:"mode"`   // "hpke" (to Recipient) or "session" (session channel box)
	Sealed  []byte `json:"sealed"` // base64 in JSON
	Info    string `json:"info"`   // HPKE info / AEAD associated data
}

// CredentialList is the body of GET /v1/credentials.
type CredentialList struct {
	Credentials []Credential `json:"credentials"`
}

// ApprovalList is the body of GET /v1/approvals.
type ApprovalList struct {
	Approvals []Approval `json:"approvals"`
}

// UsageList is the body of GET /v1/usage. Next, when set, is the from of the
// next page: the page was full, so more rows may follow.
type UsageList struct {
	Usage []Usage `json:"usage"`
	Next  *uint64 `json:"next,omitempty"`
}

// MaxUsagePage caps limit on GET /v1/usage (also its default).
const MaxUsagePage = 1000
