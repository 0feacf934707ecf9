package mail

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/agentkeys/agentkeys/internal/agent"
	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/ledger"
	"github.com/agentkeys/agentkeys/internal/problem"
)

var (
	ownerA = strings.Repeat("a", 64)
	ownerB = strings.Repeat("b", 64)
)

const walletBot = "0xAbCdEf0123456789aBcDeF0123456789AbCdEf01"

// world is folded state with agents put in directly (package agent's folds
// are tested there).
type world struct {
	t  *testing.T
	st *ledger.MemState
	n  int64
}

func newWorld(t *testing.T) *world {
	w := &world{t: t, st: ledger.NewMemState()}
	w.agent(ownerA, "bot", walletBot, apiv1.AgentActive)
	w.agent(ownerA, "helper", "0x1111111111111111111111111111111111111111", apiv1.AgentActive)
	w.agent(ownerA, "gone", "0x2222222222222222222222222222222222222222", apiv1.AgentTornDown)
	w.agent(ownerB, "other", "0x3333333333333333333333333333333333333333", apiv1.AgentActive)
	return w
}

func (w *world) agent(owner, alias, wallet, status string) {
	if err := ledger.PutJSON(w.st, "agent/"+owner+"/"+alias, agent.Agent{Owner: owner, Alias: alias, Wallet: wallet, Status: status}); err != nil {
		w.t.Fatal(err)
	}
}

// apply folds one entry of kind signed by signer; its error is returned.
func (w *world) apply(signer, kind string, payload any) error {
	w.t.Helper()
	p, err := json.Marshal(payload)
	if err != nil {
		w.t.Fatal(err)
	}
	w.n++
	e := &ledger.Entry{Seq: uint64(w.n), Time: w.n * 1000, Kind: kind, Origin: ledger.AccountOrigin(signer), Payload: p}
	return Module.Kinds[kind].Fold(w.st, e)
}

func (w *world) ok(signer, kind string, payload any) {
	w.t.Helper()
	if err := w.apply(signer, kind, payload); err != nil {
		w.t.Fatalf("%s: %v", kind, err)
	}
}

// refused checks the fold refuses with a problem of code whose message holds msg.
func (w *world) refused(code problem.Code, msg, signer, kind string, payload any) {
	w.t.Helper()
	err := w.apply(signer, kind, payload)
	var p *problem.Error
	if !errors.As(err, &p) || p.Code != code || !strings.Contains(p.Message, msg) || p.Fix == "" {
		w.t.Fatalf("%s %+v: got %v, want %s %q with a fix", kind, payload, err, code, msg)
	}
}

func (w *world) inbox(owner, alias, wallet, domain string) InboxChange {
	return InboxChange{Owner: owner, Agent: alias, Wallet: wallet, Domain: domain, Address: Address(wallet, domain)}
}

func TestAddress(t *testing.T) {
	if got := Address(walletBot, "mail.example.com"); got != "aabcdef012345@mail.example.com" {
		t.Fatalf("Address = %q", got)
	}
	in := Inbox{Wallet: walletBot, Address: "aabcdef012345@mail.example.com"}
	if p := in.Prefix(); p != strings.ToLower(walletBot)+"/aabcdef012345@mail.example.com/" {
		t.Fatalf("Prefix = %q", p)
	}
}

