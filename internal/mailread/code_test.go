package mailread_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/agentkeys/agentkeys/internal/blobstore/localstore"
	"github.com/agentkeys/agentkeys/internal/mailread"
	"github.com/agentkeys/agentkeys/internal/mailread/mailreadtest"
	"github.com/agentkeys/agentkeys/internal/problem"
)

// htmlMail is a multipart/alternative message with a text and an HTML part
// (text "" = HTML only), as services send their codes.
func htmlMail(subject, text, htmlBody string) []byte {
	var b strings.Builder
	b.WriteString("From: \"Service\" <noreply@service.test>\r\nTo: agent@example.test\r\nSubject: " + subject + "\r\n")
	b.WriteString("Authentication-Results: mx.example.test; spf=pass smtp.mailfrom=service.test; dkim=pass header.d=service.test; dmarc=pass\r\n")
	b.WriteString("Authentication-Results: forged.example; dkim=pass\r\n")
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"MIX\"\r\n\r\n--MIX\r\n")
	b.WriteString("Content-Type: multipart/alternative; boundary=\"ALT\"\r\n\r\n")
	if text != "" {
		b.WriteString("--ALT\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n" + text + "\r\n")
	}
	b.WriteString("--ALT\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n" + htmlBody + "\r\n--ALT--\r\n")
	b.WriteString("--MIX\r\nContent-Type: application/pdf\r\nContent-Disposition: attachment; filename=\"invoice.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcfsj6IK\r\n--MIX--\r\n")
	return []byte(b.String())
}

// colourful is HTML whose CSS holds 6-digit colours (in a style element and in
// style attributes) before the real code.
const colourful = `<html><head><style>body { color: #123456; } .x{background:#654321}</style></head>
<body style=3D"background-color: #abcdef"><div style=3D"color:#999999">Hello,</div>
<p>Your verification code is <b style=3D"color:#222222">739214</b>.</p>
<p><a href=3D"https://service.test/unsubscribe?u=3D1">Unsubscribe</a></p></body></html>`

func TestParse(t *testing.T) {
	m := mailread.Parse("1764914400000000000-0a1b2c3d", htmlMail("=?utf-8?q?Your_c=C3=B3de?=", "", colourful))
	if m.Truncated {
		t.Fatal("a whole message marked truncated")
	}
	if m.From != "noreply@service.test" || m.Subject != "Your códe" || len(m.To) != 1 || m.To[0] != "agent@example.test" {
		t.Errorf("headers: from %q subject %q to %v", m.From, m.Subject, m.To)
	}
	if !strings.Contains(m.Auth, "dkim=pass header.d=service.test") || strings.Contains(m.Auth, "forged") {
		t.Errorf("the verdict is the first Authentication-Results (the edge's): %q", m.Auth)
	}
	if strings.Contains(m.HTMLText, "#") || strings.Contains(m.HTMLText, "color") || !strings.Contains(m.HTMLText, "Your verification code is 739214.") {
		t.Errorf("HTML rendered to text: %q", m.HTMLText)
	}
	if len(m.Attachments) != 1 || m.Attachments[0].Filename != "invoice.pdf" || m.Attachments[0].ContentType != "application/pdf" || m.Attachments[0].Size != 15 {
		t.Errorf("attachments: %+v", m.Attachments)
	}
	if len(m.Links) != 1 || m.Links[0] != "https://service.test/unsubscribe?u=1" {
		t.Errorf("links: %v", m.Links)
	}
	// a broken body keeps its headers
	m = mailread.Parse("1.2", []byte("From: a@b.test\r\nSubject: s\r\nContent-Type: multipart/mixed; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: text/plain\r\n\r\nhello"))
	if m.Subject != "s" || !m.Truncated {
		t.Errorf("broken body: %+v", m)
	}
	// a header over go-message's bounds: nothing, marked cut, no error
	m = mailread.Parse("1.3", []byte(strings.Repeat("X-A: b\r\n", 400000)+"\r\nbody"))
	if !m.Truncated || m.Text != "" {
		t.Errorf("unreadable header: %+v", m)
	}
}

func TestFindCode(t *testing.T) {
	for _, c := range []struct {
		name string
		raw  []byte
		code string
		link string
	}{
		{"text", mailreadtest.Message("a@s.test", "Welcome", "Hi,\r\n\r\nYour code is 482913. It expires in 10 minutes.\r\nCall +1 555 0100 or visit us at 12 Main St, 2026."), "482913", ""},
		{"code word first", mailreadtest.Message("a@s.test", "Order 20260105", "Order #88881234 shipped on 2026-12-05. Your one-time passcode: 5521"), "5521", ""},
		{"alphanumeric", mailreadtest.Message("a@s.test", "Sign in", "Use this code to sign in: X7K-9P2Q\r\nThanks"), "X7K-9P2Q", ""},
		{"html only, css colours", htmlMail("Verify", "", colourful), "739214", ""},
		{"html colours and no code", htmlMail("Hello", "", `<style>a{color:#123456}</style><p style=3D"color:#654321">Welcome aboard.</p>`), "", ""},
		{"code in subject", mailreadtest.Message("a@s.test", "123789 is your login code", "see subject"), "123789", ""},
		{"magic link html", htmlMail("Sign in to Service", "", `<p>Click to sign in:</p><a href=3D"https://service.test/help">Help</a> <a href=3D"https://service.test/auth/magic?token=3Dabc123XYZ">Sign in</a> <a href=3D"https://service.test/unsubscribe">Unsubscribe</a>`), "", "https://service.test/auth/magic?token=abc123XYZ"},
		{"magic link text", mailreadtest.Message("a@s.test", "Confirm your email", "Confirm here: https://service.test/confirm?t=Zx9. If not you, ignore this."), "", "https://service.test/confirm?t=Zx9"},
		{"amounts, times, colours in text", mailreadtest.Message("a@s.test", "Receipt", "Total $1234.50, 12:3456, color #123456, 99.999999, id 77-654321-1"), "", ""},
	} {
		m := mailread.Parse("1.1", c.raw)
		if f := mailread.FindCode(m); f.Code != c.code || f.Link != c.link {
			t.Errorf("%s: found %+v, want code %q link %q", c.name, f, c.code, c.link)
		}
	}
}

