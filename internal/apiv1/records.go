package apiv1

// Records: the state records the API lists (agents, credentials, approvals,
// usage rows). Each mirrors, field for field and tag for tag, the record its
// ledger module folds (agent.Agent, vault.Credential, vault.Approval,
// vault.Usage); package api converts with a Go struct conversion, so a field
// added to one and not the other does not compile, and TestRecordsMirrorState
// there holds the JSON tags equal.

// Agent is one agent of an owner (GET /v1/agents, and the answer of approve,
// scope and revoke).
type Agent struct {
	Owner      string   `json:"owner"`
	Alias      string   `json:"alias"`
	Omni       string   `json:"omni"`
	Wallet     string   `json:"wallet"`
	Generation int      `json:"generation"`
	Scope      []string `json:"scope"`
	JKT        string   `json:"jkt"`
	SID        string   `json:"sid"`
	Status     string   `json:"status"`
	PairID     string   `json:"pair_id"`
	Created    int64    `json:"created"` // unix nanos
	Expires    int64    `json:"expires"` // session expiry, unix seconds
}

// Credential is a stored credential as listed (no ciphertext).
type Credential struct {
	Owner          string `json:"owner"`
	Agent          string `json:"agent"` // alias, or "*" for owner-wide
	Service        string `json:"service"`
	CiphertextHash string `json:"ciphertext_hash"`
	Version        int    `json:"version"`
	Approval       string `json:"approval"`
	Size           int    `json:"size"`
	Stored         int64  `json:"stored,omitempty"` // unix nanos, from the entry time
}

// Approval is a high-value release request (GET /v1/approvals).
type Approval struct {
	ID        string `json:"id"`
	Owner     string `json:"owner"`
	Agent     string `json:"agent"`
	Service   string `json:"service"`
	Actor     string `json:"actor"`
	ActorRole string `json:"actor_role"`
	Alias     string `json:"alias,omitempty"`
	SID       string `json:"sid"`
	Expires   int64  `json:"expires"`          // unix seconds: pending requests lapse
	Status    string `json:"status,omitempty"` // pending, granted, used
	Until     int64  `json:"until,omitempty"`  // unix seconds: a grant is usable until then
}

// Usage is one audit row as `agentkeys usage` shows it (GET /v1/usage).
type Usage struct {
	Seq       uint64 `json:"seq"`
	Time      int64  `json:"time"` // unix nanos
	Actor     string `json:"actor"`
	ActorRole string `json:"actor_role"`
	Alias     string `json:"alias,omitempty"`
	Action    string `json:"action"`
	Service   string `json:"service"`
	Agent     string `json:"agent"`
	Result    string `json:"result"`
	Detail    string `json:"detail,omitempty"`
}
