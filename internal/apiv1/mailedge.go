package apiv1

// The mail edge (§9) asks its broker about recipients and senders. Agents
// authenticate to it with identity tokens whose audience is one of its mail
// domains (its --mail-audience values), e.g. agents.example.com: an agent
// mints one for the domain of the inbox it sends from or reads. In
// process it reads the broker's state; as its own process (agentkeys
// mail-edge) it asks over POST /v1/mail/edge/lookup, authenticated with the
// edge secret both were started with (MailEdgeSecretHeader).

// MailEdgeSecretHeader carries the edge secret on POST /v1/mail/edge/lookup.
const MailEdgeSecretHeader = "Agentkeys-Mail-Edge-Secret"

// MailLookupBody is the body of POST /v1/mail/edge/lookup: an inbox address
// and, optionally, an agent's omni (from an identity token the edge verified).
type MailLookupBody struct {
	Address string `json:"address"`
	Agent   string `json:"agent,omitempty"`
}

// MailLookup is the answer: whether the inbox takes mail, the object-store
// prefix its messages go under (live inboxes only), and the rights the agent
// holds on it (empty when no agent was named, or it holds none, or it is not
// an active agent of the inbox's owner).
type MailLookup struct {
	Address string   `json:"address"`
	Live    bool     `json:"live"`
	Prefix  string   `json:"prefix,omitempty"`
	Rights  []string `json:"rights"`
}

// MailInboxesBody is the body of POST /v1/mail/edge/inboxes: an agent's omni
// (from an identity token the edge verified).
type MailInboxesBody struct {
	Agent string `json:"agent"`
}

// MailInboxes is its answer: the live inboxes the agent holds rights on, by
// address (empty when it holds none or is not an active agent).
type MailInboxes struct {
	Inboxes []MailLookup `json:"inboxes"`
}