func TestDomains(t *testing.T) {
	w := newWorld(t)
	add := DomainChange{Owner: ownerA, Name: "mail.example.com", DKIMSelector: Selector}
	w.refused(problem.Denied, "owner signs", ownerB, KindDomainAdded, add)
	w.refused(problem.BadRequest, "not a domain name", ownerA, KindDomainAdded, DomainChange{Owner: ownerA, Name: "Mail.Example.com", DKIMSelector: Selector})
	w.refused(problem.BadRequest, "selector", ownerA, KindDomainAdded, DomainChange{Owner: ownerA, Name: "mail.example.com", DKIMSelector: "x"})
	if err := w.apply(ownerA, KindDomainAdded, map[string]any{"owner": ownerA, "name": "mail.example.com", "dkim_selector": Selector, "extra": 1}); err == nil {
		t.Fatal("an unknown payload member was accepted")
	}
	w.ok(ownerA, KindDomainAdded, add)
	w.refused(problem.Conflict, "already yours", ownerA, KindDomainAdded, add)
	w.refused(problem.Conflict, "another account", ownerB, KindDomainAdded, DomainChange{Owner: ownerB, Name: "mail.example.com", DKIMSelector: Selector})
	w.refused(problem.NotFound, "no active mail domain", ownerB, KindDomainRemoved, DomainChange{Owner: ownerB, Name: "mail.example.com"})
	ds, err := Domains(w.st, ownerA)
	if err != nil || len(ds) != 1 || ds[0].Status != Active || ds[0].Owner != ownerA || ds[0].DKIMSelector != Selector {
		t.Fatalf("Domains: %+v %v", ds, err)
	}
	if ds, _ := Domains(w.st, ownerB); len(ds) != 0 {
		t.Fatalf("B sees A's domain: %+v", ds)
	}

	// A live inbox keeps its domain; once it is deleted the domain can go,
	// and then be another owner's.
	w.ok(ownerA, KindInboxCreated, w.inbox(ownerA, "bot", walletBot, "mail.example.com"))
	w.refused(problem.Conflict, "still has inbox", ownerA, KindDomainRemoved, DomainChange{Owner: ownerA, Name: "mail.example.com"})
	w.ok(ownerA, KindInboxDeleted, InboxChange{Owner: ownerA, Address: Address(walletBot, "mail.example.com"), Agent: "bot"})
	w.ok(ownerA, KindDomainRemoved, DomainChange{Owner: ownerA, Name: "mail.example.com"})
	w.refused(problem.NotFound, "no active mail domain", ownerA, KindDomainRemoved, DomainChange{Owner: ownerA, Name: "mail.example.com"})
	w.refused(problem.NotFound, "no active mail domain", ownerA, KindInboxCreated, w.inbox(ownerA, "bot", walletBot, "mail.example.com"))
	w.ok(ownerB, KindDomainAdded, DomainChange{Owner: ownerB, Name: "mail.example.com", DKIMSelector: Selector})
	if ds, _ := Domains(w.st, ownerA); len(ds) != 0 {
		t.Fatalf("A still lists the domain B holds now: %+v", ds)
	}
}

