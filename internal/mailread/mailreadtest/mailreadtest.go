// Package mailreadtest is the conformance suite every mailread.Source runs
// (StoreSource on a local directory and on SeaweedFS, IMAPSource on Dovecot):
// listing in arrival order with since and limit, whole messages back, marks
// that survive a new connection, clear errors for unknown and invalid ids,
// and a code found by WaitForCode in a message that lands while it waits.
package mailreadtest

import (
	"bytes"
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/agentkeys/agentkeys/internal/mailread"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// Inbox is one empty inbox under test: Open returns a new Source of it (a
// new connection each time), Deliver puts a raw message in it as the mail
// edge or a remote MX would, received at the given time.
type Inbox struct {
	Open    func(t testing.TB) mailread.Source
	Deliver func(t testing.TB, raw []byte, received time.Time)
}

// Message is a small test message with a code in it.
func Message(from, subject, body string) []byte {
	return []byte("From: " + from + "\r\nTo: agent@example.test\r\nSubject: " + subject +
		"\r\nDate: Sat, 05 Dec 2026 06:00:00 +0000\r\nMessage-ID: <" + fmt.Sprint(time.Now().UnixNano()) + "@example.test>\r\n" +
		"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + body + "\r\n")
}

func code(t *testing.T, err error) problem.Code {
	t.Helper()
	if err == nil {
		return ""
	}
	return problem.As(err).Code
}

// crlf normalises line ends: an IMAP server may store LF as CRLF.
func crlf(b []byte) []byte {
	return bytes.ReplaceAll(bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")), []byte("\n"), []byte("\r\n"))
}

// Run runs the suite on a new inbox from newInbox for each case.
func Run(t *testing.T, newInbox func(t *testing.T) Inbox) {
	ctx := context.Background()
	base := time.Now().Add(-time.Hour).Truncate(time.Second)

	t.Run("ListGet", func(t *testing.T) {
		in := newInbox(t)
		src := in.Open(t)
		defer src.Close()
		if refs, more, err := src.List(ctx, time.Time{}, 0); err != nil || len(refs) != 0 || more {
			t.Fatalf("empty inbox: %v %v %v", refs, more, err)
		}
		var raws [][]byte
		for i := range 3 {
			raw := Message("sender@example.test", fmt.Sprintf("message %d", i), fmt.Sprintf("body %d", i))
			raws = append(raws, raw)
			in.Deliver(t, raw, base.Add(time.Duration(i)*time.Minute))
		}
		src2 := in.Open(t)
		defer src2.Close()
		refs, more, err := src2.List(ctx, time.Time{}, 0)
		if err != nil || len(refs) != 3 || more {
			t.Fatalf("list: %v %v %v", refs, more, err)
		}
		for i, r := range refs {
			if r.Size <= 0 || !r.Received.Equal(base.Add(time.Duration(i)*time.Minute)) && r.Received.Sub(base.Add(time.Duration(i)*time.Minute)).Abs() > time.Second {
				t.Errorf("ref %d: %+v, want received %s", i, r, base.Add(time.Duration(i)*time.Minute))
			}
			raw, err := src2.Get(ctx, r.ID)
			if err != nil || !bytes.Equal(crlf(raw), crlf(raws[i])) {
				t.Errorf("get %s: %q %v, want message %d", r.ID, raw, err, i)
			}
		}
		if page, more, err := src2.List(ctx, time.Time{}, 2); err != nil || len(page) != 2 || !more || page[1].ID != refs[1].ID {
			t.Errorf("limit 2: %v %v %v", page, more, err)
		}
		if page, more, err := src2.List(ctx, refs[1].Received, 0); err != nil || len(page) != 2 || more || page[0].ID != refs[1].ID {
			t.Errorf("since the second: %v %v %v", page, more, err)
		}
		if page, _, err := src2.List(ctx, refs[2].Received.Add(time.Second), 0); err != nil || len(page) != 0 {
			t.Errorf("since after the last: %v %v", page, err)
		}
		for _, limit := range []int{-1, mailread.MaxList + 1} {
			if _, _, err := src2.List(ctx, time.Time{}, limit); code(t, err) != problem.BadRequest {
				t.Errorf("limit %d: %v, want BAD_REQUEST", limit, err)
			}
		}
	})

	t.Run("BadIDs", func(t *testing.T) {
		in := newInbox(t)
		in.Deliver(t, Message("a@example.test", "x", "y"), base)
		src := in.Open(t)
		defer src.Close()
		for _, id := range []string{"", "../x", "1234", "abc", "0000000000000000001-0000000z", "1.2.3", "1764914400000000000-deadbeef.eml"} {
			if _, err := src.Get(ctx, id); code(t, err) != problem.BadRequest {
				t.Errorf("get %q: %v, want BAD_REQUEST", id, err)
			}
		}
		for _, id := range []string{"1764914400000000000-deadbeef", "1.999999"} {
			if _, err := src.Get(ctx, id); code(t, err) != problem.NotFound && code(t, err) != problem.BadRequest {
				t.Errorf("get %q: %v, want NOT_FOUND", id, err)
			}
			if err := src.SetMark(ctx, id, mailread.Mark{Seen: true}); code(t, err) != problem.NotFound && code(t, err) != problem.BadRequest {
				t.Errorf("mark %q: %v, want NOT_FOUND", id, err)
			}
		}
	})

	t.Run("Marks", func(t *testing.T) {
		in := newInbox(t)
		in.Deliver(t, Message("a@example.test", "one", "x"), base)
		in.Deliver(t, Message("a@example.test", "two", "x"), base.Add(time.Second))
		src := in.Open(t)
		defer src.Close()
		refs, _, err := src.List(ctx, time.Time{}, 0)
		if err != nil || len(refs) != 2 {
			t.Fatal(refs, err)
		}
		ids := []string{refs[0].ID, refs[1].ID}
		if m, err := src.Marks(ctx, ids); err != nil || len(m) != 0 {
			t.Fatalf("fresh marks: %v %v", m, err)
		}
		if err := src.SetMark(ctx, ids[0], mailread.Mark{Seen: true, Labels: []string{"done", "receipts"}}); err != nil {
			t.Fatal(err)
		}
		if err := src.SetMark(ctx, ids[1], mailread.Mark{Labels: []string{"todo"}}); err != nil {
			t.Fatal(err)
		}
		for _, bad := range []mailread.Mark{{Labels: []string{"Has Space"}}, {Labels: []string{"x", "x"}}, {Labels: []string{"\\Deleted"}}} {
			if err := src.SetMark(ctx, ids[0], bad); code(t, err) != problem.BadRequest {
				t.Errorf("mark %v: %v, want BAD_REQUEST", bad, err)
			}
		}
		other := in.Open(t) // what one connection wrote, another reads
		defer other.Close()
		m, err := other.Marks(ctx, ids)
		if err != nil || !m[ids[0]].Seen || !slices.Equal(m[ids[0]].Labels, []string{"done", "receipts"}) || m[ids[1]].Seen || !slices.Equal(m[ids[1]].Labels, []string{"todo"}) {
			t.Fatalf("marks: %+v %v", m, err)
		}
		if err := other.SetMark(ctx, ids[0], mailread.Mark{Labels: []string{"receipts"}}); err != nil {
			t.Fatal(err)
		}
		if err := other.SetMark(ctx, ids[1], mailread.Mark{}); err != nil {
			t.Fatal(err)
		}
		m, err = src.Marks(ctx, ids)
		if err != nil || m[ids[0]].Seen || !slices.Equal(m[ids[0]].Labels, []string{"receipts"}) || !m[ids[1]].Zero() {
			t.Fatalf("marks after changes: %+v %v", m, err)
		}
		if _, ok := m[ids[1]]; ok && !m[ids[1]].Zero() {
			t.Fatalf("cleared mark still there: %+v", m[ids[1]])
		}
		// marking does not change the message list
		if refs2, _, err := src.List(ctx, time.Time{}, 0); err != nil || len(refs2) != 2 {
			t.Fatalf("list after marks: %v %v", refs2, err)
		}
	})

	t.Run("WaitForCode", func(t *testing.T) {
		in := newInbox(t)
		src := in.Open(t)
		defer src.Close()
		now := time.Now()
		// an old code outside the look-back and one already seen do not count
		in.Deliver(t, Message("old@example.test", "Your code", "code 111111"), now.Add(-mailread.Lookback-time.Minute))
		go func() {
			time.Sleep(3 * mailread.Poll)
			in.Deliver(t, Message("noreply@service.test", "Confirm your account", "Your verification code is 482913."), time.Now())
		}()
		r, err := mailread.WaitForCode(ctx, src, now, mailread.Query{From: "service.test", Timeout: 20 * time.Second})
		if err != nil || r.Code != "482913" || r.From != "noreply@service.test" {
			t.Fatalf("wait: %+v %v", r, err)
		}
		if m, err := src.Marks(ctx, []string{r.ID}); err != nil || !m[r.ID].Seen {
			t.Fatalf("the message with the code is not marked seen: %v %v", m, err)
		}
		// the same code is not returned twice
		if r, err := mailread.WaitForCode(ctx, src, now, mailread.Query{From: "service.test", Timeout: time.Second}); code(t, err) != problem.NotFound {
			t.Fatalf("second wait: %+v %v, want NOT_FOUND after the timeout", r, err)
		}
	})
}
