package apiv1

// Agent mail (/v1/mail/…): the owner's domains, the agents' inboxes and
// grants. Domain, Inbox and Grant mirror package mail's state records (see
// records.go).

// Domain is one of the owner's mail domains.
type Domain struct {
	Name         string `json:"name"`
	Owner        string `json:"owner"`
	DKIMSelector string `json:"dkim_selector"`
	Status       string `json:"status"` // active or removed
	Added        int64  `json:"added"`  // unix nanos of the last add
}

// Inbox is an agent's inbox.
type Inbox struct {
	Address   string `json:"address"`
	Agent     string `json:"agent"` // alias
	Wallet    string `json:"wallet"`
	Owner     string `json:"owner"`
	Domain    string `json:"domain"`
	CreatedAt int64  `json:"created_at"`           // unix nanos
	DeletedAt int64  `json:"deleted_at,omitempty"` // unix nanos; 0 while live
}

// Grant is what one agent holds on one inbox.
type Grant struct {
	Owner   string   `json:"owner"`
	Address string   `json:"address"`
	Agent   string   `json:"agent"`
	Rights  []string `json:"rights"` // read, send, admin
}

// InboxListing is an inbox as GET /v1/mail/inboxes lists it: the record and its grants.
type InboxListing struct {
	Inbox
	Grants []Grant `json:"grants"`
}

// DKIMKey is a domain's public DKIM key as published in DNS.
type DKIMKey struct {
	Selector string `json:"selector"`
	Alg      string `json:"alg"`    // the k= tag: "ed25519" (RFC 8463) or "rsa"
	Public   string `json:"public"` // the p= tag: base64 (std, padded) of the raw Ed25519 key or the RSA key's PKIX DER
}

// DomainBody is the body of POST /v1/mail/domains.
type DomainBody struct {
	Name string `json:"name"`
}

// DomainList is the body of GET /v1/mail/domains.
type DomainList struct {
	Domains []Domain `json:"domains"`
}

// DKIMList is the body of GET /v1/mail/domains/{name}/dkim.
type DKIMList struct {
	Domain string    `json:"domain"`
	Keys   []DKIMKey `json:"keys"`
}

// InboxBody is the body of POST /v1/mail/inboxes: the agent's alias and the
// domain ("" = the owner's one active domain).
type InboxBody struct {
	Agent  string `json:"agent"`
	Domain string `json:"domain,omitempty"`
}

// InboxList is the body of GET /v1/mail/inboxes.
type InboxList struct {
	Inboxes []InboxListing `json:"inboxes"`
}

// GrantBody is the body of POST /v1/mail/inboxes/{address}/grant and …/revoke.
type GrantBody struct {
	Agent  string   `json:"agent"`
	Rights []string `json:"rights"`
}