// TestWaitTimeout: no code within the timeout is a NOT_FOUND that says what
// to do; a message without a code, or from someone else, does not end the
// wait. Virtual time (synctest): the 30 s wait takes none.
func TestWaitTimeout(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st, err := localstore.Open(t.TempDir())
		if err != nil {
			t.Fatal(err)
		}
		in := storeInbox(st)
		in.Deliver(t, mailreadtest.Message("news@other.test", "Newsletter", "no code here"), time.Now())
		in.Deliver(t, mailreadtest.Message("other@other.test", "Your code", "code 424242"), time.Now())
		start := time.Now()
		_, err = mailread.WaitForCode(context.Background(), in.Open(t), start, mailread.Query{From: "service.test", Timeout: 30 * time.Second})
		p := problem.As(err)
		if p.Code != problem.NotFound || !strings.Contains(p.Message, "within 30s") || !strings.Contains(p.Fix, "timeout_seconds") {
			t.Fatalf("timeout: %v (fix %q)", err, p.Fix)
		}
		if d := time.Since(start); d < 30*time.Second || d > 31*time.Second {
			t.Fatalf("waited %s of virtual time, want 30 s", d)
		}
		// an unread code from before since does not count; without since it does
		in.Deliver(t, mailreadtest.Message("noreply@service.test", "Your code", "code 777111"), start.Add(-5*time.Minute))
		if r, err := mailread.WaitForCode(context.Background(), in.Open(t), start, mailread.Query{From: "service.test", Since: start, Timeout: 5 * time.Second}); problem.As(err).Code != problem.NotFound {
			t.Fatalf("since excludes the older message: %+v %v", r, err)
		}
		if r, err := mailread.WaitForCode(context.Background(), in.Open(t), start, mailread.Query{From: "service.test", Timeout: 5 * time.Second}); err != nil || r.Code != "777111" {
			t.Fatalf("within the look-back: %+v %v", r, err)
		}
		for _, q := range []mailread.Query{{Since: start.Add(-25 * time.Hour), Timeout: time.Second}, {Timeout: 0}, {Timeout: mailread.MaxWait + time.Second}, {From: strings.Repeat("a", 300), Timeout: time.Second}} {
			if _, err := mailread.WaitForCode(context.Background(), in.Open(t), start, q); problem.As(err).Code != problem.BadRequest {
				t.Errorf("query %+v: %v, want BAD_REQUEST", q, err)
			}
		}
	})
}

// BenchmarkWaitForCode measures email_wait_for_code's latency from a message
// landing in the (local) store to the code returned: the poll interval bounds
// it from above, the list-get-parse from below.
func BenchmarkWaitForCode(b *testing.B) {
	st, err := localstore.Open(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	in := storeInbox(st)
	src := in.Open(b)
	var total time.Duration
	for i := 0; b.Loop(); i++ {
		landed := make(chan time.Time, 1)
		go func() {
			time.Sleep(time.Duration(i%5) * 50 * time.Millisecond)
			in.Deliver(b, mailreadtest.Message("noreply@service.test", "code", "Your code is 123456"), time.Now())
			landed <- time.Now()
		}()
		r, err := mailread.WaitForCode(context.Background(), src, time.Now(), mailread.Query{Timeout: 10 * time.Second})
		if err != nil || r.Code != "123456" {
			b.Fatal(r, err)
		}
		total += time.Since(<-landed)
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "ms-landed-to-code")
}

// TestParseDeepNesting: a sender can nest multiparts thousands deep in a
// small message; go-message's reader pays for every level on every byte
// (quadratic), so the daemon stops descending at a fixed depth and says the
// message was cut, instead of spinning on it.
func TestParseDeepNesting(t *testing.T) {
	var b strings.Builder
	b.WriteString("From: a@b.test\r\nSubject: deep\r\n")
	for i := range 3000 {
		fmt.Fprintf(&b, "Content-Type: multipart/mixed; boundary=b%d\r\n\r\n--b%d\r\n", i, i)
	}
	b.WriteString("Content-Type: text/plain\r\n\r\nYour code is 918273\r\n")
	m := mailread.Parse("1.1", []byte(b.String()))
	if m.Subject != "deep" {
		t.Fatalf("%+v", m)
	}
	if !m.Truncated || m.Text != "" {
		t.Fatalf("a message nested 3000 deep was walked to the bottom (truncated %v, text %q)", m.Truncated, m.Text)
	}
	// a normal depth is read whole
	m = mailread.Parse("1.1", htmlMail("Verify", "text 1234", colourful))
	if m.Truncated || m.Text != "text 1234" || len(m.Attachments) != 1 {
		t.Fatalf("normal nesting: %+v", m)
	}
}