func TestInboxes(t *testing.T) {
	w := newWorld(t)
	w.ok(ownerA, KindDomainAdded, DomainChange{Owner: ownerA, Name: "mail.example.com", DKIMSelector: Selector})
	w.ok(ownerB, KindDomainAdded, DomainChange{Owner: ownerB, Name: "b.example.com", DKIMSelector: Selector})
	c := w.inbox(ownerA, "bot", walletBot, "mail.example.com")

	w.refused(problem.Denied, "owner signs", ownerB, KindInboxCreated, c)
	w.refused(problem.NotFound, "no agent", ownerA, KindInboxCreated, w.inbox(ownerA, "nobody", walletBot, "mail.example.com"))
	w.refused(problem.NotFound, "no agent", ownerA, KindInboxCreated, w.inbox(ownerA, "gone", "0x2222222222222222222222222222222222222222", "mail.example.com"))
	w.refused(problem.NotFound, "no agent", ownerA, KindInboxCreated, w.inbox(ownerA, "other", "0x3333333333333333333333333333333333333333", "mail.example.com"))
	w.refused(problem.NotFound, "no active mail domain", ownerA, KindInboxCreated, w.inbox(ownerA, "bot", walletBot, "unknown.example.com"))
	w.refused(problem.NotFound, "no active mail domain", ownerA, KindInboxCreated, w.inbox(ownerA, "bot", walletBot, "b.example.com"))
	w.refused(problem.Conflict, "paired again", ownerA, KindInboxCreated, w.inbox(ownerA, "bot", "0x1111111111111111111111111111111111111111", "mail.example.com"))
	bad := c
	bad.Address = "ceo@mail.example.com"
	w.refused(problem.BadRequest, "inbox address", ownerA, KindInboxCreated, bad)

	w.ok(ownerA, KindInboxCreated, c)
	w.refused(problem.Conflict, "already has inbox", ownerA, KindInboxCreated, c)
	ins, err := Inboxes(w.st, ownerA)
	if err != nil || len(ins) != 1 || ins[0].Address != c.Address || ins[0].Agent != "bot" || !ins[0].Live() || ins[0].CreatedAt == 0 {
		t.Fatalf("Inboxes: %+v %v", ins, err)
	}
	if ins, _ := Inboxes(w.st, ownerB); len(ins) != 0 {
		t.Fatalf("B sees A's inbox: %+v", ins)
	}
	for _, r := range Rights {
		if ok, err := Holds(w.st, ownerA, "bot", c.Address, r); !ok || err != nil {
			t.Fatalf("the inbox's agent does not hold %s: %v", r, err)
		}
	}

	// A torn-down agent holds nothing, whatever its grant says.
	w.agent(ownerA, "bot", walletBot, apiv1.AgentTornDown)
	if ok, _ := Holds(w.st, ownerA, "bot", c.Address, Read); ok {
		t.Fatal("a torn-down agent still reads its inbox")
	}
	w.agent(ownerA, "bot", walletBot, apiv1.AgentActive)

	// Deleting: only its owner, naming its agent; the grants go with it.
	del := InboxChange{Owner: ownerA, Address: c.Address, Agent: "bot"}
	w.refused(problem.Denied, "owner signs", ownerB, KindInboxDeleted, del)
	w.refused(problem.NotFound, "no inbox", ownerB, KindInboxDeleted, InboxChange{Owner: ownerB, Address: c.Address, Agent: "bot"})
	w.refused(problem.BadRequest, "not \"helper\"", ownerA, KindInboxDeleted, InboxChange{Owner: ownerA, Address: c.Address, Agent: "helper"})
	w.ok(ownerA, KindInboxDeleted, del)
	w.refused(problem.NotFound, "no inbox", ownerA, KindInboxDeleted, del)
	if ok, _ := Holds(w.st, ownerA, "bot", c.Address, Read); ok {
		t.Fatal("a deleted inbox is still readable")
	}
	if gs, _ := Grants(w.st, c.Address); len(gs) != 0 {
		t.Fatalf("grants outlive their inbox: %+v", gs)
	}
	in, ok, _ := GetInbox(w.st, c.Address)
	if !ok || in.Live() {
		t.Fatalf("the deleted inbox's record: %+v %v", in, ok)
	}
	// Created again: the same address, live again, its agent's rights back.
	w.ok(ownerA, KindInboxCreated, c)
	if ok, _ := Holds(w.st, ownerA, "bot", c.Address, Send); !ok {
		t.Fatal("re-created inbox: its agent cannot send")
	}
}

