package vault

import (
	"encoding/json"
	"strings"

	"github.com/agentkeys/agentkeys/internal/ledger"
)

// Get reads one credential record.
func Get(st ledger.State, owner, agent, service string) (*Credential, bool, error) {
	var c Credential
	ok, err := ledger.GetJSON(st, CredKey(owner, agent, service), &c)
	return &c, ok, err
}

// List returns an owner's credential records, ordered by agent then service.
func List(st ledger.State, owner string) ([]Credential, error) {
	out := []Credential{}
	err := st.Scan("cred/"+owner+"/", func(_ string, v []byte) error {
		var c Credential
		if err := json.Unmarshal(v, &c); err != nil {
			return err
		}
		out = append(out, c)
		return nil
	})
	return out, err
}

// GetApproval reads one approval.
func GetApproval(st ledger.State, owner, id string) (*Approval, bool, error) {
	var a Approval
	if id == "" || strings.Contains(id, "/") {
		return &a, false, nil
	}
	ok, err := ledger.GetJSON(st, approvalKey(owner, id), &a)
	return &a, ok, err
}

// Approvals lists an owner's approvals.
func Approvals(st ledger.State, owner string) ([]Approval, error) {
	out := []Approval{}
	err := st.Scan("approval/"+owner+"/", func(_ string, v []byte) error {
		var a Approval
		if err := json.Unmarshal(v, &a); err != nil {
			return err
		}
		out = append(out, a)
		return nil
	})
	return out, err
}

// UsageFilter selects usage rows; empty fields match everything.
type UsageFilter struct {
	Agent   string // alias: rows about this agent's credentials or by this agent
	Service string
	Since   int64 // unix nanos
}

// ListUsage returns an owner's usage rows in ledger order.
func ListUsage(st ledger.State, owner string, f UsageFilter) ([]Usage, error) {
	out := []Usage{}
	err := st.Scan("usage/"+owner+"/", func(_ string, v []byte) error {
		var u Usage
		if err := json.Unmarshal(v, &u); err != nil {
			return err
		}
		if f.Service != "" && u.Service != f.Service || f.Since != 0 && u.Time < f.Since ||
			f.Agent != "" && u.Agent != f.Agent && u.Alias != f.Agent {
			return nil
		}
		out = append(out, u)
		return nil
	})
	return out, err
}
