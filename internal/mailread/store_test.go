package mailread_test

import (
	"context"
	"crypto/sha256"
	"fmt"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/blobstore"
	"github.com/agentkeys/agentkeys/internal/blobstore/localstore"
	"github.com/agentkeys/agentkeys/internal/mailread"
	"github.com/agentkeys/agentkeys/internal/mailread/mailreadtest"
)

const (
	wallet  = "0xAbC0000000000000000000000000000000000001"
	address = "aabc000000000@mail.example.test"
)

// StoreKey is the key the mail edge writes a message under.
func storeKey(prefix string, raw []byte, at time.Time) string {
	h := sha256.Sum256(raw)
	return fmt.Sprintf("%s%019d-%x.eml", prefix, at.UnixNano(), h[:4])
}

// storeInbox is an inbox prefix of st, beside another agent's messages.
func storeInbox(st blobstore.Store) mailreadtest.Inbox {
	prefix := mailread.Prefix(wallet, address)
	return mailreadtest.Inbox{
		Open: func(t testing.TB) mailread.Source { return &mailread.StoreSource{Store: st, Prefix: prefix} },
		Deliver: func(t testing.TB, raw []byte, at time.Time) {
			if err := st.PutIfAbsent(context.Background(), storeKey(prefix, raw, at), raw); err != nil {
				t.Fatal(err)
			}
		},
	}
}

func TestStoreSourceConformance(t *testing.T) {
	mailreadtest.Run(t, func(t *testing.T) mailreadtest.Inbox {
		st, err := localstore.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		// another inbox of the same agent and another agent: never listed
		for _, p := range []string{mailread.Prefix(wallet, "aother0000000@mail.example.test"), mailread.Prefix("0xdef0000000000000000000000000000000000002", address)} {
			raw := mailreadtest.Message("x@example.test", "not yours", "code 999999")
			st.PutIfAbsent(context.Background(), storeKey(p, raw, time.Now()), raw)
		}
		return storeInbox(st)
	})
}

func TestParseMessageKey(t *testing.T) {
	p := mailread.Prefix(wallet, address)
	if p != "0xabc0000000000000000000000000000000000001/aabc000000000@mail.example.test/" {
		t.Fatalf("prefix %q", p)
	}
	id, at, ok := mailread.ParseMessageKey(p, p+"1764914400123456789-0a1b2c3d.eml")
	if !ok || id != "1764914400123456789-0a1b2c3d" || at.UnixNano() != 1764914400123456789 {
		t.Fatalf("%q %v %v", id, at, ok)
	}
	for _, k := range []string{p + "manifest/00000000000000000001.json", p + "1764914400123456789-0a1b2c3d.eml.tmp",
		p + "1764914400123456789-0A1B2C3D.eml", p + "176491440012345678-0a1b2c3d.eml", "other/" + p + "1764914400123456789-0a1b2c3d.eml",
		p + "x/1764914400123456789-0a1b2c3d.eml", p + "1.2.eml"} {
		if _, _, ok := mailread.ParseMessageKey(p, k); ok {
			t.Errorf("%q parsed as a message key", k)
		}
	}
	if err := blobstore.CheckKey(p + "manifest/00000000000000000001.json"); err != nil {
		t.Errorf("the manifest key is not a valid object key: %v", err)
	}
}

// TestManifestConcurrentMarks: two daemons marking different messages at the
// same time both keep their marks (put-if-absent versions, retried on top).
func TestManifestConcurrentMarks(t *testing.T) {
	st, err := localstore.Open(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	in := storeInbox(st)
	base := time.Now().Add(-time.Hour)
	const n = 8
	for i := range n {
		in.Deliver(t, mailreadtest.Message("a@example.test", fmt.Sprint(i), "x"), base.Add(time.Duration(i)*time.Second))
	}
	src := in.Open(t)
	refs, _, err := src.List(context.Background(), time.Time{}, 0)
	if err != nil || len(refs) != n {
		t.Fatal(refs, err)
	}
	errs := make(chan error, n)
	for _, r := range refs {
		go func() {
			errs <- in.Open(t).SetMark(context.Background(), r.ID, mailread.Mark{Labels: []string{"l" + r.ID[15:19]}})
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	var ids []string
	for _, r := range refs {
		ids = append(ids, r.ID)
	}
	m, err := src.Marks(context.Background(), ids)
	if err != nil || len(m) != n {
		t.Fatalf("%d of %d concurrent marks kept: %v %v", len(m), n, m, err)
	}
	objs, _, _ := st.List(context.Background(), mailread.Prefix(wallet, address)+"manifest/", "", 0)
	if len(objs) > 2 {
		t.Errorf("%d manifest versions left, want the newest (and at most one racing)", len(objs))
	}
}