func TestGrants(t *testing.T) {
	w := newWorld(t)
	w.ok(ownerA, KindDomainAdded, DomainChange{Owner: ownerA, Name: "mail.example.com", DKIMSelector: Selector})
	c := w.inbox(ownerA, "bot", walletBot, "mail.example.com")
	w.ok(ownerA, KindInboxCreated, c)
	g := Grant{Owner: ownerA, Address: c.Address, Agent: "helper", Rights: []string{Read}}

	w.refused(problem.Denied, "owner signs", ownerB, KindGranted, g)
	w.refused(problem.NotFound, "no inbox", ownerB, KindGranted, Grant{Owner: ownerB, Address: c.Address, Agent: "other", Rights: []string{Read}})
	w.refused(problem.NotFound, "no agent", ownerA, KindGranted, Grant{Owner: ownerA, Address: c.Address, Agent: "other", Rights: []string{Read}})
	w.refused(problem.NotFound, "no agent", ownerA, KindGranted, Grant{Owner: ownerA, Address: c.Address, Agent: "gone", Rights: []string{Read}})
	w.refused(problem.NotFound, "no inbox", ownerA, KindGranted, Grant{Owner: ownerA, Address: "nobody@mail.example.com", Agent: "helper", Rights: []string{Read}})
	for _, rights := range [][]string{nil, {}, {"write"}, {Read, Read}} {
		w.refused(problem.BadRequest, "right", ownerA, KindGranted, Grant{Owner: ownerA, Address: c.Address, Agent: "helper", Rights: rights})
	}
	w.ok(ownerA, KindGranted, g)
	w.refused(problem.Conflict, "already holds read", ownerA, KindGranted, g)
	w.ok(ownerA, KindGranted, Grant{Owner: ownerA, Address: c.Address, Agent: "helper", Rights: []string{Send}})
	gs, err := Grants(w.st, c.Address)
	want := []Grant{{Owner: ownerA, Address: c.Address, Agent: "bot", Rights: Rights}, {Owner: ownerA, Address: c.Address, Agent: "helper", Rights: []string{Read, Send}}}
	if err != nil || !reflect.DeepEqual(gs, want) {
		t.Fatalf("Grants: %+v %v, want %+v", gs, err, want)
	}

	w.refused(problem.NotFound, "holds no admin", ownerA, KindRevoked, Grant{Owner: ownerA, Address: c.Address, Agent: "helper", Rights: []string{Admin}})
	w.refused(problem.Denied, "owner signs", ownerB, KindRevoked, g)
	w.ok(ownerA, KindRevoked, g)
	if ok, _ := Holds(w.st, ownerA, "helper", c.Address, Read); ok {
		t.Fatal("a revoked read is still held")
	}
	w.ok(ownerA, KindRevoked, Grant{Owner: ownerA, Address: c.Address, Agent: "helper", Rights: []string{Send}})
	if gs, _ := Grants(w.st, c.Address); len(gs) != 1 {
		t.Fatalf("an empty grant stays: %+v", gs)
	}
	w.refused(problem.NotFound, "holds no send", ownerA, KindRevoked, Grant{Owner: ownerA, Address: c.Address, Agent: "helper", Rights: []string{Send}})
}

func TestUsageRows(t *testing.T) {
	for kind, payload := range map[string]any{
		KindDomainAdded:  DomainChange{Owner: ownerA, Name: "mail.example.com", DKIMSelector: Selector},
		KindInboxCreated: InboxChange{Owner: ownerA, Agent: "bot", Address: "a@mail.example.com"},
		KindInboxDeleted: InboxChange{Owner: ownerA, Agent: "bot", Address: "a@mail.example.com"},
		KindGranted:      Grant{Owner: ownerA, Agent: "helper", Address: "a@mail.example.com", Rights: []string{Read}},
		KindRevoked:      Grant{Owner: ownerA, Agent: "helper", Address: "a@mail.example.com", Rights: []string{Read}},
	} {
		p, _ := json.Marshal(payload)
		e := &ledger.Entry{Kind: kind, Origin: ledger.AccountOrigin(ownerA), Payload: p}
		u, ok := Module.Kinds[kind].Usage(e)
		if !ok || u.Actor != ownerA || u.Service != "mail" || u.Action == "" || !strings.Contains(u.Detail, "mail.example.com") {
			t.Errorf("%s: row %+v", kind, u)
		}
		if owner, _, ok := Module.Kinds[kind].Owner(e); !ok || owner != ownerA {
			t.Errorf("%s: owner %q", kind, owner)
		}
	}
}
