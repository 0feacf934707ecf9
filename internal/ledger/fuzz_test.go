package ledger_test

import (
	"encoding/json"
	"testing"

	"github.com/agentkeys/agentkeys/internal/ledger"
)

func FuzzEntryDecode(f *testing.F) {
	e := ledger.Entry{Seq: 3, Time: 1700000000000000000, Kind: "k", Origin: "enclave", Payload: []byte(`{"a":"<b>"}`), Signer: "s", Sig: []byte{1}}
	e.Payload, _ = ledger.MarshalPayload(map[string]string{"a": "<b>"})
	good, _ := json.Marshal(e)
	f.Add(good)
	e.Salt = make([]byte, ledger.SaltSize)
	salted, _ := json.Marshal(e)
	f.Add(salted)
	r, _ := e.Redact()
	redacted, _ := json.Marshal(r)
	f.Add(redacted)
	f.Add([]byte(`{"seq":1,"prev_hash":"00","time":"x","kind":"","origin":"","payload":{},"signer":"","sig":""}`))
	f.Add([]byte(`{"payload":{ "a" : 1 }}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var e ledger.Entry
		if err := json.Unmarshal(b, &e); err != nil {
			return
		}
		again, err := json.Marshal(e)
		if err != nil {
			t.Fatalf("decoded entry does not encode: %v", err)
		}
		var e2 ledger.Entry
		if err := json.Unmarshal(again, &e2); err != nil {
			t.Fatalf("re-encoded entry does not decode: %v", err)
		}
		if e2.Hash() != e.Hash() {
			t.Fatal("hash changed across a round trip")
		}
	})
}
