package ledger

import (
	"strings"
	"testing"
)

// TestNewSchema: the schema holds every kind of every module and the one Wallet;
// a kind declared twice (or a core kind redeclared), or a second Wallet, is a bug
// in the module list and panics naming it.
func TestNewSchema(t *testing.T) {
	fold := func(State, *Entry) error { return nil }
	wallet := func(State, string) (string, error) { return "w", nil }
	a := Module{Name: "a", Kinds: map[string]Kind{"a.one": {Origins: FromAccount, Fold: fold}}, Wallet: wallet}
	b := Module{Name: "b", Kinds: map[string]Kind{"b.one": {Origins: FromGovernance, Public: true, Fold: fold}, "b.two": {Origins: FromEnclave, Fold: fold}}}
	s := NewSchema(a, b)
	if len(s.Kinds) != 3 || s.Wallet == nil || !s.Public("b.one") || s.Public("a.one") || !s.Public(KindGenesis) {
		t.Fatalf("schema of a and b: %d kinds, wallet %v", len(s.Kinds), s.Wallet != nil)
	}
	s.Kinds["c"] = Kind{}
	if _, ok := a.Kinds["c"]; ok || len(NewSchema(a, b).Kinds) != 3 {
		t.Fatal("the schema's map is shared with a module or another schema")
	}
	for _, c := range []struct {
		name string
		mods []Module
		want string
	}{
		{"kind twice", []Module{a, b, {Name: "c", Kinds: map[string]Kind{"b.two": {}}}}, `kind "b.two" is declared by module b and by c`},
		{"core kind", []Module{{Name: "c", Kinds: map[string]Kind{KindCheckpoint: {}}}}, `kind "checkpoint" is declared by module ledger and by c`},
		{"two wallets", []Module{a, {Name: "c", Wallet: wallet}}, "module c declares Wallet"},
	} {
		func() {
			defer func() {
				if r, _ := recover().(string); !strings.Contains(r, c.want) {
					t.Errorf("%s: panic %q, want %q", c.name, r, c.want)
				}
			}()
			NewSchema(c.mods...)
		}()
	}
}

// TestOwnerHelpers: OwnerMember takes the payload's owner, else the signing
// account; OwnerSigner only the signing account; enclave and governance entries,
// and payloads that do not decode, are no one's.
func TestOwnerHelpers(t *testing.T) {
	o, s := strings.Repeat("a", 64), strings.Repeat("b", 64)
	for _, c := range []struct {
		name    string
		owner   func(*Entry) (string, string, bool)
		origin  string
		payload string
		want    string
		ok      bool
	}{
		{"member", OwnerMember, AccountOrigin(s), `{"owner":"` + o + `"}`, o, true},
		{"member, none named", OwnerMember, AccountOrigin(s), `{"actor":"x"}`, s, true},
		{"member, enclave", OwnerMember, OriginEnclave, `{}`, "", false},
		{"member, not json", OwnerMember, AccountOrigin(s), `[`, "", false},
		{"signer", OwnerSigner, AccountOrigin(s), `{"owner":"` + o + `"}`, s, true},
		{"signer, governance", OwnerSigner, OriginGovernance, `{}`, "", false},
	} {
		got, parent, ok := c.owner(&Entry{Origin: c.origin, Payload: []byte(c.payload)})
		if got != c.want || parent != "" || ok != c.ok {
			t.Errorf("%s: %q %q %v, want %q %v", c.name, got, parent, ok, c.want, c.ok)
		}
	}
}
