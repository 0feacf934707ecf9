package agent

import (
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/account"
	"github.com/agentkeys/agentkeys/internal/apiv1"
	"github.com/agentkeys/agentkeys/internal/ledger"
)

// TestFoldOnePendingPerAlias: the ledger itself refuses a second pending
// request for one owner and alias, so concurrent requests cannot both land.
func TestFoldOnePendingPerAlias(t *testing.T) {
	st := ledger.NewMemState()
	owner := fmt.Sprintf("%064x", 1)
	sec := int64(time.Second)
	req := func(id, alias string, vvc, sealed string, at int64) error {
		p := Pair{ID: id, Owner: owner, Alias: alias, Scope: []string{"openai"}, JKT: "jkt-" + id, VVC: vvc, Sealed: sealed, Expires: at + 900}
		b, _ := json.Marshal(p)
		return foldRequested(st, &ledger.Entry{Kind: KindPairRequested, Payload: b, Time: at * sec})
	}
	if err := req("a", "bot", "", "Ym94", 100); err != nil {
		t.Fatal(err)
	}
	if err := req("b", "bot", "", "Ym94", 200); err != ErrAliasPending {
		t.Fatalf("second pending request for bot: %v", err)
	}
	if err := req("c", "other", "", "Ym94", 200); err != nil {
		t.Fatalf("another alias: %v", err)
	}
	if err := req("d", "bot", "123456", "Ym94", 200); err == nil {
		t.Fatal("a request with its VVC in the clear folded")
	}
	if err := req("e", "bot", "", "", 200); err == nil {
		t.Fatal("a request without a sealed nonce folded")
	}
	// Once the first has expired (by the entry's time), the alias is free.
	if err := req("f", "bot", "", "Ym94", 1001); err != nil {
		t.Fatalf("after expiry: %v", err)
	}
	if err := req("f2", "bot", "", "Ym94", 1002); err != ErrAliasPending {
		t.Fatalf("second pending request after the first expired: %v", err)
	}
	// A decided request frees it too.
	p, _, _ := GetPair(st, owner, "f")
	p.Status = apiv1.PairDenied
	ledger.PutJSON(st, pairKey(owner, "f"), p)
	if err := req("g", "bot", "", "Ym94", 1003); err != nil {
		t.Fatalf("after denial: %v", err)
	}
	// Entries of older brokers (VVC in the clear) still fold, as before.
	if err := req("h", "legacy", "123456", "", 100); err != nil {
		t.Fatalf("legacy entry: %v", err)
	}
}

func TestScope(t *testing.T) {
	for _, ok := range [][]string{{}, {"openai"}, {"oidc:*", "oidc:s3", "a.b-c_d"}} {
		if err := CheckScope(ok); err != nil {
			t.Errorf("%v: %v", ok, err)
		}
	}
	for _, bad := range [][]string{{"Open AI"}, {"openai", "openai"}, {"oidc:"}, {"oidc:A"}, {"*"}, {""}} {
		if err := CheckScope(bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

func TestOmni(t *testing.T) {
	parent := fmt.Sprintf("%064x", 7)
	if OmniOf(parent, "bot", 1) != account.AgentOmni(parent, "bot", 1) {
		t.Fatal("two formulas for the agent omni")
	}
	if OmniOf(parent, "bot", 1) == OmniOf(parent, "bot", 2) {
		t.Fatal("a new generation must get a new omni")
	}
	h := sha256.Sum256([]byte("agentkeys/omni/v1|child|" + parent + "//bot/1"))
	if OmniOf(parent, "bot", 1) != fmt.Sprintf("%x", h) {
		t.Fatal("omni is not the §4.1 formula")
	}
}

// TestMemoFollowsTheStoredRecord: the memo answers like Get, sees every change
// of the stored record, and a caller changing its copy changes nothing else.
func TestMemoFollowsTheStoredRecord(t *testing.T) {
	st := ledger.NewMemState()
	var m Memo
	if _, ok, err := m.Get(st, "o", "a"); ok || err != nil {
		t.Fatalf("missing agent: ok=%v err=%v", ok, err)
	}
	put := func(a Agent) {
		b, _ := json.Marshal(a)
		st.Put(agentKey("o", "a"), b)
	}
	put(Agent{Owner: "o", Alias: "a", Scope: []string{"openai"}, Status: apiv1.AgentActive})
	a1, ok, err := m.Get(st, "o", "a")
	if !ok || err != nil || a1.Scope[0] != "openai" {
		t.Fatalf("first read: %+v %v %v", a1, ok, err)
	}
	a1.Scope = append(a1.Scope, "x")
	a1.Scope[0] = "changed"
	a1.Status = "changed"
	a2, _, _ := m.Get(st, "o", "a")
	if want, _, _ := Get(st, "o", "a"); !reflect.DeepEqual(a2, want) {
		t.Fatalf("memo %+v, stored %+v", a2, want)
	}
	put(Agent{Owner: "o", Alias: "a", Scope: []string{"openai", "oidc:*"}, Status: apiv1.AgentRevoked})
	a3, _, _ := m.Get(st, "o", "a")
	if a3.Status != apiv1.AgentRevoked || len(a3.Scope) != 2 {
		t.Fatalf("memo missed a change: %+v", a3)
	}
	st.Put(agentKey("o", "a"), []byte("{not json"))
	if _, _, err := m.Get(st, "o", "a"); err == nil {
		t.Fatal("a corrupt record was served from the memo")
	}
}
