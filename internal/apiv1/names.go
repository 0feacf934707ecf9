package apiv1

import "regexp"

// NamePattern is the rule of ValidName as a regular expression (Go and
// ECMA-262 alike, for JSON Schemas).
const NamePattern = `^[a-z0-9][a-z0-9._-]{0,62}$`

var nameRE = regexp.MustCompile(NamePattern)

// ValidName reports whether s is a valid service name or agent alias: 1–63
// characters of lowercase letters, digits, '.', '_' and '-', starting with a
// letter or digit.
func ValidName(s string) bool { return nameRE.MatchString(s) }

// OwnerWide is the agent field of a credential shared by scope with every agent.
const OwnerWide = "*"

// Approval policies of a credential (StoreBody.Approval, Credential.Approval).
const (
	ApprovalNone     = "none"
	ApprovalRequired = "required"
)

// Agent states (Agent.Status).
const (
	AgentActive   = "active"
	AgentRevoked  = "revoked"
	AgentTornDown = "torn_down"
)
